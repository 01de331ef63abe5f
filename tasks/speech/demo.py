"""Speech demo (~3.5 min on 2 CPU cores): synthesise, train briefly, reload, transcribe, plot alignments.

Used by `make demo` / `attn-demo`. Everything runs offline; the small synthesised corpus is cached,
so later runs skip synthesis and get more training time. `build` and `evaluate` are the recipe and the
held-out scoring that `benchmarks/time_to_quality.py` measures.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch

from core.cli.output import write_text_atomic
from core.train.progress import Sink, StageProgress, null_sink
from tasks.demo_common import DemoRecipe, run_task_demo, shown_indices
from tasks.demo_report import Example, TaskReport

__all__ = ["build", "evaluate", "held_out", "load_features", "run_demo"]

TASK = "speech"

#: Data settings of the demo (the corpus is cached under a key of these sizes).
DEMO_DATA: dict[str, Any] = {
    "synth_train": 1200,
    "synth_val": 24,
    "synth_test": 100,
    "max_frames": 4000,
    "max_batch": 24,
    # Features computed once and kept (1,200 utterances, ~80 MB), in-process: after the first epoch a batch
    # costs nothing to load, and no loader process competes with the other task training on the other core.
    "num_workers": 0,
    "cache_features": True,
}
#: Model settings of the demo.
DEMO_MODEL: dict[str, Any] = {
    "encoder_dim": 128,
    "encoder_layers": 2,
    "hidden_dim": 160,
    "embed_dim": 32,
    "lr": 3e-3,
    "warmup_steps": 100,
    "beam_size": 3,
    "plot_examples": 0,
    "ctc_weight": 0.5,
    # What benchmarks/time_to_quality.py measured (RESULTS.md, "Time to quality"): joint CTC/attention
    # beam search reaches CER 10 % in ~2/3 of the steps of n-best rescoring; a guided-attention prior,
    # faded out over the first 300 steps, makes the attention find the monotonic alignment in ~150 steps
    # (without it, it sits on word boundaries); 16 subsampling channels and the plain (not recomputed)
    # attention energies make a step ~30 % cheaper on one CPU thread.
    "joint_ctc_decoding": True,
    "guided_attention_weight": 1.0,
    "guided_attention_steps": 300,
    "encoder_conv_channels": 16,
    "attention_options": {"hidden_dim": 96, "conv_channels": 8, "kernel_size": 15, "memory_efficient": False},
}
#: Trainer settings of the demo (besides the budget).
DEMO_TRAINER: dict[str, Any] = {"gradient_clip_val": 5.0}
#: Beam width of the demo's transcriptions (and of the held-out score).
DEMO_BEAM = 3
#: Held-out utterances the demo scores (the whole test split: voices unseen in training).
HELD_OUT = 100
#: Seconds of the budget kept for saving, reloading, scoring and figures.
RESERVE_S = 35.0
#: Data settings of `attn-demo --quick` (a pipeline check: tiny corpus, meaningless scores).
QUICK_DATA: dict[str, Any] = {"synth_train": 32, "synth_val": 4, "synth_test": 8, "num_workers": 0}


def build(
    seed: int = 0, data: dict[str, Any] | None = None, model: dict[str, Any] | None = None, sink: Sink = null_sink
) -> tuple[Any, Any]:
    """The demo's data module and model (seeded; corpus prepared and set up).

    Args:
        seed: seed of the model initialisation and batch order (the corpus is fixed).
        data: `SpeechDataModule` arguments replacing the demo's.
        model: `SpeechModule` arguments replacing the demo's.
        sink: progress of the corpus synthesis (first run only).

    Returns:
        `(datamodule, module)`.
    """
    from tasks.speech.data import SpeechDataModule
    from tasks.speech.module import SpeechModule

    L.seed_everything(seed, verbose=False)
    dm = SpeechDataModule(**{**DEMO_DATA, **(data or {})})
    if sink is not null_sink and dm.hparams["train"] is None:
        from tasks.speech.synth import generate_corpus

        # Synthesis (first run only; cached): report to the demo's display instead of a bar of its own.
        prog = StageProgress(
            sink,
            TASK,
            "synthesising the corpus",
            sum(dm._synth_kwargs()[k] for k in ("num_train", "num_val", "num_test")),
            "utterances",
        )
        generate_corpus(**dm._synth_kwargs(), progress=lambda done, total: prog.update(done - prog.n))
        if prog.n:
            prog.close()
    dm.prepare_data()  # synthesis (cached)
    dm.setup("fit")
    return dm, SpeechModule(**{**DEMO_MODEL, **(model or {})})


def held_out(dm: Any, n: int | None = None) -> list[Any]:
    """The first `n` utterances of the test split: voices never heard in training or validation."""
    dm.setup("test")
    utts = dm.splits["test"]
    return list(utts if n is None else utts[:n])


def load_features(utts: Sequence[Any]) -> list[tuple[torch.Tensor, str]]:
    """Log-mel features `(T, n_mels)` and normalised reference of each utterance (computed once)."""
    from tasks.speech.audio import load_audio
    from tasks.speech.features import LogMel
    from tasks.speech.text import normalize_text

    logmel = LogMel()
    return [(logmel(load_audio(u.audio)), normalize_text(u.text)) for u in utts]


@torch.no_grad()
def evaluate(
    model: Any,
    feats: Sequence[tuple[torch.Tensor, str]],
    beam: int = DEMO_BEAM,
    batch_size: int = 16,
    progress: StageProgress | None = None,
) -> tuple[dict[str, float], list[str]]:
    """CER/WER (percent) of `model` on pre-computed held-out features.

    Args:
        model: a `SpeechModule`.
        feats: `(features (T, F), reference)` pairs from `load_features`.
        beam: beam width (CTC-rescored n-best when the model has a CTC head).
        batch_size: utterances decoded together (sorted by length).
        progress: advanced by the utterances decoded.

    Returns:
        `({"cer": ..., "wer": ...}, hypotheses in input order)`.
    """
    from core.metrics.text import char_error_rate, word_error_rate
    from tasks.speech.alignment import off_diagonal

    order = sorted(range(len(feats)), key=lambda i: feats[i][0].shape[0])
    hyps, greedy_ctc = [""] * len(feats), [""] * len(feats)
    distances: list[float] = []
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        x = [feats[i][0] for i in idx]
        lens = torch.tensor([f.shape[0] for f in x], device=model.device)
        batch = torch.nn.utils.rnn.pad_sequence(x, batch_first=True).to(model.device)  # (B, T, F)
        for i, (best, *_) in zip(idx, model.decode_features(batch, lens, beam=beam, with_attention=True)):
            hyps[i], att = best.text, best.attention
            if att is not None and att.shape[0] > 0:  # (L, S): how far the attention is from the diagonal
                distances.append(off_diagonal(att))
        if model.hparams.ctc_weight > 0:  # a diagnostic: how far the encoder alone (CTC head) has got
            for i, text in zip(idx, _ctc_greedy(model, batch, lens)):
                greedy_ctc[i] = text
        if progress is not None:
            progress.update(len(idx))
    refs = [r for _, r in feats]
    scores = {"cer": 100.0 * char_error_rate(hyps, refs), "wer": 100.0 * word_error_rate(hyps, refs)}
    if model.hparams.ctc_weight > 0:
        scores["cer_ctc_greedy"] = 100.0 * char_error_rate(greedy_ctc, refs)
    if distances:  # a diagnostic of the alignment the figures show (0 = on the diagonal, ~0.5 = stuck)
        scores["attention_off_diagonal"] = 100.0 * sum(distances) / len(distances)
    return scores, hyps


def _ctc_greedy(model: Any, feats: torch.Tensor, lens: torch.Tensor) -> list[str]:
    """Best-path CTC transcripts: argmax per encoder frame, repeats merged, blanks dropped."""
    model.eval()
    _, mask, lp = model.model.encode(model.stats(feats), lens)  # (B, S), (B, S, V)
    best = lp.argmax(-1)  # (B, S)
    blank = model.tokenizer.pad_id
    out = []
    for b in range(best.shape[0]):
        seq = best[b, : int(mask[b].sum())].tolist()
        ids = [t for k, t in enumerate(seq) if t != blank and (k == 0 or t != seq[k - 1])]
        out.append(model.tokenizer.decode(ids))
    return out


def run_demo(
    out_dir: Path,
    max_minutes: float = 3.5,
    seed: int = 0,
    sink: Sink = null_sink,
    n_held_out: int = HELD_OUT,
    data: dict[str, Any] | None = None,
) -> TaskReport:
    """Train a small joint CTC/attention model on synthesised speech, reload it, score and show it.

    Writes into `out_dir`: `speech.ckpt` (reloaded through the safe loader before use), for the shown
    examples `speech_<i>.wav` (the input) and `speech_alignment_<i>.png` (spectrogram with the
    attention of each output character underneath), and `speech_transcripts.txt` (every held-out
    hypothesis and reference, voices unseen in training).

    Args:
        out_dir: output folder (created).
        max_minutes: wall-clock budget of the whole task, corpus synthesis included (cached after the
            first run, which then trains longer).
        seed: training seed (initialisation and batch order).
        sink: progress sink (`core.train.progress`).
        n_held_out: held-out utterances to score (at most the corpus' test split).
        data: `SpeechDataModule` arguments replacing the demo's (e.g. `QUICK_DATA`).

    Returns:
        The task's report.
    """
    out_dir = Path(out_dir)

    def build_demo(out: Path) -> tuple[Any, Any]:
        return build(seed, data, sink=sink)  # synthesises the corpus on the first run (cached), within the budget

    def score(reloaded: Any, dm: Any, report: TaskReport, sink: Sink) -> None:
        _score(reloaded, held_out(dm, n_held_out), out_dir, report, sink)  # voices never heard in training

    recipe = DemoRecipe(
        TASK,
        build_demo,
        score,
        "demo: sentences synthesised with eSpeak NG in several voices (tasks/speech/synth.py)",
        RESERVE_S,
        DEMO_TRAINER,
    )
    return run_task_demo(recipe, out_dir, max_minutes, seed, sink)


def _score(reloaded: Any, utts: Sequence[Any], out_dir: Path, report: TaskReport, sink: Sink) -> None:
    """Held-out CER/WER, the shown utterances (audio, spectrogram under the attention), ``speech_transcripts.txt``."""
    import soundfile as sf

    from core.viz import plot_spectrogram_alignment
    from tasks.speech.audio import SAMPLE_RATE, load_audio

    feats = load_features(utts)
    with StageProgress(sink, TASK, f"scoring {len(feats)} held-out utterances", len(feats), "utterances") as prog:
        report.metrics, hyps = evaluate(reloaded, feats, progress=prog)
    report.n_examples = {"test": len(feats)}
    refs = [r for _, r in feats]
    correct = [h == r for h, r in zip(hyps, refs)]
    for k, i in enumerate(shown_indices(correct)):
        spec, ref = feats[i]
        best = reloaded.decode_features(spec[None], torch.tensor([spec.shape[0]]), beam=DEMO_BEAM, with_attention=True)[
            0
        ][0]
        text, att = best.text, best.attention
        wav = out_dir / f"speech_{k}.wav"
        sf.write(wav, load_audio(utts[i].audio).numpy(), SAMPLE_RATE)
        report.files.append(wav)
        png = None
        if att is not None and att.shape[0] > 0:
            png = out_dir / f"speech_alignment_{k}.png"
            plot_spectrogram_alignment(spec.T, att, list(text), path=png, title=f"ref: {ref}")
            report.files.append(png)
        report.examples.append(
            Example(
                output=hyps[i],
                references=[ref],
                correct=correct[i],
                audio=f"{out_dir.name}/{wav.name}",
                figure=f"{out_dir.name}/{png.name}" if png else None,
                group=f"test #{i}",
            )
        )
    txt = out_dir / "speech_transcripts.txt"
    write_text_atomic(
        txt, "".join(f"ref: {r}\nhyp: {h}\n{'ok' if c else 'WRONG'}\n\n" for r, h, c in zip(refs, hyps, correct))
    )
    report.files.append(txt)


if __name__ == "__main__":  # pragma: no cover - manual use
    import sys

    from core.train.progress import ProgressBoard
    from tasks.demo_report import format_table

    print(format_table([run_demo(Path(sys.argv[1] if len(sys.argv) > 1 else "demo_out"), sink=ProgressBoard())]))
