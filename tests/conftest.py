"""Suite-wide test settings and shared fixtures."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import matplotlib
import pytest
import torch

# Headless plotting everywhere (CI has no display).
matplotlib.use("Agg")

# Under pytest-xdist every worker is its own process: one intra-op thread each keeps
# `-n 2` on a 2-core machine from oversubscribing the cores (4 threads fighting for 2).
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """One intra-op thread per test, also without xdist: the test machine is small and shared, and
    more runnable threads than cores stall every parallel op (and code under test may change it)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def user_error(capsys: pytest.CaptureFixture[str]) -> Callable[[], str]:
    """Reads stderr of a CLI call that failed with a user error: exactly one ``error:`` line, no
    traceback; returns that line."""

    def read() -> str:
        err = capsys.readouterr().err
        assert "Traceback" not in err, err
        lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
        assert len(lines) == 1, err
        return lines[0]

    return read


class Evil:
    """Unpickling this would call ``os.makedirs`` on a marker path (i.e. run code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


class BadCheckpoints:
    """Writes unusable checkpoints of each kind into a folder; ``expected(kind, task)`` is the message part.

    Kinds: ``missing`` (never written), ``truncated``, ``corrupt`` (zip-like junk), ``not-a-checkpoint``
    (text), ``unsafe`` (a pickle that would create ``<folder>/pwned``) and ``other-task``.
    """

    kinds = ("missing", "truncated", "corrupt", "not-a-checkpoint", "unsafe", "other-task")

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.marker = folder / "pwned"

    @staticmethod
    def other(task: str) -> str:
        return "captioning" if task == "translation" else "translation"

    def __call__(self, kind: str, task: str) -> Path:
        from core.io.checkpoint import make_metadata

        path = self.folder / f"{kind}.ckpt"
        if kind == "truncated":
            torch.save({"state_dict": {"w": torch.ones(64)}, "attn_suite": make_metadata(task)}, path)
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
        elif kind == "corrupt":
            path.write_bytes(b"PK\x03\x04 not really a zip" * 10)
        elif kind == "not-a-checkpoint":
            path.write_text("this is not a checkpoint\n", encoding="utf-8")
        elif kind == "unsafe":
            torch.save({"state_dict": {}, "attn_suite": make_metadata(task), "x": Evil(self.marker)}, path)
        elif kind == "other-task":
            torch.save({"state_dict": {}, "attn_suite": make_metadata(self.other(task))}, path)
        elif kind != "missing":
            raise ValueError(kind)
        return path

    def expected(self, kind: str, task: str) -> str:
        return {
            "missing": "checkpoint file not found",
            "truncated": "truncated, corrupt or not a PyTorch checkpoint",
            "corrupt": "truncated, corrupt or not a PyTorch checkpoint",
            "not-a-checkpoint": "truncated, corrupt or not a PyTorch checkpoint",
            "unsafe": "could run code",
            "other-task": f"is a '{self.other(task)}' checkpoint, expected a '{task}' checkpoint",
        }[kind]


@pytest.fixture
def bad_checkpoints(tmp_path: Path) -> Iterator[BadCheckpoints]:
    """`BadCheckpoints` in ``tmp_path``; fails the test if the unsafe pickle ever ran."""
    maker = BadCheckpoints(tmp_path)
    yield maker
    assert not maker.marker.exists(), "the pickled payload was executed"


@pytest.fixture(params=BadCheckpoints.kinds)
def bad_checkpoint_kind(request: pytest.FixtureRequest) -> str:
    """Parametrizes a test over every `BadCheckpoints` kind."""
    return request.param
