"""The core module's evaluation loaders: one corpus, one set of means and one metric prefix per loader.

A data module may serve several validation or test loaders; the task names each one's metric prefix
(``Task.eval_prefixes``), and the core module scores every loader as its own corpus (each example once, padding
repeats dropped), logs ``<prefix>/<name>`` without a dataloader suffix, and hands the prefix to the task's
``objective``, ``evaluate`` and ``epoch_scores``. The 2-process test checks the DDP path gives the scores of one
process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from core.errors import ConfigError
from core.train.module import TaskModule, _training_record
from core.train.task import EvalKind, EvalStage, Evaluation, Objective, Stage, Task

REPO = Path(__file__).resolve().parents[3]

#: ``(dataset index, hypothesis, reference)`` rows of each toy split; a repeated index is what DDP padding adds
SPLITS: dict[str, list[tuple[int, str, str]]] = {
    # index 1 twice (the second output of an index is dropped): 2 of 3 examples right
    "seen": [(0, "a", "a"), (1, "b", "b"), (2, "x", "c"), (1, "wrong", "b")],
    # the same indices as "seen": one corpus for both loaders would merge them
    "unseen": [(0, "z", "q"), (1, "b", "b"), (0, "q", "q")],
}


class Rows(Dataset):
    """One toy split: a feature vector and the row's index and text."""

    def __init__(self, rows: list[tuple[int, str, str]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        index, hyp, ref = self.rows[i]
        return {"x": torch.full((2,), float(index)), "index": index, "hyp": hyp, "ref": ref}


def exact(hyps: list[str], refs: list[list[str]]) -> dict[str, float]:
    """Share of exact hypotheses, and how many examples were scored."""
    return {"exact": sum(h in r for h, r in zip(hyps, refs)) / len(hyps), "n": float(len(hyps))}


class ToyTask(Task[torch.nn.Linear, dict[str, Any]]):
    """Its output text is the data's; it records the ``stage`` each method was called with.

    Args:
        prefixes: what `eval_prefixes` answers for each stage (missing: the default).
    """

    def __init__(self, prefixes: dict[str, list[str]] | None = None) -> None:
        self.prefixes = prefixes or {}
        self.calls: list[tuple[str, str]] = []

    def build_network(self) -> torch.nn.Linear:
        return torch.nn.Linear(2, 1)

    def eval_prefixes(self, stage: EvalKind, datamodule: Any | None) -> list[str]:
        return self.prefixes.get(stage) or super().eval_prefixes(stage, datamodule)

    def objective(self, network: torch.nn.Linear, batch: dict[str, Any], stage: Stage) -> Objective:
        self.calls.append(("objective", stage))
        return Objective(network(batch["x"]).pow(2).mean(), size=len(batch["hyp"]))

    def evaluate(self, network: torch.nn.Linear, batch: dict[str, Any], stage: EvalStage) -> Evaluation:
        self.calls.append(("evaluate", stage))
        index = batch["index"].tolist()
        # a weighted mean per loader (repeats count: they are not de-duplicated)
        means = {"mean_index": (sum(index) / len(index), float(len(index)))}
        return Evaluation(index, list(batch["hyp"]), [[r] for r in batch["ref"]], means)

    def score(self, hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
        return exact(hypotheses, references)

    def epoch_scores(self, network: torch.nn.Linear, datamodule: Any | None, stage: EvalStage) -> dict[str, float]:
        self.calls.append(("epoch_scores", stage))
        return {"rows": float(len(SPLITS[_split(stage)]))}


def _split(prefix: str) -> str:
    return "unseen" if prefix in ("unseen", "val1", "test1") else "seen"


class ToyModule(TaskModule[torch.nn.Linear]):
    TASK, MONITOR = "toy-eval", "val/exact"

    def __init__(self, prefixes: dict[str, list[str]] | None = None, optimizer: str = "sgd", lr: float = 0.01) -> None:
        super().__init__(ToyTask(prefixes))
        self.save_hyperparameters()

    @property
    def toy(self) -> ToyTask:
        assert isinstance(self.task, ToyTask)
        return self.task


class ToyData(pl.LightningDataModule):
    """Serves the toy splits as loaders: ``splits`` for validation and test alike."""

    def __init__(self, splits: tuple[str, ...] = ("seen", "unseen"), batch_size: int = 2) -> None:
        super().__init__()
        self.splits, self.batch_size = splits, batch_size

    def _loaders(self) -> list[DataLoader]:
        return [DataLoader(Rows(SPLITS[s]), batch_size=self.batch_size) for s in self.splits]

    def train_dataloader(self) -> DataLoader:
        return DataLoader(Rows(SPLITS["seen"]), batch_size=self.batch_size)

    def val_dataloader(self) -> list[DataLoader]:
        return self._loaders()

    def test_dataloader(self) -> list[DataLoader]:
        return self._loaders()


def expected(split: str) -> dict[str, float]:
    """What one loader of ``split`` scores: every index once (the first output of each), the mean of the rows."""
    first: dict[int, tuple[str, str]] = {}
    for index, hyp, ref in SPLITS[split]:
        first.setdefault(index, (hyp, ref))
    ordered = [first[i] for i in sorted(first)]
    rows = SPLITS[split]
    return {
        **exact([h for h, _ in ordered], [[r] for _, r in ordered]),
        "mean_index": sum(i for i, _, _ in rows) / len(rows),
        "rows": float(len(rows)),
    }


def _trainer(**kw: Any) -> pl.Trainer:
    return pl.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
        **kw,
    )


def _metrics(trainer: pl.Trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def test_each_validation_loader_is_its_own_corpus_under_its_prefix() -> None:
    model = ToyModule({"val": ["val", "unseen"]})
    trainer = _trainer()
    results = trainer.validate(model, datamodule=ToyData(), verbose=False)
    logged = _metrics(trainer)
    assert not [k for k in logged if "dataloader_idx" in k]
    for prefix, split in (("val", "seen"), ("unseen", "unseen")):
        for name, value in expected(split).items():
            assert logged[f"{prefix}/{name}"] == pytest.approx(value), (prefix, name)
        assert f"{prefix}/loss" in logged
    assert logged["val/n"] == 3 and logged["unseen/n"] == 2  # the repeats counted once, the loaders apart
    # Lightning's one dict per loader: its own step metrics, and every loader's epoch scores
    assert len(results) == 2 and "val/loss" in results[0] and "unseen/loss" in results[1]
    assert all({"val/exact", "unseen/exact"} <= set(r) for r in results)
    # the task was told which loader each batch came from, and scored each loader once
    calls = model.toy.calls
    assert {s for f, s in calls if f == "evaluate"} == {"val", "unseen"}
    assert {s for f, s in calls if f == "objective"} == {"val", "unseen"}
    assert [s for f, s in calls if f == "epoch_scores"] == ["val", "unseen"]
    assert model.loader_prefixes == {"val": ["val", "unseen"]}
    assert set(model.corpus) >= {"val", "unseen"}
    record = _training_record(model)["metrics"]  # a checkpoint's record keeps every loader's scores
    assert record["unseen/exact"] == pytest.approx(0.5) and record["val/exact"] == pytest.approx(2 / 3)


def test_test_loaders_and_the_default_names() -> None:
    """Without names from the task, the first loader is ``test`` and the next ``test1``; a second test run
    starts from empty corpora."""
    model = ToyModule()
    trainer = _trainer()
    for _ in range(2):
        trainer.test(model, datamodule=ToyData(), verbose=False)
        logged = _metrics(trainer)
        for prefix, split in (("test", "seen"), ("test1", "unseen")):
            for name, value in expected(split).items():
                assert logged[f"{prefix}/{name}"] == pytest.approx(value), (prefix, name)
    assert model.loader_prefixes == {"test": ["test", "test1"]}
    # one loader: the prefix is the stage, as before (and Lightning passes no dataloader_idx)
    model = ToyModule()
    trainer = _trainer()
    trainer.test(model, datamodule=ToyData(splits=("unseen",)), verbose=False)
    logged = _metrics(trainer)
    assert logged["test/n"] == 2 and not [k for k in logged if k.startswith("test1/")]


def test_fit_validates_every_loader_and_names_past_the_loaders_go_unused() -> None:
    """Fit with a sanity check and two validation epochs; the task names three loaders, the data serves two."""
    model = ToyModule({"val": ["val", "unseen", "spare"]})
    trainer = _trainer(max_epochs=2, num_sanity_val_steps=1)
    trainer.fit(model, datamodule=ToyData())
    logged = _metrics(trainer)
    assert logged["val/exact"] == pytest.approx(2 / 3) and logged["unseen/exact"] == pytest.approx(0.5)
    assert logged["unseen/mean_index"] == pytest.approx(1 / 3) and "train/loss" in logged
    assert model.loader_prefixes == {"val": ["val", "unseen"]} and "spare" not in model.corpus
    assert [s for f, s in model.toy.calls if f == "epoch_scores"] == ["val", "unseen"] * 2  # not in the sanity check


@pytest.mark.parametrize("names", [["val", "val"], ["val", "a/b"], ["val", "train"], ["val", "keys"], ["val", ""]])
def test_loader_names_must_be_distinct_plain_names(names: list[str]) -> None:
    model = ToyModule({"val": names})
    with pytest.raises(ConfigError, match="each loader needs its own plain name"):
        _trainer().validate(model, datamodule=ToyData(), verbose=False)


def test_corpora_made_for_a_loader_live_on_the_module_device() -> None:
    """A corpus made when an epoch names its loader is on the module's device (the ``meta`` device stands in for a
    GPU), like those made with the module."""
    model = ToyModule().to(torch.device("meta"))
    corpus = model._corpus("unseen")
    corpus.update([0], ["a"], [["a"]])
    assert {t.device.type for t in [*corpus.index, *corpus.payload, *corpus.sizes]} == {"meta"}


DDP_SCRIPT = r"""
import json, sys, warnings
warnings.filterwarnings("ignore")
import lightning.pytorch as pl
import torch
sys.path.insert(0, sys.argv[3])
import test_eval_loaders as toy

mode, out = sys.argv[1], sys.argv[2]
torch.set_num_threads(1)
# 5 and 3 rows: on 2 ranks the sampler pads each last shard with a repeat of the first row
toy.SPLITS = {
    "seen": [(i, "a" if i % 2 else "b", "a") for i in range(5)],
    "unseen": [(i, "c", "c" if i else "d") for i in range(3)],
}
kw = {"strategy": "ddp", "devices": 2} if mode == "ddp" else {"devices": 1}
trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                     accelerator="cpu", **kw)
torch.manual_seed(0)
trainer.test(toy.ToyModule({"test": ["test", "unseen"]}), datamodule=toy.ToyData(batch_size=2), verbose=False)
if trainer.is_global_zero:
    with open(f"{out}/{mode}.json", "w") as f:
        json.dump({k: float(v) for k, v in trainer.callback_metrics.items()}, f)
"""


@pytest.mark.slow
def test_ddp_scores_each_loader_as_one_process(tmp_path: Path) -> None:
    """``test`` on 2 CPU processes: each loader's corpus gathered over the ranks, its padding repeat dropped, the
    scores of one process (every rank computes the corpora in the same order, also a loader it got no row of)."""
    script = tmp_path / "ddp_eval.py"  # a file: Lightning's DDP launcher re-executes the command line for rank 1
    script.write_text(DDP_SCRIPT, encoding="utf-8")
    for mode in ("one", "ddp"):
        proc = subprocess.run(
            [sys.executable, str(script), mode, str(tmp_path), str(Path(__file__).parent)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    one, ddp = (json.loads((tmp_path / f"{mode}.json").read_text()) for mode in ("one", "ddp"))
    assert one["test/n"] == 5 and one["unseen/n"] == 3
    assert one["test/exact"] == pytest.approx(2 / 5) and one["unseen/exact"] == pytest.approx(2 / 3)
    corpus = {k: v for k, v in one.items() if k.split("/")[1] in ("exact", "n", "rows")}
    assert len(corpus) == 6 and {k: ddp[k] for k in corpus} == pytest.approx(corpus)
