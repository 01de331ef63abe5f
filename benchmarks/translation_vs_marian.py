"""Our translation Transformer vs Hugging Face ``MarianMTModel`` at equal size (issue 7).

Measures, in one run on one device, with random weights and random token batches (no data set, no
tokenizer: only speed is compared, never quality):

(a) training throughput -- target tokens/s and source+target tokens/s of one optimizer step
    (forward, label-smoothed cross-entropy on the logits, backward, AdamW; fused AdamW on CUDA),
    warm-up steps excluded, ``time.perf_counter`` around a fixed number of steps with a
    ``torch.cuda.synchronize`` before each clock read on CUDA. MFU = 6 * params * target tokens/s /
    peak dense bf16 FLOP/s where the device's peak is known (H100 SXM / H200: 989e12), else null.
    Optionally with ``torch.compile`` of both models (``--compile`` adds the compiled rows; the eager
    rows are always measured in the same run).
(b) decoding -- batched beam search (beam 5) sentences/s: our model through ``model.init_state`` +
    ``model.step`` + ``core.decoding.beam.beam_search`` (what ``TranslationModule.translate`` runs) vs
    ``MarianMTModel.generate(num_beams=5, min_new_tokens=N, max_new_tokens=N)``. With random weights the
    lengths would differ, so both decode exactly N tokens: ours gets an EOS id that cannot occur
    (= vocabulary size) and ``max_len=N``; generate gets ``min_new_tokens = max_new_tokens = N`` (EOS
    suppressed until N) and no forced EOS.

Both models: same width, layers, heads, FFN size, vocabulary, dropout (0.1 on embeddings, attention
weights, FFN activations and residual branches), sinusoidal positions, target embedding tied to the
output projection, separate source embedding; SDPA attention (Marian ``attn_implementation="sdpa"``).
Differences that remain: ours is pre-norm with a final LayerNorm per stack (Marian post-norm), Marian
adds a ``final_logits_bias`` buffer. Parameter counts are printed and must agree within 3 %.

GPU (the issue's size, bf16 autocast, fused AdamW; eager + compiled training and decoding should take
well under 3 minutes on an H100/H200, most of it torch.compile)::

    python benchmarks/translation_vs_marian.py --device cuda --compile --out $OUT/translation_vs_marian_h100.json

CPU (small size, fp32; about 45 s eager, about 2.5 min with ``--compile`` and a cold inductor cache)::

    OMP_NUM_THREADS=1 python benchmarks/translation_vs_marian.py --device cpu --size small --threads 1 --rounds 7

On a CPU shared with other jobs use ``--threads 1``: with 2 threads every step waits for the slower
thread, and a run that took 45 s with 1 thread did not finish in 3 minutes with 2. ``--size tiny``
only checks the plumbing (e.g. that ``--compile`` works).

Prints one JSON object (also written to ``--out``, default
``benchmarks/results/translation_vs_marian_<device>.json``) and markdown table rows. Every ratio is
ours / Marian from the same run (> 1 = ours faster). The models are timed in interleaved rounds (order
alternating) so load changes on a shared machine hit both alike; figures are medians over rounds, the
headline ratio is the median of per-round ratios, and the JSON also keeps the best-round ratio and the
ratio of process CPU time (robust to time the scheduler gives to other jobs when ``--threads 1``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SIZES: dict[str, dict[str, int]] = {
    # the GPU spec: Transformer-base-like, 8k vocabulary, 128 sentences x 32 tokens
    "base": dict(
        d_model=512, layers=6, heads=8, ffn_dim=2048, vocab=8000, batch=128, seq=32, decode_batch=64, decode_len=32
    ),
    # CPU-sized
    "small": dict(
        d_model=256, layers=3, heads=4, ffn_dim=1024, vocab=8000, batch=32, seq=32, decode_batch=16, decode_len=32
    ),
    # plumbing check only (e.g. that --compile works), not a benchmark
    "tiny": dict(d_model=64, layers=1, heads=2, ffn_dim=128, vocab=1000, batch=8, seq=16, decode_batch=4, decode_len=8),
}
PEAK_BF16_FLOPS = {"H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12}  # dense bf16 (SXM unless named)
PAD, BOS, EOS = 0, 1, 2


# ------------------------------------------------------------------------------------------ models
def build_ours(cfg: dict[str, int], dropout: float) -> nn.Module:
    from tasks.translation.models import TransformerSeq2Seq

    return TransformerSeq2Seq(
        cfg["vocab"],
        cfg["vocab"],
        d_model=cfg["d_model"],
        num_heads=cfg["heads"],
        ffn_dim=cfg["ffn_dim"],
        encoder_layers=cfg["layers"],
        decoder_layers=cfg["layers"],
        dropout=dropout,
        tie_embeddings=True,
        share_src_tgt_embeddings=False,
        max_positions=max(512, 2 * cfg["seq"]),
    )


def build_marian(cfg: dict[str, int], dropout: float) -> nn.Module:
    from transformers import MarianConfig, MarianMTModel

    mc = MarianConfig(
        vocab_size=cfg["vocab"],
        decoder_vocab_size=cfg["vocab"],
        d_model=cfg["d_model"],
        encoder_layers=cfg["layers"],
        decoder_layers=cfg["layers"],
        encoder_attention_heads=cfg["heads"],
        decoder_attention_heads=cfg["heads"],
        encoder_ffn_dim=cfg["ffn_dim"],
        decoder_ffn_dim=cfg["ffn_dim"],
        activation_function="gelu",
        dropout=dropout,
        attention_dropout=dropout,
        activation_dropout=dropout,
        max_position_embeddings=max(512, 2 * cfg["seq"]),
        scale_embedding=True,
        share_encoder_decoder_embeddings=False,
        tie_word_embeddings=True,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
        decoder_start_token_id=BOS,
        forced_eos_token_id=None,
        use_cache=True,
    )
    try:
        return MarianMTModel(mc, attn_implementation="sdpa")
    except TypeError:  # older transformers: SDPA is the default where available
        return MarianMTModel(mc)


def n_params(m: nn.Module) -> int:
    """Unique trainable parameters (tied weights counted once; buffers such as Marian's
    ``final_logits_bias`` and sinusoidal tables excluded)."""
    return sum(p.numel() for p in {id(p): p for p in m.parameters() if p.requires_grad}.values())


# -------------------------------------------------------------------------------------------- train
def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _autocast(device: str, dtype: str) -> Any:
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)


def make_train_step(
    name: str, model: nn.Module, cfg: dict[str, int], device: str, dtype: str, compile_: bool, label_smoothing: float
) -> Any:
    """One optimizer step (forward, label-smoothed CE, backward, AdamW) on a fixed random batch."""
    g = torch.Generator().manual_seed(0)
    b, s = cfg["batch"], cfg["seq"]
    v = cfg["vocab"]
    src = torch.randint(4, v, (b, s), generator=g).to(device)  # (B, S), no padding
    tgt = torch.randint(4, v, (b, s + 1), generator=g).to(device)  # (B, T+1); in/out shifted by one
    tgt_in, tgt_out = tgt[:, :-1].contiguous(), tgt[:, 1:].contiguous()  # (B, T) each
    lengths = torch.full((b,), s, device=device)
    attn_mask = torch.ones(b, s, dtype=torch.long, device=device)
    model.train()
    fwd = torch.compile(model) if compile_ else model
    opt = torch.optim.AdamW(
        model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9, weight_decay=0.0, fused=device.startswith("cuda")
    )

    def logits_fn() -> Tensor:
        if name == "ours":
            # unpadded=True is what TranslationModule passes for this batch (it checks the lengths it
            # kept on the host); Marian gets an all-ones attention mask.
            return fwd(src, lengths, tgt_in, unpadded=True)[0]  # (B, T, V)
        return fwd(input_ids=src, attention_mask=attn_mask, decoder_input_ids=tgt_in, use_cache=False).logits

    def step() -> Tensor:
        with _autocast(device, dtype):
            logits = logits_fn()
        loss = F.cross_entropy(
            logits.reshape(-1, v).float(), tgt_out.reshape(-1), ignore_index=PAD, label_smoothing=label_smoothing
        )  # same loss as TranslationModule._loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def time_steps(step: Any, n: int, device: str) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) per call of ``step`` over ``n`` calls (device synchronised at
    both ends). On a shared CPU the process time leaves out the time the scheduler gave to other jobs."""
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        step()
    _sync(device)
    return (time.perf_counter() - t0) / n, (time.process_time() - c0) / n


def _median(xs: list[float]) -> float:
    ys = sorted(xs)
    mid = len(ys) // 2
    return ys[mid] if len(ys) % 2 else 0.5 * (ys[mid - 1] + ys[mid])


def train_compare(
    models: dict[str, nn.Module],
    init_state: dict[str, Any],
    cfg: dict[str, int],
    device: str,
    dtype: str,
    compile_: bool,
    steps: int,
    warmup: int,
    rounds: int,
    label_smoothing: float,
    params: dict[str, int],
    peak: float | None,
) -> dict[str, Any]:
    """Interleaved timing: each round times ``steps`` steps of every model, order alternating per round,
    so load changes on a shared machine hit both models alike. Figures are medians over rounds; the
    ratio is the median of the per-round ratios."""
    b, s = cfg["batch"], cfg["seq"]
    fns, warm = {}, {}
    for name, m in models.items():
        m.load_state_dict(init_state[name])  # eager and compiled rows start from the same weights
        fns[name] = make_train_step(name, m, cfg, device, dtype, compile_, label_smoothing)
        t0 = time.perf_counter()
        for _ in range(warmup):  # allocator, kernel plans, torch.compile
            loss = fns[name]()
        _sync(device)
        warm[name] = (time.perf_counter() - t0, float(loss) if warmup else float("nan"))
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    per_round: dict[str, list[float]] = {k: [] for k in models}
    cpu_round: dict[str, list[float]] = {k: [] for k in models}
    names = list(models)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            wall, cpu = time_steps(fns[name], steps, device)
            per_round[name].append(wall)
            cpu_round[name].append(cpu)
    out: dict[str, Any] = {}
    for name in names:
        dt = _median(per_round[name])
        tps = b * s / dt
        out[name] = {
            "step_ms": round(dt * 1e3, 2),
            "step_ms_per_round": [round(x * 1e3, 1) for x in per_round[name]],
            "tgt_tokens_per_s": round(tps, 1),
            "src_tgt_tokens_per_s": round(2 * tps, 1),
            "mfu": round(6 * params[name] * tps / peak, 4) if peak and dtype == "bf16" else None,
            "best_step_ms": round(min(per_round[name]) * 1e3, 2),
            "process_cpu_ms_per_step": round(_median(cpu_round[name]) * 1e3, 2),
            "warmup_s": round(warm[name][0], 1),
            "loss_after_warmup": round(warm[name][1], 3),
        }
    if device.startswith("cuda"):
        out["peak_mem_mb_both"] = round(torch.cuda.max_memory_allocated() / 2**20)
    ratios = [m / o for o, m in zip(per_round["ours"], per_round["marian"])]  # tokens/s ours / marian
    out["ratio_tokens_per_s"] = round(_median(ratios), 3)
    out["ratio_per_round"] = [round(x, 3) for x in ratios]
    out["ratio_best_round"] = round(min(per_round["marian"]) / min(per_round["ours"]), 3)
    out["ratio_process_cpu_time"] = round(_median([m / o for o, m in zip(cpu_round["ours"], cpu_round["marian"])]), 3)
    return out


# ------------------------------------------------------------------------------------------- decode
def make_decode(name: str, model: nn.Module, cfg: dict[str, int], device: str, dtype: str, beam: int) -> Any:
    """A call that beam-decodes one random batch emitting exactly ``decode_len`` tokens per sentence;
    it returns the output lengths (a check that both models really decoded ``decode_len`` tokens)."""
    from core.decoding.beam import beam_search

    g = torch.Generator().manual_seed(1)
    b, s, n = cfg["decode_batch"], cfg["seq"], cfg["decode_len"]
    src = torch.randint(4, cfg["vocab"], (b, s), generator=g).to(device)  # (B, S)
    lengths = torch.full((b,), s, device=device)

    @torch.no_grad()
    def run() -> list[int]:
        model.eval()
        with _autocast(device, dtype):
            if name == "ours":  # what TranslationModule._decode runs, minus tokenization
                state = model.init_state(src, lengths)
                res = beam_search(
                    lambda last, st: model.step(last, st),
                    state,
                    batch_size=b,
                    bos_id=BOS,
                    eos_id=cfg["vocab"],  # an id the model can never emit: no early stop
                    max_len=n,
                    beam_size=beam,
                    length_penalty=1.0,
                    nbest=1,
                    device=src.device,
                )
                return sorted({len(h[0]) for h in res.tokens})
            ids = model.generate(
                input_ids=src,
                attention_mask=torch.ones_like(src),
                num_beams=beam,
                min_new_tokens=n,
                max_new_tokens=n,
                do_sample=False,
                early_stopping=False,
                length_penalty=1.0,
                num_return_sequences=1,
            )  # (B, 1 + n)
            return [ids.shape[1] - 1]  # minus the decoder start token

    return run


def decode_compare(
    models: dict[str, nn.Module],
    init_state: dict[str, Any],
    cfg: dict[str, int],
    device: str,
    dtype: str,
    beam: int,
    reps: int,
) -> dict[str, Any]:
    """Interleaved like `train_compare`: one warm-up batch per model, then ``reps`` rounds."""
    fns, lens = {}, {}
    for name, m in models.items():
        m.load_state_dict(init_state[name])
        fns[name] = make_decode(name, m, cfg, device, dtype, beam)
        lens[name] = fns[name]()  # warm-up
    names = list(models)
    per_round: dict[str, list[float]] = {k: [] for k in models}
    cpu_round: dict[str, list[float]] = {k: [] for k in models}
    for r in range(reps):
        for name in names if r % 2 == 0 else names[::-1]:
            wall, cpu = time_steps(fns[name], 1, device)
            per_round[name].append(wall)
            cpu_round[name].append(cpu)
    b = cfg["decode_batch"]
    out: dict[str, Any] = {"batch": b, "src_len": cfg["seq"], "new_tokens": cfg["decode_len"], "beam": beam}
    for name in names:
        dt = _median(per_round[name])
        out[name] = {
            "ms_per_batch": round(dt * 1e3, 1),
            "ms_per_round": [round(x * 1e3, 1) for x in per_round[name]],
            "sentences_per_s": round(b / dt, 2),
            "best_ms_per_batch": round(min(per_round[name]) * 1e3, 1),
            "process_cpu_ms_per_batch": round(_median(cpu_round[name]) * 1e3, 1),
            "output_lengths": lens[name],
        }
    ratios = [m / o for o, m in zip(per_round["ours"], per_round["marian"])]  # sentences/s ours / marian
    out["ratio_sentences_per_s"] = round(_median(ratios), 3)
    out["ratio_per_round"] = [round(x, 3) for x in ratios]
    out["ratio_best_round"] = round(min(per_round["marian"]) / min(per_round["ours"]), 3)
    out["ratio_process_cpu_time"] = round(_median([m / o for o, m in zip(cpu_round["ours"], cpu_round["marian"])]), 3)
    if any(out[k]["output_lengths"] != [cfg["decode_len"]] for k in names):
        raise SystemExit(f"unequal decode lengths: {out}")
    return out


# --------------------------------------------------------------------------------------------- main
def machine(device: str, threads: int) -> dict[str, Any]:
    import transformers

    cuda = torch.cuda.get_device_name(0) if device.startswith("cuda") else None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": threads,
        "cpu_count": os.cpu_count(),
        "device": device,
        "cuda": cuda,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def peak_flops(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(0)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", choices=sorted(SIZES), default=None, help="default: base on CUDA, small on CPU")
    p.add_argument(
        "--dtype",
        choices=["bf16", "fp32"],
        default=None,
        help="bf16 autocast (default on CUDA) or fp32 (default on CPU)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    p.add_argument("--steps", type=int, default=None, help="timed training steps per round (default 20 CUDA, 3 CPU)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds (default 3 CUDA, 5 CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed warm-up steps (default 5 CUDA, 2 CPU)")
    p.add_argument("--compile", action="store_true", help="also measure torch.compile of both models")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument(
        "--decode-reps",
        type=int,
        default=None,
        help="timed decode batches per model, interleaved (default 5 CUDA, 3 CPU)",
    )
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--skip-decode", action="store_true")
    p.add_argument("--skip-train", action="store_true", help="only measure decoding")
    p.add_argument(
        "--profile",
        action="store_true",
        help="print a torch.profiler table of one eager training step per model (stderr)",
    )
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    device = args.device
    cuda = device.startswith("cuda")
    size = args.size or ("base" if cuda else "small")
    dtype = args.dtype or ("bf16" if cuda else "fp32")
    steps = args.steps or (20 if cuda else 3)
    args.rounds = args.rounds or (3 if cuda else 5)
    warmup = args.warmup if args.warmup is not None else (5 if cuda else 2)
    reps = args.decode_reps or (5 if cuda else 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    cfg = SIZES[size]
    tag = (
        torch.cuda.get_device_name(0).split()[1].lower()
        if cuda and len(torch.cuda.get_device_name(0).split()) > 1
        else "cpu"
    )
    out_path = args.out or ROOT / "benchmarks" / "results" / f"translation_vs_marian_{tag}.json"

    torch.manual_seed(0)
    models = {"ours": build_ours(cfg, args.dropout).to(device), "marian": build_marian(cfg, args.dropout).to(device)}
    params = {k: n_params(m) for k, m in models.items()}
    print(
        f"params: ours {params['ours']:,}  marian {params['marian']:,}  ratio {params['ours'] / params['marian']:.4f}",
        file=sys.stderr,
    )
    if abs(params["ours"] / params["marian"] - 1) > 0.03:
        raise SystemExit("parameter counts differ by more than 3 %: the comparison is not at equal size")
    init_state = {k: {n: t.detach().clone() for n, t in m.state_dict().items()} for k, m in models.items()}

    result: dict[str, Any] = {
        "command": "python benchmarks/translation_vs_marian.py " + " ".join(shlex.quote(a) for a in argv),
        "env": {
            k: os.environ[k]
            for k in ("OMP_NUM_THREADS", "TORCHINDUCTOR_CACHE_DIR", "CUDA_VISIBLE_DEVICES")
            if k in os.environ
        },
        "machine": machine(device, torch.get_num_threads()),
        "size": size,
        "config": cfg,
        "dtype": dtype,
        "dropout": args.dropout,
        "label_smoothing": args.label_smoothing,
        "steps_per_round": steps,
        "rounds": args.rounds,
        "warmup": warmup,
        "decode_reps": reps,
        "data": "random token batches (uniform over ids 4..V-1, no padding), random weights",
        "marian_attn_implementation": getattr(models["marian"].config, "_attn_implementation", None),
        "params": {**params, "ratio_ours_over_marian": round(params["ours"] / params["marian"], 4)},
        "peak_bf16_flops": peak_flops(device),
        "train": {},
        "decode": {},
    }
    peak = result["peak_bf16_flops"]

    for compiled in [] if args.skip_train else [False, True] if args.compile else [False]:
        key = "compiled" if compiled else "eager"
        result["train"][key] = rows = train_compare(
            models,
            init_state,
            cfg,
            device,
            dtype,
            compiled,
            steps,
            warmup,
            args.rounds,
            args.label_smoothing,
            params,
            peak,
        )
        print(f"train {key}: {json.dumps(rows)}", file=sys.stderr)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        for name, m in models.items():
            m.load_state_dict(init_state[name])
            step = make_train_step(name, m, cfg, device, dtype, False, args.label_smoothing)
            step()
            with profile(activities=acts) as prof:
                step()
                _sync(device)
            sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
            print(f"--- {name} ---\n" + prof.key_averages().table(sort_by=sort, row_limit=20), file=sys.stderr)

    if not args.skip_decode:
        result["decode"] = decode_compare(models, init_state, cfg, device, dtype, args.beam, reps)
        print(f"decode: {json.dumps(result['decode'])}", file=sys.stderr)

    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(result, indent=2)
    print(text)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(text + "\n", encoding="utf-8")
    m = result["machine"]
    dev = m["cuda"] or f"CPU {m['cpu']} ({m['torch_threads']} threads)"
    print("\n| what | device | ours | Marian | ours / Marian |\n|---|---|---|---|---|")
    for key, rows in result["train"].items():
        o, mm = rows["ours"], rows["marian"]
        print(
            f"| train {key} {size} {dtype} (tgt tok/s; src+tgt) | {dev} | {o['tgt_tokens_per_s']:.0f}; "
            f"{o['src_tgt_tokens_per_s']:.0f} (MFU {o['mfu']}) | {mm['tgt_tokens_per_s']:.0f}; "
            f"{mm['src_tgt_tokens_per_s']:.0f} (MFU {mm['mfu']}) | {rows['ratio_tokens_per_s']} (best round "
            f"{rows['ratio_best_round']}, CPU time {rows['ratio_process_cpu_time']}) |"
        )
    if result["decode"]:
        d = result["decode"]
        print(
            f"| beam {args.beam} decode, {d['batch']} sent x {d['new_tokens']} tokens (sent/s) | "
            f"{dev} | {d['ours']['sentences_per_s']} | {d['marian']['sentences_per_s']} | "
            f"{d['ratio_sentences_per_s']} (best round {d['ratio_best_round']}, CPU time "
            f"{d['ratio_process_cpu_time']}) |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
