"""Command-line safety nets shared by the tasks: locks, option checks, downloads, Lightning's own errors."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

import core.io.checkpoint as ckpt_mod
from core.errors import CheckpointError, ConfigError


def test_run_folder_lock_refuses_a_second_fit_and_names_it(tmp_path: Path) -> None:
    from core.cli.task import run_folder_lock

    with run_folder_lock(tmp_path / "run"):
        with pytest.raises(ConfigError, match=rf"in use by another fit \(process {os.getpid()}\)"):
            with run_folder_lock(tmp_path / "run"):
                pass
        with run_folder_lock(tmp_path / "other"):  # another folder is free
            pass
    with run_folder_lock(tmp_path / "run"):  # released when the first fit ended
        pass


def test_two_fits_in_one_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The second `fit` into a folder a running fit holds stops with a clear error instead of mixing checkpoints."""
    from core.cli.task import run_folder_lock
    from tasks.sentiment.cli import main

    config = Path(__file__).resolve().parents[3] / "configs" / "sentiment" / "default.yaml"
    with run_folder_lock(tmp_path / "run"):  # as if another process were training there
        code = main(
            [
                "fit",
                "--config",
                str(config),
                "--trainer.default_root_dir",
                str(tmp_path / "run"),
                "--data.size",
                "100",
                "--trainer.max_epochs",
                "1",
            ]
        )
    assert code == 2 and "is in use by another fit" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_lightning_configuration_errors_are_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tasks.sentiment.cli import main

    config = Path(__file__).resolve().parents[3] / "configs" / "sentiment" / "default.yaml"
    code = main(
        [
            "fit",
            "--config",
            str(config),
            "--trainer.default_root_dir",
            str(tmp_path),
            "--data.size",
            "100",
            "--trainer.max_epochs",
            "-5",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "error: invalid configuration: `max_epochs` must be a non-negative integer or -1" in err


@pytest.mark.parametrize("value", ["", "abc", "zz" * 8, "0" * 65])
def test_sha256_must_be_a_real_digest(value: str) -> None:
    with pytest.raises(CheckpointError, match="8 to 64 hexadecimal digits"):
        ckpt_mod.check_sha256_arg(value)
    assert ckpt_mod.check_sha256_arg("ABCDEF12") == "abcdef12"


class _Trickle:
    """An HTTP response that sends one byte every ``gap`` seconds, forever."""

    headers = {"Content-Length": "1000000"}

    def __init__(self, gap: float) -> None:
        self.gap = gap

    def __enter__(self) -> _Trickle:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def read1(self, n: int) -> bytes:
        time.sleep(self.gap)
        return b"x"


def test_download_has_an_overall_deadline_and_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ATTN_SUITE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ATTN_SUITE_DOWNLOAD_TIMEOUT", "1")
    monkeypatch.setattr(ckpt_mod.urllib.request, "urlopen", lambda url, timeout: _Trickle(0.05))
    start = time.monotonic()
    with pytest.raises(CheckpointError, match="did not finish within 1 s"):
        ckpt_mod.resolve_checkpoint("https://example.org/slow/model.ckpt")
    assert time.monotonic() - start < 10
    assert list((tmp_path / "cache").iterdir()) == []  # no partial file left in the cache


def test_stale_partial_downloads_are_cleaned(tmp_path: Path) -> None:
    old, fresh = tmp_path / ".part-old", tmp_path / ".part-new"
    old.write_bytes(b"x")
    fresh.write_bytes(b"x")
    os.utime(old, (time.time() - 3 * 86_400,) * 2)
    ckpt_mod._remove_stale_parts(tmp_path)
    assert not old.exists() and fresh.exists()  # a download in progress elsewhere is left alone


def test_plot_folder_checked_before_any_work(tmp_path: Path) -> None:
    from core.cli.infer import check_plot_dir

    (tmp_path / "file.txt").write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError, match="exists and is not a folder"):
        check_plot_dir(str(tmp_path / "file.txt"))
    with pytest.raises(ConfigError, match="cannot write figures there"):
        check_plot_dir(str(tmp_path / "file.txt" / "sub"))
    assert check_plot_dir(str(tmp_path / "new" / "plots")) == tmp_path / "new" / "plots"
    assert check_plot_dir(None) is None
