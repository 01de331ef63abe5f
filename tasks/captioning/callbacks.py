"""Callbacks of the captioning task: `CaptionWriter` for ``attn-caption predict``."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter

from core.distributed import gather_objects

__all__ = ["CaptionWriter", "format_predictions"]


def _dataset_of(trainer: pl.Trainer, dataloader_idx: int) -> Any:
    """The dataset behind predict dataloader ``dataloader_idx`` (None when unknown)."""
    loaders = getattr(trainer, "predict_dataloaders", None)
    if loaders is None:
        return None
    if isinstance(loaders, (list, tuple)):
        loaders = loaders[dataloader_idx] if dataloader_idx < len(loaders) else None
    return getattr(loaders, "dataset", None)


def format_predictions(rows: Sequence[tuple[int, int, str, str]]) -> list[str]:
    """``image<TAB>caption`` lines in input order, each image once.

    Args:
        rows: ``(dataloader index, dataset index, image name, caption)`` from any ranks, any order
            (a repeated ``(dataloader, dataset)`` index keeps its first row).

    Returns:
        Output lines without newlines, sorted by dataloader then dataset index.
    """
    seen: dict[tuple[int, int], tuple[str, str]] = {}
    for loader, index, name, caption in rows:
        seen.setdefault((int(loader), int(index)), (name, caption))
    return [f"{seen[k][0]}\t{seen[k][1]}" for k in sorted(seen)]


class CaptionWriter(BasePredictionWriter):
    """Write ``predict`` captions as ``image<TAB>caption`` lines, one per input image, in input order.

    The image is named by the dataset (`name(i)`: the file path for ``data.predict_path`` and real
    corpora, ``scene test/3 (seed 0)`` for generated scenes). Captions are collected per batch; at
    the end of the epoch they are gathered from all DDP ranks (Lightning's predict sampler
    interleaves images across ranks) and rank 0 alone writes them sorted by dataset index, so the
    output is one file in input order whatever the number of ranks. Images that could not be read
    were skipped with a warning by the data loader and get no line.

    Args:
        output: file to write (created/overwritten; parent folders made); ``None`` prints to stdout.
    """

    def __init__(self, output: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output = output
        self._rows: list[tuple[int, int, str, str]] = []

    def on_predict_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._rows = []

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: Any,
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int,
                           dataloader_idx: int) -> None:
        dataset = _dataset_of(trainer, dataloader_idx)
        namer = getattr(dataset, "name", None)
        for item in prediction or []:
            index = int(item["index"])
            name = str(item.get("image") or (namer(index) if callable(namer) else f"item {index}"))
            self._rows.append((dataloader_idx, index, name, str(item["caption"])))

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_predict_epoch_end(trainer, pl_module)
        rows = gather_objects(self._rows)  # every rank takes part in the collective, rank 0 writes
        self._rows = []
        if trainer.is_global_zero:
            self.write_lines(format_predictions(rows))

    def write_lines(self, lines: Sequence[str]) -> None:
        """Write ``lines`` to ``output`` (or stdout)."""
        if self.output is None:
            for line in lines:
                sys.stdout.write(line + "\n")
            sys.stdout.flush()
            return
        path = Path(self.output).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in lines)
