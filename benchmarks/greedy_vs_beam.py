"""Greedy search vs ``beam_search(beam_size=1)`` on real translation step functions (issue 23).

``greedy_search`` was a second implementation of ``beam_search`` with ``K = 1``; this measures whether beam
search with one beam keeps its speed. The baseline below is that ``greedy_search`` as it stood in
``core/decoding/beam.py`` before it was folded into ``beam_search`` (same helpers, same float ops), so the
comparison stays reproducible.

Models are randomly initialised at the CPU recipe's size (``configs/translation/tatoeba_cpu.yaml``: vocab 8000,
d_model 256, 4 heads, FFN 1024, 3 + 3 layers) and an RNN (embed 256, hidden 256, 1 + 1 layers, additive
attention). EOS (with PAD and BOS) is suppressed, so both searches run all ``--max-len`` steps on the same rows
and do identical model work. The two are alternated (ABAB...) after a warm-up; medians and the ratio
beam / greedy are printed per model, batch size and thread count, with whether both returned the same tokens,
scores and attention (an exact tie between two tokens' log-probs may be broken either way)::

    .venv/bin/python benchmarks/greedy_vs_beam.py [--rounds 9] [--need-weights]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.decoding.beam import (
    DecodeResult,
    DecoderState,
    StepFn,
    _as_state,
    _call,
    _check_batch,
    _infer_device,
    _length_norm,
    _select_rows,
    _stack_attention,
    beam_search,
)
from core.text.tokenizers import BOS_ID, EOS_ID, PAD_ID
from tasks.translation.models import RNNSeq2Seq, TransformerSeq2Seq


@torch.no_grad()
def greedy_search(
    step_fn: StepFn,
    init_state: Any,
    *,
    batch_size: int,
    bos_id: int = 1,
    eos_id: int = 2,
    max_len: int = 100,
    length_penalty: float = 1.0,
    suppress: tuple[int, ...] = (),
) -> DecodeResult:
    """The removed ``core.decoding.beam.greedy_search`` (arg-max, finished items dropped), as the baseline."""
    state, wrapped = _as_state(init_state)
    state.map(_check_batch(batch_size), _check_batch(batch_size))
    device = _infer_device(state, None)
    active = torch.arange(batch_size, device=device)  # (N,) original batch index of each row
    last = torch.full((batch_size,), bos_id, dtype=torch.long, device=device)  # (N,)
    sums = torch.zeros(batch_size, dtype=torch.float32, device=device)  # (N,)
    hist_tok: list[Tensor] = []
    hist_attn: list[Tensor | None] = []
    lengths = torch.full((batch_size,), max_len, dtype=torch.long)
    final = torch.zeros(batch_size, dtype=torch.float32)
    ended_by_eos = torch.zeros(batch_size, dtype=torch.bool)
    for t in range(max_len):
        log_probs, state, attn = _call(step_fn, last, state, wrapped)
        log_probs = log_probs.float()  # (N, V)
        if suppress:
            log_probs[:, list(suppress)] = float("-inf")
        best_lp, tok = log_probs.max(dim=-1)  # (N,), (N,)
        sums = sums + best_lp
        full_tok = torch.full((batch_size,), eos_id, dtype=torch.long, device=device)
        hist_tok.append(full_tok.index_copy(0, active, tok))
        if attn is not None:
            hist_attn.append(attn.new_zeros((batch_size, *attn.shape[1:])).index_copy(0, active, attn))
        else:
            hist_attn.append(None)
        done = tok == eos_id  # (N,)
        if t == max_len - 1:
            done = torch.ones_like(done)
        if bool(done.any()):
            idx = active[done].cpu()
            lengths[idx] = t + 1
            final[idx] = sums[done].cpu()
            ended_by_eos[idx] = (tok[done] == eos_id).cpu()
            keep = (~done).nonzero().squeeze(1)  # (N',)
            if keep.numel() == 0:
                break
            active, last, sums = active[keep], tok[keep], sums[keep]
            state = state.map(_select_rows(keep), _select_rows(keep))
        else:
            last = tok
    tok_mat = torch.stack(hist_tok, dim=1).cpu()  # (B, T)
    attn_mat = _stack_attention(hist_attn, dim=1)  # (B, T, *attn) or None
    res = DecodeResult()
    for b in range(batch_size):
        n_tok = int(lengths[b]) - int(ended_by_eos[b])
        res.tokens.append([tok_mat[b, :n_tok].tolist()])
        res.scores.append([_length_norm(float(final[b]), int(lengths[b]), length_penalty)])
        res.attention.append([attn_mat[b, :n_tok].clone() if attn_mat is not None else None])
    return res


def build_models(vocab: int) -> dict[str, nn.Module]:
    """The two translation networks, randomly initialised (seeded), in eval mode."""
    torch.manual_seed(0)
    transformer = TransformerSeq2Seq(
        vocab, vocab, d_model=256, num_heads=4, ffn_dim=1024, encoder_layers=3, decoder_layers=3
    )
    rnn = RNNSeq2Seq(
        vocab, vocab, embed_dim=256, hidden_dim=256, encoder_layers=1, decoder_layers=1, attention="additive"
    )
    return {"transformer": transformer.eval(), "rnn": rnn.eval()}


def time_pair(
    greedy: Callable[[], DecodeResult], beam: Callable[[], DecodeResult], rounds: int, warmup: int
) -> tuple[list[float], list[float]]:
    """Wall times of ``rounds`` alternated (ABAB...) runs of each, after ``warmup`` runs of each."""
    for _ in range(warmup):
        greedy()
        beam()
    tg: list[float] = []
    tb: list[float] = []
    for _ in range(rounds):
        for fn, out in ((greedy, tg), (beam, tb)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return tg, tb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=9, help="timed runs of each search (alternated)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--src-len", type=int, default=20)
    ap.add_argument("--max-len", type=int, default=40)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--need-weights", action="store_true", help="step functions also return attention")
    args = ap.parse_args()

    print(f"loadavg at start: {os.getloadavg()}", flush=True)
    print(f"torch {torch.__version__}, cpus {os.cpu_count()}, need_weights={args.need_weights}", flush=True)
    models = build_models(args.vocab)
    suppress = (PAD_ID, BOS_ID, EOS_ID)  # EOS never emitted: every run decodes all max_len steps
    kw: dict[str, Any] = dict(bos_id=BOS_ID, eos_id=EOS_ID, max_len=args.max_len, suppress=suppress)
    rows = []
    gen = torch.Generator().manual_seed(1)
    with torch.inference_mode():
        for threads in args.threads:
            torch.set_num_threads(threads)
            for name, net in models.items():
                for bsz in args.batch_sizes:
                    src = torch.randint(4, args.vocab, (bsz, args.src_len), generator=gen)
                    src_lengths = torch.full((bsz,), args.src_len, dtype=torch.long)
                    state: DecoderState = net.init_state(src, src_lengths)  # type: ignore[operator]

                    def step(last: Tensor, st: DecoderState, net: nn.Module = net) -> Any:
                        return net.step(last, st, args.need_weights)  # type: ignore[operator]

                    def greedy(state: DecoderState = state, bsz: int = bsz) -> DecodeResult:
                        return greedy_search(step, state, batch_size=bsz, **kw)

                    def beam(state: DecoderState = state, bsz: int = bsz) -> DecodeResult:
                        return beam_search(step, state, batch_size=bsz, beam_size=1, nbest=1, **kw)

                    g, b = greedy(), beam()
                    same = (
                        g.tokens == b.tokens
                        and g.scores == b.scores
                        and all(
                            (x is None and y is None) or (x is not None and y is not None and torch.equal(x, y))
                            for xs, ys in zip(g.attention, b.attention)
                            for x, y in zip(xs, ys)
                        )
                    )
                    tg, tb = time_pair(greedy, beam, args.rounds, args.warmup)
                    mg, mb = statistics.median(tg), statistics.median(tb)
                    load = os.getloadavg()[0]
                    rows.append((name, bsz, threads, mg, mb, mb / mg, same, load))
                    print(
                        f"  {name:11s} B={bsz:<3d} threads={threads}: greedy {mg * 1e3:8.1f} ms  "
                        f"beam(K=1) {mb * 1e3:8.1f} ms  ratio {mb / mg:.3f}  same output: {same}  load {load:.2f}",
                        flush=True,
                    )
    print(f"loadavg at end: {os.getloadavg()}")
    print(f"\nmax_len {args.max_len} (EOS suppressed), src_len {args.src_len}, {args.rounds} rounds ABAB, medians")
    print("| model | batch | threads | greedy ms | beam K=1 ms | beam/greedy | same output | 1-min load |")
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    for name, bsz, threads, mg, mb, ratio, same, load in rows:
        print(f"| {name} | {bsz} | {threads} | {mg * 1e3:.1f} | {mb * 1e3:.1f} | {ratio:.3f} | {same} | {load:.2f} |")


if __name__ == "__main__":
    main()
