"""Two-minute captioning demo: train briefly on generated scenes, reload, caption, plot attention.

Used by ``make demo`` (all tasks together within 10 minutes on 2 CPU cores). Everything runs
offline: no downloads, generated images only. `build` and `evaluate` are the recipe and the held-out
scoring that ``benchmarks/time_to_quality.py`` measures.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch

from core.cli.output import write_text_atomic
from core.train.progress import Sink, StageProgress, null_sink
from tasks.captioning import scenes
from tasks.captioning.data import CaptionDataModule
from tasks.captioning.inference import save_attention_figure
from tasks.captioning.module import CaptioningModule
from tasks.demo_common import DemoRecipe, run_task_demo, shown_indices
from tasks.demo_report import Example, TaskReport

TASK = "captioning"

__all__ = ["build", "evaluate", "held_out", "run_demo"]

#: Data settings of the demo.
DEMO_DATA: dict[str, Any] = {
    "batch_size": 64,
    "train_size": 8000,
    "val_size": 32,
    "test_size": 8,
    "unseen_size": 8,
    "num_workers": 0,
}
#: Model settings of the demo: the default config's model and optimiser (configs/captioning/default.yaml) with
#: two changes measured by benchmarks/time_to_quality.py (RESULTS.md, "Time to quality"): a 3x3 attention grid,
#: one cell per cell of the scene layout, so each object is one grid feature (objects named right: 70 % of
#: the test scenes after 3 CPU-minutes vs 35 % with 6x6); and no doubly stochastic regulariser, which on
#: a grid asks every cell to be attended about once per caption, i.e. for attention spread over the image.
#: Together they reach the test target in half the CPU time.
DEMO_MODEL: dict[str, Any] = {
    "grid_size": 3,
    "encoder_dim": 256,
    "attention_options": {"hidden_dim": 128},
    "embed_dim": 128,
    "hidden_dim": 256,
    "dropout": 0.2,
    "max_len": 24,
    "lr": 2e-3,
    "warmup_steps": 100,
    "beam_size": 1,
    "plot_examples": 0,
    "alpha_reg": 0.0,
}
#: Trainer settings of the demo (besides the budget).
DEMO_TRAINER: dict[str, Any] = {"gradient_clip_val": 5.0, "num_sanity_val_steps": 0}
#: Beam width of the demo's captions (and of the held-out score).
DEMO_BEAM = 3
#: Corpus seed of the generated scenes (the held-out scenes are a function of it).
SCENE_SEED = 0
#: Held-out scenes of each split (test, unseen) the demo scores.
HELD_OUT = 100
#: Seconds of the budget kept for saving, reloading, scoring and figures.
RESERVE_S = 25.0
#: Data settings of `attn-demo --quick` (a pipeline check: tiny corpus, meaningless scores).
QUICK_DATA: dict[str, Any] = {"train_size": 256, "batch_size": 32}


def build(
    seed: int = 0, data: dict[str, Any] | None = None, model: dict[str, Any] | None = None
) -> tuple[CaptionDataModule, CaptioningModule]:
    """The demo's data module and model, seeded.

    Args:
        seed: seed of the model initialisation and batch order (the scenes are fixed).
        data: `CaptionDataModule` arguments replacing the demo's.
        model: `CaptioningModule` arguments replacing the demo's.

    Returns:
        `(datamodule, module)`.
    """
    L.seed_everything(seed, workers=True, verbose=False)
    dm = CaptionDataModule(**{**DEMO_DATA, **(data or {})})
    return dm, CaptioningModule(vocab=dm.vocab, **{**DEMO_MODEL, **(model or {})})


def held_out(n: int, split: scenes.Split = "test", image_size: int = 96) -> list[scenes.Scene]:
    """Scenes ``0..n-1`` of a held-out split: ``"test"`` (seen colour-shape pairs) or ``"unseen"``."""
    return [scenes.make_scene(SCENE_SEED, split, i, image_size) for i in range(n)]


def evaluate(
    model: CaptioningModule,
    groups: Mapping[str, Sequence[scenes.Scene]],
    beam: int = DEMO_BEAM,
    progress: StageProgress | None = None,
) -> tuple[dict[str, float], dict[str, list[str]]]:
    """Corpus BLEU-4 (COCO-toolkit style, all references) of `model` on each group of scenes.

    Args:
        model: the captioning module.
        groups: e.g. ``{"test": [...], "unseen": [...]}``.
        beam: beam width.
        progress: advanced by the images captioned.

    Returns:
        `({"bleu4_<group>": ...}, {group: captions in input order})`.
    """
    from tasks.captioning.metrics import corpus_bleu

    scores: dict[str, float] = {}
    outputs: dict[str, list[str]] = {}
    for name, items in groups.items():
        caps: list[str] = []
        for k in range(0, len(items), 50):
            caps += [str(c) for c in model.caption([s.image for s in items[k : k + 50]], beam=beam, batch_size=50)]
            if progress is not None:
                progress.update(len(items[k : k + 50]))
        outputs[name] = caps
        scores[f"bleu4_{name}"] = corpus_bleu(caps, [s.captions for s in items])[3]
        # Diagnostics of the errors the issue names: how many objects, and which (size, colour, shape).
        said = [_objects(c) for c in caps]
        truth = [sorted((o.size, o.colour, o.shape) for o in s.objects) for s in items]
        scores[f"count_acc_{name}"] = 100.0 * sum(len(a) == len(b) for a, b in zip(said, truth)) / max(len(items), 1)
        scores[f"objects_acc_{name}"] = 100.0 * sum(sorted(a) == b for a, b in zip(said, truth)) / max(len(items), 1)
    return scores, outputs


_PHRASE = re.compile(r"\ba (small|large) (\w+) (circle|square|triangle|diamond)\b")


def _objects(caption: str) -> list[tuple[str, str, str]]:
    """The ``(size, colour, shape)`` noun phrases a scene caption names, in order."""
    return [(m[1], m[2], m[3]) for m in _PHRASE.finditer(caption)]


def run_demo(
    out_dir: Path,
    max_minutes: float = 2.5,
    seed: int = 0,
    sink: Sink = null_sink,
    n_held_out: int = HELD_OUT,
    data: dict[str, Any] | None = None,
) -> TaskReport:
    """Train on generated scenes for most of ``max_minutes``, reload, score held-out scenes and show them.

    Writes into ``out_dir``: ``captioning.ckpt`` (reloaded through the safe loader before use),
    ``captioning_scene<i>.png`` (input images of the shown examples), ``captioning_attention_<i>.png``
    (their per-word attention overlays) and ``captioning_captions.txt`` (every held-out caption with its
    references).

    Args:
        out_dir: output folder (created).
        max_minutes: wall-clock budget of the whole task; training gets what scoring and figures leave.
        seed: training seed (initialisation and batch order).
        sink: progress sink (`core.train.progress`).
        n_held_out: scenes of each held-out split (seen and unseen colour-shape pairs) to score.
        data: `CaptionDataModule` arguments replacing the demo's (e.g. `QUICK_DATA`).

    Returns:
        The task's report.
    """
    out_dir = Path(out_dir)

    def build_demo(out: Path) -> tuple[CaptionDataModule, CaptioningModule]:
        return build(seed, data)  # generated scenes: nothing cached under `out`

    def score(reloaded: CaptioningModule, dm: CaptionDataModule, report: TaskReport, sink: Sink) -> None:
        groups = {name: held_out(n_held_out, name, dm.image_size) for name in ("test", "unseen")}
        _score(reloaded, groups, dm.image_size, out_dir, report, sink)

    recipe = DemoRecipe(
        TASK,
        build_demo,
        score,
        "demo: generated shape scenes and their captions (tasks/captioning/scenes.py)",
        RESERVE_S,
        DEMO_TRAINER,
    )
    return run_task_demo(recipe, out_dir, max_minutes, seed, sink)


def _score(
    model: CaptioningModule,
    groups: Mapping[str, Sequence[scenes.Scene]],
    image_size: int,
    out_dir: Path,
    report: TaskReport,
    sink: Sink,
) -> None:
    """Held-out BLEU-4 and object diagnostics of both splits, the shown scenes with their attention overlays, and
    ``captioning_captions.txt``."""
    total = sum(len(g) for g in groups.values())
    with StageProgress(sink, TASK, f"scoring {total} held-out scenes", total, "images") as prog:
        report.metrics, outputs = evaluate(model, groups, progress=prog)
    report.n_examples = {k: len(v) for k, v in groups.items()}
    lines = ["split\tindex\tgenerated\treferences\tresult"]
    k = 0
    for name, items in groups.items():
        correct = [c in s.captions for c, s in zip(outputs[name], items)]
        lines += [
            f"{name}\t{i}\t{c}\t{' | '.join(s.captions)}\t{'ok' if ok else 'WRONG'}"
            for i, (c, s, ok) in enumerate(zip(outputs[name], items, correct))
        ]
        # Four of each kind: each overlay figure (one panel per word) costs about a CPU-second to draw.
        shown = shown_indices(correct, first=4, errors=4)
        results = model.caption([items[i].image for i in shown], beam=DEMO_BEAM, return_attention=True)
        for i, (text, weights) in zip(shown, results):
            img = out_dir / f"captioning_scene{k}.png"
            items[i].image.save(img)
            report.files.append(img)
            fig = None
            if text:
                fig = save_attention_figure(
                    items[i].image, text, weights, out_dir / f"captioning_attention_{k}.png", image_size
                )
                report.files.append(fig)
            report.examples.append(
                Example(
                    output=outputs[name][i],
                    references=list(items[i].captions),
                    correct=correct[i],
                    image=f"{out_dir.name}/{img.name}",
                    figure=f"{out_dir.name}/{fig.name}" if fig else None,
                    group=f"{name} #{i}",
                )
            )
            k += 1
    txt = out_dir / "captioning_captions.txt"
    write_text_atomic(txt, "\n".join(lines) + "\n")
    report.files.append(txt)


if __name__ == "__main__":  # pragma: no cover - manual use
    import sys

    from core.train.progress import ProgressBoard
    from tasks.demo_report import format_table

    torch.set_num_threads(1)
    print(format_table([run_demo(Path(sys.argv[1] if len(sys.argv) > 1 else "demo_out"), sink=ProgressBoard())]))
