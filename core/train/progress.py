"""Progress of long-running stages (synthesis, time-budgeted training, evaluation) for one display.

Work reports *events* to a sink, a callable taking one dict; `ProgressBoard` is the sink that draws
them: tqdm bars on a terminal, one plain line per stage every few seconds in a log file. Keeping the
drawing in one place lets several worker processes (the demo trains two tasks at once on two cores)
report through a queue to the parent, which alone writes to the terminal; bars drawn by two processes
would overwrite each other's lines.

* `BudgetProgressBar` is a Lightning progress-bar callback for a run bounded by wall-clock time: its
  bar spans the time budget, not the batches of an epoch (a time-bounded run may stop mid-epoch or run
  many short epochs), and shows the optimizer steps and the loss.
* `StageProgress` reports a loop outside the trainer (corpus synthesis, held-out evaluation).

An event is ``{"task", "stage", "n", "total", "unit", "postfix", "done"}``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, Self, TextIO

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ProgressBar
from tqdm import tqdm

__all__ = ["BudgetProgressBar", "ProgressBoard", "Sink", "StageProgress", "null_sink"]

Sink = Callable[[dict[str, Any]], None]


def null_sink(event: dict[str, Any]) -> None:
    """A sink that shows nothing (tests, library use)."""


class ProgressBoard:
    """Draws progress events: one tqdm bar per (task, stage) on a terminal, plain lines otherwise.

    Args:
        file: where to draw (default stdout).
        log_interval_s: when ``file`` is not a terminal, seconds between the lines of a running stage.
    """

    def __init__(self, file: TextIO | None = None, log_interval_s: float = 15.0) -> None:
        self.file = file or sys.stdout
        self.tty = bool(getattr(self.file, "isatty", lambda: False)())
        self.log_interval_s = log_interval_s
        self._bars: dict[tuple[str, str], tqdm] = {}
        self._last_line: dict[tuple[str, str], float] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        key = (str(event.get("task", "")), str(event.get("stage", "")))
        n, total = float(event.get("n", 0.0)), event.get("total")
        postfix = event.get("postfix") or {}
        done = bool(event.get("done"))
        if self.tty:
            bar = self._bars.get(key)
            if bar is None and not done:
                # No fixed position: tqdm gives each live bar the lowest free line, so the bars of the
                # stages still running stay together at the bottom.
                bar = self._bars[key] = tqdm(
                    total=total,
                    desc=f"{key[0]}: {key[1]}",
                    unit=event.get("unit", "it"),
                    file=self.file,
                    dynamic_ncols=True,
                    leave=False,
                    bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} {unit} [{elapsed}{postfix}]",
                )
            if bar is not None:
                bar.n = min(n, total) if total else n
                bar.set_postfix(postfix, refresh=False)
                bar.refresh()
            if done:
                # A finished stage becomes one plain line above the bars still running.
                if bar is not None:
                    bar.close()
                    del self._bars[key]
                self.write(self._line(key, n, total, event.get("unit", "it"), postfix, done=True))
            return
        now = time.monotonic()
        if done or now - self._last_line.get(key, -1e9) >= self.log_interval_s:
            self._last_line[key] = now
            print(self._line(key, n, total, event.get("unit", "it"), postfix, done), file=self.file, flush=True)

    @staticmethod
    def _line(
        key: tuple[str, str], n: float, total: float | None, unit: str, postfix: dict[str, Any], done: bool
    ) -> str:
        amount = f"{n:.0f}/{total:.0f}" if total else f"{n:.0f}"
        extra = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in postfix.items())
        return f"{key[0]}: {key[1]} {amount} {unit} {'done' if done else '...'} {extra}".rstrip()

    def write(self, message: str) -> None:
        """Print a line without breaking the bars."""
        if self.tty:
            tqdm.write(message, file=self.file)
        else:
            print(message, file=self.file, flush=True)

    def close(self) -> None:
        """Close every bar still open (e.g. after a failure)."""
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()


class StageProgress:
    """Reports one stage of a task to a sink, at most every `interval_s` seconds (plus the last update).

    Args:
        sink: where events go.
        task: task name.
        stage: stage name, e.g. ``"evaluating 100 utterances"``.
        total: items in the stage.
        unit: item name.
        interval_s: minimum seconds between events (a queue to another process must not flood).
    """

    def __init__(
        self, sink: Sink, task: str, stage: str, total: float, unit: str = "it", interval_s: float = 0.5
    ) -> None:
        self.sink, self.task, self.stage, self.total, self.unit = sink, task, stage, total, unit
        self.interval_s = interval_s
        self.n = 0.0
        self._last = -1e9
        self.postfix: dict[str, Any] = {}

    def _emit(self, done: bool = False) -> None:
        self.sink(
            {
                "task": self.task,
                "stage": self.stage,
                "n": self.n,
                "total": self.total,
                "unit": self.unit,
                "postfix": dict(self.postfix),
                "done": done,
            }
        )

    def update(self, n: float = 1, **postfix: Any) -> None:
        """Advance by `n` items and replace the shown fields."""
        self.n += n
        self.postfix.update(postfix)
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self._last = now
            self._emit()

    def close(self) -> None:
        """Report the final state."""
        self._emit(done=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BudgetProgressBar(ProgressBar):
    """Lightning progress bar over a time budget: elapsed/budget seconds, optimizer steps and the loss.

    Reports to a sink (see the module docstring) rather than drawing itself, so it works the same in a
    worker process. Only training is shown; validation, test and predict are not reported.

    Args:
        sink: where events go (e.g. a `ProgressBoard`).
        task: task name shown before the stage.
        budget_s: training seconds the bar spans (the run may stop a little later: the deadline is
            checked after each step).
        start: ``time.monotonic()`` at which the budget started (default: when training starts).
        interval_s: minimum seconds between events.
    """

    def __init__(
        self, sink: Sink, task: str, budget_s: float, start: float | None = None, interval_s: float = 0.5
    ) -> None:
        super().__init__()
        self.sink, self.task = sink, task
        self.budget_s = max(float(budget_s), 1.0)
        self.interval_s = interval_s
        self._start = start
        self._last = -1e9
        self._enabled = True

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _emit(self, trainer: pl.Trainer, pl_module: pl.LightningModule, done: bool = False) -> None:
        now = time.monotonic()
        if not self._enabled or (not done and now - self._last < self.interval_s):
            return
        self._last = now
        assert self._start is not None
        metrics = self.get_metrics(trainer, pl_module)
        postfix: dict[str, Any] = {"step": trainer.global_step}
        postfix.update({k.split("/")[-1]: v for k, v in metrics.items() if k.endswith("loss")})
        self.sink(
            {
                "task": self.task,
                "stage": "training",
                "n": min(now - self._start, self.budget_s),
                "total": self.budget_s,
                "unit": "s",
                "postfix": postfix,
                "done": done,
            }
        )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._start is None:
            self._start = time.monotonic()
        self._emit(trainer, pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_: Any) -> None:
        self._emit(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._emit(trainer, pl_module, done=True)
