"""Prediction output shared by the tasks: one rank-safe ``predict`` writer (rows and lines: :mod:`core.cli.output`).

A task's ``predict_step`` returns a list of :class:`Prediction` rows (dataset index + output fields). The
writer gathers the rows of every DDP rank, drops the repeats samplers pad shards with, sorts them by
(dataloader, dataset index) and global rank 0 alone writes ``field<TAB>field...`` lines, to stdout or
atomically to a file (a temporary file renamed over the target: a crash never leaves half an output).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter

from core.cli.output import format_line, write_text_atomic
from core.train.distributed import gather_objects

__all__ = ["PredictionWriter", "sorted_unique"]


def sorted_unique(rows: Iterable[tuple[int, int, tuple[str, ...]]]) -> list[tuple[str, ...]]:
    """Fields of ``(dataloader, index, fields)`` rows in input order, each (dataloader, index) once."""
    seen: dict[tuple[int, int], tuple[str, ...]] = {}
    for loader, index, fields in rows:
        seen.setdefault((int(loader), int(index)), tuple(fields))
    return [seen[k] for k in sorted(seen)]


class PredictionWriter(BasePredictionWriter):
    """Writes ``predict`` rows as tab-separated lines, one per input example, in input order.

    Args:
        output: file to write (atomically; parent folders made); ``None`` prints to stdout.
    """

    def __init__(self, output: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output = output
        self._rows: list[tuple[int, int, tuple[str, ...]]] = []

    def on_predict_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._rows = []

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        for row in prediction or []:
            index, fields = row
            self._rows.append((dataloader_idx, int(index), tuple(str(f) for f in fields)))

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_predict_epoch_end(trainer, pl_module)
        rows = gather_objects(self._rows)  # a collective: every rank takes part, rank 0 writes
        self._rows = []
        if trainer.is_global_zero:
            self.write_lines([format_line(f) for f in sorted_unique(rows)])

    def write_lines(self, lines: Sequence[str]) -> None:
        """Write ``lines`` to ``output`` (atomically) or stdout."""
        text = "".join(line + "\n" for line in lines)
        if self.output is None:
            sys.stdout.write(text)
            sys.stdout.flush()
        else:
            write_text_atomic(self.output, text)
