"""Time to quality: CPU training minutes until each task's embedded default reaches its target.

For one task and one setup (``demo``: the model and data of ``make demo``; ``default``: the task's
``configs/<task>/default.yaml``), each seed trains on one CPU thread and is paused every
``--eval-every`` seconds of training to score a fixed held-out set with the demo's decoding
(`tasks.<task>.demo.evaluate`); the evaluation time is not counted. Training time is counted in CPU
seconds of the process and its DataLoader workers by default (``--clock cpu``): on a dedicated core that
is the wall time, and unlike wall time it does not grow when other jobs share the machine. A seed stops
at the first evaluation that meets every target of `tasks.demo_report.TARGETS`, or at ``--max-minutes``:

* translation: BLEU >= 95 on the first 200 test sentences (beam 5);
* captioning: BLEU-4 >= 60 on test scenes 0-99 and >= 40 on unseen-combination scenes 0-99 (beam 3);
* speech: CER <= 10 % on the first 100 test utterances, voices unseen in training (beam 3, CTC-rescored).

The seed changes the model initialisation and the batch order; the corpus and the held-out set stay
fixed. Each evaluation records training wall seconds, CPU seconds of the process and its loader workers,
optimizer steps and the load average, so figures from a shared machine can be read next to its load.

Usage::

    python benchmarks/time_to_quality.py --task speech --setup demo --seeds 0 1 2 --out benchmarks/results/ttq.json
    python benchmarks/time_to_quality.py --task speech --setup demo --model ctc_weight=0.8   # an ablation
    python benchmarks/time_to_quality.py --table benchmarks/results/ttq_*.json              # markdown table
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import lightning as L
import torch
import yaml

from tasks.demo_report import TARGETS, Target

#: Held-out sizes (the demo's own held-out sets are at least this large).
HELD_OUT = {"translation": 200, "captioning": 100, "speech": 100}
#: Speech: also report the CER of joint CTC/attention decoding (``--diagnose-joint``).
DIAGNOSE_JOINT = False
#: Save each seed's final weights into the work folder (``--save-ckpt``).
SAVE_CKPT = False
#: Seconds of training between evaluations.
EVAL_EVERY = {"translation": 15.0, "captioning": 20.0, "speech": 30.0}


def _children_cpu_seconds() -> float:
    """CPU seconds (user + system) of this process's live child processes (DataLoader workers)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    try:
        kids = Path(f"/proc/self/task/{os.getpid()}/children").read_text().split()
    except OSError:
        return 0.0
    for pid in kids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        except (OSError, IndexError, ValueError):
            continue
    return total


class TimeToQuality(L.Callback):
    """Evaluate every `every_s` seconds of training; stop at the targets or after `max_s`.

    Args:
        evaluate: `module -> metrics` on the held-out set (the module is in eval mode meanwhile).
        targets: the targets that must all be met.
        every_s: training seconds between evaluations.
        max_s: training seconds after which the run stops without reaching the targets.
        clock: ``"cpu"`` (CPU seconds of the process and its loader workers: what a dedicated core
            would take, and robust to other jobs on a shared machine) or ``"wall"``.
    """

    def __init__(
        self,
        evaluate: Callable[[Any], dict[str, float]],
        targets: tuple[Target, ...],
        every_s: float,
        max_s: float,
        clock: str = "cpu",
        keep_going: bool = False,
    ) -> None:
        self.evaluate, self.targets, self.every_s, self.max_s = evaluate, targets, every_s, max_s
        self.clock, self.keep_going = clock, keep_going
        self.curve: list[dict[str, Any]] = []
        self.reached: dict[str, Any] | None = None
        self._t0 = self._c0 = self._eval_wall = self._eval_cpu = 0.0
        self._next = every_s

    def _clock(self) -> tuple[float, float]:
        wall = time.perf_counter() - self._t0 - self._eval_wall
        cpu = time.process_time() + _children_cpu_seconds() - self._c0 - self._eval_cpu
        return wall, cpu

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0, self._c0 = time.perf_counter(), time.process_time() + _children_cpu_seconds()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        wall, cpu = self._clock()
        now = cpu if self.clock == "cpu" else wall
        if now < self._next and now < self.max_s:
            return
        self._next = now + self.every_s
        e0, c0 = time.perf_counter(), time.process_time()
        was_training = pl_module.training
        pl_module.eval()
        try:
            metrics = self.evaluate(pl_module)
        finally:
            pl_module.train(was_training)
        point = {
            "train_s": round(wall, 1),
            "cpu_s": round(cpu, 1),
            "step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "loadavg": [round(x, 2) for x in os.getloadavg()],
            "eval_s": round(time.perf_counter() - e0, 1),
            "metrics": {k: round(v, 2) for k, v in metrics.items()},
        }
        self.curve.append(point)
        print(
            f"  step {point['step']:5d}  train {wall / 60:5.2f} min  cpu {cpu / 60:5.2f} min  "
            f"{point['metrics']}  load {point['loadavg'][0]}",
            flush=True,
        )
        self._eval_wall += time.perf_counter() - e0
        self._eval_cpu += time.process_time() - c0
        if self.reached is None and all(t.met(metrics.get(t.metric)) for t in self.targets):
            self.reached = point
            trainer.should_stop = not self.keep_going
        if now >= self.max_s:
            trainer.should_stop = True


# ------------------------------------------------------------------------------------------------
# setups: (datamodule, module, trainer kwargs, evaluate)
# ------------------------------------------------------------------------------------------------
Setup = tuple[Any, Any, dict[str, Any], Callable[[Any], dict[str, float]]]


def _config(task: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "configs" / task / "default.yaml").read_text())


def _trainer_from_config(cfg: dict[str, Any]) -> dict[str, Any]:
    tr = cfg.get("trainer") or {}
    # max_epochs matters: cosine schedules decay over the trainer's estimated steps.
    return {k: tr[k] for k in ("gradient_clip_val", "max_epochs") if k in tr}


def setup_translation(name: str, seed: int, data: dict[str, Any], model: dict[str, Any], workdir: Path) -> Setup:
    from tasks.translation import demo

    data = {"cache_dir": str(workdir / "tokenizers"), **data}
    if name == "demo":
        dm, module = demo.build(seed, data, model)
        kw = dict(demo.DEMO_TRAINER)
    else:
        from tasks.translation.data import TranslationDataModule
        from tasks.translation.module import TranslationModule

        cfg = _config("translation")
        L.seed_everything(seed, verbose=False)
        dm = TranslationDataModule(**{**cfg["data"], **data})
        dm.prepare_data()
        module = TranslationModule(**{**cfg["model"], **model})
        kw = {**_trainer_from_config(cfg), "use_distributed_sampler": False}
    pairs = demo.held_out(dm, HELD_OUT["translation"])
    return dm, module, kw, lambda m: demo.evaluate(m, pairs)[0]


def setup_captioning(name: str, seed: int, data: dict[str, Any], model: dict[str, Any], workdir: Path) -> Setup:
    from tasks.captioning import demo

    if name == "demo":
        dm, module = demo.build(seed, data, model)
        kw = dict(demo.DEMO_TRAINER)
    else:
        from tasks.captioning.data import CaptionDataModule
        from tasks.captioning.module import CaptioningModule

        cfg = _config("captioning")
        L.seed_everything(seed, workers=True, verbose=False)
        dm = CaptionDataModule(**{**cfg["data"], **data})
        module = CaptioningModule(vocab=dm.vocab, image_size=dm.image_size, **{**cfg["model"], **model})
        kw = _trainer_from_config(cfg)
    n = HELD_OUT["captioning"]
    groups = {"test": demo.held_out(n, "test", dm.image_size), "unseen": demo.held_out(n, "unseen", dm.image_size)}
    return dm, module, kw, lambda m: demo.evaluate(m, groups)[0]


def setup_speech(name: str, seed: int, data: dict[str, Any], model: dict[str, Any], workdir: Path) -> Setup:
    from tasks.speech import demo

    n = HELD_OUT["speech"]
    if name == "demo":
        # A larger test split than the demo's own does not change the training audio (the corpus
        # draws the training utterances first), only adds held-out ones.
        data = {**data, "synth_test": max(n, int(data.get("synth_test", demo.DEMO_DATA["synth_test"])))}
        dm, module = demo.build(seed, data, model)
        kw = dict(demo.DEMO_TRAINER)
    else:
        from tasks.speech.data import SpeechDataModule
        from tasks.speech.module import SpeechModule

        cfg = _config("speech")
        L.seed_everything(seed, verbose=False)
        dm = SpeechDataModule(**{**cfg["data"], **data})
        dm.prepare_data()
        dm.setup("fit")
        module = SpeechModule(**{**cfg["model"], "plot_examples": 0, **model})
        kw = _trainer_from_config(cfg)
    feats = demo.load_features(demo.held_out(dm, n))

    def evaluate(m: Any) -> dict[str, float]:
        scores = demo.evaluate(m, feats)[0]
        if DIAGNOSE_JOINT and m.hparams.ctc_weight > 0 and not m.hparams.get("joint_ctc_decoding"):
            # A diagnostic next to the scored CER: the same weights decoded with joint CTC/attention scores.
            m.hparams.joint_ctc_decoding = True
            try:
                scores["cer_joint"] = demo.evaluate(m, feats)[0]["cer"]
            finally:
                m.hparams.joint_ctc_decoding = False
        return scores

    return dm, module, kw, evaluate


SETUPS = {"translation": setup_translation, "captioning": setup_captioning, "speech": setup_speech}


def trainer_kwargs(workdir: Path) -> dict[str, Any]:
    """The Trainer of a benchmark run: one CPU device, no logging, checkpoints or in-loop validation (the
    benchmark scores the model itself), epochs unbounded (a callback stops the run)."""
    return {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "limit_val_batches": 0,
        "num_sanity_val_steps": 0,
        "max_epochs": 10_000,
        "default_root_dir": str(workdir),
    }


def run_seed(
    task: str,
    setup: str,
    seed: int,
    data: dict[str, Any],
    model: dict[str, Any],
    every_s: float,
    max_minutes: float,
    workdir: Path,
    clock: str = "cpu",
    keep_going: bool = False,
) -> dict[str, Any]:
    """Train one seed until the targets (or the cap); returns its record."""
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    dm, module, kw, evaluate = SETUPS[task](setup, seed, data, model, workdir)
    setup_s = time.perf_counter() - t0
    ttq = TimeToQuality(evaluate, TARGETS[task], every_s, max_minutes * 60.0, clock, keep_going)
    base = trainer_kwargs(workdir)
    trainer = L.Trainer(callbacks=[ttq], **{**base, **kw})
    trainer.fit(module, dm)
    if SAVE_CKPT:  # the weights at the target (or the cap), e.g. to look at their attention figures
        trainer.save_checkpoint(workdir / f"{task}_{setup}_seed{seed}.ckpt", weights_only=True)
    hit = ttq.reached
    last = ttq.curve[-1] if ttq.curve else {}
    return {
        "seed": seed,
        "reached": hit is not None,
        "minutes_to_target": round(hit["train_s"] / 60, 2) if hit else None,
        "cpu_minutes_to_target": round(hit["cpu_s"] / 60, 2) if hit else None,
        "steps_to_target": hit["step"] if hit else None,
        "final": last,
        "setup_seconds": round(setup_s, 1),
        "loadavg_start": [round(x, 2) for x in load0],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "curve": ttq.curve,
    }


def summarise(runs: list[dict[str, Any]], cap_minutes: float) -> dict[str, Any]:
    """Median and worst over seeds; a seed that missed the target counts as `> cap`."""
    out: dict[str, Any] = {"seeds": len(runs), "reached": sum(r["reached"] for r in runs)}
    for key in ("minutes_to_target", "cpu_minutes_to_target", "steps_to_target"):
        vals = [r[key] if r["reached"] else math.inf for r in runs]
        med, worst = statistics.median(vals) if vals else math.inf, max(vals, default=math.inf)
        out[key] = {"median": None if math.isinf(med) else med, "worst": None if math.isinf(worst) else worst}
    out["cap_minutes"] = cap_minutes
    return out


def _fmt(x: float | None, cap: float, unit: str = "") -> str:
    return f"> {cap:g}{unit}" if x is None else (f"{x:.2f}{unit}" if isinstance(x, float) else f"{x}{unit}")


def table(paths: list[Path]) -> str:
    """Markdown table over result files (one row per file)."""
    rows = [
        (
            "| task | setup | variant | seeds reaching target | CPU minutes to target, median / worst | "
            "wall minutes, median / worst | steps, median / worst | load average (1 min) during runs | file |"
        ),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in paths:
        r = json.loads(p.read_text())
        s, cap = r["summary"], r["max_minutes"]
        loads = [pt["loadavg"][0] for run in r["runs"] for pt in run["curve"]]
        load = f"{min(loads):.1f}–{max(loads):.1f}" if loads else "?"
        variant = r.get("label") or (
            ", ".join(f"{k}={v}" for k, v in {**r["data"], **r["model"]}.items()) or "as shipped"
        )
        rows.append(
            f"| {r['task']} | {r['setup']} | {variant} | {s['reached']}/{s['seeds']} | "
            f"{_fmt(s['cpu_minutes_to_target']['median'], cap)} / {_fmt(s['cpu_minutes_to_target']['worst'], cap)} | "
            f"{_fmt(s['minutes_to_target']['median'], cap)} / {_fmt(s['minutes_to_target']['worst'], cap)} | "
            f"{_fmt(s['steps_to_target']['median'], 0)} / {_fmt(s['steps_to_target']['worst'], 0)} | {load} | "
            f"`{p.name}` |"
        )
    return "\n".join(rows)


def _kv(items: list[str]) -> dict[str, Any]:
    """``key=value`` overrides; values parsed as YAML (numbers, booleans, dicts)."""
    out = {}
    for it in items:
        key, _, value = it.partition("=")
        out[key] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=sorted(SETUPS))
    p.add_argument("--setup", choices=["demo", "default"], default="demo")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--max-minutes", type=float, default=10.0, help="training minutes after which a seed gives up")
    p.add_argument("--eval-every", type=float, default=None, help="training seconds between evaluations")
    p.add_argument(
        "--clock",
        choices=["cpu", "wall"],
        default="cpu",
        help="what --eval-every and --max-minutes count (both are recorded)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--data", nargs="*", default=[], metavar="KEY=VALUE", help="data module overrides")
    p.add_argument("--model", nargs="*", default=[], metavar="KEY=VALUE", help="model overrides")
    p.add_argument("--label", default=None, help="name of this variant in the table")
    p.add_argument("--save-ckpt", action="store_true", help="save each seed's final weights into --workdir")
    p.add_argument(
        "--keep-going",
        action="store_true",
        help="train to --max-minutes after reaching the targets (the curve beyond them)",
    )
    p.add_argument(
        "--diagnose-joint",
        action="store_true",
        help="speech: also report cer_joint, the CER with joint CTC/attention decoding (not a target)",
    )
    p.add_argument("--workdir", type=Path, default=ROOT / "runs" / "ttq")
    p.add_argument("--out", type=Path, default=None, help="JSON output")
    p.add_argument("--table", type=Path, nargs="*", default=None, help="print a markdown table of these JSON files")
    args = p.parse_args(argv)
    if args.table is not None:
        print(table(args.table))
        return 0
    if not args.task:
        p.error("--task is required")
    torch.set_num_threads(args.threads)
    global DIAGNOSE_JOINT, SAVE_CKPT
    DIAGNOSE_JOINT, SAVE_CKPT = args.diagnose_joint, args.save_ckpt
    data, model = _kv(args.data), _kv(args.model)
    every = args.eval_every or EVAL_EVERY[args.task]
    runs = []
    for seed in args.seeds:
        print(f"{args.task}/{args.setup} seed {seed}: {data or ''} {model or ''}", flush=True)
        runs.append(
            run_seed(
                args.task,
                args.setup,
                seed,
                data,
                model,
                every,
                args.max_minutes,
                args.workdir,
                args.clock,
                args.keep_going,
            )
        )
        r = runs[-1]
        print(
            f"  -> reached={r['reached']} minutes={r['minutes_to_target']} cpu={r['cpu_minutes_to_target']} "
            f"steps={r['steps_to_target']}",
            flush=True,
        )
    res = {
        "task": args.task,
        "setup": args.setup,
        "label": args.label,
        "data": data,
        "model": model,
        "targets": [t.__dict__ for t in TARGETS[args.task]],
        "held_out": HELD_OUT[args.task],
        "eval_every_s": every,
        "max_minutes": args.max_minutes,
        "clock": args.clock,
        "threads": args.threads,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "summary": summarise(runs, args.max_minutes),
        "runs": runs,
    }
    print(json.dumps(res["summary"], indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
