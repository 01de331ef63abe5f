"""Optimizer, LR schedules, and a check that a run's schedule fits its wall-clock budget.

``configure_optimizer`` is every task's ``configure_optimizers`` (typed hyper-parameters: optimizer, lr,
weight decay, betas, eps, warm-up and decay). :class:`ScheduleCheck` measures the step rate early in ``fit``
and warns when warm-up, LR decay, validation or checkpoint intervals cannot happen within ``max_time``: a
GPU recipe run on a laptop CPU otherwise trains for 30 minutes without ever leaving warm-up or validating.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.types import LRSchedulerConfigType, OptimizerLRSchedulerConfig
from torch.optim.lr_scheduler import LambdaLR

from core.errors import UserError
from core.train.callbacks import trainer_callbacks

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "OptimizerOptions",
    "ScheduleCheck",
    "WarmupSchedule",
    "build_scheduler",
    "configure_optimizer",
    "lr_lambda",
    "schedule_problems",
]

SCHEDULES = ("inverse_sqrt", "cosine", "linear", "constant")
OPTIMIZERS = ("adamw", "adam", "sgd")


@dataclass(frozen=True)
class OptimizerOptions:
    """The optimizer and LR schedule of every task: one definition of the eight options, their meaning and bounds.

    Every task module takes these as plain ``--model.*`` options (the names below, the same in every task) and
    the core module reads them through :meth:`from_hparams`; their bounds for files read back are :data:`BOUNDS`.

    Attributes:
        optimizer: ``adamw``, ``adam`` or ``sgd`` (SGD: Nesterov momentum 0.9).
        lr: peak learning rate.
        weight_decay: weight decay (never on biases and normalisation weights).
        betas: Adam betas.
        eps: Adam epsilon.
        warmup_steps: linear warmup steps.
        lr_schedule: decay after warmup: ``inverse_sqrt``, ``cosine``, ``linear`` or ``constant`` (cosine/linear
            decay over the trainer's estimated total steps).
        min_lr_ratio: floor of cosine/linear decay, as a fraction of ``lr``.
    """

    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 0
    lr_schedule: str = "inverse_sqrt"
    min_lr_ratio: float = 0.0

    #: inclusive bounds of the numeric options in files read back (``core.io.hparams.validate_hparams``)
    BOUNDS: ClassVar[dict[str, tuple[float, float]]] = {
        "lr": (0.0, 10.0),
        "weight_decay": (0.0, 10.0),
        "betas": (0.0, 0.999999),
        "eps": (0.0, 1.0),
        "warmup_steps": (0, 10**9),
        "min_lr_ratio": (0.0, 1.0),
    }

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any]) -> OptimizerOptions:
        """The options among a module's hyper-parameters (defaults for those a task does not take)."""
        names = {f.name for f in fields(cls)}
        values = {k: hparams[k] for k in names if k in hparams}
        if "betas" in values:
            values["betas"] = (float(values["betas"][0]), float(values["betas"][1]))
        return cls(**values)


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


def lr_lambda(
    warmup_steps: int = 0, schedule: str = "inverse_sqrt", total_steps: int | None = None, min_ratio: float = 0.0
) -> WarmupSchedule:
    """Factory for a ``LambdaLR`` multiplier (see ``WarmupSchedule``)."""
    return WarmupSchedule(warmup_steps, schedule, total_steps, min_ratio)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int = 0,
    schedule: str = "inverse_sqrt",
    total_steps: int | None = None,
    min_ratio: float = 0.0,
) -> LRSchedulerConfigType:
    """Lightning ``lr_scheduler`` config (stepped every optimizer step) for ``configure_optimizers``.

    Example:
        ``return {"optimizer": opt, "lr_scheduler": build_scheduler(opt, 400, "inverse_sqrt")}``
    """
    sched = LambdaLR(optimizer, lr_lambda(warmup_steps, schedule, total_steps, min_ratio))
    return {"scheduler": sched, "interval": "step", "frequency": 1, "name": "lr"}


def configure_optimizer(
    module: pl.LightningModule,
    options: OptimizerOptions,
    groups: list[tuple[list[torch.nn.Parameter], float]] | None = None,
) -> OptimizerLRSchedulerConfig:
    """``configure_optimizers`` of every task, from its :class:`OptimizerOptions`.

    Biases and normalisation weights (1-D parameters) get no weight decay. AdamW/Adam use their fused kernels on
    CUDA (one launch for all parameters). Cosine/linear decay run over the trainer's step budget; without one
    they fall back to inverse-sqrt with a warning. (LightningCLI's own ``--optimizer``/``--lr_scheduler`` still
    override all of this when given.)

    Args:
        module: the LightningModule (its parameters, device and trainer).
        options: the optimizer and schedule.
        groups: ``[(parameters, lr multiplier)]``, e.g. a pretrained encoder at a lower LR; default all
            trainable parameters at ``lr``. Given groups are used as they are, also parameters frozen now
            (``requires_grad=False``): a freeze schedule (``core.train.finetune``) may unfreeze them later, and the
            optimizer skips a parameter while it has no gradient.

    Returns:
        Lightning's ``{"optimizer": ..., "lr_scheduler": ...}``.
    """
    hp = options
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
    if hp.optimizer not in OPTIMIZERS:
        raise UserError(f"optimizer {hp.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
    if hp.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(param_groups, lr=hp.lr, momentum=0.9, nesterov=True)
    else:
        cls = torch.optim.AdamW if hp.optimizer == "adamw" else torch.optim.Adam
        opt = cls(param_groups, lr=hp.lr, betas=hp.betas, eps=hp.eps, fused=module.device.type == "cuda")
    schedule, total = hp.lr_schedule, None
    if schedule in ("cosine", "linear"):
        trainer = getattr(module, "_trainer", None)
        est = trainer.estimated_stepping_batches if trainer is not None else None
        if est is None or not math.isfinite(est):
            rank_zero_warn(
                f"lr_schedule={schedule} needs a step budget (trainer.max_steps/max_epochs); using inverse_sqrt"
            )
            schedule = "inverse_sqrt"
        else:
            total = int(est)
    return {"optimizer": opt, "lr_scheduler": build_scheduler(opt, hp.warmup_steps, schedule, total, hp.min_lr_ratio)}


# ----------------------------------------------------------------------------------------------
# does the schedule fit the budget?
# ----------------------------------------------------------------------------------------------
def schedule_problems(
    steps_in_budget: float,
    warmup_steps: int,
    decay_total: int | None,
    val_every: int | None,
    checkpoint_every: int | None,
) -> list[str]:
    """What of a schedule cannot happen within ``steps_in_budget`` optimizer steps.

    Args:
        steps_in_budget: optimizer steps the run can make before ``max_time`` at the measured rate.
        warmup_steps: linear LR warm-up.
        decay_total: steps a cosine/linear decay is stretched over (None for inverse-sqrt / constant).
        val_every: steps between validations (None: time-based or unknown).
        checkpoint_every: steps between rolling checkpoints (None: none configured).

    Returns:
        One sentence per problem (empty when the schedule fits).
    """
    n = max(steps_in_budget, 1.0)
    out = []
    if warmup_steps > 0.3 * n:
        out.append(
            f"the LR warm-up ({warmup_steps} steps) takes {warmup_steps / n:.0%} of them: the peak LR comes "
            f"late or never (a warm-up of at most ~10% of the budget, e.g. {max(1, int(0.1 * n))} steps)"
        )
    if decay_total is not None and decay_total > 1.5 * n:
        out.append(
            f"the LR decay is stretched over {decay_total} steps: the run stops {n / decay_total:.0%} of the "
            f"way through it (set trainer.max_steps to ~{int(n)} so the decay ends with the budget)"
        )
    if val_every is not None and val_every > n / 2:
        times = int(n // val_every)
        out.append(
            f"validation every {val_every} steps runs {times} time(s) (use a fraction of an epoch or a "
            f'time-based trainer.val_check_interval such as "00:00:05:00")'
        )
    if checkpoint_every is not None and checkpoint_every > n / 2:
        out.append(
            f"the rolling checkpoint every {checkpoint_every} steps is written {int(n // checkpoint_every)} "
            f"time(s): a crash loses up to the whole run"
        )
    return out


class ScheduleCheck(pl.Callback):
    """Measures the optimizer-step rate early in ``fit`` and warns when the schedule cannot fit ``max_time``.

    After ``skip`` warm-up batches (compilation, first allocations) it times ``measure`` steps, estimates how
    many steps fit in the remaining budget, and checks the warm-up, the cosine/linear decay length, the
    validation interval and the rolling-checkpoint interval against it (:func:`schedule_problems`). It logs
    ``schedule/steps_per_minute`` and warns once; it never changes the run.

    Args:
        measure: steps timed.
        skip: first steps not timed.
    """

    def __init__(self, measure: int = 20, skip: int = 3) -> None:
        self.measure, self.skip = measure, skip
        self._start: float | None = None
        self._seen = 0
        self.steps_per_minute: float | None = None
        self.problems: list[str] = []

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self.steps_per_minute is not None:
            return
        self._seen += 1
        if self._seen == self.skip:
            self._start = time.monotonic()
        elif self._start is not None and self._seen == self.skip + self.measure:
            rate = self.measure / max(time.monotonic() - self._start, 1e-9)  # steps per second
            self.steps_per_minute = 60.0 * rate
            pl_module.log("schedule/steps_per_minute", self.steps_per_minute, rank_zero_only=True)
            self._check(trainer, pl_module, rate)

    def _check(self, trainer: pl.Trainer, pl_module: pl.LightningModule, rate: float) -> None:
        remaining = _time_remaining(trainer)
        if remaining is None:
            return
        n = trainer.global_step + remaining * rate
        hp = getattr(pl_module, "hparams", {})
        decay = None
        if hp.get("lr_schedule") in ("cosine", "linear"):
            est = trainer.estimated_stepping_batches
            decay = int(est) if est is not None and math.isfinite(est) else None
        self.problems = schedule_problems(
            n, int(hp.get("warmup_steps", 0) or 0), decay, _val_every(trainer), _checkpoint_every(trainer)
        )
        if self.problems:
            rank_zero_warn(
                f"this run makes ~{rate * 60:.0f} optimizer steps per minute here, ~{int(n)} within "
                f"trainer.max_time; " + "; ".join(self.problems)
            )


def _time_remaining(trainer: pl.Trainer) -> float | None:
    """Seconds left before ``max_time`` (Lightning's Timer callback), or None without a time budget."""
    from lightning.pytorch.callbacks import Timer

    for cb in trainer_callbacks(trainer):
        if isinstance(cb, Timer):
            left = cb.time_remaining("train")
            return None if left is None else float(left)
    return None


def _val_every(trainer: pl.Trainer) -> int | None:
    """Optimizer steps between validations (None: time-based, disabled or unknown)."""
    if getattr(trainer, "_val_check_time_interval", None) is not None or trainer.limit_val_batches == 0:
        return None
    batch = getattr(trainer, "val_check_batch", None)
    if not isinstance(batch, (int, float)) or not math.isfinite(batch):
        return None
    per_epoch = trainer.num_training_batches
    every = (
        int(batch)
        if trainer.check_val_every_n_epoch is None
        else int(batch) * max(1, trainer.check_val_every_n_epoch if batch >= per_epoch else 1)
    )
    return max(1, every // max(1, trainer.accumulate_grad_batches))


def _checkpoint_every(trainer: pl.Trainer) -> int | None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    steps = [
        cb._every_n_train_steps
        for cb in trainer_callbacks(trainer)
        if isinstance(cb, ModelCheckpoint) and cb._every_n_train_steps > 0
    ]
    return min(steps) if steps else None
