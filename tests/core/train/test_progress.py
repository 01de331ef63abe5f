"""Tests for core.train.progress: progress events, the board that draws them, the time-budget Lightning bar."""

from __future__ import annotations

import io
import time
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from core.train.callbacks import DeadlineStop
from core.train.progress import BudgetProgressBar, ProgressBoard, StageProgress


class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.lin(x), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_budget_bar_reports_time_steps_and_loss_across_epochs() -> None:
    events: list[dict[str, Any]] = []
    data = DataLoader(TensorDataset(torch.randn(16, 4), torch.randn(16, 1)), batch_size=4)  # 4 steps per epoch
    bar = BudgetProgressBar(events.append, "tiny", budget_s=60.0, interval_s=0.0)
    trainer = L.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[bar],
    )
    trainer.fit(_Tiny(), data)
    assert trainer.progress_bar_callback is bar  # Lightning uses it as the progress bar
    assert all(e["task"] == "tiny" and e["stage"] == "training" and e["total"] == 60.0 for e in events)
    steps = [e["postfix"]["step"] for e in events]
    assert steps == sorted(steps) and steps[-1] == 12  # one bar over all three epochs, not one per epoch
    assert events[-1]["done"] and not any(e["done"] for e in events[:-1])
    assert "loss" in events[-1]["postfix"] and 0 <= events[-1]["n"] <= 60.0


def test_budget_bar_with_a_deadline_stops_mid_epoch() -> None:
    events: list[dict[str, Any]] = []
    data = DataLoader(TensorDataset(torch.randn(4000, 4), torch.randn(4000, 1)), batch_size=1)
    start = time.monotonic()
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[DeadlineStop(start + 1.0), BudgetProgressBar(events.append, "t", 1.0, start)],
    )
    trainer.fit(_Tiny(), data)
    assert trainer.global_step < 4000 and events[-1]["done"] and events[-1]["n"] <= 1.0


def test_stage_progress_throttles_but_always_reports_the_end() -> None:
    events: list[dict[str, Any]] = []
    with StageProgress(events.append, "speech", "scoring", 100, "utterances", interval_s=3600) as prog:
        for _ in range(100):
            prog.update(1, done_so_far="x")
    assert len(events) == 2  # the first update, then the close
    assert events[-1]["done"] and events[-1]["n"] == 100 and events[-1]["postfix"] == {"done_so_far": "x"}


def test_board_writes_lines_to_a_log_file() -> None:
    out = io.StringIO()  # not a terminal: periodic plain lines, no carriage returns
    board = ProgressBoard(out, log_interval_s=3600)
    for n in range(5):
        board(
            {
                "task": "captioning",
                "stage": "training",
                "n": n,
                "total": 10,
                "unit": "s",
                "postfix": {"step": n, "loss": 1.23456},
            }
        )
    board(
        {
            "task": "captioning",
            "stage": "training",
            "n": 10,
            "total": 10,
            "unit": "s",
            "postfix": {"step": 9},
            "done": True,
        }
    )
    board.write("captioning: met")
    lines = out.getvalue().splitlines()
    assert lines == [
        "captioning: training 0/10 s ... step=0, loss=1.23",
        "captioning: training 10/10 s done step=9",
        "captioning: met",
    ]
    assert "\r" not in out.getvalue()
