"""Captioning benchmark: train a config for a time budget, report test BLEU/CIDEr and images/s.

Example (the issue's quality target: default config, 2 CPU cores, <= 15 minutes)::

    taskset -c 0,1 python benchmarks/captioning.py --minutes 14 --threads 2 --out captioning_bench.json

Reports, as JSON (``--out``) and a markdown snippet (stdout):

* test BLEU-1..4 (0-100, COCO-toolkit style) and CIDEr-D on the test split and, for generated
  scenes, separately on the unseen colour-shape split, decoded with the config's beam size;
* training throughput in images/s, measured over training batches only (validation excluded),
  with a step-time breakdown: time waiting for the DataLoader vs time in forward/backward/step,
  which shows whether data loading is the bottleneck;
* the validation curve (step, elapsed seconds, BLEU-4) to show how fast the target is reached.

Numbers depend on the machine: the JSON records device, thread count and versions. Nothing here
is asserted: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tasks.captioning.cli import make_cli


class ThroughputMeter(L.Callback):
    """Wall time of training batches split into "waiting for data" and "compute" (rank zero view)."""

    def __init__(self) -> None:
        self.images = 0
        self.compute_s = 0.0
        self.data_s = 0.0
        self.steps = 0
        self._end: float | None = None
        self._start = 0.0
        self.curve: list[dict[str, float]] = []
        self._t0 = time.perf_counter()

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        if self._end is not None:
            self.data_s += now - self._end  # gap since the previous step ended = waiting for the loader
        self._start = now

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.compute_s += now - self._start
        self._end = now
        self.steps += 1
        self.images += len(batch) if batch is not None else 0

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end = None  # do not count validation as data wait

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        m = trainer.callback_metrics
        if "val/bleu4" in m and not trainer.sanity_checking:
            self.curve.append(
                {
                    "step": trainer.global_step,
                    "elapsed_s": round(time.perf_counter() - self._t0, 1),
                    "val_bleu4": round(float(m["val/bleu4"]), 2),
                    "val_cider": round(float(m.get("val/cider", float("nan"))), 3),
                }
            )
            print(
                f"[bench] step {trainer.global_step} t={self.curve[-1]['elapsed_s']}s "
                f"val/bleu4={self.curve[-1]['val_bleu4']}",
                flush=True,
            )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--config", action="append", default=None, help="config file(s); default configs/captioning/default.yaml"
    )
    p.add_argument(
        "--minutes",
        type=float,
        default=14.0,
        help="training time cap (validation included); the config's max_epochs may end the run first",
    )
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (e.g. 2 for the 2-core target)")
    p.add_argument("--accelerator", default="cpu", help="cpu, gpu or auto")
    p.add_argument("--out", default=None, help="JSON output file")
    p.add_argument("--root", default="runs/captioning/bench", help="where checkpoints/logs go")
    p.add_argument("overrides", nargs="*", help="extra LightningCLI overrides, e.g. --data.batch_size=128")
    args, extra = p.parse_known_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    configs = args.config or [str(REPO / "configs/captioning/default.yaml")]
    minutes = int(args.minutes * 60)
    cli_args: list[str] = []
    for c in configs:
        cli_args += ["-c", c]
    cli_args += [
        f"--trainer.max_time=00:00:{minutes // 60:02d}:{minutes % 60:02d}",
        f"--trainer.accelerator={args.accelerator}",
        f"--trainer.default_root_dir={args.root}",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        *args.overrides,
        *extra,
    ]
    cli = make_cli(cli_args, run=False)
    from lightning.pytorch.callbacks import ModelCheckpoint

    for cb in cli.trainer.callbacks:
        if isinstance(cb, ModelCheckpoint):  # keep benchmark checkpoints away from the user's runs
            cb.dirpath = str(Path(args.root) / "checkpoints")
    meter = ThroughputMeter()
    cli.trainer.callbacks.append(meter)
    t0 = time.perf_counter()
    cli.trainer.fit(cli.model, cli.datamodule)
    train_wall = time.perf_counter() - t0
    t1 = time.perf_counter()
    results = cli.trainer.test(cli.model, cli.datamodule, verbose=False)
    test_wall = time.perf_counter() - t1
    metrics = {k: round(float(v), 3) for r in results for k, v in r.items()}
    dev = "cpu"
    if args.accelerator != "cpu" and torch.cuda.is_available():
        dev = torch.cuda.get_device_name(0)
    report = {
        "benchmark": "captioning",
        "configs": configs,
        "overrides": args.overrides + extra,
        "budget_minutes": args.minutes,
        "device": dev,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count_visible": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "train_wall_s": round(train_wall, 1),
        "test_wall_s": round(test_wall, 1),
        "steps": meter.steps,
        "epochs": cli.trainer.current_epoch,
        "train_images": meter.images,
        "train_images_per_s": round(meter.images / max(meter.compute_s + meter.data_s, 1e-9), 1),
        "compute_s": round(meter.compute_s, 1),
        "data_wait_s": round(meter.data_s, 1),
        "data_wait_fraction": round(meter.data_s / max(meter.compute_s + meter.data_s, 1e-9), 3),
        "test": metrics,
        "val_curve": meter.curve,
    }
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)
    t = metrics
    print("\n| split | BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 | CIDEr-D |\n|---|---|---|---|---|---|")
    for split in ("test", "unseen"):
        if f"{split}/bleu4" in t:
            row = " | ".join(f"{t[f'{split}/{k}']:.1f}" for k in ("bleu1", "bleu2", "bleu3", "bleu4"))
            print(f"| {split} | {row} | {t[f'{split}/cider']:.2f} |")
    print(
        f"\nTraining: {report['train_images_per_s']} images/s on {dev} ({report['torch_threads']} threads, "
        f"{report['cpu_count_visible']} visible cores), {meter.steps} steps / {report['train_wall_s']} s wall; "
        f"data wait {100 * report['data_wait_fraction']:.1f}% of step time."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
