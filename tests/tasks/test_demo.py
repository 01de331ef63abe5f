"""Tests for the suite-wide demo entry point (tasks/demo.py)."""

from __future__ import annotations

import os

import pytest

from tasks import demo


def test_auto_threads_leaves_busy_cores_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    cores = len(os.sched_getaffinity(0))
    monkeypatch.setattr(demo, "_busy_cores", lambda: 0.2)
    assert demo.auto_threads() == cores
    monkeypatch.setattr(demo, "_busy_cores", lambda: 1.0)
    assert demo.auto_threads() == max(1, cores - 1)
    monkeypatch.setattr(demo, "_busy_cores", lambda: cores + 3.0)
    assert demo.auto_threads() == 1  # never zero


def test_busy_cores_reads_proc_stat() -> None:
    busy = demo._busy_cores(0.05)
    assert 0.0 <= busy <= (os.cpu_count() or 1) + 1e-6
