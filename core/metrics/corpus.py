"""Corpus-level scores over every rank, each example once: a torchmetrics `Metric` that collects outputs as text.

BLEU, chrF, CIDEr and CER are corpus scores: they are computed from every hypothesis at once, not averaged
over batches or ranks. :class:`CorpusOutputs` keeps ``(dataset index, hypothesis, references)`` per example as
concatenated tensor state (the text as UTF-8 bytes), so torchmetrics gathers it across DDP ranks like any other
metric state; :meth:`CorpusOutputs.compute` drops the repeats that samplers pad the last shards with (the same
index twice) and hands the corpus, in dataset order, to the task's scoring function.

Example:
    >>> m = CorpusOutputs(lambda hyps, refs: {"exact": sum(h == r[0] for h, r in zip(hyps, refs)) / len(hyps)})
    >>> m.update([0, 1], ["a cat", "a dog"], [["a cat"], ["the dog"]])
    >>> m.compute()
    {'exact': 0.5}
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ["CorpusOutputs", "CorpusScorer"]

#: ``score(hypotheses, references) -> {name: value}``: one hypothesis and a list of references per example.
CorpusScorer = Callable[[list[str], list[list[str]]], dict[str, float]]


class CorpusOutputs(Metric):
    """Hypotheses and references of one evaluation, gathered over ranks and scored once per epoch.

    Args:
        score: the task's corpus scorer (e.g. ``{"bleu": ..., "chrf": ...}``).
    """

    full_state_update = False
    index: list[Tensor]
    payload: list[Tensor]
    sizes: list[Tensor]

    def __init__(self, score: CorpusScorer) -> None:
        super().__init__()
        self.score = score
        # lists of tensors concatenated across ranks at compute(): the index, the UTF-8 bytes of each example's
        # JSON [hypothesis, references], and each example's byte count (to cut the bytes apart again)
        self.add_state("index", default=[], dist_reduce_fx="cat")
        self.add_state("payload", default=[], dist_reduce_fx="cat")
        self.add_state("sizes", default=[], dist_reduce_fx="cat")
        self._typed_empty()

    def _typed_empty(self) -> None:
        # A rank that evaluates nothing (e.g. every example it holds is past a validation limit) still takes
        # part in the gather; torchmetrics would stand in a float32 placeholder for its empty lists, which the
        # other ranks' long/uint8 tensors do not concatenate with. Empty tensors of the right dtypes instead.
        self.index.append(torch.empty(0, dtype=torch.long, device=self.device))
        self.payload.append(torch.empty(0, dtype=torch.uint8, device=self.device))
        self.sizes.append(torch.empty(0, dtype=torch.long, device=self.device))

    def reset(self) -> None:
        super().reset()
        self._typed_empty()

    def update(self, indices: Sequence[int], hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> None:
        """Add one batch: the dataset index, hypothesis and references of each example."""
        if not len(indices) == len(hypotheses) == len(references):
            raise ValueError(f"{len(indices)} indices, {len(hypotheses)} hypotheses, {len(references)} references")
        if not indices:
            return
        blobs = [json.dumps([h, list(r)], ensure_ascii=False).encode("utf-8") for h, r in zip(hypotheses, references)]
        # on the metric's device, like its other state: a sync gathers them there (NCCL needs CUDA tensors)
        dev = self.device
        self.index.append(torch.tensor(list(indices), dtype=torch.long, device=dev))
        self.payload.append(torch.frombuffer(bytearray(b"".join(blobs)), dtype=torch.uint8).to(dev))
        self.sizes.append(torch.tensor([len(b) for b in blobs], dtype=torch.long, device=dev))

    def examples(self) -> tuple[list[str], list[list[str]]]:
        """``(hypotheses, references)`` of every example once, in dataset order (call after a sync)."""
        index = _cat(self.index).long().tolist()  # (one host copy per epoch)
        sizes = _cat(self.sizes).long().tolist()
        data = _cat(self.payload).to(torch.uint8).cpu().numpy().tobytes()
        seen: dict[int, tuple[str, list[str]]] = {}
        offset = 0
        for i, n in zip(index, sizes):
            hyp, refs = json.loads(data[offset : offset + n].decode("utf-8"))
            offset += n
            seen.setdefault(int(i), (hyp, refs))  # a DDP padding repeat of an example already seen is dropped
        ordered = [seen[i] for i in sorted(seen)]
        return [h for h, _ in ordered], [r for _, r in ordered]

    def compute(self) -> dict[str, float]:
        """The task's scores of the corpus (empty when nothing was collected)."""
        hyps, refs = self.examples()
        return self.score(hyps, refs) if hyps else {}


def _cat(parts: list[Tensor] | Tensor) -> Tensor:
    # after a DDP sync torchmetrics has already concatenated the list into one tensor
    return parts if isinstance(parts, Tensor) else torch.cat(parts)
