"""Callbacks of the translation task."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from core.distributed import dedupe_by_index, gather_objects


class TranslationWriter(BasePredictionWriter):
    """Write ``predict`` translations, one line per input sentence, in input order.

    Args:
        output: file to write (created/overwritten); ``None`` prints to stdout.

    One process: lines are written as batches finish (the predict loader keeps dataset order).
    Under DDP each rank translates a shard (:meth:`TranslationDataModule.predict_dataloader`); the
    writer keeps ``(dataset index, line)`` pairs, gathers them at the end and global rank 0 alone writes
    the single output (file or stdout), in input order and with the shard padding removed.
    """

    def __init__(self, output: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output = output
        self._fh: Any = None
        self._distributed = False
        self._pending: list[tuple[int, str]] = []

    def _open(self) -> Any:
        if self.output is None:
            return sys.stdout
        path = Path(self.output)
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "w", encoding="utf-8")

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._pending = []
        self._distributed = (trainer.world_size > 1 and torch.distributed.is_available()
                             and torch.distributed.is_initialized())
        if not self._distributed:
            self._fh = self._open()

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: Any,
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int,
                           dataloader_idx: int) -> None:
        if self._distributed:
            self._pending.extend(zip(batch["index"].tolist(), prediction))
            return
        for line in prediction:
            self._fh.write(line + "\n")
        self._fh.flush()

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._distributed:
            gathered = gather_objects(self._pending)
            self._pending = []
            if trainer.is_global_zero:
                self._fh = self._open()
                for line in dedupe_by_index(gathered):
                    self._fh.write(line + "\n")
                self._fh.flush()
        if self._fh is not None and self._fh is not sys.stdout:
            self._fh.close()
        self._fh = None
