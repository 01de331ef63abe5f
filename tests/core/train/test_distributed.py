"""Tests for core.train.distributed (single process; the DDP path is exercised by the tasks' 2-process tests)."""

from __future__ import annotations

import pytest
import torch

from core.train.distributed import gather_objects


def test_gather_objects_single_process_is_identity() -> None:
    items = [(1, "a"), (0, "b")]
    assert gather_objects(items) is items


def test_gather_objects_concatenates_in_rank_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.distributed, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 3)

    def fake_all_gather(dst: list, obj: object) -> None:
        dst[:] = [["r0"], [], ["r2a", "r2b"]]  # rank 1 had nothing: still takes part

    monkeypatch.setattr(torch.distributed, "all_gather_object", fake_all_gather)
    assert gather_objects(["mine"]) == ["r0", "r2a", "r2b"]
