"""Corpus readers: LibriSpeech layout, JSONL/CSV/TSV manifests, Common Voice, FSDD, HF `datasets`.

Every reader returns a list of `Utterance` records (audio location + raw transcript). Audio is
only decoded later, in the dataset; rows pointing at missing files are skipped here and counted
(one warning naming the first few files), malformed manifest lines raise a `DataError` naming
file and line.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_warn

from core.errors import DataError
from tasks.speech.text import DIGIT_WORDS

__all__ = ["Utterance", "read_fsdd", "read_hf_dataset", "read_librispeech", "read_manifest", "read_source"]

_PATH_KEYS = ("path", "audio", "audio_filepath", "audio_path", "file", "filename", "wav", "file_name")
_TEXT_KEYS = ("text", "sentence", "transcript", "transcription", "normalized_text", "label")
_AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".opus"}


@dataclass
class Utterance:
    """One training/evaluation example.

    Attributes:
        audio: file path (str) or raw file bytes (HF datasets stored in Arrow).
        text: raw transcript (normalised later, by the dataset).
        duration: seconds when known (manifests, headers), else None.
        speaker: speaker/voice id when known (used to split FSDD by speaker).
        words: where each word of the transcript is in the audio, ``[(word, start s, end s), ...]``, when the
            manifest has them (the synthesised corpus does: `tasks.speech.synth`); they score where the
            attention looks (`tasks.speech.alignment`).
    """

    audio: str | bytes
    text: str
    duration: float | None = None
    speaker: str | None = None
    words: list[tuple[str, float, float]] | None = None

    @property
    def name(self) -> str:
        """Printable identifier for warnings."""
        return self.audio if isinstance(self.audio, str) else f"<{len(self.audio)} bytes>"


def _shown(names: list[str], k: int = 3) -> str:
    """The first `k` names, comma-separated, with " ..." when there are more."""
    return ", ".join(names[:k]) + (" ..." if len(names) > k else "")


def _warn_missing(missing: list[str], source: str) -> None:
    """One warning per source naming the first missing files and the count (rank zero only: setup
    runs on every rank and reads the same files)."""
    if missing:
        rank_zero_warn(
            f"{source}: skipped {len(missing)} row(s) whose audio file is missing: {_shown(missing)}", stacklevel=3
        )


def _read_text(path: Path) -> str:
    """A text file decoded as UTF-8 (a leading BOM is dropped).

    Raises:
        DataError: "FILE:LINE: not valid UTF-8" naming the first undecodable line.
    """
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: not valid UTF-8 ({e.reason} at byte {e.start}); save the file as UTF-8"
        ) from None


def read_librispeech(root: str | Path) -> list[Utterance]:
    """Read a LibriSpeech-style tree: `*.trans.txt` files ("<id> <TEXT>" lines) next to `<id>.flac`.

    Args:
        root: any directory above the `*.trans.txt` files (e.g. `LibriSpeech/train-clean-5`).

    Returns:
        Utterances sorted by id (deterministic order).
    """
    root = Path(root)
    out, missing = [], []
    for trans in sorted(root.rglob("*.trans.txt")):
        for _lineno, line in enumerate(_read_text(trans).splitlines(), 1):
            if not line.strip():
                continue
            uid, _, text = line.strip().partition(" ")
            audio = next(
                (trans.parent / f"{uid}{s}" for s in (".flac", ".wav") if (trans.parent / f"{uid}{s}").is_file()), None
            )
            if audio is None:
                missing.append(str(trans.parent / f"{uid}.flac"))
                continue
            out.append(Utterance(str(audio), text, speaker=uid.split("-")[0]))
    if not out and not missing:
        raise DataError(f"{root}: no LibriSpeech *.trans.txt files found")
    _warn_missing(missing, str(root))
    return out


def _resolve(base: Path, p: str) -> Path:
    """Manifest path resolution: absolute, relative to the manifest, or Common Voice's `clips/`."""
    path = Path(p).expanduser()
    if path.is_absolute():
        return path
    for cand in (base / path, base / "clips" / path):
        if cand.is_file():
            return cand
    return base / path


def _pick(row: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    """First present key (case-insensitive) of a manifest row."""
    lower = {str(k).strip().lower(): k for k in row}
    for k in keys:
        if k in lower:
            return lower[k]
    return None


def _word_spans(value: Any) -> list[tuple[str, float, float]] | None:
    """A manifest's ``words`` field as ``[(word, start s, end s), ...]``, or None when it is not that shape
    (finite times, ``0 <= start <= end``, starts in order): another tool's field of the same name is ignored."""
    if not isinstance(value, list) or not value:
        return None
    out: list[tuple[str, float, float]] = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)):
            return None
        if not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in item[1:]):
            return None
        a, b = float(item[1]), float(item[2])
        if not (math.isfinite(a) and math.isfinite(b) and 0.0 <= a <= b) or (out and a < out[-1][1]):
            return None
        out.append((item[0], a, b))
    return out


def read_manifest(path: str | Path) -> list[Utterance]:
    """Read a JSONL, CSV or TSV manifest (also Common Voice `*.tsv`).

    Columns: an audio path (`path`, `audio`, `audio_filepath`, `file`, ...), a transcript (`text`,
    `sentence`, `transcript`, ...), optional `duration` (seconds); JSONL rows may also carry `words`,
    ``[[word, start s, end s], ...]`` (kept when well-formed, else ignored). CSV/TSV files without a header
    are read as `path<sep>text`. Relative paths resolve against the manifest's folder, then its
    `clips/` folder (Common Voice layout).

    Args:
        path: the manifest file.

    Returns:
        Utterances in file order; rows whose audio file is missing are skipped (one warning).

    Raises:
        DataError: unreadable or non-UTF-8 file, malformed JSON line, a duration that is not a
            number, or no usable path/text columns. A non-finite duration ("nan", "inf") is treated
            as unknown (read from the audio header later; one warning).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found")
    base = path.parent
    rows: list[tuple[int, dict[str, Any]]] = []
    text = _read_text(path)
    if path.suffix.lower() in (".jsonl", ".json"):
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{path}:{lineno}: not valid JSON ({e.msg}); expected one object per line with 'path' and 'text'"
                ) from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object with 'path' and 'text'")
            rows.append((lineno, row))
    else:
        sep = "\t" if path.suffix.lower() == ".tsv" else ","
        # newline="": the csv module handles line ends itself (quoted fields may hold newlines)
        with io.StringIO(text, newline="") as f:
            lines = list(csv.reader(f, delimiter=sep, quoting=csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL))
        lines = [ln for ln in lines if ln]
        if not lines:
            raise DataError(f"{path}: empty manifest")
        header = [h.strip().lower() for h in lines[0]]
        has_header = any(h in _PATH_KEYS for h in header) and any(h in _TEXT_KEYS for h in header)
        if has_header:
            rows = [(i + 2, dict(zip(header, ln))) for i, ln in enumerate(lines[1:])]
        else:
            rows = [(i + 1, {"path": ln[0], "text": sep.join(ln[1:])}) for i, ln in enumerate(lines)]
    out, missing, bad_dur = [], [], []
    for lineno, row in rows:
        pk, tk = _pick(row, _PATH_KEYS), _pick(row, _TEXT_KEYS)
        if pk is None or tk is None or not str(row[pk]).strip():
            raise DataError(
                f"{path}:{lineno}: missing audio path or transcript column "
                f"(expected one of {list(_PATH_KEYS[:4])} and one of {list(_TEXT_KEYS[:3])})"
            )
        for key, what in ((pk, "audio path"), (tk, "transcript")):
            if row[key] is not None and not isinstance(row[key], (str, int, float)):
                raise DataError(
                    f"{path}:{lineno}: field {key!r} (the {what}) is a {type(row[key]).__name__}, expected a string"
                )
        audio = _resolve(base, str(row[pk]).strip())
        if not audio.is_file():
            missing.append(str(audio))
            continue
        dk = _pick(row, ("duration",))
        raw = row[dk] if dk is not None else None
        try:
            dur = float(raw) if raw not in (None, "") else None
        except ValueError:
            raise DataError(f"{path}:{lineno}: duration {raw!r} is not a number of seconds") from None
        if dur is not None and not math.isfinite(dur):
            bad_dur.append(f"{path}:{lineno}")
            dur = None  # unknown: validate_utterances reads it from the audio header
        sk = _pick(row, ("speaker", "client_id", "voice"))
        words = _word_spans(row.get("words"))
        out.append(Utterance(str(audio), str(row[tk] or ""), dur, str(row[sk]) if sk else None, words))
    _warn_missing(missing, str(path))
    if bad_dur:
        rank_zero_warn(
            f"{path}: {len(bad_dur)} row(s) have a non-finite duration (nan/inf); reading it from "
            f"the audio header instead: {_shown(bad_dur)}"
        )
    return out


_FSDD_NAME = re.compile(r"^(\d)_([A-Za-z0-9-]+)_(\d+)$")


def read_fsdd(root: str | Path) -> list[Utterance]:
    """Read a Free Spoken Digit Dataset folder: `<digit>_<speaker>_<index>.wav`, label in the name.

    Args:
        root: folder holding the WAV files (or its `recordings/` parent).

    Returns:
        Utterances with the digit spelled out ("7" -> "seven"), sorted by file name.
    """
    root = Path(root)
    if (root / "recordings").is_dir():
        root = root / "recordings"
    out = []
    for f in sorted(root.glob("*.wav")):
        m = _FSDD_NAME.match(f.stem)
        if m:
            out.append(Utterance(str(f), DIGIT_WORDS[int(m.group(1))], speaker=m.group(2)))
    if not out:
        raise DataError(f"{root}: no FSDD-style files named <digit>_<speaker>_<index>.wav")
    return out


def read_hf_dataset(
    name: str, split: str = "train", audio_column: str = "audio", text_column: str | None = None
) -> list[Utterance]:
    """Read a Hugging Face `datasets` audio dataset (a local `save_to_disk` folder or a hub name).

    The audio column is cast to `Audio(decode=False)` so we get the encoded bytes/path and decode
    them with soundfile (datasets' own decoder needs torchcodec, which we do not require).

    Args:
        name: path of a dataset saved with `save_to_disk`, or a hub name (needs the network).
        split: split name (ignored for a saved single `Dataset`).
        audio_column: column holding audio.
        text_column: transcript column (default: the first of `text`, `sentence`, `transcription`...).

    Returns:
        Utterances (audio as file path when it exists locally, else the encoded bytes); rows with
        neither are skipped (one warning with the count).

    Raises:
        DataError: the dataset cannot be loaded (not found, offline, not a dataset), or the split
            or columns do not exist.
    """
    try:
        import datasets
    except ImportError as e:  # pragma: no cover
        raise DataError("reading Hugging Face datasets needs `pip install datasets`") from e
    try:
        if Path(name).exists():
            ds: Any = datasets.load_from_disk(name)
        else:
            ds = datasets.load_dataset(name, split=split)
    except Exception as err:  # datasets raises many types (FileNotFoundError, ConnectionError, ValueError)
        raise DataError(f"could not load HF dataset {name!r}: {type(err).__name__}: {err}") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(f"{name}: no split {split!r} (has {list(ds)})")
        ds = ds[split]
    if audio_column not in ds.column_names:
        raise DataError(f"{name}: no audio column {audio_column!r} (columns: {ds.column_names})")
    text_column = text_column or next((c for c in _TEXT_KEYS if c in ds.column_names), None)
    if text_column is None:
        raise DataError(f"{name}: no transcript column (columns: {ds.column_names}); pass text_column")
    ds = ds.cast_column(audio_column, datasets.Audio(decode=False))
    out, bad = [], []
    for i, row in enumerate(ds):
        a = row[audio_column] or {}
        if a.get("bytes"):
            audio: str | bytes = a["bytes"]
        elif a.get("path") and Path(a["path"]).is_file():
            audio = a["path"]
        else:
            bad.append(f"row {i} ({a.get('path')})")
            continue
        out.append(Utterance(audio, str(row[text_column] or "")))
    if bad:
        rank_zero_warn(f"{name}: skipped {len(bad)} row(s) without audio bytes or a readable path: {_shown(bad)}")
    return out


def read_source(spec: str | Path, split: str = "train") -> list[Utterance]:
    """Read any supported source, chosen from its form.

    - `hf:<name-or-path>[:<split>]` -> Hugging Face datasets;
    - a `.jsonl/.json/.csv/.tsv` file -> manifest (Common Voice TSV included);
    - a folder containing `*.trans.txt` -> LibriSpeech layout;
    - a folder of `<digit>_<speaker>_<n>.wav` (or with `recordings/`) -> FSDD.

    Args:
        spec: the source.
        split: split for HF datasets when the spec gives none.

    Returns:
        The utterances.

    Raises:
        DataError: the source does not exist or has no recognised layout.
    """
    s = str(spec)
    if s.startswith("hf:"):
        name, _, sp = s[3:].partition(":") if not Path(s[3:]).exists() else (s[3:], "", "")
        return read_hf_dataset(name, sp or split)
    p = Path(s).expanduser()
    if p.is_file():
        return read_manifest(p)
    if p.is_dir():
        if next(p.rglob("*.trans.txt"), None) is not None:
            return read_librispeech(p)
        if (p / "dataset_info.json").is_file() or (p / "dataset_dict.json").is_file():
            return read_hf_dataset(str(p), split)
        for m in ("transcripts.tsv", "validated.tsv", "train.tsv", "manifest.jsonl"):
            if (p / m).is_file():
                return read_manifest(p / m)
        return read_fsdd(p)
    raise DataError(f"{s}: no such file or folder (expected a manifest, a LibriSpeech/FSDD folder or hf:NAME)")
