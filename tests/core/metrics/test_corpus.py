"""CorpusOutputs: every example once, in dataset order, text intact, empty after reset."""

from __future__ import annotations

from core.metrics.corpus import CorpusOutputs


def _exact(hyps: list[str], refs: list[list[str]]) -> dict[str, float]:
    return {"exact": sum(h in r for h, r in zip(hyps, refs)) / len(hyps), "n": float(len(hyps))}


def test_repeats_count_once_in_dataset_order() -> None:
    m = CorpusOutputs(_exact)
    # example 1 repeated (DDP padding), batches out of order (length bucketing)
    m.update([2, 1], ["c", "wrong"], [["c"], ["b"]])
    m.update([0, 1], ["a", "wrong again"], [["a", "A"], ["b"]])
    hyps, refs = m.examples()
    assert hyps == ["a", "wrong", "c"]  # the first output seen for an index wins
    assert refs == [["a", "A"], ["b"], ["c"]]
    assert m.compute() == {"exact": 2 / 3, "n": 3.0}


def test_any_text_round_trips_and_reset_empties() -> None:
    m = CorpusOutputs(_exact)
    text = 'ñ "quoted" \\ tab\there\nnew line 漢字 🙂'
    m.update([5], [text], [[text, ""]])
    assert m.examples() == ([text], [[text, ""]])
    m.reset()
    assert m.examples() == ([], [])
    assert m.compute() == {}


def test_state_follows_the_metric_device() -> None:
    """Outputs added after the metric moved are kept on its device (a CUDA module's metric gathers CUDA tensors);
    the ``meta`` device stands in for a GPU here."""
    import torch

    m = CorpusOutputs(_exact).to(torch.device("meta"))
    m.update([0], ["a"], [["a"]])
    assert {t.device.type for t in [*m.index, *m.payload, *m.sizes]} == {"meta"}
