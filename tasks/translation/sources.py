"""Readers for parallel corpora: Tatoeba/Anki ``spa.txt``, TSV/CSV, parallel text files, HF datasets.

Every reader returns a :class:`LoadResult` of ``(english, spanish)``-ordered pairs in *file order* (the
data module applies the translation direction, cleaning and splitting). Unusable input raises
:class:`core.errors.DataError` naming the file and what was expected; individual bad lines are skipped,
counted and reported with ``file:line`` (first few individually, then a summary) so one stray line in a
100k-line download does not stop training.
"""

from __future__ import annotations

import csv
import os
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_warn

from core.errors import DataError

Pair = tuple[str, str]

#: How many skipped lines are reported one by one before only the summary is given.
MAX_LINE_WARNINGS = 5


@dataclass
class LoadResult:
    """Pairs read from a source plus a record of what was skipped.

    Attributes:
        pairs: ``(source_side_as_in_file, target_side_as_in_file)`` pairs, e.g. ``(en, es)`` for spa.txt.
        skipped: number of lines/rows that were skipped.
        problems: ``"file:line: reason"`` strings for the skipped lines (all of them).
    """

    pairs: list[Pair] = field(default_factory=list)
    skipped: int = 0
    problems: list[str] = field(default_factory=list)

    def skip(self, where: str, reason: str) -> None:
        """Record one skipped line."""
        self.skipped += 1
        self.problems.append(f"{where}: {reason}")

    def warn(self, source: str) -> None:
        """Emit (rank-zero) warnings: the first few problems verbatim, then the total count.

        ``rank_zero_warn``: under DDP every rank reads the data, but the report appears once.
        """
        if not self.skipped:
            return
        for p in self.problems[:MAX_LINE_WARNINGS]:
            rank_zero_warn(f"skipped {p}")
        if self.skipped > 1:  # one line is its own count; otherwise always say how many in total
            rank_zero_warn(
                f"skipped {self.skipped} bad lines in {source} in total (first at {self.problems[0].split(': ')[0]})"
            )


def normalize(text: str) -> str:
    """NFC-normalise and collapse runs of whitespace (so "é" typed two ways is one token sequence)."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    if not path.is_file():
        raise DataError(f"data path is not a file: {path}")


def read_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)``; non-UTF-8 bytes raise a DataError naming file and line."""
    path = Path(path)
    _check_file(path)
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                bad = raw[err.start : err.start + 1].hex()
                raise DataError(
                    f"{path}:{lineno}: not valid UTF-8 (byte 0x{bad} at column {err.start + 1}); "
                    f"re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`"
                ) from None
            if lineno == 1:
                text = text.removeprefix("\ufeff")  # a BOM is an encoding artefact, not text
            yield lineno, text.rstrip("\r\n")


def read_tatoeba(path: str | os.PathLike[str]) -> LoadResult:
    """Read the Tatoeba/Anki format: ``english<TAB>spanish[<TAB>attribution]`` per line.

    Args:
        path: the ``spa.txt`` file.

    Returns:
        Pairs ``(english, spanish)``; empty lines, lines without a tab or with an empty side are skipped.

    Raises:
        DataError: missing file, non-UTF-8 content or no usable line at all.
    """
    p = Path(path)
    res = LoadResult()
    for lineno, line in read_lines(p):
        if not line.strip():
            res.skip(f"{p}:{lineno}", "empty line")
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            res.skip(f"{p}:{lineno}", "no tab (expected 'english<TAB>spanish[<TAB>attribution]')")
            continue
        src, tgt = normalize(fields[0]), normalize(fields[1])
        if not src or not tgt:
            res.skip(f"{p}:{lineno}", "empty sentence")
            continue
        res.pairs.append((src, tgt))
    if not res.pairs:
        raise DataError(f"{p}: no usable line; expected 'english<TAB>spanish[<TAB>attribution]' lines")
    return res


def read_table(
    path: str | os.PathLike[str], src_column: str, tgt_column: str, delimiter: str | None = None
) -> LoadResult:
    """Read a TSV/CSV file with a header row naming the columns.

    Args:
        path: the file; the delimiter defaults to a tab for ``.tsv``/``.tab``/``.txt`` and a comma otherwise.
            Tab-separated files are read without quoting (``"`` is ordinary text); comma-separated files
            use CSV quoting (``"Hello, friend"``).
        src_column: header of the column read as the first side (e.g. ``"en"``).
        tgt_column: header of the column read as the second side (e.g. ``"es"``).
        delimiter: override the delimiter.

    Returns:
        Pairs ``(row[src_column], row[tgt_column])``; rows with a missing/empty value are skipped.

    Raises:
        DataError: missing file, non-UTF-8 content, missing columns (lists the header) or no usable row.
    """
    p = Path(path)
    if delimiter is None:
        delimiter = "\t" if p.suffix.lower() in (".tsv", ".tab", ".txt") else ","
    lines = read_lines(p)
    # csv needs an iterator of strings; line numbers are tracked alongside for messages.
    numbered: list[int] = []

    def texts() -> Iterator[str]:
        for lineno, text in lines:
            numbered.append(lineno)
            yield text

    # A TSV has no quoting convention: a stray `"` (common in sentences) must stay literal text. With
    # csv's default quoting it would open a quoted field that swallows the following lines silently.
    reader = csv.reader(
        texts(), delimiter=delimiter, quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    )
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(
            f"{p}: empty file; expected a header row with columns {src_column!r} and {tgt_column!r}"
        ) from None
    header = [h.strip().lstrip("\ufeff") for h in header]
    missing = [c for c in (src_column, tgt_column) if c not in header]
    if missing:
        raise DataError(
            f"{p}:1: missing column(s) {missing}; the header has {header} "
            f"(set the column names with --data.src_column / --data.tgt_column)"
        )
    si, ti = header.index(src_column), header.index(tgt_column)
    res = LoadResult()
    for row in reader:
        where = f"{p}:{numbered[-1]}"
        if not any(cell.strip() for cell in row):
            res.skip(where, "empty line")
            continue
        if len(row) <= max(si, ti):
            res.skip(where, f"{len(row)} field(s), expected at least {max(si, ti) + 1}")
            continue
        src, tgt = normalize(row[si]), normalize(row[ti])
        if not src or not tgt:
            res.skip(where, "empty sentence")
            continue
        res.pairs.append((src, tgt))
    if not res.pairs:
        raise DataError(f"{p}: no usable row with both {src_column!r} and {tgt_column!r}")
    return res


def read_parallel(src_path: str | os.PathLike[str], tgt_path: str | os.PathLike[str]) -> LoadResult:
    """Read two line-aligned files (``train.en`` / ``train.es``).

    Raises:
        DataError: missing file, non-UTF-8 content, different line counts or no usable pair.
    """
    sp, tp = Path(src_path), Path(tgt_path)
    src_lines = list(read_lines(sp))
    tgt_lines = list(read_lines(tp))
    if len(src_lines) != len(tgt_lines):
        raise DataError(
            f"parallel files differ in length: {sp} has {len(src_lines)} lines, "
            f"{tp} has {len(tgt_lines)}; line i of one must translate line i of the other"
        )
    res = LoadResult()
    for (lineno, s), (_, t) in zip(src_lines, tgt_lines):
        s, t = normalize(s), normalize(t)
        if not s or not t:
            res.skip(f"{sp if not s else tp}:{lineno}", "empty line")
            continue
        res.pairs.append((s, t))
    if not res.pairs:
        raise DataError(f"{sp} / {tp}: no non-empty line pair")
    return res


def read_hf(name_or_path: str, src_column: str, tgt_column: str, split: str = "train") -> LoadResult:
    """Read a Hugging Face ``datasets`` source.

    A directory written by ``Dataset.save_to_disk`` is opened with ``load_from_disk``; anything else goes
    to ``load_dataset`` (a local folder of data files, or a hub name when online). Columns are either
    plain string columns named ``src_column`` / ``tgt_column``, or a ``translation`` column of
    ``{lang: text}`` dicts (the layout of the hub's translation datasets), keyed by those names.

    Raises:
        DataError: the dataset cannot be loaded, the split or the columns do not exist.
    """
    import datasets

    p = Path(name_or_path)
    try:
        if p.is_dir() and ((p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists()):
            ds = datasets.load_from_disk(str(p))
        else:
            ds = datasets.load_dataset(name_or_path)
    except Exception as err:  # datasets raises many types (FileNotFoundError, ConnectionError, ValueError)
        raise DataError(f"could not load HF dataset {name_or_path!r}: {type(err).__name__}: {err}") from None
    if isinstance(ds, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        if split not in ds:
            raise DataError(f"HF dataset {name_or_path!r} has no split {split!r}; splits: {list(ds)}")
        ds = ds[split]
    cols = list(ds.column_names or [])
    res = LoadResult()
    rows: Iterable[tuple[object, object]]  # untrusted cells: checked to be text below
    if src_column in cols and tgt_column in cols:
        rows = zip(ds[src_column], ds[tgt_column])
    elif "translation" in cols:
        rows = ((d.get(src_column) if d else None, d.get(tgt_column) if d else None) for d in ds["translation"])
    else:
        raise DataError(
            f"HF dataset {name_or_path!r} has no columns {src_column!r}/{tgt_column!r} "
            f"(nor a 'translation' column); columns: {cols}"
        )
    for i, (s, t) in enumerate(rows):
        if not isinstance(s, str) or not isinstance(t, str) or not normalize(s) or not normalize(t):
            res.skip(f"{name_or_path}[{split}][{i}]", "missing or empty text")
            continue
        res.pairs.append((normalize(s), normalize(t)))
    if not res.pairs:
        raise DataError(f"HF dataset {name_or_path!r}: no usable row")
    return res
