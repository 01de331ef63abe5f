"""Tests for core.cli.run: UserError -> 'error: ...' on stderr, exit status 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from core.cli.run import run_cli
from core.errors import CheckpointError, UserError


def _main_user_error(argv: Sequence[str] | None) -> int:
    raise UserError(f"data.tsv line 3: expected 2 tab-separated fields, got {len(argv or [])}")


def test_run_cli_user_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(_main_user_error, ["a"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: data.tsv line 3: expected 2 tab-separated fields, got 1"
    assert "Traceback" not in err


def test_run_cli_checkpoint_error_and_codes(capsys: pytest.CaptureFixture[str]) -> None:
    def bad_ckpt(argv: Sequence[str] | None) -> int:
        raise CheckpointError("checkpoint file not found: /x/y.ckpt")

    assert run_cli(bad_ckpt, []) == 2
    assert "error: checkpoint file not found: /x/y.ckpt" in capsys.readouterr().err
    assert run_cli(lambda argv: 0, []) == 0
    assert run_cli(lambda argv: None, []) == 0
    assert run_cli(lambda argv: 3, []) == 3

    def exits(argv: Sequence[str] | None) -> int:
        raise SystemExit(2)  # what argparse does on a usage error

    assert run_cli(exits, []) == 2


def test_bugs_still_raise() -> None:
    def buggy(argv: Sequence[str] | None) -> int:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        run_cli(buggy, [])


def test_user_errors_context_manager_subprocess() -> None:
    code = (
        "from core.cli.run import user_errors\n"
        "from core.errors import UserError\n"
        "with user_errors():\n"
        "    raise UserError('config.yaml field model.hidden: expected a positive int')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: config.yaml field model.hidden: expected a positive int"
    assert "Traceback" not in proc.stderr


def test_parse_device_errors_are_user_errors() -> None:
    import torch

    from core.cli.run import parse_device
    from core.errors import ConfigError

    assert parse_device("cpu") == "cpu"
    assert parse_device("cpu:0") == "cpu:0"
    with pytest.raises(ConfigError, match="not a torch device"):
        parse_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            parse_device("cuda")
    else:
        with pytest.raises(ConfigError, match="CUDA device"):
            parse_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--device", "gpu0", "error: --device 'gpu0'"),
        ("--threads", "0", "error: --threads must be between 1 and 1024, got 0"),
    ],
)
def test_inference_clis_bad_options_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, message: str
) -> None:
    from tasks.captioning.cli import main as caption
    from tasks.speech.cli import main as asr
    from tasks.translation.cli import main as translate

    ckpt = tmp_path / "x.ckpt"
    ckpt.write_bytes(b"not read: the options are checked first")
    for main, argv in (
        (translate, ["translate", "--ckpt", str(ckpt), option, value, "hi"]),
        (caption, ["caption", "--ckpt", str(ckpt), option, value, "a.png"]),
        (asr, ["transcribe", "--ckpt", str(ckpt), option, value, "a.wav"]),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
