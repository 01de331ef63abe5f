"""What attention buys: every mechanism against a model without attention, on every task, at equal CPU time.

The article this suite implements claims that attention makes models more accurate, that its weights show what
the model looks at, and that its kinds differ. This script measures the three claims the way the papers that
founded the field did (Bahdanau et al. 2015, Luong et al. 2015, Xu et al. 2015, Chorowski et al. 2015):

* one run = one task, one mechanism (``none`` = no attention: a fixed context), one seed, trained on one CPU
  thread for the same CPU-second budget (the demo's model and data; only ``--model.attention`` changes);
* quality on the demo's held-out sets (BLEU, BLEU-4, CER) and, for translation, BLEU by source length on
  held-out long sentences (Bahdanau's figure);
* the alignment score where the data knows the truth (translation: AER against the grammar's gold word links;
  captioning: pointing accuracy on the generated scenes' objects; speech: characters whose attention peak lies
  inside their word's span in the audio);
* training units per second (tokens, images, audio seconds), decoded inputs per second, peak memory (RSS of
  the run's own process) and parameter count;
* one fixed example's attention figure per mechanism, side by side.

Each run is its own process (``--run``), so its peak memory and its thread are its own; ``--jobs`` runs go at
once (one per core), alternating mechanisms so that every mechanism shares the machine alike, and the load
average is recorded with every run. The parent writes the JSON, a Markdown table (``--results-md``) and one HTML
report with the figures (``--html``); ``--report`` redraws the table and the page from a JSON without training.

Usage::

    python benchmarks/attention_study.py --out benchmarks/results/attention_study.json \\
        --html benchmarks/results/attention_study/index.html --results-md benchmarks/RESULTS.md
    python benchmarks/attention_study.py --quick --out /tmp/q.json --html /tmp/q/index.html   # pipeline check
    python benchmarks/attention_study.py --report benchmarks/results/attention_study.json --html ...
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

#: Mechanisms per task: ``none`` plus every registry mechanism that takes a decoder query. ``pooling`` is left
#: out: it has no query, so in a decoder it is one learned summary of the source, the role ``none`` plays.
MECHANISMS: dict[str, list[str]] = {
    "translation": ["none", "additive", "location", "dot", "general", "scaled_dot", "multihead"],
    "captioning": ["none", "additive", "location", "dot", "general", "scaled_dot", "multihead"],
    # "ctc": CTC alone (no attention decoder in the loss or the search), the practical model without attention.
    "speech": ["none", "ctc", "additive", "location", "dot", "general", "scaled_dot", "multihead"],
}
#: CPU seconds of training per run (the demo recipes reach their targets in 2-3.5 CPU minutes; this compares
#: the mechanisms part-way there, at equal compute).
BUDGET = {"translation": 90.0, "captioning": 75.0, "speech": 100.0}
QUICK_BUDGET = {"translation": 3.0, "captioning": 3.0, "speech": 3.0}
QUICK_MECHANISMS = {"translation": ["none", "additive"], "captioning": ["none", "additive"], "speech": ["none", "ctc"]}
SEEDS = (0, 1, 2)
#: Quality metric of each task: (key in the run's "quality", label, higher is better).
QUALITY = {
    "translation": ("bleu", "BLEU", True),
    "captioning": ("bleu4_test", "BLEU-4", True),
    "speech": ("cer", "CER %", False),
}
ALIGNMENT = {
    "translation": ("aer", "AER", False),
    "captioning": ("pointing", "pointing acc. %", True),
    "speech": ("char_in_span", "chars in word span %", True),
}
UNITS = {"translation": "tokens/s", "captioning": "images/s", "speech": "audio s/s"}


# ------------------------------------------------------------------------------------------------ one run
def mechanism_options(task: str, mechanism: str) -> dict[str, Any]:
    """Model overrides of the demo's recipe for one mechanism (only the attention and what it needs)."""
    if mechanism == "ctc":  # CTC alone: the attention decoder gets no loss and no say in the search
        return {"ctc_weight": 1.0, "joint_ctc_decoding": True, "guided_attention_weight": 0.0}
    if mechanism == "transformer":  # not a mechanism of the RNN: a 2+2-layer Transformer, to compare its heads
        return {
            "arch": "transformer",
            "hidden_dim": 192,
            "num_heads": 4,
            "ffn_dim": 384,
            "encoder_layers": 2,
            "decoder_layers": 2,
            "lr": 2e-3,
            "warmup_steps": 100,
        }
    opts: dict[str, Any] = {}
    hidden = {"translation": 128, "captioning": 128, "speech": 96}[task]
    if mechanism in ("additive", "location"):
        opts["hidden_dim"] = hidden
    if mechanism == "location":
        opts.update(conv_channels=8, kernel_size=15)
    if mechanism == "multihead":
        opts["num_heads"] = 4
    over: dict[str, Any] = {"attention": mechanism, "attention_options": opts}
    if task == "speech" and mechanism == "none":
        over["guided_attention_weight"] = 0.0  # a diagonal prior on a uniform average means nothing
    return over


def _children_cpu_seconds() -> float:
    from time_to_quality import _children_cpu_seconds as f

    return f()


def _budget_callback(seconds: float) -> Any:
    import lightning as L

    class CpuBudget(L.Callback):
        """Stop after ``seconds`` CPU seconds of training; count the training units on the way."""

        def __init__(self) -> None:
            self.units = 0.0
            self.c0 = self.t0 = 0.0
            self.cpu = self.wall = 0.0

        def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            self.c0, self.t0 = time.process_time() + _children_cpu_seconds(), time.perf_counter()

        def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, idx: int) -> None:
            self.units += float(pl_module.last_batch_units)  # counted on the host before the batch moved
            self.cpu = time.process_time() + _children_cpu_seconds() - self.c0
            self.wall = time.perf_counter() - self.t0
            if self.cpu >= seconds:
                trainer.should_stop = True

    return CpuBudget()


def run_one(task: str, mechanism: str, seed: int, budget_s: float, quick: bool, workdir: Path, figdir: Path) -> dict:
    """Train one (task, mechanism, seed) for ``budget_s`` CPU seconds and measure it (see module docstring)."""
    import lightning as L
    import study_tasks
    import time_to_quality as ttq
    import torch

    torch.set_num_threads(1)
    adapter = study_tasks.ADAPTERS[task]
    if quick:
        ttq.HELD_OUT = dict(study_tasks.QUICK_HELD_OUT)
    data = adapter.data(quick)
    load0 = os.getloadavg()
    dm, module, kw, evaluate = ttq.SETUPS[task]("demo", seed, data, mechanism_options(task, mechanism), workdir)
    budget = _budget_callback(budget_s)
    base = ttq.trainer_kwargs(workdir)
    trainer = L.Trainer(callbacks=[budget], **{**base, **kw})
    trainer.fit(module, dm)
    module.eval()
    t0 = time.perf_counter()
    quality = evaluate(module)
    decode_s = time.perf_counter() - t0
    record: dict[str, Any] = {
        "task": task,
        "mechanism": mechanism,
        "seed": seed,
        "budget_cpu_s": budget_s,
        "train_cpu_s": round(budget.cpu, 1),
        "train_wall_s": round(budget.wall, 1),
        "steps": trainer.global_step,
        "train_units_per_s": round(budget.units / max(budget.cpu, 1e-9), 1),
        "decode_per_s": round(adapter.n_decoded(quick) / max(decode_s, 1e-9), 2),
        "quality": {k: round(float(v), 3) for k, v in quality.items()},
        "alignment": {k: round(float(v), 4) for k, v in adapter.alignment(module, dm, quick).items()},
        "params": sum(p.numel() for p in module.parameters()),
        "loadavg_start": [round(x, 2) for x in load0],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
    }
    if hasattr(adapter, "by_length"):  # quality by input length (translation: BLEU; speech: CER)
        record["by_length"] = adapter.by_length(module, dm, quick)
    figure = figdir / f"{task}_{mechanism}_seed{seed}.png"
    if adapter.figure(module, dm, figure):
        record["figure"] = figure.name
    record["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return record


# ------------------------------------------------------------------------------------------------ the study
def _spawn(task: str, mech: str, seed: int, budget: float, quick: bool, work: Path, figdir: Path) -> tuple[Any, Path]:
    out = work / f"{task}_{mech}_{seed}.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, __file__, "--run", task, mech, str(seed), str(budget), "--json", str(out)]
    cmd += ["--workdir", str(work / task), "--figdir", str(figdir)] + (["--quick"] if quick else [])
    log = open(work / f"{task}_{mech}_{seed}.log", "w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT), out


def run_study(
    tasks: Sequence[str],
    seeds: Sequence[int],
    jobs: int,
    quick: bool,
    figdir: Path,
    work: Path,
    mechanisms: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """All runs, ``jobs`` at a time; mechanisms interleaved so each meets the same machine load."""
    plan = []
    for task in tasks:
        mechs = list(mechanisms or (QUICK_MECHANISMS if quick else MECHANISMS)[task])
        budget = (QUICK_BUDGET if quick else BUDGET)[task]
        plan += [(task, m, s, budget) for s in seeds for m in mechs]
    # Warm each task's caches (corpus synthesis, tokenizers) with its first run alone, then the rest in parallel.
    firsts = {t: next(p for p in plan if p[0] == t) for t in tasks}
    queue = list(firsts.values()) + [p for p in plan if p not in firsts.values()]
    running: list[tuple[Any, Path, tuple]] = []
    records: list[dict[str, Any]] = []
    started = time.perf_counter()
    n_first = len(firsts)
    while queue or running:
        limit = 1 if len(records) + len(running) < n_first and len(records) < n_first else jobs
        while queue and len(running) < limit:
            item = queue.pop(0)
            proc, out = _spawn(*item, quick, work, figdir)
            running.append((proc, out, item))
        time.sleep(0.5)
        for entry in list(running):
            proc, out, item = entry
            if proc.poll() is None:
                continue
            running.remove(entry)
            if proc.returncode != 0 or not out.is_file():
                log = work / f"{item[0]}_{item[1]}_{item[2]}.log"
                tail = log.read_text(errors="replace")[-3000:] if log.is_file() else ""
                raise RuntimeError(f"run {item} failed (exit {proc.returncode}):\n{tail}")
            rec = json.loads(out.read_text())
            records.append(rec)
            q = rec["quality"].get(QUALITY[rec["task"]][0])
            print(
                f"[{(time.perf_counter() - started) / 60:5.1f} min] {rec['task']:<11} {rec['mechanism']:<10} "
                f"seed {rec['seed']}  {QUALITY[rec['task']][1]} {q}  align {rec['alignment']}  "
                f"load {rec['loadavg_end'][0]}",
                flush=True,
            )
    return records


# ------------------------------------------------------------------------------------------------ summaries
def _median_spread(values: Sequence[float]) -> tuple[float, float, float] | None:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return None
    return statistics.median(vals), min(vals), max(vals)


def summarise(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per task and mechanism: median (min-max) over seeds of every figure."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for rec in records:
        out.setdefault(rec["task"], {}).setdefault(rec["mechanism"], {"runs": []})["runs"].append(rec)
    for task, mechs in out.items():
        for _mech, entry in mechs.items():
            runs = entry["runs"]
            qkey, akey = QUALITY[task][0], ALIGNMENT[task][0]
            entry["quality"] = _median_spread([r["quality"].get(qkey) for r in runs])
            entry["alignment"] = _median_spread([r["alignment"].get(akey) for r in runs])
            for key in ("train_units_per_s", "decode_per_s", "peak_rss_mb", "params", "steps"):
                entry[key] = _median_spread([r.get(key) for r in runs])
            extra = sorted({k for r in runs for k in r["alignment"]} - {akey})
            entry["alignment_extra"] = {k: _median_spread([r["alignment"].get(k) for r in runs]) for k in extra}
            del entry["runs"]
    return out


def _fmt(ms: tuple[float, float, float] | None, digits: int = 1, spread: bool = True) -> str:
    if ms is None:
        return "—"
    med, lo, hi = ms
    text = f"{med:,.{digits}f}"
    return f"{text} ({lo:,.{digits}f}–{hi:,.{digits}f})" if spread and hi > lo else text


def markdown_table(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    """The table for RESULTS.md and the README: median (min–max) over seeds."""
    lines = []
    for task, mechs in summary.items():
        qlabel, alabel, unit = QUALITY[task][1], ALIGNMENT[task][1], UNITS[task]
        lines += [
            f"**{task}** ({meta['budget'][task]:.0f} CPU-s of training per run, {meta['n_seeds']} seeds, 1 thread; "
            f"median (min–max) over seeds)",
            "",
            f"| mechanism | {qlabel} | {alabel} | train {unit} | decode /s | peak RSS MB | parameters |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for mech, e in mechs.items():
            digits = 3 if task == "translation" else 1
            align = _fmt(e["alignment"], digits) if task != "captioning" else _fmt(_pct(e["alignment"]), 1)
            if task == "speech" and e["alignment"] is not None:
                align = _fmt(_pct(e["alignment"]), 1)
            params = f"{e['params'][0]:,.0f}" if e["params"] else "—"
            lines.append(
                f"| `{mech}` | {_fmt(e['quality'])} | {align} | {_fmt(e['train_units_per_s'], 0)} | "
                f"{_fmt(e['decode_per_s'], 1)} | {_fmt(e['peak_rss_mb'], 0, spread=False)} | {params} |"
            )
        lines.append("")
    return "\n".join(lines)


def _pct(ms: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
    return None if ms is None else (100 * ms[0], 100 * ms[1], 100 * ms[2])


# ------------------------------------------------------------------------------------------------ report
def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _thumbnail(path: Path, width: int = 420) -> str:
    """A figure file as a small JPEG (base64), so the page stays a light, self-contained file."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.width > width:
            im = im.resize((width, round(im.height * width / im.width)), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=80, optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def length_figure(records: Sequence[dict[str, Any]], task: str = "translation", key: str | None = None) -> Any:
    """Quality by input length, median over seeds with the min-max band: Bahdanau et al.'s figure for
    translation (BLEU by source words); for speech, CER by how many held-out utterances are joined."""
    from matplotlib.figure import Figure

    key = key or ("bleu" if task == "translation" else "cer")
    fig = Figure(figsize=(6.4, 3.8))
    ax = fig.add_subplot()
    by_mech: dict[str, dict[str, list[float]]] = {}
    buckets: list[str] = []
    for r in records:
        if r["task"] != task or "by_length" not in r:
            continue
        for b in r["by_length"]:
            if b["bucket"] not in buckets:
                buckets.append(b["bucket"])
            if key in b:
                by_mech.setdefault(r["mechanism"], {}).setdefault(b["bucket"], []).append(b[key])
    x = list(range(len(buckets)))
    for mech, per in by_mech.items():
        med = [statistics.median(per.get(b, [math.nan])) for b in buckets]
        lo = [min(per.get(b, [math.nan])) for b in buckets]
        hi = [max(per.get(b, [math.nan])) for b in buckets]
        style = {"linewidth": 2.5, "color": "black"} if mech == "none" else {"linewidth": 1.5}
        ax.plot(x, med, marker="o", label=mech, **style)
        ax.fill_between(x, lo, hi, alpha=0.12, color=style.get("color"))
    if task == "translation":
        ax.set_xticks(x, [f"{b} words" for b in buckets])
        ax.set_ylabel("BLEU (held-out, beam 5)")
        ax.set_xlabel("source sentence length")
        ax.set_title("Translation quality by source length: no attention vs attention")
    else:
        ax.set_xticks(x, buckets)
        ax.set_ylabel("CER % (lower is better)")
        ax.set_xlabel("held-out utterances joined into one input")
        how = "attention decoder alone" if key == "cer_attention_only" else "joint CTC/attention search"
        ax.set_title(f"Speech CER by input length ({how})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return fig


def bar_figure(summary: dict[str, Any], task: str, what: str) -> Any:
    """One bar per mechanism (median over seeds, min-max as an error bar)."""
    from matplotlib.figure import Figure

    mechs = summary[task]
    label = (QUALITY if what == "quality" else ALIGNMENT)[task][1]
    names = [m for m in mechs if mechs[m][what] is not None]
    fig = Figure(figsize=(4.6, 2.8))
    ax = fig.add_subplot()
    scale = 100.0 if what == "alignment" and task != "translation" else 1.0  # shares shown as percent
    med = [scale * mechs[m][what][0] for m in names]
    err = [
        [scale * (mechs[m][what][0] - mechs[m][what][1]) for m in names],
        [scale * (mechs[m][what][2] - mechs[m][what][0]) for m in names],
    ]
    colors = ["#444444" if m in ("none", "ctc") else "#3b7dd8" for m in names]
    ax.bar(range(len(names)), med, yerr=err, color=colors, capsize=3)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_title(f"{task}: {label}", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return fig


def write_html(path: Path, records: Sequence[dict[str, Any]], meta: dict[str, Any], figdir: Path) -> Path:
    """One self-contained page: the length figure, the bars, the table and the heatmaps side by side."""
    summary = summarise(records)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>What attention buys</title><style>",
        "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}",
        "table{border-collapse:collapse;font-size:14px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px}",
        ".row{display:flex;flex-wrap:wrap;gap:10px}.row figure{margin:0;text-align:center;font-size:13px}",
        "img{max-width:100%}.note{color:#555;font-size:14px}</style></head><body>",
        "<h1>What attention buys</h1>",
        f"<p class='note'>{html.escape(meta['description'])}</p>",
    ]
    if any(r.get("by_length") for r in records if r["task"] == "translation"):
        img = _png(length_figure(records, "translation"))
        parts += ["<h2>Translation quality by source length</h2>", f"<img src='data:image/png;base64,{img}'>"]
    if any(r.get("by_length") for r in records if r["task"] == "speech"):
        parts.append("<h2>Speech on inputs longer than any training utterance</h2><div class='row'>")
        for key in ("cer", "cer_attention_only"):
            img = _png(length_figure(records, "speech", key))
            parts.append(f"<img style='max-width:590px' src='data:image/png;base64,{img}'>")
        parts.append("</div>")
    parts.append("<h2>Quality and alignment per mechanism</h2><div class='row'>")
    for task in summary:
        for what in ("quality", "alignment"):
            if any(e[what] is not None for e in summary[task].values()):
                parts.append(f"<img src='data:image/png;base64,{_png(bar_figure(summary, task, what))}'>")
    parts.append("</div><h2>All figures (median and min–max over seeds)</h2>")
    table = markdown_table(summary, meta)
    parts.append(_markdown_to_html(table))
    parts.append("<h2>The same input under each mechanism (seed 0)</h2>")
    for task in summary:
        shots = [r for r in records if r["task"] == task and r["seed"] == min(meta["seeds"]) and r.get("figure")]
        if not shots:
            continue
        parts.append(f"<h3>{task}</h3><div class='row'>")
        for r in shots:
            note = " (a uniform 1/S average: no attention)" if r["mechanism"] == "none" else ""
            parts.append(
                f"<figure><img style='max-width:370px' src='data:image/jpeg;base64,{_thumbnail(figdir / r['figure'])}'>"
                f"<figcaption>{html.escape(r['mechanism'])}{note}</figcaption></figure>"
            )
        parts.append("</div>")
    parts.append(
        f"<p class='note'>Machine: {html.escape(meta['machine'])}. Generated by benchmarks/attention_study.py.</p>"
    )
    parts.append("</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _markdown_to_html(md: str) -> str:
    out, in_table = [], False
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("- "):
                continue
            tag = "th" if not in_table else "td"
            if not in_table:
                out.append("<table>")
                in_table = True
            out.append("<tr>" + "".join(f"<{tag}>{html.escape(c).replace('`', '')}</{tag}>" for c in cells) + "</tr>")
        else:
            if in_table:
                out.append("</table>")
                in_table = False
            if line.strip():
                out.append(f"<p>{html.escape(line).replace('**', '')}</p>")
    if in_table:
        out.append("</table>")
    return "\n".join(out)


def update_results_md(path: Path, table: str, meta: dict[str, Any]) -> None:
    """Replace the study's section of RESULTS.md (between its markers), or append it."""
    start, end = "<!-- attention-study:start -->", "<!-- attention-study:end -->"
    body = (
        f"{start}\n## What attention buys (`benchmarks/attention_study.py`)\n\n{meta['description']}\n\n"
        f"Command: `{meta['command']}`. Machine: {meta['machine']}; load average {meta['loadavg']}.\n\n{table}\n{end}"
    )
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if start in text and end in text:
        text = text[: text.index(start)] + body + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + body + "\n"
    path.write_text(text, encoding="utf-8")


# ------------------------------------------------------------------------------------------------ main
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", nargs="+", default=list(MECHANISMS), choices=list(MECHANISMS))
    p.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    p.add_argument("--jobs", type=int, default=2, help="runs at once (one thread each)")
    p.add_argument(
        "--mechanisms",
        nargs="+",
        help="only these (default: all of each task; 'transformer' = translation's Transformer)",
    )
    p.add_argument("--quick", action="store_true", help="tiny data, two mechanisms, a few seconds: a pipeline check")
    p.add_argument("--out", type=Path, help="JSON of every run")
    p.add_argument("--html", type=Path, help="the report page")
    p.add_argument("--results-md", type=Path, help="RESULTS.md to update with the table")
    p.add_argument("--report", type=Path, help="redraw the table/page from this JSON, no training")
    p.add_argument("--combine", type=Path, nargs="+", help="with --report: more study JSONs to join (then --out)")
    p.add_argument("--run", nargs=4, metavar=("TASK", "MECHANISM", "SEED", "BUDGET"), help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--figdir", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.run:  # one run, in its own process
        task, mech, seed, budget = args.run
        rec = run_one(task, mech, int(seed), float(budget), args.quick, args.workdir, args.figdir)
        args.json.write_text(json.dumps(rec, indent=1))
        return 0

    if args.report:
        data = json.loads(args.report.read_text())
        records, meta = data["runs"], data["meta"]
        figdir = Path(meta["figdir"]) if Path(meta["figdir"]).is_absolute() else ROOT / meta["figdir"]
        for extra in args.combine or []:  # studies run in parts (e.g. one task at a time) join into one report
            more = json.loads(extra.read_text())
            more_dir = Path(more["meta"]["figdir"])
            more_dir = more_dir if more_dir.is_absolute() else ROOT / more_dir
            for r in more["runs"]:  # each part's figures stay where it wrote them
                if r.get("figure") and (more_dir / r["figure"]).is_file() and more_dir != figdir:
                    r["figure"] = str(more_dir / r["figure"])
            records += more["runs"]
            meta["budget"].update(more["meta"]["budget"])
            meta["loadavg"] = [meta["loadavg"], more["meta"]["loadavg"]]
        if args.out:
            args.out.write_text(json.dumps({"meta": meta, "runs": records}, indent=1))
    else:
        figdir = (args.html.parent if args.html else Path(tempfile.mkdtemp())) / "figures"
        figdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="attention-study-") as tmp:
            work = Path(tmp)
            records = run_study(args.tasks, args.seeds, args.jobs, args.quick, figdir, work, args.mechanisms)
        budget = QUICK_BUDGET if args.quick else BUDGET
        meta = {
            "description": (
                "Each run trains the demo's model and data of one task with one attention mechanism (none = a "
                "fixed context, ctc = CTC alone) for the same CPU time on one thread, then scores the demo's "
                "held-out sets and the alignment against the data's gold."
                + (" QUICK MODE: tiny data and budgets, the figures mean nothing." if args.quick else "")
            ),
            "command": "python benchmarks/attention_study.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
            "loadavg": [round(x, 2) for x in os.getloadavg()],
            "budget": {t: budget[t] for t in args.tasks},
            "seeds": list(args.seeds),
            "n_seeds": len(args.seeds),
            "quick": args.quick,
            # relative to the repository when inside it, so a committed JSON redraws its page anywhere
            "figdir": str(figdir.resolve().relative_to(ROOT)) if figdir.resolve().is_relative_to(ROOT) else str(figdir),
        }
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"meta": meta, "runs": records}, indent=1))
    table = markdown_table(summarise(records), meta)
    print(table)
    if args.html:
        print(f"wrote {write_html(args.html, records, meta, figdir)}")
    if args.results_md:
        update_results_md(args.results_md, table, meta)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
