"""Memory of additive and location attention in a full speech training step at long sources.

One training step (encoder, teacher-forced attention decoder, CE + CTC, backward) of the default
speech model on utterances long enough for 1,000+ encoder frames, for each attention formulation:

* ``memory_efficient=True``: `core.attention.additive_scores` (tanh recomputed in backward), the
  speech and captioning default;
* ``memory_efficient=False``: the plain autograd formulation, which keeps a ``(B, S, H)`` tanh per
  decoder step, i.e. the whole ``(B, L, S, H)`` tensor by the end of the loop (the naive way);
* ``memory_efficient=None``: auto (`core.attention.additive.auto_memory_efficient`), the
  translation RNN's default.

Reported per variant: bytes autograd saves for backward in the whole step and in the attention
decoder alone (device independent), the median step time and, on CUDA, the peak allocated memory.
Ratios are against the plain formulation of the same run::

    python benchmarks/speech_memory.py --out benchmarks/results/speech_memory_cpu.json
    python benchmarks/speech_memory.py --device cuda --batch 32 --out $OUT/speech_memory_gpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.attention import saved_bytes
from tasks.speech.model import ASRModel


def run(attention: str, memory_efficient: bool | None, args: argparse.Namespace) -> dict[str, Any]:
    dev = torch.device(args.device)
    torch.manual_seed(0)
    opts: dict[str, Any] = {"hidden_dim": args.attn_dim, "memory_efficient": memory_efficient}
    if attention == "location":
        opts.update(conv_channels=10, kernel_size=15)
    # The default config's sizes (configs/speech/default.yaml).
    model = ASRModel(
        args.vocab,
        n_mels=80,
        encoder="lstm",
        encoder_dim=160,
        encoder_layers=2,
        hidden_dim=192,
        embed_dim=48,
        attention=attention,
        attention_options=opts,
        dropout=0.1,
    ).to(dev)
    b, frames, l_out = args.batch, args.frames * 4, args.tokens  # 4x time reduction in the encoder
    feats = torch.randn(b, frames, 80, device=dev)  # (B, T, F)
    feat_lens = torch.full((b,), frames, device=dev)
    tokens = torch.randint(4, args.vocab, (b, l_out), device=dev)  # (B, L)
    inputs = torch.cat([torch.ones(b, 1, dtype=torch.long, device=dev), tokens[:, :-1]], 1)  # BOS + shift

    def loss() -> torch.Tensor:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            enc, mask, ctc_lp = model.encode(feats, feat_lens)  # (B, S, D), (B, S), (B, S, V)
            logits, _ = model.decoder(enc, mask, inputs)  # (B, L, V)
        ce = F.cross_entropy(logits.float().transpose(1, 2), tokens)
        ctc = F.ctc_loss(
            ctc_lp.float().transpose(0, 1),
            tokens,
            mask.sum(-1),
            torch.full((b,), l_out, device=dev),
            zero_infinity=True,
        )
        return ce + ctc

    def step() -> None:
        model.zero_grad(set_to_none=True)
        loss().backward()

    s = model.encode(feats[:1], feat_lens[:1])[0].shape[1]
    step()  # warm-up
    saved = saved_bytes(loss)
    with torch.no_grad():
        enc0, mask0, _ = model.encode(feats, feat_lens)
    enc0 = enc0.float().requires_grad_()  # the decoder alone, as if gradients flowed on to the encoder

    def decoder_loss() -> torch.Tensor:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            logits, _ = model.decoder(enc0, mask0, inputs)  # (B, L, V)
        return F.cross_entropy(logits.float().transpose(1, 2), tokens)

    saved_dec = saved_bytes(decoder_loss)
    times = []
    for _ in range(args.reps):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak = None
    if dev.type == "cuda":
        model.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    return {
        "attention": attention,
        "memory_efficient": memory_efficient,
        "encoder_frames": s,
        "saved_for_backward_mb": round(saved / 2**20, 1),
        "decoder_saved_mb": round(saved_dec / 2**20, 1),
        "step_ms": round(statistics.median(times) * 1e3, 1),
        "cuda_peak_mb": None if peak is None else round(peak / 2**20, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--frames", type=int, default=1000, help="encoder frames (40 ms each; 4x as many mel frames)")
    p.add_argument("--tokens", type=int, default=200, help="target units per utterance (decoder steps)")
    p.add_argument("--attn-dim", type=int, default=128, help="attention hidden size H (default config: 128)")
    p.add_argument("--vocab", type=int, default=32)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [run(a, me, args) for a in ("additive", "location") for me in (False, True, None)]
    for a in ("additive", "location"):
        plain = next(r for r in rows if r["attention"] == a and r["memory_efficient"] is False)
        for r in rows:
            if r["attention"] == a:
                r["saved_ratio_plain_over_this"] = round(plain["saved_for_backward_mb"] / r["saved_for_backward_mb"], 2)
                r["decoder_saved_ratio_plain_over_this"] = round(plain["decoder_saved_mb"] / r["decoder_saved_mb"], 2)
                r["time_ratio_this_over_plain"] = round(r["step_ms"] / plain["step_ms"], 2)
    b, s, h, l_out = args.batch, rows[0]["encoder_frames"], args.attn_dim, args.tokens
    result = {
        "command": "python benchmarks/speech_memory.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "device": args.device,
            "cuda": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
            "torch_threads": torch.get_num_threads(),
        },
        "batch": b,
        "encoder_frames": s,
        "decoder_steps": l_out,
        "attention_hidden": h,
        "dtype": "bf16 autocast" if args.device.startswith("cuda") else "fp32",
        "full_BLSH_tensor_mb": round(b * l_out * s * h * (2 if args.device.startswith("cuda") else 4) / 2**20, 1),
        "rows": rows,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    print(
        "\n| attention | memory_efficient | saved, whole step (MB) | saved, decoder (MB) | decoder plain / this "
        "| step ms | this / plain | CUDA peak MB |\n|---|---|---|---|---|---|---|---|"
    )
    for r in rows:
        print(
            f"| {r['attention']} | {r['memory_efficient']} | {r['saved_for_backward_mb']} | {r['decoder_saved_mb']} | "
            f"{r['decoder_saved_ratio_plain_over_this']}x | {r['step_ms']} | {r['time_ratio_this_over_plain']} | "
            f"{r['cuda_peak_mb']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
