"""Threads of an engine export, each count in its own fresh process (nothing else loaded beside the engine): the
median batch-1 latency (beam 5) and throughput (greedy and beam 5, batches of 32) of ``Translator.from_pretrained(
export, threads=N)``, rounds alternated across the counts, the load average recorded (issue 25: on the 2-vCPU dev
box, CTranslate2's default of 2 threads was far slower than 1).

Usage::

    python benchmarks/engine_threads.py --model .peer/engines/cpu/cpu_CT2_int8 --sentences test.en \\
        --threads 0 1 2 --rounds 3 --out benchmarks/results/engine_threads.json

``--threads 0`` is the engine's own default (CTranslate2: up to 4, one per core; ONNX Runtime: one per core).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

ONE_RUN = """
import json, statistics, sys, time
from tasks.translation.inference import Translator
model, path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]) or None
texts = [t for t in open(path, encoding="utf-8").read().splitlines() if t.strip()]
tr = Translator.from_pretrained(model, threads=threads)
tr.translate(texts[:32], beam=5)  # warm-up
out = {"torch_imported": "torch" in sys.modules}
for beam in (1, 5):
    start = time.perf_counter()
    tr.translate(texts, beam=beam, batch_size=32)
    out[f"beam{beam}_sent_per_s"] = len(texts) / (time.perf_counter() - start)
lat = []
for text in texts[:10]:
    start = time.perf_counter()
    tr.translate(text, beam=5)
    lat.append(time.perf_counter() - start)
out["latency_ms"] = 1000 * statistics.median(lat)
print(json.dumps(out))
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="an engine export (or a PyTorch model folder)")
    p.add_argument("--sentences", required=True, help="a text file, one source sentence per line")
    p.add_argument("--threads", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # the engine decides, as for a user
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in args.threads}
    load = [round(x, 2) for x in os.getloadavg()]
    for r in range(args.rounds):
        for n in args.threads if r % 2 == 0 else args.threads[::-1]:
            cmd = [sys.executable, "-c", ONE_RUN, args.model, args.sentences, str(n)]
            done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
            runs[n].append(json.loads(done.stdout.splitlines()[-1]))
    result = {
        "model": args.model,
        "sentences": args.sentences,
        "cpu_count": os.cpu_count(),
        "load_average_before": load,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "threads": {
            str(n): {k: round(statistics.median(r[k] for r in rs), 1) for k in rs[0] if k != "torch_imported"}
            | {"torch_imported": any(r["torch_imported"] for r in rs)}
            for n, rs in runs.items()
        },
    }
    print(json.dumps(result, indent=1))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
