"""Translation benchmark: quality after a time budget, training throughput, and a naive-RNN baseline.

Quality run (the issue's target: default config, embedded corpus, 2 CPU cores, >= 95 test BLEU in 10 min)::

    python benchmarks/translation.py --minutes 10 --out benchmarks/translation_default.json

Other configs / overrides (any ``attn-translate fit`` flag after ``--``)::

    python benchmarks/translation.py --config configs/translation/transformer.yaml --minutes 10
    python benchmarks/translation.py --config configs/translation/tatoeba.yaml --minutes 30 -- \\
        --data.path ../shared/data/spa-eng/spa.txt

Throughput only (our RNN + additive attention vs a straightforward per-step implementation that
recomputes the key projection every step and projects to the vocabulary inside the loop)::

    python benchmarks/translation.py --throughput-only

Prints one JSON object (also written to ``--out``) and a markdown table row.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------- quality run
def _meter_cls() -> type:
    import lightning.pytorch as pl

    class ThroughputMeter(pl.Callback):
        """Counts unpadded source+target tokens and the wall time spent in training batches only."""

        def __init__(self) -> None:
            self.tokens = 0
            self.seconds = 0.0
            self._t0 = 0.0

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            self._t0 = time.perf_counter()

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            if batch["src"].is_cuda:
                torch.cuda.synchronize()
            self.seconds += time.perf_counter() - self._t0
            self.tokens += int(batch["src_lengths"].sum()) + int((batch["tgt_out"] != 0).sum())

    return ThroughputMeter


def quality_run(config: Path, minutes: float, extra: list[str], workdir: Path) -> dict[str, Any]:
    """Train ``config`` for ``minutes`` of wall time, then test the best checkpoint."""
    from tasks.translation.cli import TranslationCLI
    from tasks.translation.data import TranslationDataModule
    from tasks.translation.module import TranslationModule

    hh, rem = divmod(int(minutes * 60), 3600)
    mm, ss = divmod(rem, 60)
    args = [
        "--config",
        str(config),
        "--trainer.max_time",
        f"00:{hh:02d}:{mm:02d}:{ss:02d}",
        "--trainer.default_root_dir",
        str(workdir),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.logger",
        "false",
        *extra,
    ]
    cli = TranslationCLI(
        TranslationModule,
        TranslationDataModule,
        args=args,
        run=False,
        trainer_defaults={"use_distributed_sampler": False},
        seed_everything_default=0,
    )
    trainer, model, dm = cli.trainer, cli.model, cli.datamodule
    from lightning.pytorch.callbacks import LearningRateMonitor

    # No logger in a benchmark (nothing to keep), so drop the config's LR monitor that needs one.
    trainer.callbacks[:] = [cb for cb in trainer.callbacks if not isinstance(cb, LearningRateMonitor)]
    # Checkpoints of this run go to the scratch folder, not the config's runs/ path.
    for cb in trainer.checkpoint_callbacks:
        cb.dirpath = str(workdir / "checkpoints")
    meter = _meter_cls()()
    trainer.callbacks.append(meter)
    t0 = time.perf_counter()
    trainer.fit(model, dm)
    fit_seconds = time.perf_counter() - t0
    ckpt = "best" if trainer.checkpoint_callback is not None and trainer.checkpoint_callback.best_model_path else None
    t1 = time.perf_counter()
    metrics = trainer.test(model, datamodule=dm, ckpt_path=ckpt, verbose=False)[0]
    test_seconds = time.perf_counter() - t1
    return {
        "config": str(config.relative_to(ROOT) if config.is_relative_to(ROOT) else config),
        "overrides": extra,
        "budget_minutes": minutes,
        "fit_seconds": round(fit_seconds, 1),
        "steps": trainer.global_step,
        "epochs": trainer.current_epoch,
        "test_sentences": len(dm.load_splits()["test"]),
        "test_bleu": round(float(metrics.get("test/bleu", float("nan"))), 2),
        "test_chrf": round(float(metrics.get("test/chrf", float("nan"))), 2),
        "test_decode_seconds": round(test_seconds, 1),
        "train_tokens_per_s": round(meter.tokens / max(meter.seconds, 1e-9), 1),
        "params": sum(p.numel() for p in model.parameters()),
        "checkpoint_tested": ckpt or "last weights",
    }


# ------------------------------------------------------------------------------------ naive baseline
class NaiveRNN(nn.Module):
    """Straightforward attentional GRU seq2seq: every step re-projects all keys and the vocabulary."""

    def __init__(self, src_vocab: int, tgt_vocab: int, emb: int, hidden: int) -> None:
        super().__init__()
        self.src_emb = nn.Embedding(src_vocab, emb)
        self.tgt_emb = nn.Embedding(tgt_vocab, emb)
        self.encoder = nn.GRU(emb, hidden // 2, batch_first=True, bidirectional=True)
        self.cell = nn.GRUCell(emb + hidden, hidden)
        self.w_q = nn.Linear(hidden, hidden, bias=False)
        self.w_k = nn.Linear(hidden, hidden)
        self.v = nn.Linear(hidden, 1, bias=False)
        self.combine = nn.Linear(2 * hidden, hidden)
        self.out = nn.Linear(hidden, tgt_vocab)
        self.hidden = hidden

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        enc, _ = self.encoder(self.src_emb(src))  # (B, S, H)
        b = src.shape[0]
        h = enc.new_zeros(b, self.hidden)
        feed = enc.new_zeros(b, self.hidden)
        logits = []
        for t in range(tgt_in.shape[1]):
            h = self.cell(torch.cat([self.tgt_emb(tgt_in[:, t]), feed], -1), h)
            scores = self.v(torch.tanh(self.w_q(h)[:, None] + self.w_k(enc))).squeeze(-1)  # keys re-projected
            ctx = torch.bmm(scores.softmax(-1)[:, None], enc)[:, 0]  # (B, H)
            feed = torch.tanh(self.combine(torch.cat([h, ctx], -1)))
            logits.append(self.out(feed))  # vocabulary projection inside the loop
        return torch.stack(logits, 1)  # (B, T, V)


def throughput(
    steps: int = 20,
    batch: int = 128,
    src_len: int = 12,
    tgt_len: int = 12,
    vocab: int = 2000,
    emb: int = 128,
    hidden: int = 256,
    device: str = "cpu",
    profile: bool = False,
    warmup: int = 3,
    compile_mode: str | None = None,
) -> dict[str, Any]:
    """Training tokens/s of our RNNSeq2Seq vs :class:`NaiveRNN` at equal size on random batches.

    With ``compile_mode`` (a `torch.compile` mode, e.g. ``default`` or ``reduce-overhead`` for CUDA
    graphs) a third model, ours under `torch.compile` (same initial weights), is timed too.
    """
    from tasks.translation.models import RNNSeq2Seq

    torch.manual_seed(0)
    src = torch.randint(4, vocab, (batch, src_len), device=device)
    lengths = torch.full((batch,), src_len, device=device)
    # What TranslationModule passes for this unpadded batch: the lengths taken on the host before the
    # batch moved, and unpadded=True (decided in Python from them).
    host_lengths = torch.full((batch,), src_len)
    tgt = torch.randint(4, vocab, (batch, tgt_len), device=device)
    models = {
        "ours": RNNSeq2Seq(vocab, vocab, emb, hidden, dropout=0.0).to(device),
        "naive": NaiveRNN(vocab, vocab, emb, hidden).to(device),
    }
    out: dict[str, Any] = {
        "batch": batch,
        "src_len": src_len,
        "tgt_len": tgt_len,
        "vocab": vocab,
        "emb": emb,
        "hidden": hidden,
        "steps": steps,
        "warmup": warmup,
        "compile_mode": compile_mode,
    }
    losses: dict[str, Any] = {
        "ours": lambda: models["ours"](src, lengths, tgt, host_lengths=host_lengths, unpadded=True)[0],
        "naive": lambda: models["naive"](src, tgt),
    }
    if compile_mode:
        twin = RNNSeq2Seq(vocab, vocab, emb, hidden, dropout=0.0).to(device)
        twin.load_state_dict(models["ours"].state_dict())
        models["ours_compiled"] = twin
        losses["ours_compiled"] = torch.compile(
            lambda: twin(src, lengths, tgt, host_lengths=host_lengths, unpadded=True)[0], mode=compile_mode
        )
    opts = {name: torch.optim.AdamW(m.parameters(), 1e-3) for name, m in models.items()}

    def step(name: str) -> None:
        if name == "ours_compiled" and compile_mode and "cudagraphs" not in compile_mode and device == "cuda":
            torch.compiler.cudagraph_mark_step_begin()  # a new training iteration for CUDA-graph trees
        logits = losses[name]()  # (B, T, V)
        loss = nn.functional.cross_entropy(logits.reshape(-1, vocab), tgt.reshape(-1))  # (B*T, V)
        opts[name].zero_grad(set_to_none=True)
        loss.backward()
        opts[name].step()

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    t_warm = time.perf_counter()
    for _ in range(warmup):  # warm-up (allocator, cuDNN plans, torch.compile of core kernels)
        for name in models:
            step(name)
    sync()
    out["warmup_seconds"] = round(time.perf_counter() - t_warm, 1)  # includes compile time
    # The two models' steps alternate (order flipped every round) and each step is timed on its own,
    # so load from other jobs hits both alike; medians resist the outliers such load causes.
    times: dict[str, list[float]] = {name: [] for name in models}
    for i in range(steps):
        for name in list(models) if i % 2 == 0 else list(models)[::-1]:
            t0 = time.perf_counter()
            step(name)
            sync()
            times[name].append(time.perf_counter() - t0)
    tokens = batch * (src_len + tgt_len)
    for name, ts in times.items():
        ts.sort()
        out[f"{name}_tokens_per_s"] = round(tokens / ts[len(ts) // 2], 1)  # median step
        out[f"{name}_best_tokens_per_s"] = round(tokens / ts[0], 1)
    if profile:
        # Where the time goes (kernels on GPU, ops on CPU): one profiled step per model, to stderr.
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
        for name in models:
            with torch_profile(activities=acts) as prof:
                step(name)
                sync()
            key = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
            print(f"--- {name} ---\n" + prof.key_averages().table(sort_by=key, row_limit=15), file=sys.stderr)
    out["speedup_best"] = round(out["ours_best_tokens_per_s"] / out["naive_best_tokens_per_s"], 2)
    out["speedup"] = round(out["ours_tokens_per_s"] / out["naive_tokens_per_s"], 2)
    # Work per training step, forward + backward, as counted by torch (matmul-family ops; element-wise
    # work such as the naive step's tanh over (B, S, H) is not counted). Counted on CPU copies: on
    # CUDA the cuDNN GRU has no FLOP formula and would be left out. When both models run at about the
    # same FLOP/s (compute-bound, e.g. on CPU) the ratio estimates the speed-up available; above it,
    # the difference is per-op overhead (kernel launches, dispatch).
    import copy

    from torch.utils.flop_counter import FlopCounterMode

    cpu = {"src": src.cpu(), "lengths": lengths.cpu(), "tgt": tgt.cpu()}
    for name in ("ours", "naive"):
        m = copy.deepcopy(models[name]).cpu()
        with FlopCounterMode(display=False) as fc:
            logits = (
                m(cpu["src"], cpu["lengths"], cpu["tgt"], host_lengths=host_lengths)[0]
                if name == "ours"
                else m(cpu["src"], cpu["tgt"])
            )
            nn.functional.cross_entropy(logits.reshape(-1, vocab), cpu["tgt"].reshape(-1)).backward()
        flops = fc.get_total_flops()
        out[f"{name}_gflop_per_step"] = round(flops / 1e9, 3)
        out[f"{name}_gflop_per_s"] = round(flops / (tokens / out[f"{name}_tokens_per_s"]) / 1e9, 1)
    out["flop_ratio_naive_over_ours"] = round(out["naive_gflop_per_step"] / out["ours_gflop_per_step"], 2)
    if compile_mode:
        out["speedup_compiled"] = round(out["ours_compiled_tokens_per_s"] / out["naive_tokens_per_s"], 2)
    return out


# ------------------------------------------------------------------------------------------- main
def machine() -> dict[str, Any]:
    import lightning

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "translation" / "default.yaml")
    p.add_argument("--minutes", type=float, default=10.0, help="training wall-clock budget")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's choice; 1 helps on a shared machine)",
    )
    p.add_argument("--throughput-only", action="store_true", help="skip the quality run")
    p.add_argument("--no-throughput", action="store_true", help="skip the naive-baseline comparison")
    p.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="device of the throughput comparison"
    )
    p.add_argument("--out", type=Path, default=None, help="write the JSON result here")
    p.add_argument("--profile", action="store_true", help="print a torch.profiler table per model (stderr)")
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps of the throughput comparison")
    p.add_argument(
        "--compile",
        default=None,
        metavar="MODE",
        help="also time our RNN under torch.compile with this mode (default, reduce-overhead, ...)",
    )
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result: dict[str, Any] = {"machine": machine()}
    if not args.no_throughput:
        result["rnn_throughput"] = throughput(
            device=args.device, profile=args.profile, warmup=args.warmup, compile_mode=args.compile
        )
    if not args.throughput_only:
        with tempfile.TemporaryDirectory(prefix="bench-translation-") as tmp:
            result["quality"] = quality_run(args.config, args.minutes, extra, Path(tmp))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    m = result["machine"]
    dev = m["cuda"] or f"CPU {m['cpu']} ({m['torch_threads']} threads)"
    print("\n| benchmark | device | figures |\n|---|---|---|")
    if "quality" in result:
        q = result["quality"]
        print(
            f"| translation {q['config']} {q['budget_minutes']} min | {dev} | test BLEU {q['test_bleu']}, "
            f"chrF {q['test_chrf']}, {q['steps']} steps, {q['train_tokens_per_s']:.0f} train tok/s |"
        )
    if "rnn_throughput" in result:
        r = result["rnn_throughput"]
        print(
            f"| RNN+additive train throughput (B={r['batch']}, {r['src_len']}+{r['tgt_len']} tok, V={r['vocab']}) "
            f"| {dev} | ours {r['ours_tokens_per_s']:.0f} tok/s vs naive {r['naive_tokens_per_s']:.0f} tok/s "
            f"= {r['speedup']}x (naive does {r['flop_ratio_naive_over_ours']}x our FLOPs per step) |"
        )
        if r.get("compile_mode"):
            print(
                f"| same, ours under torch.compile(mode={r['compile_mode']!r}) | {dev} | "
                f"{r['ours_compiled_tokens_per_s']:.0f} tok/s = {r['speedup_compiled']}x naive |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
