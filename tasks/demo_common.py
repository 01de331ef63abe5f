"""Pieces every task's demo shares: a time-budgeted trainer with a progress bar, and example selection."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L

from core.train.callbacks import DeadlineStop
from core.train.progress import BudgetProgressBar, Sink, null_sink

__all__ = ["TrainClock", "demo_trainer", "export_model", "shown_indices"]


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
        model: the trained task module (a ``TaskCheckpointMixin``).
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
