"""Reading JSON that came from someone else: size, nesting depth and number length bounded.

``json.loads`` alone turns a 200,000-deep ``[[[[...`` into a ``RecursionError`` and a 5,000-digit integer
into a ``ValueError`` about Python's integer-string limit; a file just under those limits still makes every
later recursive walk (``core.io.hparams.check_plain``, ``json.dumps``) fail. Every file a user or a stranger
hands us (``config.json``, tokenizer files, ``--metrics``, an app's summary) is read through
:func:`loads_untrusted` / :func:`read_json`, which answer each of these with a ``UserError`` naming the
file.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from core.errors import UserError

__all__ = ["MAX_JSON_BYTES", "MAX_JSON_DEPTH", "check_depth", "loads_untrusted", "read_json"]

MAX_JSON_BYTES = 64 << 20  # a config, tokenizer or metrics file larger than this is not one of ours
MAX_JSON_DEPTH = 64  # ours nest at most ~8 deep (a tokenizer.json's pre-tokenizer sequence)


def check_depth(value: Any, what: str, limit: int = MAX_JSON_DEPTH) -> None:
    """``UserError`` naming ``what`` when ``value`` nests deeper than ``limit`` (an iterative walk: no
    recursion, so it cannot itself overflow the stack)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise UserError(f"{what}: nested more than {limit} levels deep (not a file this suite writes)")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def loads_untrusted(text: str | bytes, what: str, depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` for text from a file or a request; every failure is a ``UserError`` naming ``what``.

    Args:
        text: the JSON text.
        what: the source for messages (e.g. ``"model folder m: config.json"``).
        depth: the deepest nesting accepted.

    Raises:
        UserError: not JSON, too deep, or a number too long for Python's integer conversion.
    """
    if len(text) > MAX_JSON_BYTES:
        raise UserError(f"{what}: larger than {MAX_JSON_BYTES >> 20} MB")
    try:
        value = json.loads(text)
    except RecursionError:
        raise UserError(f"{what}: nested too deeply to be read (not a file this suite writes)") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{what}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{what}: not valid JSON ({err})") from None
    except ValueError as err:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
        raise UserError(f"{what}: a value cannot be read ({err})") from None
    check_depth(value, what, depth)
    return value


def read_json(path: str | Path, what: str | None = None, depth: int = MAX_JSON_DEPTH) -> Any:
    """Read and parse the JSON file ``path`` with :func:`loads_untrusted`'s limits.

    Raises:
        UserError: missing, unreadable, too large, not UTF-8 or not acceptable JSON (names the file).
    """
    path = Path(path)
    what = what or str(path)
    try:
        with open(path, "rb") as f:
            # a regular file only: a symlink to /dev/zero or a FIFO would never end
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise UserError(f"{what}: not a regular file")
            data = f.read(MAX_JSON_BYTES + 1)  # bounded even if the file grows while it is read
        if len(data) > MAX_JSON_BYTES:
            raise UserError(f"{what}: larger than {MAX_JSON_BYTES >> 20} MB")
    except FileNotFoundError:
        raise UserError(f"{what}: file not found") from None
    except OSError as err:
        raise UserError(f"{what}: cannot be read ({err.strerror or err})") from None
    return loads_untrusted(data, what, depth)
