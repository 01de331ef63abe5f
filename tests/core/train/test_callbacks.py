"""Tests for core.train.callbacks: LR schedule shapes, figure logging, non-finite loss guard, RunCheckpoint."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from matplotlib.figure import Figure

from core.errors import UserError
from core.train.callbacks import (
    NonFiniteLossError,
    NonFiniteLossGuard,
    RunCheckpoint,
    finite_loss_or_none,
    log_figure,
)
from core.train.schedule import build_scheduler, lr_lambda


def test_inverse_sqrt_shape() -> None:
    f = lr_lambda(warmup_steps=10, schedule="inverse_sqrt")
    vals = [f(s) for s in range(100)]
    assert vals[0] == pytest.approx(0.1) and vals[9] == pytest.approx(1.0)
    assert all(a < b for a, b in itertools.pairwise(vals[:10]))  # warmup increases
    assert all(a > b for a, b in itertools.pairwise(vals[10:]))  # then decays
    assert f(39) == pytest.approx(math.sqrt(10 / 40))


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_decay_to_min(schedule: str) -> None:
    f = lr_lambda(warmup_steps=5, schedule=schedule, total_steps=105, min_ratio=0.1)
    assert f(4) == pytest.approx(1.0)
    assert f(5) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.55)  # half way: cosine and linear agree at the midpoint
    assert f(105) == pytest.approx(0.1) and f(10_000) == pytest.approx(0.1)
    assert lr_lambda(3, "constant")(500) == 1.0


def test_schedule_errors_and_state_dict() -> None:
    with pytest.raises(UserError, match="total_steps"):
        lr_lambda(10, "cosine")
    with pytest.raises(UserError, match="not one of"):
        lr_lambda(10, "exp")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=1.0)
    cfg = build_scheduler(opt, warmup_steps=4)
    assert cfg["interval"] == "step" and opt.param_groups[0]["lr"] == pytest.approx(0.25)
    state = cfg["scheduler"].state_dict()
    torch.save(state, "/dev/null")  # plain fields, no closure
    assert state["lr_lambdas"][0]["warmup_steps"] == 4


class _Tiny(pl.LightningModule):
    def __init__(self, nan_at: int = -1) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(2, 1)
        self.nan_at = nan_at

    def training_step(self, batch: tuple[torch.Tensor], idx: int) -> torch.Tensor:
        loss = self.lin(batch[0]).pow(2).mean()
        if idx == self.nan_at:
            loss = loss * float("nan")
        if idx == 0:
            fig = Figure()
            fig.add_subplot().plot([0, 1])
            log_figure(self, "val/align", fig)
        return loss

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)), batch_size=2)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer(tmp_path: Path, guard: NonFiniteLossGuard, tensorboard: bool = False) -> pl.Trainer:
    logger = TensorBoardLogger(tmp_path) if tensorboard else CSVLogger(tmp_path)
    return pl.Trainer(
        max_steps=4,
        logger=logger,
        callbacks=[guard],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        accelerator="cpu",
        devices=1,
    )


def test_guard_skip_keeps_weights_finite_and_png_fallback(tmp_path: Path) -> None:
    model, guard = _Tiny(nan_at=2), NonFiniteLossGuard("skip")
    with pytest.warns(UserWarning, match="skipping optimizer step"):
        _trainer(tmp_path, guard).fit(model)
    assert guard.skipped == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert list(tmp_path.rglob("figures/val_align_step0.png"))


def test_guard_stop(tmp_path: Path) -> None:
    with pytest.raises(NonFiniteLossError, match="non-finite"):
        _trainer(tmp_path, NonFiniteLossGuard("stop")).fit(_Tiny(nan_at=1))


def test_finite_loss_or_none() -> None:
    m = _Tiny()
    assert finite_loss_or_none(m, torch.tensor(1.0)) is not None
    with pytest.warns(UserWarning):
        assert finite_loss_or_none(m, torch.tensor(float("inf"))) is None
    with pytest.raises(NonFiniteLossError):
        finite_loss_or_none(m, torch.tensor(float("nan")), action="stop")
    log_figure(m, "x", Figure())  # detached module: no crash, nothing written


def test_log_figure_tensorboard(tmp_path: Path) -> None:
    _trainer(tmp_path, NonFiniteLossGuard(), tensorboard=True).fit(_Tiny())
    assert list(tmp_path.rglob("events.out.tfevents.*"))
    assert not list(tmp_path.rglob("figures/*.png"))  # went to TensorBoard, not to a PNG


def test_log_figure_without_logger_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    trainer = pl.Trainer(
        max_steps=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(_Tiny())
    assert not list(tmp_path.rglob("*.png"))


def test_deadline_stop_sets_should_stop_only_after_deadline() -> None:
    import time
    from types import SimpleNamespace

    from core.train.callbacks import DeadlineStop

    trainer = SimpleNamespace(should_stop=False)
    DeadlineStop(time.monotonic() + 60).on_train_batch_end(trainer)
    assert trainer.should_stop is False
    DeadlineStop(time.monotonic() - 1).on_train_batch_end(trainer)
    assert trainer.should_stop is True


def test_run_checkpoint_shares_last_in_run_dir_and_saves_final_state(tmp_path: Path) -> None:
    def fit(max_steps: int, ckpt_path: str | None = None) -> None:
        # A versioned logger folder is where plain ModelCheckpoint would write (and a new run looks).
        trainer = pl.Trainer(
            max_steps=max_steps,
            default_root_dir=tmp_path,
            logger=CSVLogger(tmp_path),
            accelerator="cpu",
            callbacks=[
                RunCheckpoint(save_last=True, monitor="train_loss_missing", save_top_k=0),
                RunCheckpoint(every_n_train_steps=3, save_top_k=0, save_last=True),
            ],
            enable_progress_bar=False,
            enable_model_summary=False,
            devices=1,
        )
        trainer.fit(_Tiny(), ckpt_path=ckpt_path)

    fit(5)  # rolling save at step 3, then the final state at step 5 (plain Lightning would stop at 3)
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 5
    fit(4 + 5, ckpt_path="last")  # a new run (new logger version) finds it and continues
    assert torch.load(last, weights_only=True)["global_step"] == 9
    assert sorted(p.name for p in tmp_path.rglob("*.ckpt")) == ["last.ckpt"]  # no last-v1.ckpt


def test_ensure_resumable_replaces_lightning_default_checkpoint_only(tmp_path: Path) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    from core.cli.run import ensure_resumable

    def trainer(**kw: object) -> pl.Trainer:
        return pl.Trainer(
            max_steps=1,
            default_root_dir=tmp_path,
            logger=False,
            accelerator="cpu",
            devices=1,
            enable_progress_bar=False,
            enable_model_summary=False,
            **kw,
        )

    plain = trainer()  # what a config without our callbacks gets: Lightning's versioned-folder checkpoint
    assert ensure_resumable(plain, monitor="val/bleu") == ["RunCheckpoint", "NonFiniteLossGuard"]
    kinds = [type(cb).__name__ for cb in plain.callbacks if isinstance(cb, ModelCheckpoint)]
    assert kinds == ["RunCheckpoint", "RunCheckpoint"]
    assert ensure_resumable(plain, monitor="val/bleu") == []  # idempotent
    mine = ModelCheckpoint(dirpath=tmp_path / "mine", monitor="val/x")
    custom = trainer(callbacks=[mine])
    assert ensure_resumable(custom, monitor="val/bleu") == ["NonFiniteLossGuard"]  # the user's choice stays
    assert custom.checkpoint_callback is mine
    off = trainer(enable_checkpointing=False)
    assert ensure_resumable(off, monitor="val/bleu") == ["NonFiniteLossGuard"]
    assert not any(isinstance(cb, ModelCheckpoint) for cb in off.callbacks)


def test_log_figure_png_path_needs_no_collective(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Only rank 0 logs figures; anything that broadcasts (e.g. `trainer.log_dir`) would hang DDP.
    trainer = _trainer(tmp_path, NonFiniteLossGuard())
    model = _Tiny()
    model.trainer = trainer
    monkeypatch.setattr(type(trainer.strategy), "broadcast", lambda *a, **k: pytest.fail("broadcast on one rank"))
    fig = Figure()
    fig.add_subplot().plot([0, 1])
    path = log_figure(model, "val/x", fig, step=3)
    assert path is not None and path.is_file() and path.name == "val_x_step3.png"


def test_schedule_problems_name_what_cannot_fit() -> None:
    from core.train.schedule import schedule_problems

    assert schedule_problems(1000, warmup_steps=50, decay_total=1100, val_every=200, checkpoint_every=100) == []
    probs = schedule_problems(460, warmup_steps=1000, decay_total=20000, val_every=500, checkpoint_every=500)
    text = " ".join(probs)
    assert len(probs) == 4 and "warm-up (1000 steps)" in text and "20000 steps" in text
    assert "validation every 500 steps runs 0 time(s)" in text and "written 0 time(s)" in text


def test_schedule_check_warns_for_a_gpu_schedule_on_a_slow_run(tmp_path) -> None:
    """A 1,000-step warm-up and 500-step validation under a short max_time: one warning naming both."""
    import time as _time

    import lightning.pytorch as pl
    import torch

    from core.train.schedule import ScheduleCheck

    class Slow(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.save_hyperparameters({"warmup_steps": 1000, "lr_schedule": "inverse_sqrt"})
            self.lin = torch.nn.Linear(2, 1)

        def training_step(self, batch, idx):
            _time.sleep(0.02)
            return self.lin(batch[0]).pow(2).mean()

        def validation_step(self, batch, idx) -> None:
            pass

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(2000, 2)), batch_size=1)
    check = ScheduleCheck(measure=10, skip=2)
    trainer = pl.Trainer(
        max_time={"seconds": 20},
        max_steps=30,
        val_check_interval=500,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[check],
        limit_val_batches=1,
        num_sanity_val_steps=0,
    )
    with pytest.warns(UserWarning, match="optimizer steps per minute"):
        trainer.fit(Slow(), data, data)
    assert check.steps_per_minute and 100 < check.steps_per_minute < 3100
    assert any("warm-up (1000 steps)" in p for p in check.problems)
    assert any("validation every 500 steps" in p for p in check.problems)
