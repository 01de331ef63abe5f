"""Start-up of one inference in a fresh process: the module's ``from_pretrained`` (imports Lightning) against the lean
loaders (``Captioner``, ``Transcriber``), and the app's start (import, load the three demo models, build the page
without launching it), old code against new.

Every measurement is the wall time of a whole ``python -c`` process; the variants of one row are run alternately
(A, B, A, B, ...) so that a change of machine load hits both, and the medians are reported with the load average.
``--old`` names a checkout of the code before the lean loaders (e.g. ``git worktree add /tmp/old <commit>``), whose
app start is measured beside today's.

Usage::

    python benchmarks/lean_start.py --runs 5 [--old /tmp/old] --out benchmarks/results/lean_start.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo_output"

CALL = "from {module} import {cls} as M\nprint(M.from_pretrained({{path!r}}).{method}({{input!r}}, beam=3))"
CAPTION_LIBRARY = CALL.format(module="tasks.captioning.module", cls="CaptioningModule", method="caption")
CAPTION_LEAN = CALL.format(module="tasks.captioning.inference", cls="Captioner", method="caption")
SPEECH_LIBRARY = CALL.format(module="tasks.speech.module", cls="SpeechModule", method="transcribe")
SPEECH_LEAN = CALL.format(module="tasks.speech.inference", cls="Transcriber", method="transcribe")
APP_START = (
    "import tasks.app.cli\n"
    "from tasks.app.app import build_app\n"
    "from tasks.app.inference import Limits\n"
    "from tasks.app.loading import demo_checkpoints, load_task_model\n"
    "models = {{t: load_task_model(t, p) for t, p in demo_checkpoints({demo!r}).items()}}\n"
    "build_app(models, Limits()).close()\n"
    "print(sorted(models))"
)


def _time(code: str, pythonpath: Path) -> tuple[float, str]:
    """Wall seconds of ``python -c code`` with ``pythonpath`` first on the path, and its output."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=pythonpath, env=env, capture_output=True, text=True, check=True
    )
    return time.perf_counter() - start, out.stdout.strip()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--old", type=Path, default=None, help="a checkout of the code before the lean loaders")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    image = str(ROOT / "benchmarks" / "out" / "lean_scene.png")
    if not Path(image).is_file():
        from tasks.captioning.scenes import make_scene

        Path(image).parent.mkdir(parents=True, exist_ok=True)
        make_scene(0, "test", 0, image_size=96).image.save(image)
    audio = str(DEMO / "speech" / "speech_0.wav")
    rows: dict[str, list[tuple[str, str, Path]]] = {}
    for name, path in (("folder", DEMO / "captioning" / "model"), ("ckpt", DEMO / "captioning" / "captioning.ckpt")):
        fill = {"path": str(path), "input": image}
        rows[f"caption, {name}"] = [
            ("library", CAPTION_LIBRARY.format(**fill), ROOT),
            ("lean", CAPTION_LEAN.format(**fill), ROOT),
        ]
    for name, path in (("folder", DEMO / "speech" / "model"), ("ckpt", DEMO / "speech" / "speech.ckpt")):
        fill = {"path": str(path), "input": audio}
        rows[f"transcription, {name}"] = [
            ("library", SPEECH_LIBRARY.format(**fill), ROOT),
            ("lean", SPEECH_LEAN.format(**fill), ROOT),
        ]
    app = [("lean", APP_START.format(demo=str(DEMO)), ROOT)]
    if args.old is not None:
        app.insert(0, ("old", APP_START.format(demo=str(DEMO)), args.old))
    rows["app start (import, load 3 models, build page)"] = app
    results: dict[str, dict[str, object]] = {}
    for row, variants in rows.items():
        times: dict[str, list[float]] = {v: [] for v, _, _ in variants}
        outputs: dict[str, str] = {}
        for _ in range(args.runs):
            for variant, code, path in variants:
                seconds, outputs[variant] = _time(code, path)
                times[variant].append(seconds)
        results[row] = {
            "median_s": {v: statistics.median(t) for v, t in times.items()},
            "runs_s": times,
            "outputs": outputs,
            "load_average": os.getloadavg(),
        }
        medians = ", ".join(f"{v} {statistics.median(t):.2f} s ({min(t):.2f}-{max(t):.2f})" for v, t in times.items())
        same = len(set(outputs.values())) == 1
        print(f"{row}: {medians}; same output: {same}; load {os.getloadavg()[0]:.2f}", flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
