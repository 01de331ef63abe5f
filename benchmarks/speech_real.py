"""Real-data check: load -> train (fixed budget) -> evaluate on ../shared/data corpora.

For each source, 10% (at least a few utterances) is held out; the default model config trains for
`--minutes` and the script reports CER/WER of beam search (beam 5) on up to 50 training utterances
and on the held-out ones. Small corpora and minute budgets: these numbers show that the pipeline runs
end to end on real recordings (resampling, bad rows, long utterances), not what the model can reach.

Usage::

    python benchmarks/speech_real.py --minutes 3 --out runs/bench/speech_real \\
        fsdd=../shared/data/fsdd-subset cv=../shared/data/common-voice-100 \\
        libri=../shared/data/librispeech-mini/LibriSpeech
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from torchmetrics.functional.text import char_error_rate, word_error_rate

ROOT = Path(__file__).resolve().parents[1]


def run_one(name: str, source: str, minutes: float, out: Path) -> dict[str, Any]:
    """Train on `source` for `minutes`, return load/train/eval figures."""
    from tasks.speech.data import SpeechDataModule
    from tasks.speech.module import SpeechModule
    from tasks.speech.text import normalize_text

    cfg = yaml.safe_load((ROOT / "configs/speech/default.yaml").read_text())
    L.seed_everything(0, verbose=False)
    t0 = time.perf_counter()
    dm = SpeechDataModule(train=source, val_fraction=0.1, max_seconds=20.0, num_workers=1, max_frames=16000)
    dm.setup("fit")
    load_s = time.perf_counter() - t0
    model = SpeechModule(**cfg["model"])
    trainer = L.Trainer(
        max_time={"seconds": int(minutes * 60)},
        max_epochs=1000,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        gradient_clip_val=5.0,
        default_root_dir=str(out),
    )
    t1 = time.perf_counter()
    trainer.fit(model, dm)
    fit_s = time.perf_counter() - t1

    def score(utts: list[Any]) -> tuple[float, float]:
        hyps = model.transcribe([u.audio for u in utts], beam=5)
        refs = [normalize_text(u.text) for u in utts]
        return float(char_error_rate(hyps, refs)), float(word_error_rate(hyps, refs))

    train_utts, held = dm.splits["train"][:50], dm.splits["val"]
    tr_cer, tr_wer = score(train_utts)
    te_cer, te_wer = score(held)
    return {
        "source": source,
        "train_utterances": len(dm.splits["train"]),
        "heldout_utterances": len(held),
        "train_hours": round(sum(u.duration or 0 for u in dm.splits["train"]) / 3600, 3),
        "load_seconds": round(load_s, 1),
        "fit_seconds": round(fit_s, 1),
        "steps": trainer.global_step,
        "train_cer": round(tr_cer, 4),
        "train_wer": round(tr_wer, 4),
        "heldout_cer": round(te_cer, 4),
        "heldout_wer": round(te_wer, 4),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sources", nargs="+", help="NAME=PATH pairs")
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--out", type=Path, default=ROOT / "runs/bench/speech_real")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for spec in args.sources:
        name, _, path = spec.partition("=")
        if not Path(path).exists():
            print(f"skip {name}: {path} absent", file=sys.stderr)
            continue
        results[name] = run_one(name, path, args.minutes, args.out)
        print(name, json.dumps(results[name]), flush=True)
    (args.out / "speech_real.json").write_text(json.dumps(results, indent=1))
    for name, r in results.items():
        print(
            f"| {name} | {r['train_utterances']} utts / {r['train_hours']} h | {r['steps']} steps in "
            f"{r['fit_seconds']} s | train CER {100 * r['train_cer']:.1f}% WER {100 * r['train_wer']:.1f}% | "
            f"held-out CER {100 * r['heldout_cer']:.1f}% WER {100 * r['heldout_wer']:.1f}% |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
