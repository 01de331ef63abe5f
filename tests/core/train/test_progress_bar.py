"""The training progress bar shows throughput in the task's unit and the time to the next validation."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar

from core.train.module import TaskModule
from core.train.progress_bar import (
    ThroughputProgressBar,
    ThroughputRichProgressBar,
    format_seconds,
    with_throughput,
)
from core.train.task import Objective, Stage, Task


class _WordsTask(Task[torch.nn.Linear, Any]):
    unit = "tok"

    def build_network(self) -> torch.nn.Linear:
        return torch.nn.Linear(2, 1)

    def batch_units(self, batch: Any) -> float:
        return float(batch[0].shape[0] * 10)  # 10 "tokens" per row, counted on the host

    def objective(self, network: torch.nn.Linear, batch: Any, stage: Stage) -> Objective:
        return Objective(network(batch[0]).pow(2).mean(), size=len(batch[0]))


class _Words(TaskModule[torch.nn.Linear]):
    TASK, MONITOR = "words", "val/loss"

    def __init__(self, optimizer: str = "sgd", lr: float = 0.01) -> None:
        super().__init__(_WordsTask())
        self.save_hyperparameters()


def test_bar_reports_units_per_second_and_next_validation() -> None:
    seen: list[dict[str, Any]] = []

    class Probe(ThroughputProgressBar):
        def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
            items = super().get_metrics(trainer, pl_module)
            seen.append(items)
            return items

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(64, 2)), batch_size=4)
    trainer = pl.Trainer(
        max_steps=12,
        val_check_interval=8,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[Probe()],
    )
    model = _Words()
    trainer.fit(model, data, data)
    assert model.last_batch_units == 40.0
    with_rate = [m for m in seen if "tok/s" in m]
    assert with_rate and all(float(m["tok/s"]) > 0 for m in with_rate)
    assert any("next val" in m for m in seen)


def test_defaults_are_swapped_and_custom_bars_kept() -> None:
    assert type(with_throughput(RichProgressBar())) is ThroughputRichProgressBar
    assert type(with_throughput(TQDMProgressBar(refresh_rate=5))) is ThroughputProgressBar
    mine = type("Mine", (TQDMProgressBar,), {})()
    assert with_throughput(mine) is mine
    assert format_seconds(125.3) == "2:05" and format_seconds(3725) == "1:02:05"
