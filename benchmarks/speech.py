"""Speech benchmark: default config under a time budget -> CER/WER on the unseen-voice test split.

Measures (all on the device that runs it, named in the output):
  * corpus synthesis time (eSpeak NG, cached after the first run),
  * training throughput in audio seconds per second (training steps only, validation excluded),
  * CER/WER of beam search (beam 5, CTC-rescored) on the synthesised test split whose voices never
    occur in training, with the best-validation-CER checkpoint,
  * real-time factor of `SpeechModule.transcribe` on CPU (decode seconds / audio seconds).

Usage::

    python benchmarks/speech.py --minutes 17 --out runs/bench/speech        # the issue's 20-min target
    python benchmarks/speech.py --minutes 2 --config configs/speech/default.yaml --out /tmp/b   # quick look

Writes `<out>/speech.json` and prints a markdown snippet.
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
import yaml
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

ROOT = Path(__file__).resolve().parents[1]


class Throughput(Callback):
    """Audio seconds / wall second over training batches only (validation time excluded).

    Also splits training wall time into waiting for the DataLoader (gap between one step's end and
    the next step's start) and compute, which shows whether data loading is the bottleneck.
    """

    def __init__(self) -> None:
        self.audio_s = 0.0
        self.train_s = 0.0
        self.data_s = 0.0
        self.steps = 0
        self._t = 0.0
        self._end: float | None = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._t = time.perf_counter()
        if self._end is not None:
            self.data_s += self._t - self._end

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if torch.cuda.is_available() and pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        self._end = time.perf_counter()
        if batch.get("empty"):
            return
        self.train_s += self._end - self._t
        self.audio_s += float(batch["feat_lens"].sum()) * 0.01  # 10 ms frames
        self.steps += 1

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end = None  # validation time is not data wait


def _device_name(accelerator: str) -> str:
    """The device that trained: the GPU's name, or the CPU with its visible cores."""
    if accelerator != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"CPU ({platform.processor() or platform.machine()}, {cores} usable cores)"


def run(
    minutes: float,
    config: Path,
    out: Path,
    accelerator: str = "cpu",
    rtf_files: int = 30,
    data_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train the config for `minutes`, evaluate on the test split, time transcription."""
    from tasks.speech.data import SpeechDataModule
    from tasks.speech.module import SpeechModule
    from tasks.speech.synth import generate_corpus

    cfg = yaml.safe_load(config.read_text())
    L.seed_everything(cfg.get("seed_everything", 0))
    out.mkdir(parents=True, exist_ok=True)
    data_cfg = dict(cfg.get("data") or {})
    data_cfg.update(data_overrides or {})
    dm = SpeechDataModule(**data_cfg)
    t0 = time.perf_counter()
    if dm.hparams.train is None:
        generate_corpus(**dm._synth_kwargs())
    synth_s = time.perf_counter() - t0
    model = SpeechModule(**(cfg.get("model") or {}))
    tput = Throughput()
    ckpt = ModelCheckpoint(dirpath=out / "ckpt", monitor="val/cer", mode="min", save_last=True)
    tr_cfg = {k: v for k, v in (cfg.get("trainer") or {}).items() if k not in ("default_root_dir", "max_time")}
    trainer = L.Trainer(
        **tr_cfg,
        max_time={"seconds": int(minutes * 60)},
        accelerator=accelerator,
        devices=1,
        default_root_dir=str(out),
        callbacks=[tput, ckpt],
        enable_progress_bar=False,
    )
    t1 = time.perf_counter()
    trainer.fit(model, dm)
    fit_s = time.perf_counter() - t1
    best = ckpt.best_model_path or ckpt.last_model_path
    if not best:  # the time budget ended before the first validation: evaluate the final weights
        best = str(out / "final.ckpt")
        trainer.save_checkpoint(best)
    test = trainer.test(model, dm, ckpt_path=best, verbose=False)[0]

    # Real-time factor of the inference API on CPU, over the first test files.
    m = SpeechModule.load_from_checkpoint(best, map_location="cpu")
    files = [u.audio for u in dm.splits["test"][:rtf_files]]
    audio_s = sum(u.duration or 0.0 for u in dm.splits["test"][:rtf_files])
    m.transcribe(files[:2], beam=5)  # warm-up
    t2 = time.perf_counter()
    m.transcribe(files, beam=5)
    rtf = (time.perf_counter() - t2) / max(audio_s, 1e-9)

    res = {
        "device": _device_name(accelerator),
        "torch_threads_in_training": torch.get_num_threads(),
        "torch": torch.__version__,
        "config": str(config),
        "budget_minutes": minutes,
        "synthesis_seconds": round(synth_s, 1),
        "fit_seconds": round(fit_s, 1),
        "steps": trainer.global_step,
        "epochs": trainer.current_epoch,
        "train_audio_seconds_per_second": round(tput.audio_s / max(tput.train_s + tput.data_s, 1e-9), 1),
        "data_wait_fraction": round(tput.data_s / max(tput.train_s + tput.data_s, 1e-9), 3),
        "test_cer": round(float(test["test/cer"]), 4),
        "test_wer": round(float(test["test/wer"]), 4),
        "data_overrides": data_overrides or {},
        "test_split": "synthesised, voices unseen in training" if dm.hparams.train is None else str(dm.hparams.test),
        "transcribe_rtf_cpu_beam5": round(rtf, 4),
        "checkpoint": best,
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "cpu_count": os.cpu_count(),
    }
    (out / "speech.json").write_text(json.dumps(res, indent=1))
    return res


def markdown(r: dict[str, Any]) -> str:
    """A RESULTS.md snippet."""
    return (
        f"| speech (default config, {r['budget_minutes']} min budget) | {r['device']} | "
        f"CER {100 * r['test_cer']:.2f}% / WER {100 * r['test_wer']:.2f}% (unseen voices) | "
        f"{r['train_audio_seconds_per_second']} audio-s/s training (data wait {100 * r['data_wait_fraction']:.1f} %) | "
        f"RTF {r['transcribe_rtf_cpu_beam5']} (CPU, beam 5) | "
        f"synthesis {r['synthesis_seconds']} s, {r['steps']} steps |\n\n`{r['command']}`"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=17.0, help="training time budget (synthesis not included)")
    p.add_argument("--config", type=Path, default=ROOT / "configs/speech/default.yaml")
    p.add_argument("--out", type=Path, default=ROOT / "runs/bench/speech")
    p.add_argument("--accelerator", default="cpu")
    p.add_argument("--num-workers", type=int, default=None, help="override data.num_workers")
    p.add_argument("--max-frames", type=int, default=None, help="override data.max_frames (batch size)")
    args = p.parse_args(argv)
    over = {k: v for k, v in (("num_workers", args.num_workers), ("max_frames", args.max_frames)) if v is not None}
    r = run(args.minutes, args.config, args.out, args.accelerator, data_overrides=over)
    print(json.dumps(r, indent=1))
    print(markdown(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
