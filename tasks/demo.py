"""The main job (`make demo` / `attn-demo`): every task, briefly, on its embedded default.

For each task: train on the embedded corpus for a short budget, save a checkpoint, reload it
as a user would, run inference and write the attention figures into one output folder.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

#: (task, budget in minutes); together they stay under 10 minutes on 2 CPU cores.
TASKS: tuple[tuple[str, float], ...] = (("translation", 2.5), ("captioning", 2.5), ("speech", 3.5))


def main(argv: list[str] | None = None) -> int:
    """Run the demo of each task; returns 0 when all of them succeeded."""
    parser = argparse.ArgumentParser(prog="attn-demo", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="folder for checkpoints and figures")
    parser.add_argument("--tasks", nargs="+", default=[t for t, _ in TASKS], choices=[t for t, _ in TASKS])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every time budget (e.g. 0.5)")
    args = parser.parse_args(argv)

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
