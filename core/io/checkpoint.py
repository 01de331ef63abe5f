"""Safe checkpoint loading (``weights_only=True``) with user-facing errors, plus URL caching.

Tasks store their metadata under ``checkpoint["attn_suite"] = {"task": ..., "format": 1, ...}``
(see ``make_metadata``) in ``on_save_checkpoint``; ``load_checkpoint(path, expected_task=...)`` checks
it. Every failure a user can cause (missing file, truncated download, a file that is not a checkpoint,
a pickle that would import/run code, another task's checkpoint, bad URL, hash mismatch) becomes a
``CheckpointError`` whose message names the file.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import struct
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import torch

from core.errors import CheckpointError
from core.io.checks import FORMAT_VERSION, META_KEY, check_sha256_arg

__all__ = [
    "cache_dir",
    "checkpoint_task",
    "load_checkpoint",
    "make_metadata",
    "resolve_checkpoint",
]

_DEFAULT_CACHE = Path("~/.cache/attn-suite/checkpoints")


def make_metadata(task: str, **extra: Any) -> dict[str, Any]:
    """Metadata dict to store as ``checkpoint["attn_suite"]`` (values must be weights_only-safe)."""
    return {"task": task, "format": FORMAT_VERSION, **extra}


def cache_dir() -> Path:
    """Download cache: ``$ATTN_SUITE_CACHE`` if set, else ``~/.cache/attn-suite/checkpoints``."""
    env = os.environ.get("ATTN_SUITE_CACHE")
    return Path(env).expanduser() if env else _DEFAULT_CACHE.expanduser()


def _is_url(s: str) -> bool:
    return urllib.parse.urlparse(s).scheme in ("http", "https")


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_hash(path: Path, sha256: str | None, source: str) -> None:
    """Accept a full hex digest or a prefix of at least 8 digits (as ``torch.hub`` does)."""
    sha256 = check_sha256_arg(sha256)
    if sha256 is None:
        return
    got = _sha256_file(path)
    if not got.startswith(sha256):
        raise CheckpointError(f"sha256 mismatch for checkpoint {source}: expected {sha256}, got {got}")


def download_deadline() -> float:
    """Seconds a whole checkpoint download may take: ``$ATTN_SUITE_DOWNLOAD_TIMEOUT`` or 30 minutes."""
    try:
        return max(1.0, float(os.environ.get("ATTN_SUITE_DOWNLOAD_TIMEOUT", "1800")))
    except ValueError:
        return 1800.0


def max_download_bytes() -> int:
    """Largest checkpoint a download may bring: ``$ATTN_SUITE_MAX_DOWNLOAD_MB`` or 4 GiB (a declared or
    streamed body beyond it is refused, so a server cannot fill the disk)."""
    try:
        return max(1, int(float(os.environ.get("ATTN_SUITE_MAX_DOWNLOAD_MB", "4096")) * (1 << 20)))
    except ValueError:
        return 4096 << 20


def _size(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


#: How a checkpoint file starts: ``torch.save``'s zip archive, or its legacy pickle (protocol 2+).
_CHECKPOINT_MAGIC = (b"PK\x03\x04", b"\x80")


def _download(url: str, dst: Path, timeout: float = 60.0, deadline_s: float | None = None) -> None:
    """Stream ``url`` into ``dst`` with an overall deadline and progress on stderr.

    ``timeout`` bounds each network read; a server that keeps sending a trickle of bytes would never trip
    it, so the whole download also has a deadline (``download_deadline()``). Progress goes to stderr every
    few seconds. Module-level so tests can monkeypatch it.

    Raises:
        TimeoutError: the deadline passed (the partial file is removed by the caller).
        CheckpointError: the server sent an HTML page, or declared or sent more than
            ``max_download_bytes()``.
    """
    limit = deadline_s if deadline_s is not None else download_deadline()
    max_bytes = max_download_bytes()
    start = last = time.monotonic()
    with urllib.request.urlopen(url, timeout=timeout) as resp, open(dst, "wb") as out:
        kind = str(resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if kind in ("text/html", "application/xhtml+xml"):
            raise CheckpointError(
                f"could not download checkpoint {url}: the server answered with a web page ({kind}), not a "
                f"checkpoint file (a login, error or preview page? use the file's direct download link)"
            )
        try:
            total = int(resp.headers.get("Content-Length") or 0)
        except ValueError:
            total = 0
        if total > max_bytes:
            raise CheckpointError(
                f"could not download checkpoint {url}: it is {_size(total)}, more than the "
                f"{_size(max_bytes)} allowed; set ATTN_SUITE_MAX_DOWNLOAD_MB to allow more"
            )
        done = 0
        while True:
            # read1: whatever has arrived (at most 1 MiB), so the deadline is checked while bytes trickle in
            chunk = resp.read1(1 << 20) if hasattr(resp, "read1") else resp.read(1 << 16)
            if not chunk:
                break
            out.write(chunk)
            done += len(chunk)
            if done > max_bytes:
                raise CheckpointError(
                    f"could not download checkpoint {url}: more than {_size(max_bytes)} sent; set "
                    f"ATTN_SUITE_MAX_DOWNLOAD_MB to allow more"
                )
            now = time.monotonic()
            if now - start > limit:
                raise TimeoutError(
                    f"the download did not finish within {limit:.0f} s ({done / 1e6:.1f} MB "
                    f"received); set ATTN_SUITE_DOWNLOAD_TIMEOUT (seconds) to allow longer"
                )
            if now - last >= 5.0:
                size = f" of {total / 1e6:.1f}" if total else ""
                print(f"downloading {url}: {done / 1e6:.1f}{size} MB", file=sys.stderr, flush=True)
                last = now


def _remove_stale_parts(folder: Path, age_s: float = 86_400.0) -> None:
    """Delete ``.part-*`` downloads older than a day: what a killed process could not clean up itself."""
    now = time.time()
    for part in folder.glob(".part-*"):
        try:
            if now - part.stat().st_mtime > age_s:
                part.unlink()
        except OSError:
            pass


def resolve_checkpoint(path_or_url: str | os.PathLike[str], sha256: str | None = None) -> Path:
    """Local path of a checkpoint; http(s) URLs are downloaded once into ``cache_dir()``.

    Args:
        path_or_url: a file path or an ``http://`` / ``https://`` URL.
        sha256: optional expected hex digest (or prefix); checked after download and for local files.

    Returns:
        Path to an existing file.

    Raises:
        CheckpointError: missing file, failed download or hash mismatch (message names the source).
    """
    src = os.fspath(path_or_url)
    if _is_url(src):
        name = Path(urllib.parse.urlparse(src).path).name or "checkpoint.ckpt"
        name = re.sub(r"[^A-Za-z0-9._-]", "_", name)
        # URL hash in the name: two URLs with the same basename must not share a cache entry
        dst = cache_dir() / f"{hashlib.sha256(src.encode()).hexdigest()[:16]}-{name}"
        if dst.is_file():
            try:
                _check_hash(dst, sha256, src)
                return dst
            except CheckpointError:
                dst.unlink()  # stale/corrupt cache entry: fetch again
        dst.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_parts(dst.parent)
        # download to a temp file in the same dir, then rename: a crash never leaves a half file as dst
        fd, tmp_name = tempfile.mkstemp(dir=dst.parent, prefix=".part-")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            try:
                _download(src, tmp)
            except (urllib.error.URLError, OSError, ValueError) as err:  # TimeoutError is an OSError
                raise CheckpointError(f"could not download checkpoint {src}: {err}") from None
            _check_hash(tmp, sha256, src)
            with open(tmp, "rb") as f:
                head = f.read(4)
            if not head.startswith(_CHECKPOINT_MAGIC):  # never cache what cannot be a checkpoint
                raise CheckpointError(
                    f"could not download checkpoint {src}: the server sent something that is not a PyTorch "
                    f"checkpoint (it starts with {head!r}); nothing was kept in the cache"
                )
            os.replace(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)
        return dst

    path = Path(src).expanduser()
    if not path.exists():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint path is not a file: {path}")
    _check_hash(path, sha256, str(path))
    return path


def load_checkpoint(
    path_or_url: str | os.PathLike[str],
    expected_task: str | None = None,
    map_location: str | torch.device | None = "cpu",
    sha256: str | None = None,
) -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)`` and validate it.

    Args:
        path_or_url: file path or http(s) URL (see ``resolve_checkpoint``).
        expected_task: if given, ``checkpoint["attn_suite"]["task"]`` must equal it.
        map_location: passed to ``torch.load``.
        sha256: optional expected digest (or prefix) of the file.

    Returns:
        The checkpoint dict.

    Raises:
        CheckpointError: for every user-caused failure; the message names the file.
    """
    path = resolve_checkpoint(path_or_url, sha256=sha256)
    try:
        ckpt = _load_file(path, map_location)
    except CheckpointError:
        if _is_url(os.fspath(path_or_url)):
            path.unlink(missing_ok=True)  # a cached download that is not a usable checkpoint is never reused
        raise
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} is not a checkpoint: expected a dict, got {type(ckpt).__name__}")
    if expected_task is not None:
        task = checkpoint_task(ckpt)
        if task is None:
            raise CheckpointError(
                f"{path} is not an attn-suite checkpoint (no '{META_KEY}' metadata); "
                f"expected a '{expected_task}' checkpoint"
            )
        if task != expected_task:
            raise CheckpointError(f"{path} is a '{task}' checkpoint, expected a '{expected_task}' checkpoint")
    return ckpt


def _load_file(path: Path, map_location: str | torch.device | None) -> Any:
    """``torch.load(path, weights_only=True)``, every failure a ``CheckpointError`` naming the file."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        msg = str(err)
        if "Weights only load failed" in msg:
            # The safe unpickler refused a global: loading would import/call arbitrary Python code.
            detail = next(
                (ln.strip() for ln in msg.splitlines() if "GLOBAL" in ln or "Unsupported" in ln),
                "it contains pickled Python objects",
            )
            raise CheckpointError(
                f"refusing to load checkpoint {path}: it is not a plain weights file and could run code "
                f"when unpickled ({detail}). Only tensors, numbers, strings, lists and dicts are allowed."
            ) from None
        raise CheckpointError(f"could not read checkpoint {path}: not a PyTorch checkpoint ({msg})") from None
    except (RuntimeError, EOFError, OSError, KeyError, ValueError, IndexError, struct.error, zipfile.BadZipFile) as err:
        # zip "central directory" errors (truncated/corrupt files), empty files, random bytes
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(
            f"could not read checkpoint {path}: the file is truncated, corrupt or not a PyTorch checkpoint ({first})"
        ) from None


def checkpoint_task(ckpt: dict[str, Any]) -> str | None:
    """Task name stored in a loaded checkpoint's metadata, or ``None`` if there is none."""
    meta = ckpt.get(META_KEY)
    if isinstance(meta, dict) and isinstance(meta.get("task"), str):
        return meta["task"]
    return None
