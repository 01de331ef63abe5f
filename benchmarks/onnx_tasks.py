"""Captioning and speech on ONNX Runtime: the demo models' held-out scores and per-item decode time, eager PyTorch vs
ONNX Runtime float32 vs ONNX Runtime int8.

Each demo model (``demo_output/<task>/model``) is exported with ``export_onnx`` (float32 and int8) and scored as its
demo scores it (``tasks/<task>/demo.py``): captioning, corpus BLEU-4 on the held-out scenes (seen and unseen
colour-shape pairs, beam 1 as the demo); speech, CER/WER on the held-out utterances (voices never heard, beam 3,
the model's own CTC scoring). Decode time is per item (batch of one, what a request sees), one thread for every
engine (``torch.set_num_threads(1)``, ONNX Runtime ``intra_op_num_threads=1``), the median of 3 rounds in which the
engines alternate (so a change of machine load hits all of them alike); the load average is recorded.

Usage::

    python benchmarks/onnx_tasks.py [--items 100] [--timed 30] [--out benchmarks/results/onnx_tasks.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ENGINES = ("pytorch", "onnx_float32", "onnx_int8")


def _folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _exports(task: str, model: Path, tmp: Path) -> dict[str, Path]:
    """The model folder and its float32 and int8 ONNX exports."""
    if task == "captioning":
        from tasks.captioning.export import export_onnx
    else:
        from tasks.speech.export import export_onnx
    out = {"pytorch": model}
    for q in ("float32", "int8"):
        out[f"onnx_{q}"] = Path(export_onnx(str(model), str(tmp / f"{task}_{q}"), q))
    return out


def _timed(engines: dict[str, Callable[[Any], Any]], items: Sequence[Any], rounds: int = 3) -> dict[str, float]:
    """Median over ``rounds`` of the mean per-item time (ms) of each engine; engines alternate within a round."""
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(rounds):
        for name, run in engines.items():
            t0 = time.perf_counter()
            for item in items:
                run(item)
            times[name].append(1000.0 * (time.perf_counter() - t0) / len(items))
    return {name: statistics.median(v) for name, v in times.items()}


def captioning(model: Path, tmp: Path, n: int, timed: int) -> dict[str, Any]:
    from tasks.captioning.demo import DEMO_BEAM, held_out
    from tasks.captioning.inference import Captioner
    from tasks.captioning.metrics import corpus_bleu

    folders = _exports("captioning", model, tmp)
    models = {
        name: Captioner.from_pretrained(path, threads=None if name == "pytorch" else 1)
        for name, path in folders.items()
    }
    size = models["pytorch"].image_size
    groups = {"test": held_out(n, "test", size), "unseen": held_out(n, "unseen", size)}
    scores: dict[str, dict[str, float]] = {}
    captions: dict[str, dict[str, list[str]]] = {}
    for name, m in models.items():
        scores[name], captions[name] = {}, {}
        for group, items in groups.items():
            caps = [str(c) for c in m.caption([s.image for s in items], beam=DEMO_BEAM, batch_size=50)]
            captions[name][group] = caps
            scores[name][f"bleu4_{group}"] = corpus_bleu(caps, [s.captions for s in items])[3]
    images = [s.image for s in groups["test"][:timed]]

    def one(m: Captioner, beam: int) -> Callable[[Any], Any]:
        return lambda image: m.caption(image, beam=beam)

    ms = _timed({name: one(m, DEMO_BEAM) for name, m in models.items()}, images)
    ms_beam5 = _timed({name: one(m, 5) for name, m in models.items()}, images)
    same = {
        name: sum(a == b for g in groups for a, b in zip(captions[name][g], captions["pytorch"][g])) / (2 * n)
        for name in models
    }
    return {
        "model": str(model.relative_to(ROOT)),
        "items": {g: len(v) for g, v in groups.items()},
        "beam": DEMO_BEAM,
        "scores": scores,
        "same_caption_as_pytorch": same,
        "ms_per_image": ms,
        "ms_per_image_beam5": ms_beam5,
        "folder_bytes": {name: _folder_size(p) for name, p in folders.items()},
    }


def speech(model: Path, tmp: Path, n: int, timed: int) -> dict[str, Any]:
    from core.metrics.text import char_error_rate, word_error_rate
    from tasks.speech.audio import load_audio
    from tasks.speech.demo import DEMO_BEAM, DEMO_DATA
    from tasks.speech.inference import Transcriber
    from tasks.speech.text import normalize_text

    folders = _exports("speech", model, tmp)
    models = {
        name: Transcriber.from_pretrained(path, threads=None if name == "pytorch" else 1)
        for name, path in folders.items()
    }
    from tasks.speech.data import SpeechDataModule

    dm = SpeechDataModule(**DEMO_DATA)
    dm.prepare_data()
    dm.setup("test")
    utts = list(dm.splits["test"][:n])
    logmel = models["pytorch"].logmel
    feats = [(logmel(load_audio(u.audio)), normalize_text(u.text)) for u in utts]
    refs = [r for _, r in feats]
    scores: dict[str, dict[str, float]] = {}
    hyps: dict[str, list[str]] = {}
    for name, m in models.items():
        out = []
        order = sorted(range(len(feats)), key=lambda i: feats[i][0].shape[0])
        texts = [""] * len(feats)
        for s in range(0, len(order), 16):
            idx = order[s : s + 16]
            x = [feats[i][0] for i in idx]
            lens = torch.tensor([f.shape[0] for f in x])
            batch = torch.nn.utils.rnn.pad_sequence(x, batch_first=True)  # (B, T, F)
            for i, (best, *_) in zip(idx, m.decode_features(batch, lens, beam=DEMO_BEAM)):
                texts[i] = best.text
        out = texts
        hyps[name] = out
        scores[name] = {"cer": 100.0 * char_error_rate(out, refs), "wer": 100.0 * word_error_rate(out, refs)}

    def one(m: Any) -> Callable[[Any], Any]:
        return lambda f: m.decode_features(f[0][None], torch.tensor([f[0].shape[0]]), beam=DEMO_BEAM)

    ms = _timed({name: one(m) for name, m in models.items()}, feats[:timed])
    same = {name: sum(a == b for a, b in zip(hyps[name], hyps["pytorch"])) / len(refs) for name in models}
    search = models["pytorch"].search
    return {
        "model": str(model.relative_to(ROOT)),
        "items": len(refs),
        "beam": DEMO_BEAM,
        "ctc_weight": search.ctc_weight,
        "joint_ctc_decoding": search.joint_ctc_decoding,
        "scores": scores,
        "same_transcript_as_pytorch": same,
        "ms_per_utterance_from_features": ms,
        "mean_seconds_per_utterance": sum(f.shape[0] for f, _ in feats) / len(feats) / 100.0,
        "folder_bytes": {name: _folder_size(p) for name, p in folders.items()},
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, default=100, help="held-out items scored per group (the demo's 100)")
    p.add_argument("--timed", type=int, default=30, help="items timed one by one")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "onnx_tasks.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    result: dict[str, Any] = {
        "threads": 1,
        "cpu_count": os.cpu_count(),
        "load_average_before": os.getloadavg(),
        "versions": {"torch": torch.__version__},
    }
    import onnxruntime

    result["versions"]["onnxruntime"] = onnxruntime.__version__
    with tempfile.TemporaryDirectory() as tmp:
        for task, fn in (("captioning", captioning), ("speech", speech)):
            model = ROOT / "demo_output" / task / "model"
            if not (model / "config.json").is_file():
                result[task] = "no demo model (run make demo)"
                continue
            t0 = time.perf_counter()
            result[task] = fn(model, Path(tmp), args.items, args.timed)
            result[task]["wall_s"] = round(time.perf_counter() - t0, 1)
            result[task]["load_average_after"] = os.getloadavg()
            print(json.dumps({task: result[task]["scores"]}, indent=1), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
