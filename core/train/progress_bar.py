"""Training progress a user can act on: throughput in the task's own unit and the time to the next validation.

`ThroughputProgressBar` is Lightning's tqdm bar plus two fields, e.g. ``tok/s=1840, next val=2:41``. A task
module's task says what one batch is worth (``Task.unit`` and ``Task.batch_units``, counted by
``core.train.module.TaskModule``: source + target tokens, images, seconds of audio). The count is taken in
``on_before_batch_transfer``, while the batch is still on the host, so showing it never synchronises with a
GPU. ``TaskCLI`` puts the bar in place of Lightning's default one for ``fit``.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar

__all__ = ["ThroughputProgressBar", "ThroughputRichProgressBar", "format_seconds", "with_throughput"]


def format_seconds(seconds: float) -> str:
    """``125.3`` -> ``"2:05"``; ``3725`` -> ``"1:02:05"``."""
    s = max(0, round(seconds))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


class _Throughput:
    """What both bars add: ``<unit>/s`` (over the last ``window`` seconds) and ``next val`` (the time to the
    next validation: time-based intervals count down the clock, step-based ones use the measured step rate)."""

    window: float = 30.0

    def _init_throughput(self, window: float) -> None:
        self.window = window
        self._events: deque[tuple[float, float]] = deque()  # (time, units) per step
        self._steps: deque[float] = deque()
        self._since_val = 0

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.monotonic()
        self._events.append((now, float(getattr(pl_module, "last_batch_units", 0.0))))
        self._steps.append(now)
        self._since_val += 1
        while self._events and now - self._events[0][0] > self.window:
            self._events.popleft()
            self._steps.popleft()
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)  # type: ignore[misc]

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._since_val = 0
        super().on_validation_end(trainer, pl_module)  # type: ignore[misc]

    def rates(self) -> tuple[float, float] | None:
        """``(units per second, steps per second)`` over the window, or None before two steps."""
        if len(self._events) < 2:
            return None
        span = self._events[-1][0] - self._events[0][0]
        if span <= 0:
            return None
        units = sum(u for _, u in list(self._events)[1:])  # units completed after the first timestamp
        return units / span, (len(self._steps) - 1) / span

    def time_to_validation(self, trainer: pl.Trainer) -> float | None:
        """Seconds until the next validation, or None when unknown / disabled."""
        interval = getattr(trainer, "_val_check_time_interval", None)
        if interval is not None:
            return interval - (time.monotonic() - getattr(trainer, "_last_val_time", time.monotonic()))
        rates = self.rates()
        every = getattr(trainer, "val_check_batch", None)
        if rates is None or not isinstance(every, (int, float)) or every == float("inf") or not rates[1]:
            return None
        if trainer.check_val_every_n_epoch is not None:  # counted within the epoch
            left = every - (trainer.fit_loop.epoch_loop.batch_idx + 1) % every
        else:
            left = every - self._since_val
        return max(0.0, left) / rates[1]

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)  # type: ignore[misc]
        rates = self.rates()
        unit = getattr(pl_module, "THROUGHPUT_UNIT", "samples")
        if rates is not None and rates[0] > 0:
            items[f"{unit}/s"] = f"{rates[0]:.0f}" if rates[0] >= 10 else f"{rates[0]:.2f}"
        left = self.time_to_validation(trainer) if trainer.training else None
        if left is not None and trainer.limit_val_batches != 0:
            items["next val"] = format_seconds(left)
        return items


class ThroughputProgressBar(_Throughput, TQDMProgressBar):
    """Lightning's tqdm bar plus throughput and the time to the next validation.

    Args:
        window: seconds of history the rate is measured over.
        refresh_rate: as ``TQDMProgressBar``.
    """

    def __init__(self, window: float = 30.0, refresh_rate: int = 1) -> None:
        TQDMProgressBar.__init__(self, refresh_rate=refresh_rate)
        self._init_throughput(window)


class ThroughputRichProgressBar(_Throughput, RichProgressBar):
    """Lightning's rich bar (its default when ``rich`` is installed) plus throughput and the next validation.

    Args:
        window: seconds of history the rate is measured over.
        refresh_rate: as ``RichProgressBar``.
    """

    def __init__(self, window: float = 30.0, refresh_rate: int = 1) -> None:
        RichProgressBar.__init__(self, refresh_rate=refresh_rate)
        self._init_throughput(window)


def with_throughput(bar: Any) -> Any:
    """The throughput variant of Lightning's default bar ``bar`` (same refresh rate), or ``bar`` itself when it
    is a user's own progress bar class."""
    if type(bar) is RichProgressBar:
        return ThroughputRichProgressBar(refresh_rate=int(bar.refresh_rate))
    if type(bar) is TQDMProgressBar:
        return ThroughputProgressBar(refresh_rate=bar.refresh_rate)
    return bar
