"""Short end-to-end demo: train on the embedded corpus, checkpoint, reload, translate, plot alignments.

Run it alone with ``python -m tasks.translation.demo OUT_DIR [MAX_MINUTES]``; ``make demo`` runs all tasks.
`build` and `evaluate` are the recipe and the held-out scoring that ``benchmarks/time_to_quality.py``
measures.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.cli.output import write_text_atomic
from core.train.progress import Sink, StageProgress, null_sink
from tasks.demo_common import DemoRecipe, run_task_demo, shown_indices
from tasks.demo_report import Example, TaskReport

TASK = "translation"

DEMO_SENTENCES = [
    "I love you",
    "the red car",
    "she sees them",
    "we didn't see the old dogs yesterday",
    "do you want my new car?",
    "my brother is reading a book",  # words the grammar may not have: the output names them
]


#: Data settings of the demo (the tokenizer cache folder is added by the caller).
DEMO_DATA: dict[str, Any] = {
    "n_pairs": 12_000,
    "val_size": 200,
    "test_size": 200,
    "vocab_size": 1200,
    "max_tokens": 1024,
}
#: Model settings of the demo.
DEMO_MODEL: dict[str, Any] = {"embed_dim": 96, "hidden_dim": 192, "lr": 4e-3, "warmup_steps": 50, "plot_examples": 0}
#: Trainer settings of the demo (besides the budget).
DEMO_TRAINER: dict[str, Any] = {"gradient_clip_val": 1.0, "use_distributed_sampler": False}
#: Beam width of the demo's translations (and of the held-out score).
DEMO_BEAM = 5
#: Held-out test sentences the demo scores.
HELD_OUT = 200
#: Seconds of the budget kept for saving, reloading, scoring and figures.
RESERVE_S = 25.0
#: Data settings of `attn-demo --quick` (a pipeline check: tiny corpus, meaningless scores).
QUICK_DATA: dict[str, Any] = {"n_pairs": 2000, "val_size": 20, "test_size": 20, "vocab_size": 400}


def build(seed: int = 0, data: dict[str, Any] | None = None, model: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """The demo's data module (tokenizers trained) and model, seeded.

    Args:
        seed: seed of the model initialisation and batch order (the corpus and its splits are fixed).
        data: `TranslationDataModule` arguments replacing the demo's (e.g. ``cache_dir``).
        model: `TranslationModule` arguments replacing the demo's.

    Returns:
        `(datamodule, module)`.
    """
    import lightning.pytorch as pl

    from tasks.translation.data import TranslationDataModule
    from tasks.translation.module import TranslationModule

    pl.seed_everything(seed, verbose=False)
    dm = TranslationDataModule(**{**DEMO_DATA, **(data or {})})
    dm.prepare_data()
    return dm, TranslationModule(**{**DEMO_MODEL, **(model or {})})


def held_out(dm: Any, n: int | None = None) -> list[tuple[str, str]]:
    """The first `n` test pairs (English sentences never seen in training, with all their translations)."""
    test = dm.load_splits()["test"]
    return list(test if n is None else test[:n])


def evaluate(
    model: Any, pairs: Sequence[tuple[str, str]], beam: int = DEMO_BEAM, progress: StageProgress | None = None
) -> tuple[dict[str, float], list[str]]:
    """Corpus BLEU and chrF (sacrebleu) of `model` on `(source, reference)` pairs.

    Args:
        model: a `TranslationModule`.
        pairs: held-out `(source, reference)` pairs.
        beam: beam width.
        progress: advanced by the sentences translated.

    Returns:
        `({"bleu": ..., "chrf": ...}, hypotheses in input order)`.
    """
    from core.metrics.text import corpus_bleu, corpus_chrf

    hyps: list[str] = []
    for k in range(0, len(pairs), 50):
        hyps += model.translate([s for s, _ in pairs[k : k + 50]], beam=beam)
        if progress is not None:
            progress.update(len(pairs[k : k + 50]))
    refs = [r for _, r in pairs]
    return {"bleu": corpus_bleu(hyps, refs), "chrf": corpus_chrf(hyps, refs)}, hyps


def run_demo(
    out_dir: Path,
    max_minutes: float = 2.5,
    seed: int = 0,
    sink: Sink = null_sink,
    n_held_out: int = HELD_OUT,
    data: dict[str, Any] | None = None,
    threads: int | None = 1,
) -> TaskReport:
    """Train a small RNN+additive-attention model for ``max_minutes``, reload it, score and show it.

    Writes into ``out_dir``: ``translation.ckpt`` (reloaded through the safe loader before use),
    ``translations.txt`` (every held-out sentence with its output and reference, then the hand-picked
    `DEMO_SENTENCES`) and ``translation_alignment_<i>.png`` for the examples the page shows.

    Args:
        out_dir: destination folder (created).
        max_minutes: wall-clock budget of the whole task; training gets what evaluation and figures leave.
        seed: training seed (initialisation and batch order).
        sink: progress sink (`core.train.progress`).
        n_held_out: held-out test sentences to score.
        data: `TranslationDataModule` arguments replacing the demo's (e.g. `QUICK_DATA`).
        threads: torch intra-op threads while the demo runs (restored afterwards). One thread is the
            fastest choice for this small model when other demos/processes share a 2-core machine;
            ``None`` keeps torch's setting.

    Returns:
        The task's report (scores against the targets, examples, files).
    """
    import torch

    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _run(Path(out_dir), max_minutes, seed, sink, n_held_out, data or {})
    finally:
        torch.set_num_threads(old_threads)


def _run(out_dir: Path, max_minutes: float, seed: int, sink: Sink, n_held_out: int, data: dict[str, Any]) -> TaskReport:
    def build_demo(out: Path) -> tuple[Any, Any]:
        return build(seed, data={"cache_dir": str(out / "cache"), **data})

    def score(reloaded: Any, dm: Any, report: TaskReport, sink: Sink) -> None:
        _score(reloaded, held_out(dm, n_held_out), out_dir, report, sink)

    recipe = DemoRecipe(
        TASK,
        build_demo,
        score,
        "demo: the embedded English-Spanish grammar corpus (tasks/translation/grammar.py)",
        RESERVE_S,
        DEMO_TRAINER,
    )
    return run_task_demo(recipe, out_dir, max_minutes, seed, sink)


def _score(reloaded: Any, pairs: list[tuple[str, str]], out_dir: Path, report: TaskReport, sink: Sink) -> None:
    """Held-out BLEU/chrF, the shown examples with their alignments, and ``translations.txt``."""
    from core.viz import plot_alignment

    with StageProgress(sink, TASK, f"scoring {len(pairs)} held-out sentences", len(pairs), "sentences") as prog:
        report.metrics, hyps = evaluate(reloaded, pairs, progress=prog)
    report.n_examples = {"test": len(pairs)}
    correct = [h == r for h, (_, r) in zip(hyps, pairs)]
    shown = shown_indices(correct)
    # Alignments of the shown sentences (same beam, so the same outputs as scored).
    results = reloaded.translate([pairs[i][0] for i in shown], beam=DEMO_BEAM, return_attention=True)
    own = reloaded.translate(DEMO_SENTENCES, beam=DEMO_BEAM)
    txt = out_dir / "translations.txt"
    lines = [f"{s}\t{h}\t{r}\t{'ok' if c else 'WRONG'}" for (s, r), h, c in zip(pairs, hyps, correct)]
    for s, h in zip(DEMO_SENTENCES, own):
        unknown = reloaded.unknown_words(s)
        lines.append(
            f"{s}\t{h}\t\thand-picked" + (f"; never seen in training: {', '.join(unknown)}" if unknown else "")
        )
    write_text_atomic(txt, "source\toutput\treference\tresult\n" + "\n".join(lines) + "\n")
    report.files.append(txt)
    for k, (i, res) in enumerate(zip(shown, results)):
        src, ref = pairs[i]
        png = out_dir / f"translation_alignment_{k}.png"
        fig = plot_alignment(res.attention, res.src_tokens, res.tgt_tokens, path=png, title=f"{src} → {res.text}")
        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close(fig)
        report.files.append(png)
        report.examples.append(
            Example(
                output=hyps[i],
                references=[ref],
                correct=correct[i],
                text=src,
                figure=f"{out_dir.name}/{png.name}",
                group=f"test #{i}",
            )
        )


if __name__ == "__main__":
    from core.train.progress import ProgressBoard
    from tasks.demo_report import format_table

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("demo_out/translation")
    minutes = float(sys.argv[2]) if len(sys.argv) > 2 else 2.5
    print(format_table([run_demo(out, minutes, sink=ProgressBoard())]))
