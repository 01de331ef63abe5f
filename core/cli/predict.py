"""Prediction output shared by the tasks: one rank-safe ``predict`` writer and line escaping.

A task's ``predict_step`` returns a list of :class:`Prediction` rows (dataset index + output fields). The
writer gathers the rows of every DDP rank, drops the repeats samplers pad shards with, sorts them by
(dataloader, dataset index) and global rank 0 alone writes ``field<TAB>field...`` lines, to stdout or
atomically to a file (a temporary file renamed over the target: a crash never leaves half an output).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter

from core.train.distributed import gather_objects

__all__ = ["Prediction", "PredictionWriter", "escape_field", "format_line", "write_text_atomic"]


class Prediction(NamedTuple):
    """One predicted example.

    Attributes:
        index: the example's position in its dataset (input order).
        fields: the output columns (e.g. ``(image name, caption)`` or ``(translation,)``).
    """

    # The field shadows tuple.index (a method), which mypy reports as an incompatible override
    # (python/mypy#8599); `index` is the public name tasks and tests read, so it stays.
    index: int  # type: ignore[assignment]
    fields: tuple[str, ...]


def escape_field(text: str) -> str:
    r"""A column of a tab-separated line: backslash, tab, CR and newline escaped (``\\``, ``\t``, ``\r``, ``\n``),
    so a file name or output containing them cannot break the one-line-per-input format."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\r", "\\r").replace("\n", "\\n")


def format_line(fields: Iterable[str]) -> str:
    """``field<TAB>field...`` with every field escaped."""
    return "\t".join(escape_field(str(f)) for f in fields)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


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
