"""Attention micro-benchmarks: forward+backward time and memory, each against a baseline.

Run (CPU):   .venv/bin/python benchmarks/attention.py --json benchmarks/out/attention_cpu.json
Run (GPU):   python benchmarks/attention.py --device cuda --json $OUT/attention_gpu.json

Three groups, every figure next to its baseline from the same run:

1. ``full``: each mechanism on a full (B, T, S, D) problem vs a naive formulation
   (explicit softmax(QK^T)V, or the (B, T, S, H) tanh tensor for additive).
2. ``decoder_steps``: additive/location attention stepped T times over a long source the way
   an RNN decoder uses it (keys projected once), vs the naive step that re-projects keys and
   keeps a (B, S, H) tanh per step for backward. Memory = bytes autograd saves for backward
   (and the CUDA peak on GPU).
3. ``sdpa``: multihead (need_weights=False) vs raw `F.scaled_dot_product_attention` plus the
   same four projections, and scaled_dot vs raw SDPA, with TFLOP/s on GPU in bf16 at
   B8 H16 T=S=2048 D64 (FlashAttention convention: fwd = 4·B·H·T·S·D, bwd = 2.5 × fwd).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from core.attention import build_attention, lengths_to_mask


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timeit(fn: Callable[[], None], device: torch.device, min_time: float = 0.5, warmup: int = 2) -> float:
    """Median seconds per call of ``fn`` (forward+backward)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    total = 0.0
    while total < min_time or len(times) < 3:
        t0 = time.perf_counter()
        fn()
        sync(device)
        dt = time.perf_counter() - t0
        times.append(dt)
        total += dt
    times.sort()
    return times[len(times) // 2]


def saved_bytes(fn: Callable[[], torch.Tensor]) -> int:
    """Bytes of distinct tensors autograd saves for backward while running ``fn``."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def peak_cuda(fn: Callable[[], None], device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    fn()
    sync(device)
    return torch.cuda.max_memory_allocated()


def naive_dot(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    scores = (q @ k.transpose(-2, -1)) * scale
    scores = scores.masked_fill(~mask[:, None, :], torch.finfo(scores.dtype).min)
    return scores.softmax(-1) @ v


def bench_full(device: torch.device, dtype: torch.dtype, sizes: list[tuple[int, int, int, int]]) -> list[dict]:
    rows = []
    for b, t, s, d in sizes:
        q = torch.randn(b, t, d, device=device, dtype=dtype, requires_grad=True)
        k = torch.randn(b, s, d, device=device, dtype=dtype, requires_grad=True)
        mask = lengths_to_mask(torch.full((b,), s, device=device), s)
        for name in ["additive", "dot", "general", "scaled_dot", "multihead"]:
            kw = {"num_heads": 8} if name == "multihead" else {}
            attn = build_attention(name, query_dim=d, key_dim=d, **kw).to(device, dtype)

            def ours(need: bool = False) -> None:
                attn(q, k, k, mask, need_weights=need).context.float().sum().backward()

            if name == "additive":

                def naive() -> None:
                    qh, kh = attn.query_proj(q), attn.key_proj(k)
                    e = torch.tanh(qh[:, :, None] + kh[:, None]) @ attn.energy.weight.view(-1)  # (B, T, S)
                    w = e.masked_fill(~mask[:, None], torch.finfo(e.dtype).min).softmax(-1)
                    (w @ k).float().sum().backward()
            elif name == "multihead":

                def naive() -> None:
                    # Same projections, attention core written out (weights materialised).
                    b_, h_ = q.shape[0], attn.num_heads
                    split = lambda y: y.view(b_, -1, h_, d // h_).transpose(1, 2)  # (B, T, E) -> (B, H, T, Dh)
                    qq, kk, vv = split(attn.q_proj(q)), split(attn.k_proj(k)), split(attn.v_proj(k))
                    s_ = (qq @ kk.transpose(-2, -1)) * (d // h_) ** -0.5
                    s_ = s_.masked_fill(~mask[:, None, None, :], torch.finfo(s_.dtype).min)
                    o = (s_.softmax(-1) @ vv).transpose(1, 2).reshape(b_, -1, d)  # (B, H, T, Dh) -> (B, T, E)
                    attn.out_proj(o).float().sum().backward()
            else:

                def naive() -> None:
                    naive_dot(q, k, k, mask, d**-0.5).float().sum().backward()

            row = {
                "group": "full",
                "mechanism": name,
                "B": b,
                "T": t,
                "S": s,
                "D": d,
                "dtype": str(dtype),
                "ours_ms": 1e3 * timeit(ours, device),
                "naive_ms": 1e3 * timeit(naive, device),
                "ours_saved_MB": saved_bytes(lambda: attn(q, k, k, mask, need_weights=False).context) / 2**20,
                "ours_peak_MB": _mb(peak_cuda(ours, device)),
                "naive_peak_MB": _mb(peak_cuda(naive, device)),
            }
            row["speedup_vs_naive"] = row["naive_ms"] / row["ours_ms"]
            rows.append(row)
    return rows


def bench_decoder_steps(
    device: torch.device, dtype: torch.dtype, b: int, s: int, d: int, h: int, steps: int
) -> list[dict]:
    rows = []
    enc = torch.randn(b, s, d, device=device, dtype=dtype, requires_grad=True)
    queries = torch.randn(steps, b, d, device=device, dtype=dtype, requires_grad=True)
    mask = lengths_to_mask(torch.full((b,), s, device=device), s)
    for name in ["additive", "location"]:
        kw = {"conv_channels": 10, "kernel_size": 31} if name == "location" else {}
        attn = build_attention(name, query_dim=d, key_dim=d, hidden_dim=h, **kw).to(device, dtype)

        def ours() -> torch.Tensor:
            kh, prev, total = attn.precompute(enc), None, 0.0
            for t in range(steps):
                out = attn(queries[t], enc, enc, mask, precomputed=kh, prev_weights=prev)
                prev = attn.accumulate(prev, out.weights)
                total = total + out.context.float().sum()
            return total

        def naive() -> torch.Tensor:
            # Textbook step: re-project keys every step, keep tanh (B, S, H) for backward.
            prev, total = None, 0.0
            for t in range(steps):
                energy_in = attn.query_proj(queries[t])[:, None] + attn.key_proj(enc)  # (B, S, H)
                if name == "location":
                    p = prev if prev is not None else mask.to(dtype) / s
                    energy_in = energy_in + attn.loc_proj(attn.conv(p[:, None]).transpose(1, 2))
                e = torch.tanh(energy_in) @ attn.energy.weight.view(-1)  # (B, S)
                w = e.masked_fill(~mask, torch.finfo(e.dtype).min).softmax(-1)
                prev = w
                total = total + (w[:, None] @ enc).float().sum()
            return total

        row = {
            "group": "decoder_steps",
            "mechanism": name,
            "B": b,
            "steps": steps,
            "S": s,
            "D": d,
            "H": h,
            "dtype": str(dtype),
            "ours_ms": 1e3 * timeit(lambda: ours().backward(), device, min_time=0.3),
            "naive_ms": 1e3 * timeit(lambda: naive().backward(), device, min_time=0.3),
            "ours_saved_MB": saved_bytes(ours) / 2**20,
            "naive_saved_MB": saved_bytes(naive) / 2**20,
            "ours_peak_MB": _mb(peak_cuda(lambda: ours().backward(), device)),
            "naive_peak_MB": _mb(peak_cuda(lambda: naive().backward(), device)),
            "BTSH_MB": b * steps * s * h * torch.finfo(dtype).bits / 8 / 2**20,
        }
        row["speedup_vs_naive"] = row["naive_ms"] / row["ours_ms"]
        row["memory_ratio_naive_over_ours"] = row["naive_saved_MB"] / max(row["ours_saved_MB"], 1e-9)
        rows.append(row)
    return rows


def bench_sdpa(device: torch.device, dtype: torch.dtype, b: int, h: int, t: int, dh: int) -> list[dict]:
    e = h * dh
    x = torch.randn(b, t, e, device=device, dtype=dtype, requires_grad=True)
    mha = build_attention("multihead", query_dim=e, key_dim=e, num_heads=h).to(device, dtype)
    lin = [torch.nn.Linear(e, e).to(device, dtype) for _ in range(4)]

    def split(y: torch.Tensor) -> torch.Tensor:
        return y.view(b, t, h, dh).transpose(1, 2)  # (B, T, E) -> (B, H, T, Dh)

    def ours_mha() -> None:
        mha(x, x, x, need_weights=False).context.float().sum().backward()

    def raw_mha() -> None:
        o = F.scaled_dot_product_attention(split(lin[0](x)), split(lin[1](x)), split(lin[2](x)))
        lin[3](o.transpose(1, 2).reshape(b, t, e)).float().sum().backward()

    # scaled_dot has no head axis: heads folded into the batch, (B*H, T, Dh).
    qh = torch.randn(b * h, t, dh, device=device, dtype=dtype, requires_grad=True)
    q4 = qh.detach().view(b, h, t, dh).requires_grad_(True)
    sdot = build_attention("scaled_dot", query_dim=dh, key_dim=dh).to(device, dtype)

    def ours_sdot() -> None:
        sdot(qh, qh, qh, need_weights=False).context.float().sum().backward()

    def raw_sdpa() -> None:
        F.scaled_dot_product_attention(q4, q4, q4).float().sum().backward()

    flops = 3.5 * 4 * b * h * t * t * dh  # fwd + bwd attention core, FlashAttention convention
    proj_flops = 3 * 4 * 2 * b * t * e * e  # four E x E projections, fwd + 2x bwd
    rows = []
    for name, ours, base, total in [
        ("multihead", ours_mha, raw_mha, flops + proj_flops),
        ("scaled_dot", ours_sdot, raw_sdpa, flops),
    ]:
        ms, base_ms = 1e3 * timeit(ours, device), 1e3 * timeit(base, device)
        rows.append(
            {
                "group": "sdpa",
                "mechanism": name,
                "B": b,
                "H": h,
                "T": t,
                "S": t,
                "Dh": dh,
                "dtype": str(dtype),
                "ours_ms": ms,
                "baseline_ms": base_ms,
                "overhead_vs_baseline": ms / base_ms - 1,
                "TFLOPs_ours": total / ms / 1e9,
                "TFLOPs_baseline": total / base_ms / 1e9,
            }
        )
    return rows


def _mb(n: int | None) -> float | None:
    return None if n is None else n / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    gpu = device.type == "cuda"
    dtype = torch.bfloat16 if gpu else torch.float32
    results = {
        "device": torch.cuda.get_device_name()
        if gpu
        else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "dtype": str(dtype),
        "rows": [],
    }
    if gpu:
        results["rows"] += bench_full(device, dtype, [(32, 64, 256, 512), (8, 512, 512, 512)])
        results["rows"] += bench_decoder_steps(device, dtype, b=32, s=1000, d=512, h=512, steps=50)
        results["rows"] += bench_sdpa(device, dtype, b=8, h=16, t=2048, dh=64)
    else:
        results["rows"] += bench_full(device, dtype, [(8, 32, 64, 128), (4, 64, 256, 256)])
        results["rows"] += bench_decoder_steps(device, dtype, b=8, s=1000, d=128, h=128, steps=20)
        results["rows"] += bench_sdpa(device, dtype, b=2, h=4, t=256, dh=32)
    for row in results["rows"]:
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
