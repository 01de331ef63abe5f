"""Training helpers shared by the tasks: figure logging, non-finite loss guard, checkpoints, deadlines.

The optimizer and LR schedules are in :mod:`core.train.schedule`.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn
from matplotlib.figure import Figure

from core.errors import UserError

__all__ = [
    "DeadlineStop",
    "FiniteLossGuard",
    "NonFiniteLossError",
    "NonFiniteLossGuard",
    "RunCheckpoint",
    "empty_batch_loss",
    "finite_loss_or_none",
    "log_figure",
    "trainer_callbacks",
]


def empty_batch_loss(module: pl.LightningModule) -> torch.Tensor | None:
    """What ``training_step`` returns for a batch with nothing left to train on (every row was unusable).

    One process: ``None``, so Lightning skips the step (no optimizer update at all: with AdamW even zero
    gradients would move the weights through momentum and weight decay). Under DDP every rank must run
    backward (the gradient all-reduce is a collective; a rank that skipped it would leave the others
    waiting forever), so a zero loss that reaches every trainable parameter, giving zero gradients.
    """
    trainer = getattr(module, "_trainer", None)
    if trainer is None or trainer.world_size <= 1:
        return None
    zero = torch.zeros((), device=module.device)
    # a Python sum, not torch.stack: parameters may not all share one dtype
    return sum((p.sum() * 0.0 for p in module.parameters() if p.requires_grad), zero)


def trainer_callbacks(trainer: Any) -> list[pl.Callback]:
    """The trainer's own list of callbacks (a change to it applies to the run).

    Lightning's callback connector sets ``Trainer.callbacks`` when the trainer is built, and the class does not
    declare it, so a type checker does not see it on ``lightning.pytorch.Trainer``: it is read here, typed.

    Args:
        trainer: a ``lightning.pytorch.Trainer``.

    Returns:
        ``trainer.callbacks`` itself (not a copy).
    """
    callbacks: list[pl.Callback] = trainer.callbacks
    return callbacks


# ----------------------------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------------------------
def _close(fig: Figure) -> None:
    # core.viz figures never enter pyplot; only ask pyplot to forget figures it might manage
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close(fig)


def log_figure(module: pl.LightningModule, tag: str, fig: Figure, step: int | None = None) -> Path | None:
    """Log ``fig`` under ``tag`` and close it; only on global rank zero.

    Uses the first logger whose ``experiment`` has ``add_figure`` (TensorBoard); otherwise writes
    ``<trainer.log_dir>/figures/<tag>_step<N>.png``. Without a trainer (e.g. a notebook) or with
    logging disabled (``Trainer(logger=False)``) it only closes the figure: no stray files in the cwd.

    Returns:
        The PNG path when a file was written, else ``None``.
    """
    trainer = getattr(module, "_trainer", None)  # .trainer raises when detached
    try:
        if trainer is None or not trainer.is_global_zero or not trainer.loggers:
            return None
        step = int(trainer.global_step if step is None else step)
        for logger in trainer.loggers:
            exp = getattr(logger, "experiment", None)
            if exp is not None and hasattr(exp, "add_figure"):
                exp.add_figure(tag, fig, global_step=step, close=False)
                return None
        # Not `trainer.log_dir`: it broadcasts from rank 0, and only rank 0 gets here (a DDP deadlock).
        logger_dir = getattr(trainer.loggers[0], "log_dir", None) or getattr(trainer.loggers[0], "save_dir", None)
        root = Path(logger_dir or trainer.default_root_dir)
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", tag).strip("_") or "figure"
        from core.viz import save_figure

        return save_figure(fig, root / "figures" / f"{safe}_step{step}.png")
    finally:
        _close(fig)


# ----------------------------------------------------------------------------------------------
# non-finite loss
# ----------------------------------------------------------------------------------------------
class NonFiniteLossError(UserError):
    """Training produced a NaN/Inf loss or gradient (usually LR too high / bad data / fp16 overflow)."""


def _nonfinite_message(trainer: pl.Trainer | None, what: str) -> str:
    where = f" at epoch {trainer.current_epoch}, global step {trainer.global_step}" if trainer else ""
    return (
        f"non-finite {what}{where}; try a lower learning rate, gradient clipping "
        f"(trainer.gradient_clip_val) or 32-bit precision, and check the input data"
    )


def finite_loss_or_none(
    module: pl.LightningModule, loss: torch.Tensor, action: Literal["skip", "stop"] = "skip"
) -> torch.Tensor | None:
    """Return ``loss`` if finite; else ``None`` (Lightning skips the step) or raise ``NonFiniteLossError``.

    Use as ``return finite_loss_or_none(self, loss)`` at the end of ``training_step``. Single-device
    only for ``skip``: under DDP a rank returning ``None`` alone would hang; use ``NonFiniteLossGuard``.
    """
    if bool(torch.isfinite(loss.detach()).all()):
        return loss
    trainer = getattr(module, "_trainer", None)
    msg = _nonfinite_message(trainer, f"loss ({loss.detach().float().mean().item()})")
    if action == "stop":
        raise NonFiniteLossError(msg)
    rank_zero_warn(f"skipping step: {msg}")
    return None


class NonFiniteLossGuard(pl.Callback):
    """Callback that stops NaN/Inf losses from corrupting the weights.

    After backward it checks the gradients (gradients are already all-reduced under DDP, so every rank
    takes the same decision). ``action="skip"`` drops them (``p.grad = None``, so the optimizer step
    leaves the weights alone) and warns; after ``max_consecutive`` skipped steps in a row it stops like
    ``"stop"``. ``action="stop"`` raises ``NonFiniteLossError`` (``core.cli.run`` prints it as ``error:``).
    With 16-bit mixed precision the GradScaler already skips overflowing steps, so the guard stays out
    of its way.

    Cost: one fused norm over all gradients and one host-device sync per step (the skip decision is
    made on the host). That is the price of never letting a NaN reach the weights; with fp16 the
    GradScaler makes the same sync anyway.
    """

    def __init__(self, action: Literal["skip", "stop"] = "skip", max_consecutive: int = 20) -> None:
        super().__init__()
        if action not in ("skip", "stop"):
            raise UserError(f"NonFiniteLossGuard action must be 'skip' or 'stop', got {action!r}")
        self.action = action
        self.max_consecutive = max_consecutive
        self.skipped = 0
        self._consecutive = 0

    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if str(trainer.precision).startswith("16"):
            return
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if not grads:
            return
        # one fused reduction: a norm is non-finite iff some element is
        norms = torch._foreach_norm(grads)
        if bool(torch.isfinite(torch.stack(norms)).all()):
            self._consecutive = 0
            return
        msg = _nonfinite_message(trainer, "loss/gradient")
        if self.action == "stop" or self._consecutive + 1 >= self.max_consecutive:
            trainer.should_stop = True
            raise NonFiniteLossError(
                msg if self.action == "stop" else f"{self._consecutive + 1} consecutive steps with {msg}"
            )
        for p in pl_module.parameters():
            p.grad = None
        self.skipped += 1
        self._consecutive += 1
        rank_zero_warn(f"skipping optimizer step: {msg}")

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))


FiniteLossGuard = NonFiniteLossGuard  # name used in docs/INTERFACES.md


class DeadlineStop(pl.Callback):
    """Stop training once ``time.monotonic()`` passes a deadline.

    Lightning's ``max_time`` counts from the start of ``fit``; a deadline set before it also
    covers corpus generation and setup, which is what a fixed wall-clock budget (the demo) needs.

    Args:
        deadline: a ``time.monotonic()`` value.
    """

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if time.monotonic() >= self.deadline:
            trainer.should_stop = True


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` is always where ``fit --ckpt_path last`` looks for it.

    Three differences from Lightning's class, each a way a resumed run silently restarted from step 0
    or lost steps:

    * with no ``dirpath`` it writes to ``<trainer.default_root_dir>/checkpoints``, not to the logger's
      versioned folder (``lightning_logs/version_N/checkpoints``), where the next run's
      ``--ckpt_path last`` would look into a new, empty ``version_N+1``;
    * ``enable_version_counter`` defaults to False, so two instances (best-by-metric and a rolling one)
      share one ``last.ckpt`` instead of the second writing ``last-v1.ckpt`` next to a stale file;
    * a rolling instance (``every_n_train_steps > 0`` and ``save_last``) also saves the final state when
      training ends (Lightning skips that once the callback has saved before, so a run stopped by
      ``max_steps``/``max_time`` left ``last.ckpt`` up to ``every_n_train_steps`` behind).

    Saves stay atomic (Lightning writes a temporary file and renames it), so a SIGKILL never leaves a
    truncated ``last.ckpt``; only global rank 0 writes.
    """

    def __init__(self, enable_version_counter: bool = False, **kwargs: Any) -> None:
        """Args: ``ModelCheckpoint``'s, by keyword (``dirpath``, ``monitor``, ``save_last``, ...)."""
        super().__init__(enable_version_counter=enable_version_counter, **kwargs)

    def _pin_dirpath(self, trainer: pl.Trainer) -> None:
        if self.dirpath is None:
            self.dirpath = str(Path(trainer.default_root_dir, "checkpoints").resolve())

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._pin_dirpath(trainer)
        super().setup(trainer, pl_module, stage)

    def _find_last_checkpoints(self, trainer: pl.Trainer) -> set[str]:
        # `ckpt_path="last"` is resolved before any callback hook runs.
        self._pin_dirpath(trainer)
        return super()._find_last_checkpoints(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.save_last and self._every_n_train_steps > 0 and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        else:
            super().on_train_end(trainer, pl_module)
