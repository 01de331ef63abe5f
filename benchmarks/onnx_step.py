"""Translation decoding on ONNX Runtime graphs (``tasks.translation.onnx_graphs``) vs the PyTorch network (issue 25).

Two randomly initialised networks: the RNN of the default recipe (``configs/translation/default.yaml``: GRU, additive
attention, embed 128, hidden 256, 1 + 1 layers) and the Transformer of the CPU recipe
(``configs/translation/tatoeba_cpu.yaml``: d_model 256, 4 heads, FFN 1024, 3 + 3 layers, tied embeddings), both with
the CPU recipe's 8000-token vocabulary. A batch of 64 synthetic sources (5-20 tokens) is decoded greedily and with
beam 5 by the same ``core.decoding.beam.beam_search``, on 1 and 2 threads, by three engines: eager PyTorch, ONNX
Runtime float32 and ONNX Runtime int8 (dynamic quantization). EOS is suppressed (with PAD and BOS), so every engine
runs the same ``--max-len`` steps on the same rows (random weights would otherwise stop at random points, and int8
at others). Each measurement is the median of ``--rounds`` rounds, engines alternated within a round after a
warm-up; the load average is printed and recorded. Writes ``benchmarks/results/onnx_step.json``::

    .venv/bin/python benchmarks/onnx_step.py [--rounds 3] [--max-len 30]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.decoding.beam import DecodeResult, beam_search
from core.engines.onnx import load_graphs
from core.text.tokenizers import BOS_ID, EOS_ID, PAD_ID
from tasks.translation.networks import build_network
from tasks.translation.onnx_graphs import write_onnx
from tasks.translation.options import TranslationOptions

VOCAB = 8000
MODELS = {
    "rnn-additive": TranslationOptions(
        arch="rnn", rnn_type="gru", attention="additive", embed_dim=128, hidden_dim=256, dropout=0.0
    ),
    "transformer": TranslationOptions(
        arch="transformer",
        hidden_dim=256,
        num_heads=4,
        ffn_dim=1024,
        encoder_layers=3,
        decoder_layers=3,
        tie_embeddings=True,
        dropout=0.0,
    ),
}


def batch(n: int = 64, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` padded sources ``(n, S)`` of 5-20 random ids and their lengths ``(n,)``."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(5, 21, (n,), generator=g)
    src = torch.randint(4, VOCAB, (n, int(lengths.max())), generator=g)
    src = src * (torch.arange(src.shape[1]) < lengths[:, None])  # (n, S): PAD (0) after each length
    return src, lengths


@torch.no_grad()
def decode(net: Any, src: Tensor, lengths: Tensor, beam: int, max_len: int) -> DecodeResult:
    """What ``Translator.decode`` runs, with EOS suppressed: exactly ``max_len`` steps."""
    return beam_search(
        lambda t, s: net.step(t, s, False),
        net.init_state(src, lengths),
        batch_size=src.shape[0],
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        max_len=max_len,
        beam_size=beam,
        suppress=(PAD_ID, BOS_ID, EOS_ID),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-len", type=int, default=30)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "onnx_step.json"))
    args = parser.parse_args()
    src, lengths = batch()
    load_before = os.getloadavg()
    print(f"load average before: {load_before}", flush=True)
    results: dict[str, Any] = {
        "description": __doc__.split("\n\n")[1].replace("\n", " "),
        "batch": int(src.shape[0]),
        "source_tokens": int(lengths.sum()),
        "max_len": args.max_len,
        "rounds": args.rounds,
        "torch": torch.__version__,
        "load_before": load_before,
        "models": {},
    }
    tmp = Path(tempfile.mkdtemp(prefix="onnx_step_"))
    for name, options in MODELS.items():
        torch.manual_seed(0)
        network: nn.Module = build_network(options, VOCAB, VOCAB).eval()
        engines: dict[str, Any] = {"eager": network}
        model: dict[str, Any] = {"options": {k: v for k, v in vars(options).items() if v is not None}, "graphs": {}}
        infos: dict[str, Any] = {}
        for quantize in ("float32", "int8"):
            t0 = time.perf_counter()
            infos[quantize] = write_onnx(network, options, tmp / name / quantize, quantize)
            model["graphs"][quantize] = {
                "export_s": round(time.perf_counter() - t0, 2),
                "bytes": {p.name: p.stat().st_size for p in sorted((tmp / name / quantize).iterdir())},
                "quantized_nodes": infos[quantize]["quantized_nodes"],
            }
        timings: dict[str, Any] = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for quantize in ("float32", "int8"):
                where = f"{name} {quantize}"
                engines[f"ort-{quantize}"] = load_graphs(tmp / name / quantize, infos[quantize], threads, where)
            for beam in (1, 5):
                times: dict[str, list[float]] = {e: [] for e in engines}
                outputs: dict[str, Any] = {}
                for e, net in engines.items():  # warm-up (first-run allocations, oneDNN primitive caches)
                    outputs[e] = decode(net, src, lengths, beam, args.max_len).tokens
                for _ in range(args.rounds):
                    for e, net in engines.items():
                        t0 = time.perf_counter()
                        decode(net, src, lengths, beam, args.max_len)
                        times[e].append(time.perf_counter() - t0)
                row = {e: round(statistics.median(v) * 1000, 1) for e, v in times.items()}
                same = {e: outputs[e] == outputs["eager"] for e in engines if e != "eager"}
                key = f"threads={threads} beam={beam}"
                timings[key] = {"median_ms": row, "same_tokens_as_eager": same, "all_ms": times}
                speed = ", ".join(f"{e} {row[e]:.0f} ms ({row['eager'] / row[e]:.2f}x)" for e in engines)
                print(f"{name:13s} {key:18s} {speed}; same tokens: {same}", flush=True)
        model["timings"] = timings
        results["models"][name] = model
    torch.set_num_threads(2)
    results["load_after"] = os.getloadavg()
    print(f"load average after: {results['load_after']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
