"""Callbacks of the translation task."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter


class TranslationWriter(BasePredictionWriter):
    """Write ``predict`` translations, one line per input sentence, in input order.

    Args:
        output: file to write (created/overwritten); ``None`` prints to stdout.

    Under DDP each rank gets its own file ``<output>.rank<N>`` (no interleaved writes).
    """

    def __init__(self, output: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output = output
        self._fh: Any = None

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.output is None:
            self._fh = sys.stdout
            return
        path = Path(self.output)
        if trainer.world_size > 1:
            path = path.with_name(f"{path.name}.rank{trainer.global_rank}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "w", encoding="utf-8")

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: Any,
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int,
                           dataloader_idx: int) -> None:
        for line in prediction:
            self._fh.write(line + "\n")
        self._fh.flush()

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._fh is not None and self._fh is not sys.stdout:
            self._fh.close()
        self._fh = None
