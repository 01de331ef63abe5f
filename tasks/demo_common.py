"""What every task's demo shares: the sequence build → fit within a budget → save → reload → score → show →
export (:func:`run_task_demo`), a time-budgeted trainer with a progress bar, and example selection.

A task's ``demo.py`` supplies a :class:`DemoRecipe`: how to build its data module and model, how to score the
reloaded model on its held-out set, and what to show; the order, the budget, the checkpoint written with
``weights_only`` and reloaded through the safe loader, and the exported model folder are the same for all.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L

from core.train.callbacks import DeadlineStop
from core.train.progress import BudgetProgressBar, Sink, null_sink
from tasks.demo_report import TaskReport

__all__ = ["DemoRecipe", "TrainClock", "demo_trainer", "export_model", "run_task_demo", "shown_indices"]


class TrainClock(L.Callback):
    """Wall seconds between the first and the last training step (what the demo reports as training time)."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.end: float | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.monotonic()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.end = time.monotonic()

    @property
    def seconds(self) -> float:
        return 0.0 if self.start is None or self.end is None else self.end - self.start


def demo_trainer(
    task: str, deadline: float, sink: Sink = null_sink, clock: TrainClock | None = None, **kwargs: Any
) -> L.Trainer:
    """A CPU trainer that trains until `deadline` (a ``time.monotonic()`` value) and reports its progress.

    No validation, logger or checkpoint callback: the demo scores the reloaded checkpoint on its own
    held-out set afterwards, and every second of the budget goes to training.

    Args:
        task: task name for the progress bar.
        deadline: when training stops (checked after every step).
        sink: progress sink (`core.train.progress`).
        clock: optional `TrainClock` to add.
        **kwargs: further `L.Trainer` arguments (e.g. ``gradient_clip_val``).
    """
    budget = max(deadline - time.monotonic(), 1.0)
    callbacks: list[L.Callback] = [DeadlineStop(deadline), BudgetProgressBar(sink, task, budget)]
    if clock is not None:
        callbacks.append(clock)
    kw: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_model_summary": False,
        "limit_val_batches": 0,
        "num_sanity_val_steps": 0,
        "max_epochs": 10_000,
    }  # the deadline stops training, not the epoch count
    return L.Trainer(callbacks=callbacks, **{**kw, **kwargs})


def shown_indices(correct: Sequence[bool], first: int = 8, errors: int = 8) -> list[int]:
    """Which held-out examples the page shows: the first `first`, then up to `errors` later mistakes.

    Not a selection of good examples: the first ones are whatever the held-out set starts with, and
    the mistakes are added so that what the model gets wrong is visible too.
    """
    idx = list(range(min(first, len(correct))))
    idx += [i for i in range(len(idx), len(correct)) if not correct[i]][:errors]
    return idx


def export_model(
    model: Any, out_dir: Path, metrics: Mapping[str, float], data: str, figure: Path | None = None
) -> Path:
    """Write the demo's model as a model folder ``out_dir/model`` and check that it loads back.

    The folder is what ``Module.from_pretrained``, every ``--ckpt`` option and ``attn-app --from
    demo_output`` read; its card records the held-out scores. Reloading it here (no pickle, shapes checked
    before allocation) means a demo that finished also proved the folder usable.

    Args:
        model: the trained task module (a ``core.train.module.TaskModule``).
        out_dir: the task's output folder.
        metrics: held-out scores for the model card.
        data: what it was trained on, for the card (the demo's embedded corpus, named).
        figure: an attention figure for the card.

    Returns:
        The folder.
    """
    from core.io.model_folder import save_pretrained

    folder = save_pretrained(
        model,
        out_dir / "model",
        metrics={f"demo/{k}": v for k, v in metrics.items()},
        figure=figure,
        training={"command": "make demo", "data": data},
    )
    type(model).from_pretrained(folder)
    return folder


@dataclass
class DemoRecipe:
    """What one task's demo supplies to :func:`run_task_demo`.

    Attributes:
        task: the task name (file names, progress, report).
        build: ``(out_dir) -> (datamodule, model)``: the demo's data (caches under ``out_dir``) and a fresh model,
            seeded by the caller.
        score: ``(reloaded model, datamodule, report, sink) -> None``: score the reloaded model on the held-out
            set and fill the report (``metrics``, ``n_examples``, ``examples``, ``files``: figures, outputs),
            reporting progress to ``sink``.
        data: what the model was trained on, for the model card.
        reserve_s: seconds of the budget kept for saving, reloading, scoring and figures.
        trainer: further ``L.Trainer`` arguments (e.g. ``gradient_clip_val``).
    """

    task: str
    build: Callable[[Path], tuple[L.LightningDataModule, L.LightningModule]]
    score: Callable[[Any, Any, TaskReport, Sink], None]
    data: str
    reserve_s: float = 25.0
    trainer: dict[str, Any] = field(default_factory=dict)


def run_task_demo(recipe: DemoRecipe, out_dir: Path, max_minutes: float, seed: int, sink: Sink) -> TaskReport:
    """Build, train until the budget minus ``reserve_s``, save, reload safely, score, show and export one task.

    Writes ``<task>.ckpt`` (weights, hyper-parameters and metadata; no optimizer state) and the model folder
    ``model/``, and whatever the recipe's ``score`` adds.

    Args:
        recipe: the task's parts.
        out_dir: the task's output folder (created).
        max_minutes: wall-clock budget of the whole task.
        seed: seed of the model initialisation and batch order.
        sink: progress sink (`core.train.progress`).

    Returns:
        The report: scores, examples, files, steps and seconds.
    """
    start = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(seed, verbose=False)
    dm, model = recipe.build(out_dir)
    # Keep reserve_s (or a third of a tiny budget) for saving, reloading, scoring and figures.
    deadline = start + max(5.0, max_minutes * 60 - min(recipe.reserve_s, max_minutes * 60 / 3))
    clock = TrainClock()
    trainer = demo_trainer(recipe.task, deadline, sink, clock, default_root_dir=str(out_dir), **recipe.trainer)
    trainer.fit(model, dm)
    ckpt = out_dir / f"{recipe.task}.ckpt"
    trainer.save_checkpoint(ckpt, weights_only=True)  # weights + hparams + metadata: small, no optimizer state
    reloaded = type(model).load_from_checkpoint(ckpt)  # the safe loader: weights_only, task and shapes checked
    report = TaskReport(recipe.task, train_steps=trainer.global_step, train_seconds=clock.seconds, files=[ckpt])
    recipe.score(reloaded, dm, report, sink)
    # the model card shows an attention figure (not an input image the report also lists)
    figures = [f for f in report.files if f.suffix == ".png" and ("alignment" in f.name or "attention" in f.name)]
    folder = export_model(reloaded, out_dir, report.metrics, recipe.data, figures[0] if figures else None)
    report.files.append(folder / "config.json")  # the model folder (from_pretrained, --ckpt, attn-app --from)
    report.seconds = time.monotonic() - start
    return report
