"""core.io.jsonio: JSON from strangers is bounded in size, depth and number length, and read from regular files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.errors import UserError
from core.io.jsonio import loads_untrusted, read_json


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 200_000 + "]" * 200_000, "nested too deeply"),
        ("[" * 65 + "]" * 65, "nested more than 64 levels"),
        ("9" * 5000, "a value cannot be read"),
        ("{", "not valid JSON"),
        (b"\xff\xfe", "not"),
    ],
)
def test_hostile_text_is_a_user_error(text: str | bytes, message: str) -> None:
    with pytest.raises(UserError, match=message):
        loads_untrusted(text, "x.json")


def test_files(tmp_path: Path) -> None:
    ok = tmp_path / "ok.json"
    ok.write_text('{"a": [1, 2, {"b": null}]}', encoding="utf-8")
    assert read_json(ok) == {"a": [1, 2, {"b": None}]}
    with pytest.raises(UserError, match="file not found"):
        read_json(tmp_path / "missing.json")
    link = tmp_path / "zero.json"
    os.symlink("/dev/zero", link)  # would never end if read to its end
    with pytest.raises(UserError, match="not a regular file"):
        read_json(link)
