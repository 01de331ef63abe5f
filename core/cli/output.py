"""Output lines shared by prediction and inference, without Lightning: prediction rows, escaped tab-separated lines
and atomic text files (the prediction writer is :mod:`core.cli.predict`; the inference subcommand,
:mod:`core.cli.infer`, imports only this)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

__all__ = ["Prediction", "escape_field", "format_line", "write_text_atomic"]


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
