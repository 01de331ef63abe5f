"""What the demo got: per-task scores against their targets, `summary.json` and one `index.html` page.

Each task's `run_demo` returns a `TaskReport`: the score of the reloaded checkpoint on a held-out demo set
(dozens of examples), the target it is measured against (`TARGETS`, the same numbers
`benchmarks/time_to_quality.py` measures time to), and per-example inputs, outputs, references and
attention figures. `tasks.demo` prints the table, and this module writes the JSON summary and the page.
"""

from __future__ import annotations

import html
import json
import math
import operator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.cli.output import write_text_atomic

__all__ = ["TARGETS", "Example", "Target", "TaskReport", "format_table", "write_html", "write_summary"]


@dataclass(frozen=True)
class Target:
    """A quality target on one metric of a held-out set.

    Attributes:
        metric: metric key in `TaskReport.metrics` (e.g. ``"bleu4_unseen"``).
        label: human-readable name (e.g. ``"BLEU-4, unseen combinations"``).
        op: ``">="`` (higher is better) or ``"<="`` (lower is better).
        value: the threshold.
    """

    metric: str
    label: str
    op: str
    value: float

    def met(self, score: float | None) -> bool:
        """True when ``score`` reaches the target (a missing or NaN score never does)."""
        if score is None or not math.isfinite(score):
            return False
        return (operator.ge if self.op == ">=" else operator.le)(score, self.value)


#: The targets of issue 14, per task (scores on a 0-100 scale; CER in percent).
TARGETS: dict[str, tuple[Target, ...]] = {
    "translation": (Target("bleu", "BLEU, held-out sentences", ">=", 95.0),),
    "captioning": (
        Target("bleu4_test", "BLEU-4, test scenes", ">=", 60.0),
        Target("bleu4_unseen", "BLEU-4, unseen colour-shape pairs", ">=", 40.0),
    ),
    "speech": (Target("cer", "CER %, unseen voices", "<=", 10.0),),
}


@dataclass
class Example:
    """One held-out example as shown on the page.

    Attributes:
        output: the model's output (translation, caption, transcript).
        references: the reference(s).
        correct: the output equals a reference exactly.
        text: textual input (source sentence), if any.
        image: input image, relative to the output folder, if any.
        audio: input audio, relative to the output folder, if any.
        figure: attention figure, relative to the output folder, if any.
        group: sub-set name (e.g. ``"test"`` / ``"unseen"`` for captioning).
    """

    output: str
    references: list[str]
    correct: bool
    text: str | None = None
    image: str | None = None
    audio: str | None = None
    figure: str | None = None
    group: str | None = None


@dataclass
class TaskReport:
    """Result of one task's demo.

    Attributes:
        task: task name.
        metrics: held-out scores by metric key (see `TARGETS`).
        n_examples: held-out examples behind the scores, by group.
        train_steps: optimizer steps taken.
        train_seconds: wall seconds spent training.
        seconds: wall seconds of the whole task demo (synthesis, training, evaluation, figures).
        examples: examples shown on the page (a subset of the held-out set).
        files: files written (checkpoint, figures, text outputs).
        error: why the task failed, if it did (then the metrics may be empty).
    """

    task: str
    metrics: dict[str, float] = field(default_factory=dict)
    n_examples: dict[str, int] = field(default_factory=dict)
    train_steps: int = 0
    train_seconds: float = 0.0
    seconds: float = 0.0
    examples: list[Example] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    error: str | None = None

    @property
    def targets(self) -> tuple[Target, ...]:
        return TARGETS.get(self.task, ())

    @property
    def passed(self) -> bool:
        """Every target of the task met (and no error)."""
        return self.error is None and all(t.met(self.metrics.get(t.metric)) for t in self.targets)

    def to_dict(self, root: Path | None = None) -> dict[str, Any]:
        """Plain JSON-able dict (paths relative to ``root`` when given)."""

        def rel(p: Path) -> str:
            return str(p.relative_to(root)) if root is not None and p.is_relative_to(root) else str(p)

        return {
            "task": self.task,
            "passed": self.passed,
            "error": self.error,
            "metrics": {k: round(v, 3) for k, v in self.metrics.items()},
            "targets": [
                {
                    **asdict(t),
                    "met": t.met(self.metrics.get(t.metric)),
                    "score": round(self.metrics[t.metric], 3) if t.metric in self.metrics else None,
                }
                for t in self.targets
            ],
            "n_examples": self.n_examples,
            "train_steps": self.train_steps,
            "train_seconds": round(self.train_seconds, 1),
            "seconds": round(self.seconds, 1),
            "examples": [asdict(e) for e in self.examples],
            "files": [rel(p) for p in self.files],
        }


# ------------------------------------------------------------------------------------------------
# outputs
# ------------------------------------------------------------------------------------------------
def format_table(reports: list[TaskReport]) -> str:
    """Plain-text table: one row per target (score beside target), then the time each task took."""
    rows = [("task", "held-out metric", "examples", "score", "target", "met")]
    for r in reports:
        if r.error is not None:
            rows.append((r.task, f"FAILED: {r.error}"[:60], "", "", "", "no"))
            continue
        for t in r.targets:
            score = r.metrics.get(t.metric)
            group = t.metric.rsplit("_", 1)[1] if "_" in t.metric else ""
            n = r.n_examples.get(group, sum(r.n_examples.values()))
            rows.append(
                (
                    r.task,
                    t.label,
                    str(n),
                    "-" if score is None else f"{score:.1f}",
                    f"{t.op} {t.value:g}",
                    "yes" if t.met(score) else "NO",
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    times = ", ".join(
        f"{r.task} {r.seconds:.0f} s ({r.train_steps} steps in {r.train_seconds:.0f} s)"
        for r in reports
        if r.error is None
    )
    return "\n".join(lines) + (f"\nTime: {times}" if times else "")


def write_summary(reports: list[TaskReport], out: Path, extra: dict[str, Any] | None = None) -> Path:
    """Write `<out>/summary.json`: per task, its scores, targets, timing and shown examples."""
    out = Path(out)
    data = {
        "passed": all(r.passed for r in reports),
        **(extra or {}),
        "tasks": {r.task: r.to_dict(out) for r in reports},
    }
    path = out / "summary.json"
    write_text_atomic(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    return path


_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 2px solid #ccc; }
table { border-collapse: collapse; margin: 0.6em 0; }
td, th { border: 1px solid #ddd; padding: 4px 8px; vertical-align: top; text-align: left; }
th { background: #f3f3f3; }
.ok { color: #17732b; font-weight: 600; } .bad { color: #b3261e; font-weight: 600; }
.badge { padding: 2px 8px; border-radius: 4px; color: #fff; font-size: 0.8em; vertical-align: middle; }
.pass { background: #17732b; } .fail { background: #b3261e; }
img.input { width: 96px; height: 96px; image-rendering: pixelated; }
img.fig { max-width: 520px; max-height: 260px; }
td.mono { font-family: ui-monospace, monospace; font-size: 0.92em; }
.muted { color: #666; font-size: 0.9em; }
"""


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _section(r: TaskReport) -> str:
    badge = (
        '<span class="badge pass">targets met</span>' if r.passed else '<span class="badge fail">target missed</span>'
    )
    parts = [f'<h2 id="{_esc(r.task)}">{_esc(r.task)} {badge}</h2>']
    if r.error is not None:
        parts.append(f'<p class="bad">failed: {_esc(r.error)}</p>')
    scores = ["<table><tr><th>held-out metric</th><th>examples</th><th>score</th><th>target</th><th>met</th></tr>"]
    for t in r.targets:
        s = r.metrics.get(t.metric)
        group = t.metric.rsplit("_", 1)[1] if "_" in t.metric else ""
        n = r.n_examples.get(group, sum(r.n_examples.values()))
        cls, word = ("ok", "yes") if t.met(s) else ("bad", "no")
        scores.append(
            f"<tr><td>{_esc(t.label)}</td><td>{n}</td><td>{'-' if s is None else f'{s:.1f}'}</td>"
            f"<td>{_esc(t.op)} {t.value:g}</td><td class='{cls}'>{word}</td></tr>"
        )
    scores.append("</table>")
    parts.append("".join(scores))
    parts.append(
        f'<p class="muted">{r.train_steps} training steps in {r.train_seconds:.0f} s; '
        f"{r.seconds:.0f} s for the whole task (data, training, reloading the checkpoint, "
        f"evaluation, figures). Showing {len(r.examples)} held-out examples.</p>"
    )
    if r.examples:
        rows = [
            ("<table><tr><th>#</th><th>input</th><th>output</th><th>reference</th><th></th><th>attention</th></tr>")
        ]
        for i, e in enumerate(r.examples):
            cell = []
            if e.group:
                cell.append(f'<div class="muted">{_esc(e.group)}</div>')
            if e.image:
                cell.append(f'<img class="input" src="{_esc(e.image)}" alt="input image {i}">')
            if e.audio:
                cell.append(f'<audio controls preload="none" src="{_esc(e.audio)}"></audio>')
            if e.text:
                cell.append(f"<div>{_esc(e.text)}</div>")
            refs = "<br>".join(_esc(x) for x in e.references)
            mark = '<span class="ok">&#10003;</span>' if e.correct else '<span class="bad">&#10007;</span>'
            fig = (
                (
                    f'<a href="{_esc(e.figure)}"><img class="fig" src="{_esc(e.figure)}" '
                    f'alt="attention of example {i}"></a>'
                )
                if e.figure
                else ""
            )
            rows.append(
                f"<tr><td>{i}</td><td>{''.join(cell)}</td><td class='mono'>{_esc(e.output)}</td>"
                f"<td class='mono'>{refs}</td><td>{mark}</td><td>{fig}</td></tr>"
            )
        rows.append("</table>")
        parts.append("".join(rows))
    return "\n".join(parts)


def write_html(reports: list[TaskReport], out: Path, title: str = "attn-suite demo") -> Path:
    """Write `<out>/index.html`: per task, scores against targets and examples with their attention."""
    out = Path(out)
    passed = all(r.passed for r in reports)
    toc = " · ".join(f'<a href="#{_esc(r.task)}">{_esc(r.task)}</a>' for r in reports)
    body = "\n".join(_section(r) for r in reports)
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
        f"<style>{_CSS}</style></head><body>\n<h1>{_esc(title)}</h1>\n"
        f"<p>{'All targets met.' if passed else 'Some targets were missed.'} {toc} · "
        f'<a href="summary.json">summary.json</a></p>\n{body}\n</body></html>\n'
    )
    path = out / "index.html"
    write_text_atomic(path, page)
    return path
