"""The main job (`make demo` / `attn-demo`): every task, briefly, on its embedded default.

For each task: train on the embedded corpus for a fixed time budget, save a checkpoint, reload it as a
user would, score it on a held-out demo set against the task's target (`tasks.demo_report.TARGETS`),
and write examples with their attention figures. At the end it prints a table of scores beside their
targets and writes `summary.json` and `index.html` (one page with every task's inputs, outputs,
references and attention figures) into the output folder.

On two or more free cores the tasks run in two worker processes at once, one thread each (speech in
one, translation then captioning in the other): these small models train faster per core with one
thread than with two, so two tasks side by side get about twice the work done of one task on two
threads. Progress of every stage (synthesis, training, scoring) is drawn by this process alone.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import multiprocessing as mp
import os
import queue
import sys
import time
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from core.train.progress import ProgressBoard, Sink
from tasks.demo_report import TaskReport, format_table, write_html, write_summary

#: (task, budget in minutes for the whole task: data, training, reloading, scoring, figures). Each leaves its
#: recipe about 1.3x or more of the CPU time its slowest of three seeds needed to reach the target
#: (benchmarks/RESULTS.md, "Time to quality"); with two lanes the demo takes about 6.5 minutes plus start-up.
TASKS: tuple[tuple[str, float], ...] = (("translation", 3.25), ("captioning", 3.0), ("speech", 6.5))
#: Which tasks share a worker process when two run at once (each lane runs its tasks in order).
LANES: tuple[tuple[str, ...], ...] = (("speech",), ("translation", "captioning"))
#: `--quick`: held-out examples per task and the budget scale (a pipeline check; scores mean nothing).
QUICK_HELD_OUT = 4
QUICK_SCALE = 0.08


def _busy_cores(seconds: float = 0.5) -> float:
    """Cores kept busy by other processes right now (from /proc/stat; 0 where it is unavailable)."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields) - idle, sum(fields)

    try:
        busy0, total0 = sample()
        time.sleep(seconds)  # this process sleeps meanwhile: what is busy is someone else
        busy1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return 0.0
    cores = os.cpu_count() or 1
    return cores * (busy1 - busy0) / max(total1 - total0, 1)


def auto_threads() -> int:
    """Intra-op threads for a CPU run: the cores this process may use minus those other jobs keep busy.

    With more runnable threads than cores, every parallel op waits for a descheduled thread: measured
    here, 2 threads beside one busy process trained 12x slower than 1 thread (17 vs 198 captioning
    steps in 90 s).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - int(_busy_cores() + 0.5))


@contextmanager
def _task_logs(path: Path) -> Iterator[None]:
    """Send Python warnings and Lightning's info lines to `path` instead of the terminal.

    The terminal shows the progress bars and the results; what Lightning and the libraries say along
    the way (e.g. "GPU available: False") is kept in each task's `demo.log`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    loggers = [logging.getLogger(n) for n in ("py.warnings", "lightning.pytorch", "lightning.fabric")]
    saved = [(lg, lg.handlers[:], lg.propagate, lg.level) for lg in loggers]
    logging.captureWarnings(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            for lg in loggers:
                lg.handlers = [handler]
                lg.propagate = False
                lg.setLevel(logging.INFO)
            yield
    finally:
        logging.captureWarnings(False)
        for lg, handlers, propagate, level in saved:
            lg.handlers, lg.propagate = handlers, propagate
            lg.setLevel(level)
        handler.close()


def run_task(task: str, out: Path, minutes: float, seed: int, sink: Sink, quick: bool = False) -> TaskReport:
    """One task's demo; a failure becomes a report with `error` set (one task must not hide the others).

    With `quick`, the task's `QUICK_DATA` and `QUICK_HELD_OUT` examples: a pipeline check only.
    """
    t0 = time.monotonic()
    try:
        module = importlib.import_module(f"tasks.{task}.demo")
        kw: dict[str, Any] = {"data": module.QUICK_DATA, "n_held_out": QUICK_HELD_OUT} if quick else {}
        with _task_logs(out / task / "demo.log"):
            return module.run_demo(out / task, max_minutes=minutes, seed=seed, sink=sink, **kw)
    except Exception as err:
        (out / task).mkdir(parents=True, exist_ok=True)
        (out / task / "error.txt").write_text(traceback.format_exc(), encoding="utf-8")
        return TaskReport(task, error=f"{type(err).__name__}: {err}", seconds=time.monotonic() - t0)


def _lane_worker(tasks: list[tuple[str, float]], out: Path, seed: int, threads: int, quick: bool, q: Any) -> None:
    """Worker process: run `tasks` in order, sending progress events and reports to the parent."""
    import torch

    torch.set_num_threads(threads)

    def sink(event: dict[str, Any]) -> None:
        q.put(("progress", event))

    for task, minutes in tasks:
        q.put(("report", run_task(task, out, minutes, seed, sink, quick)))
    q.put(("done", None))


def _result_line(r: TaskReport) -> str:
    if r.error is not None:
        return f"{r.task}: FAILED ({r.error}); details in {r.task}/error.txt"
    scores = ", ".join(
        f"{t.label} {r.metrics.get(t.metric, float('nan')):.1f} (target {t.op} {t.value:g})" for t in r.targets
    )
    return f"{r.task}: {scores}: {'met' if r.passed else 'MISSED'}"


def _run_parallel(
    lanes: list[list[tuple[str, float]]], out: Path, seed: int, quick: bool, board: ProgressBoard
) -> list[TaskReport]:
    ctx = mp.get_context("spawn")  # fresh interpreters: no inherited torch/OpenMP thread state
    q = ctx.Queue()
    # Not daemonic: the workers start processes of their own (speech synthesis, DataLoader workers).
    procs = [ctx.Process(target=_lane_worker, args=(lane, out, seed, 1, quick, q)) for lane in lanes]
    reports: list[TaskReport] = []
    try:
        for p in procs:
            p.start()
        running = len(procs)
        while running:
            try:
                kind, payload = q.get(timeout=1.0)
            except queue.Empty:
                if all(p.exitcode is not None for p in procs):
                    break  # a worker died without saying goodbye (e.g. killed): stop waiting
                continue
            if kind == "progress":
                board(payload)
            elif kind == "report":
                reports.append(payload)
                board.write(_result_line(payload))
            else:
                running -= 1
        for p in procs:
            p.join(timeout=30)
    finally:
        for p in procs:  # Ctrl-C or an error here: do not leave workers training in the background
            if p.is_alive():
                p.terminate()
                p.join(timeout=10)
    done = {r.task for r in reports}
    for lane in lanes:  # tasks of a worker that died
        reports += [TaskReport(t, error="its worker process ended unexpectedly") for t, _ in lane if t not in done]
    return reports


def main(argv: list[str] | None = None) -> int:
    """Run the demo of each task; returns 0 when all of them ran (targets met or not), else 1."""
    names = [t for t, _ in TASKS]
    parser = argparse.ArgumentParser(prog="attn-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="folder for checkpoints and figures")
    parser.add_argument("--tasks", nargs="+", default=names, choices=names)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every time budget (e.g. 0.5)")
    parser.add_argument("--seed", type=int, default=0, help="training seed of every task")
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="tasks trained at once, one thread each (default: 2 when 2 cores are free, else 1)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads with --jobs 1 (default: free cores, from the load average)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"pipeline check in about a minute: tiny corpora, {QUICK_HELD_OUT} held-out examples per "
        f"task, budgets x{QUICK_SCALE} (the scores mean nothing)",
    )
    args = parser.parse_args(argv)
    import torch

    free = auto_threads()
    jobs = args.jobs or (2 if free >= 2 else 1)
    scale = args.scale * (QUICK_SCALE if args.quick else 1.0)
    budgets = {t: m * scale for t, m in TASKS if t in args.tasks}
    lanes = [[(t, budgets[t]) for t in lane if t in budgets] for lane in LANES]
    lanes = [lane for lane in lanes if lane]
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    board = ProgressBoard()
    start = time.monotonic()
    if jobs >= 2 and len(lanes) > 1:
        print(
            f"Training {' and '.join('+'.join(t for t, _ in lane) for lane in lanes)} side by side, "
            f"one CPU thread each (--jobs 1 to run one after the other). Output: {out}",
            flush=True,
        )
        reports = _run_parallel(lanes, out, args.seed, args.quick, board)
    else:
        threads = args.threads or free
        torch.set_num_threads(threads)
        print(f"Training one task at a time, {threads} CPU thread(s) (--threads to change). Output: {out}", flush=True)
        reports = []
        for task, minutes in ((t, m) for lane in lanes for t, m in lane):
            reports.append(run_task(task, out, minutes, args.seed, board, args.quick))
            board.write(_result_line(reports[-1]))
    board.close()
    order = {t: i for i, t in enumerate(names)}
    reports.sort(key=lambda r: order[r.task])
    total = time.monotonic() - start
    extra = {
        "seconds": round(total, 1),
        "jobs": jobs,
        "seed": args.seed,
        "scale": scale,
        "quick": args.quick,
        "cpu_count": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }
    summary = write_summary(reports, out, extra)
    page = write_html(reports, out)
    print(f"\n{format_table(reports)}\nTotal {total:.0f} s.")
    print("All targets met." if all(r.passed for r in reports) else "Some targets were MISSED (see above).")
    print(
        f"Open {page} in a browser for every task's inputs, outputs, references and attention figures "
        f"(summary: {summary})."
    )
    failed = [r.task for r in reports if r.error is not None]
    if failed:
        print(f"Failed tasks: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
