"""Training helpers shared by the tasks: LR schedules, figure logging, non-finite loss guard, checkpoints."""

from __future__ import annotations

import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn
from matplotlib.figure import Figure
from torch.optim.lr_scheduler import LambdaLR

from core.errors import UserError

__all__ = [
    "DeadlineStop",
    "OPTIMIZERS",
    "configure_optimizer",
    "empty_batch_loss",
    "RunCheckpoint",
    "SCHEDULES",
    "FiniteLossGuard",
    "NonFiniteLossError",
    "NonFiniteLossGuard",
    "WarmupSchedule",
    "build_scheduler",
    "finite_loss_or_none",
    "log_figure",
    "lr_lambda",
]

SCHEDULES = ("inverse_sqrt", "cosine", "linear", "constant")
OPTIMIZERS = ("adamw", "adam", "sgd")


@dataclass
class WarmupSchedule:
    """LR multiplier: linear warmup over ``warmup_steps``, then the chosen decay.

    A dataclass rather than a closure so ``LambdaLR.state_dict()`` stores its plain fields (closures
    are dropped) and the checkpoint stays ``weights_only``-loadable.

    Attributes:
        warmup_steps: steps of linear warmup (multiplier ``(step + 1) / warmup_steps``).
        schedule: ``inverse_sqrt`` (``sqrt(warmup / step)``), ``cosine`` / ``linear`` (to ``min_ratio`` at
            ``total_steps``) or ``constant``.
        total_steps: required by cosine / linear.
        min_ratio: floor of the cosine / linear decay.
    """

    warmup_steps: int = 0
    schedule: str = "inverse_sqrt"
    total_steps: int | None = None
    min_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise UserError(f"lr schedule {self.schedule!r} is not one of {', '.join(SCHEDULES)}")
        if self.warmup_steps < 0:
            raise UserError(f"lr warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.schedule in ("cosine", "linear") and not self.total_steps:
            raise UserError(f"lr schedule {self.schedule!r} needs total_steps > 0")

    def __call__(self, step: int) -> float:
        """Multiplier of the base LR at optimizer step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps  # never 0: the very first update already moves
        if self.schedule == "constant":
            return 1.0
        if self.schedule == "inverse_sqrt":
            return math.sqrt(max(self.warmup_steps, 1) / (step + 1))  # == 1 right after warmup
        assert self.total_steps is not None
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min(max((step - self.warmup_steps) / span, 0.0), 1.0)
        decay = 0.5 * (1.0 + math.cos(math.pi * progress)) if self.schedule == "cosine" else 1.0 - progress
        return self.min_ratio + (1.0 - self.min_ratio) * decay


def lr_lambda(warmup_steps: int = 0, schedule: str = "inverse_sqrt", total_steps: int | None = None,
              min_ratio: float = 0.0) -> WarmupSchedule:
    """Factory for a ``LambdaLR`` multiplier (see ``WarmupSchedule``)."""
    return WarmupSchedule(warmup_steps, schedule, total_steps, min_ratio)


def build_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int = 0, schedule: str = "inverse_sqrt",
                    total_steps: int | None = None, min_ratio: float = 0.0) -> dict[str, Any]:
    """Lightning ``lr_scheduler`` config (stepped every optimizer step) for ``configure_optimizers``.

    Example:
        ``return {"optimizer": opt, "lr_scheduler": build_scheduler(opt, 400, "inverse_sqrt")}``
    """
    sched = LambdaLR(optimizer, lr_lambda(warmup_steps, schedule, total_steps, min_ratio))
    return {"scheduler": sched, "interval": "step", "frequency": 1, "name": "lr"}


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


def configure_optimizer(module: pl.LightningModule, groups: list[tuple[list[torch.nn.Parameter], float]] | None = None
                        ) -> dict[str, Any]:
    """``configure_optimizers`` of every task, from the module's typed hyper-parameters.

    Reads ``optimizer`` (adamw / adam / sgd), ``lr``, ``weight_decay``, ``betas``, ``eps``, ``warmup_steps``,
    ``lr_schedule`` and ``min_lr_ratio`` from ``module.hparams``. Biases and normalisation weights (1-D
    parameters) get no weight decay. AdamW/Adam use their fused kernels on CUDA (one launch for all
    parameters). Cosine/linear decay run over the trainer's step budget; without one they fall back to
    inverse-sqrt with a warning. (LightningCLI's own ``--optimizer``/``--lr_scheduler`` still override all
    of this when given.)

    Args:
        module: the LightningModule.
        groups: ``[(parameters, lr multiplier)]``, e.g. a pretrained encoder at a lower LR; default all
            trainable parameters at ``lr``. Given groups are used as they are, also parameters frozen now
            (``requires_grad=False``): a freeze schedule (``core.finetune``) may unfreeze them later, and the
            optimizer skips a parameter while it has no gradient.

    Returns:
        Lightning's ``{"optimizer": ..., "lr_scheduler": ...}``.
    """
    hp = module.hparams
    if groups is None:
        groups = [([p for p in module.parameters() if p.requires_grad], 1.0)]
    param_groups = []
    names = {id(p): n for n, p in module.named_parameters()}
    for params, scale in groups:
        decay = [p for p in params if p.dim() >= 2 and "norm" not in names.get(id(p), "")]
        no_decay = [p for p in params if not (p.dim() >= 2 and "norm" not in names.get(id(p), ""))]
        for ps, wd in ((decay, hp.weight_decay), (no_decay, 0.0)):
            if ps:
                param_groups.append({"params": ps, "lr": hp.lr * scale, "weight_decay": wd})
    kind = getattr(hp, "optimizer", "adamw")
    if kind not in OPTIMIZERS:
        raise UserError(f"optimizer {kind!r} is not one of {', '.join(OPTIMIZERS)}")
    if kind == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(param_groups, lr=hp.lr, momentum=0.9, nesterov=True)
    else:
        cls = torch.optim.AdamW if kind == "adamw" else torch.optim.Adam
        opt = cls(param_groups, lr=hp.lr, betas=tuple(hp.betas), eps=hp.eps, fused=module.device.type == "cuda")
    schedule, total = hp.lr_schedule, None
    if schedule in ("cosine", "linear"):
        trainer = getattr(module, "_trainer", None)
        est = trainer.estimated_stepping_batches if trainer is not None else None
        if est is None or not math.isfinite(est):
            rank_zero_warn(f"lr_schedule={schedule} needs a step budget (trainer.max_steps/max_epochs); "
                           f"using inverse_sqrt")
            schedule = "inverse_sqrt"
        else:
            total = int(est)
    return {"optimizer": opt,
            "lr_scheduler": build_scheduler(opt, hp.warmup_steps, schedule, total, hp.min_lr_ratio)}


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
    return (f"non-finite {what}{where}; try a lower learning rate, gradient clipping "
            f"(trainer.gradient_clip_val) or 32-bit precision, and check the input data")


def finite_loss_or_none(module: pl.LightningModule, loss: torch.Tensor,
                        action: Literal["skip", "stop"] = "skip") -> torch.Tensor | None:
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
    ``"stop"``. ``action="stop"`` raises ``NonFiniteLossError`` (``core.cli`` prints it as ``error:``).
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
            raise NonFiniteLossError(msg if self.action == "stop"
                                     else f"{self._consecutive + 1} consecutive steps with {msg}")
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

    def __init__(self, *args: Any, enable_version_counter: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, enable_version_counter=enable_version_counter, **kwargs)

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
