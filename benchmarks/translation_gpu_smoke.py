"""GPU smoke check of the translation task (bf16 autocast, RNN + Transformer, decode, throughput).

Prepared for a short device run (about 1-2 minutes after start-up)::

    python benchmarks/translation_gpu_smoke.py --out $OUT/translation_gpu_smoke.json

Runs, each in a scratch folder: a few hundred steps of the default RNN and of the Transformer with the
GPU overlay (``bf16-mixed``), a test pass (beam search BLEU/chrF), ``translate`` from the written
checkpoint, and the RNN-vs-naive throughput comparison on CUDA. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def _fit(config: str, steps: int, work: Path, gpu: bool = True) -> dict[str, Any]:
    from tasks.translation.cli import main

    cfg = ROOT / "configs" / "translation"
    overlay = ["--config", str(cfg / "gpu.yaml")] if gpu else ["--trainer.accelerator", "cpu"]
    device = "cuda" if gpu else "cpu"
    args = [
        "--config",
        str(cfg / config),
        *overlay,
        "--trainer.max_time",
        "null",
        "--trainer.max_epochs",
        "null",
        "--trainer.max_steps",
        str(steps),
        "--trainer.val_check_interval",
        str(steps),
        "--trainer.check_val_every_n_epoch",
        "null",
        "--trainer.enable_progress_bar",
        "false",
        "--data.cache_dir",
        str(work / "cache"),
    ]
    old = os.getcwd()
    os.chdir(work)
    try:
        t0 = time.perf_counter()
        rc_fit = main(["fit", *args])
        fit_s = time.perf_counter() - t0
        ckpt = next((work / "runs").rglob("last.ckpt"), None)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc_tr = (
                main(
                    ["translate", "--ckpt", str(ckpt), "--device", device, "I love you", "the red car", "she sees them"]
                )
                if ckpt
                else 1
            )
        rc_test = main(["test", *args, "--ckpt_path", str(ckpt)]) if ckpt else 1
    finally:
        os.chdir(old)
    return {
        "config": config,
        "steps": steps,
        "fit_rc": rc_fit,
        "fit_seconds": round(fit_s, 1),
        "translate_rc": rc_tr,
        "translations": out.getvalue().splitlines(),
        "test_rc": rc_test,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--cpu", action="store_true", help="plumbing check without a GPU (no gpu.yaml overlay)")
    args = p.parse_args(argv)
    import torch
    from translation import machine, throughput  # benchmarks/translation.py

    result: dict[str, Any] = {"machine": machine(), "runs": []}
    for config in ("default.yaml", "transformer.yaml"):
        with tempfile.TemporaryDirectory(prefix="tr-gpu-") as tmp:
            try:
                result["runs"].append(_fit(config, args.steps, Path(tmp), gpu=not args.cpu))
            except Exception as err:  # keep going: the point is to see every failure in one run
                result["runs"].append({"config": config, "error": f"{type(err).__name__}: {err}"})
    if torch.cuda.is_available():
        result["rnn_throughput_cuda"] = throughput(steps=20, batch=256, device="cuda")
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
