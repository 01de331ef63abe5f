"""The shared inference subcommand: streamed batches, per-input errors in input order, options checked first."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

import core.io.model_folder
from core.cli.infer import InferenceSpec, InputItem, Output, run_inference
from core.errors import DataError, UserError


def _spec(events: list[str], bad: set[int], bad_decode: set[int] = frozenset()) -> InferenceSpec:
    def load(i: int) -> int:
        events.append(f"load {i}")
        if i in bad:
            raise DataError(f"item {i}: unreadable")
        return i

    def inputs(args: argparse.Namespace) -> Any:
        for i in range(args.n):
            yield InputItem(i, f"dir{i % 2}/same.txt", lambda i=i: load(i))

    def decode(model: Any, loaded: list[int], args: argparse.Namespace) -> list[Output]:
        events.append(f"decode {loaded}")
        if any(i in bad_decode for i in loaded):
            raise UserError(f"cannot decode {next(i for i in loaded if i in bad_decode)}")

        def plot(stem: Path, i: int) -> list[Path]:
            path = stem.with_suffix(".png")
            path.write_bytes(b"png")
            return [path]

        return [Output([(f"out {i}",)], lambda s, i=i: plot(s, i)) for i in loaded]

    return InferenceSpec(
        "prog run",
        "test",
        object,
        lambda p: p.add_argument("--n", type=int),
        inputs,
        decode,
        failed_rows=lambda item, args: [("",)],
        batch_size=2,
    )


@pytest.fixture(autouse=True)
def _no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core.io.model_folder, "load_task_model", lambda cls, src, **kw: "model")


def test_inputs_are_read_one_batch_at_a_time_and_printed_in_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events: list[str] = []
    code = run_inference(
        _spec(events, bad={2}, bad_decode={4}), ["--ckpt", "x", "--n", "5", "--plot", str(tmp_path / "p")]
    )
    assert code == 1  # two inputs failed, the others were processed
    # memory does not grow with the number of inputs: batch k is decoded before batch k+1 is read
    assert events == ["load 0", "load 1", "decode [0, 1]", "load 2", "load 3", "decode [3]", "load 4", "decode [4]"]
    out, err = capsys.readouterr()
    assert out.splitlines() == ["out 0", "out 1", "", "out 3", ""]  # failed inputs keep their place
    assert "error: dir0/same.txt: item 2: unreadable" in err and "error: dir0/same.txt: cannot decode 4" in err
    # same base name, one figure each, numbered by input position
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["0000_same.png", "0001_same.png", "0003_same.png"]


def test_a_failing_batch_is_retried_input_by_input(capsys: pytest.CaptureFixture[str]) -> None:
    events: list[str] = []
    assert run_inference(_spec(events, bad=set(), bad_decode={1}), ["--ckpt", "x", "--n", "2"]) == 1
    assert events[-3:] == ["decode [0, 1]", "decode [0]", "decode [1]"]
    assert capsys.readouterr().out.splitlines() == ["out 0", ""]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--beam", "0"], "--beam must be between 1 and 128"),
        (["--beam", "2", "--nbest", "3"], "--nbest must be between 1 and --beam"),
        (["--batch-size", "0"], "--batch-size must be between 1 and 4096"),
        (["--sha256", ""], "8 to 64 hexadecimal digits"),
    ],
)
def test_options_are_checked_before_any_input_is_read(args: list[str], message: str) -> None:
    events: list[str] = []
    with pytest.raises(UserError, match=message):
        run_inference(_spec(events, bad=set()), ["--ckpt", "x", "--n", "3", *args])
    assert events == []
