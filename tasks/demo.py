"""The main job (`make demo` / `attn-demo`): every task, briefly, on its embedded default.

For each task: train on the embedded corpus for a short budget, save a checkpoint, reload it
as a user would, run inference and write the attention figures into one output folder.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

#: (task, budget in minutes); together they stay under 10 minutes on 2 CPU cores.
TASKS: tuple[tuple[str, float], ...] = (("translation", 2.5), ("captioning", 3.0), ("speech", 3.5))


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


def main(argv: list[str] | None = None) -> int:
    """Run the demo of each task; returns 0 when all of them succeeded."""
    parser = argparse.ArgumentParser(prog="attn-demo", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="folder for checkpoints and figures")
    parser.add_argument("--tasks", nargs="+", default=[t for t, _ in TASKS], choices=[t for t, _ in TASKS])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every time budget (e.g. 0.5)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: free cores, from the load average)")
    args = parser.parse_args(argv)
    import torch

    threads = args.threads or auto_threads()
    torch.set_num_threads(threads)
    print(f"CPU threads: {threads} (--threads to change)", flush=True)

    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    failed: list[str] = []
    figures: list[Path] = []
    start = time.monotonic()
    for task, minutes in TASKS:
        if task not in args.tasks:
            continue
        print(f"\n=== {task}: training on the embedded default for ~{minutes * args.scale:.1f} min ===", flush=True)
        t0 = time.monotonic()
        try:
            module = importlib.import_module(f"tasks.{task}.demo")
            paths = module.run_demo(out / task, max_minutes=minutes * args.scale)
        except ModuleNotFoundError as err:
            if err.name and err.name.startswith(f"tasks.{task}"):
                print(f"{task}: not available in this version ({err})", file=sys.stderr)
                failed.append(task)
                continue
            raise
        except Exception as err:  # keep going: one task failing must not hide the others
            print(f"{task}: FAILED: {type(err).__name__}: {err}", file=sys.stderr)
            failed.append(task)
            continue
        figures.extend(paths)
        print(f"{task}: done in {time.monotonic() - t0:.0f} s, {len(paths)} figure(s)", flush=True)

    print(f"\nTotal {time.monotonic() - start:.0f} s. Attention figures ({len(figures)}) are in: {out}")
    for path in figures:
        print(f"  {path}")
    if failed:
        print(f"Failed tasks: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
