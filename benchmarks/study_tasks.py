"""What `attention_study.py` needs from each task: its data, its gold alignment score, one figure.

Each adapter reuses the task's demo recipe (`tasks.<task>.demo`, through `time_to_quality.SETUPS`) and the
task's own alignment score (`tasks.<task>.alignment`); nothing here trains or decides a number by itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Held-out sizes in ``--quick`` mode (the real study uses time_to_quality.HELD_OUT: 200 / 100 / 100).
QUICK_HELD_OUT = {"translation": 12, "captioning": 6, "speech": 6}
#: Held-out examples scored for the alignment (teacher-forced for translation, decoded for the others).
ALIGN_N = {"translation": 200, "captioning": 100, "speech": 50}
QUICK_ALIGN_N = {"translation": 8, "captioning": 4, "speech": 4}
#: Long held-out sentences per length bucket (Bahdanau's figure).
LENGTH_N, QUICK_LENGTH_N = 40, 3
#: The example whose attention every mechanism draws.
TRANSLATION_EXAMPLE = "we didn't see the old dogs yesterday"


def _close(fig: Any) -> None:
    import sys

    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close(fig)


class Translation:
    """The demo's RNN translation recipe on the grammar corpus, with long coordinated sentences in training."""

    @staticmethod
    def data(quick: bool) -> dict[str, Any]:
        from tasks.translation import demo

        base = dict(demo.QUICK_DATA) if quick else {}
        # sentences of 1-6 coordinated clauses (up to ~60 words) in training, as Bahdanau et al. trained on up to 50
        return {**base, "max_clauses": 6, "max_words": 80, "max_tokens_per_sentence": 160}

    @staticmethod
    def n_decoded(quick: bool) -> int:
        import time_to_quality as ttq

        return ttq.HELD_OUT["translation"]

    @staticmethod
    def alignment(module: Any, dm: Any, quick: bool) -> dict[str, float]:
        from tasks.translation.alignment import alignment_scores

        n = (QUICK_ALIGN_N if quick else ALIGN_N)["translation"]
        return alignment_scores(module.translator, dm.gold_alignments("test", n) or [])

    @staticmethod
    def by_length(module: Any, dm: Any, quick: bool) -> list[dict[str, Any]]:
        from core.metrics.text import corpus_bleu
        from tasks.translation.demo import DEMO_BEAM

        out = []
        for bucket, gold in dm.long_sentence_set(n_per_bucket=QUICK_LENGTH_N if quick else LENGTH_N).items():
            pairs = [(g[0], g[1]) for g in gold]
            hyps = module.translate([s for s, _ in pairs], beam=DEMO_BEAM)
            words = sum(len(s.split()) for s, _ in pairs) / max(len(pairs), 1)
            out.append(
                {
                    "bucket": bucket,
                    "n": len(pairs),
                    "mean_words": round(words, 1),
                    "bleu": round(corpus_bleu(hyps, [r for _, r in pairs]), 2),
                }
            )
        return out

    @staticmethod
    def figure(module: Any, dm: Any, path: Path) -> bool:
        from core.viz import plot_alignment

        res = module.translate(TRANSLATION_EXAMPLE, beam=5, return_attention=True)
        if res.attention is None:
            return False
        fig = plot_alignment(
            res.attention, res.src_tokens, res.tgt_tokens, path=path, title=f"{module.hparams.attention}: {res.text}"
        )
        _close(fig)
        return True


class Captioning:
    """The demo's captioning recipe on generated scenes (3x3 grid, one cell per scene cell)."""

    @staticmethod
    def data(quick: bool) -> dict[str, Any]:
        from tasks.captioning import demo

        return dict(demo.QUICK_DATA) if quick else {}

    @staticmethod
    def n_decoded(quick: bool) -> int:
        import time_to_quality as ttq

        return 2 * ttq.HELD_OUT["captioning"]  # test and unseen-pair scenes

    @staticmethod
    def alignment(module: Any, dm: Any, quick: bool) -> dict[str, float]:
        from tasks.captioning import demo
        from tasks.captioning.alignment import pointing_scores

        n = (QUICK_ALIGN_N if quick else ALIGN_N)["captioning"]
        return pointing_scores(module, demo.held_out(n, "test", dm.image_size), beam=demo.DEMO_BEAM)

    @staticmethod
    def figure(module: Any, dm: Any, path: Path) -> bool:
        from tasks.captioning import demo
        from tasks.captioning.inference import save_attention_figure

        scene = demo.held_out(1, "test", dm.image_size)[0]
        text, weights = module.caption(scene.image, beam=demo.DEMO_BEAM, return_attention=True)
        if not text:
            return False
        save_attention_figure(scene.image, text, weights, path, dm.image_size)
        return True


class Speech:
    """The demo's speech recipe on synthesised sentences (voices unseen in training for the held-out set)."""

    @staticmethod
    def data(quick: bool) -> dict[str, Any]:
        from tasks.speech import demo

        return {**demo.QUICK_DATA, "synth_test": 8} if quick else {}

    @staticmethod
    def n_decoded(quick: bool) -> int:
        import time_to_quality as ttq

        return ttq.HELD_OUT["speech"]

    @staticmethod
    def by_length(module: Any, dm: Any, quick: bool) -> list[dict[str, Any]]:
        return speech_by_length(module, dm, quick)

    @staticmethod
    def alignment(module: Any, dm: Any, quick: bool) -> dict[str, float]:
        from tasks.speech import demo
        from tasks.speech.alignment import span_scores

        n = (QUICK_ALIGN_N if quick else ALIGN_N)["speech"]
        return span_scores(module, demo.held_out(dm, n), beam=demo.DEMO_BEAM)

    @staticmethod
    def figure(module: Any, dm: Any, path: Path) -> bool:
        import torch

        from core.viz import plot_spectrogram_alignment
        from tasks.speech import demo

        spec, ref = demo.load_features(demo.held_out(dm, 1))[0]
        best = module.decode_features(
            spec[None], torch.tensor([spec.shape[0]]), beam=demo.DEMO_BEAM, with_attention=True
        )[0][0]
        if best.attention is None or best.attention.shape[0] == 0:
            return False
        fig = plot_spectrogram_alignment(spec.T, best.attention, list(best.text), path=path, title=f"ref: {ref}")
        _close(fig)
        return True


def _attention_only(module: Any) -> Any:
    """A context manager: decode with the attention decoder alone (CTC weight 0 in the search), restored after."""
    from contextlib import contextmanager

    @contextmanager
    def swap() -> Any:
        hp = module.hparams
        saved = (hp.ctc_weight, hp.joint_ctc_decoding)
        hp.ctc_weight, hp.joint_ctc_decoding = 0.0, False
        try:
            yield
        finally:
            hp.ctc_weight, hp.joint_ctc_decoding = saved

    return swap()


def speech_by_length(module: Any, dm: Any, quick: bool) -> list[dict[str, Any]]:
    """CER on inputs longer than any training utterance: k held-out utterances joined end to end (k = 1, 3, 6),
    decoded whole (no chunking), with the recipe's joint CTC/attention search and with the attention decoder
    alone (where a model has one): Chorowski et al.'s point that content-only attention loses its place."""
    import torch

    from core.metrics.text import char_error_rate
    from tasks.speech import demo
    from tasks.speech.audio import SAMPLE_RATE, load_audio
    from tasks.speech.features import LogMel
    from tasks.speech.text import normalize_text

    n_items = 3 if quick else 16
    utts = demo.held_out(dm, None)
    logmel = LogMel()
    out = []
    for k in (1, 3, 6):
        items = []
        for i in range(n_items):
            group = [utts[(i * k + j) % len(utts)] for j in range(k)]
            wav = torch.cat([load_audio(u.audio) for u in group])
            items.append((logmel(wav), normalize_text(" ".join(u.text for u in group)), wav.numel() / SAMPLE_RATE))
        feats = [(f, r) for f, r, _ in items]
        row: dict[str, Any] = {
            "bucket": f"{k} utt.",
            "n": n_items,
            "mean_s": round(sum(d for *_, d in items) / n_items, 1),
            "cer": round(demo.evaluate(module, feats, batch_size=4)[0]["cer"], 2),
        }
        if module.hparams.ctc_weight < 1.0:
            with _attention_only(module):
                hyps = demo.evaluate(module, feats, batch_size=4)[1]
            row["cer_attention_only"] = round(100 * char_error_rate(hyps, [r for _, r in feats]), 2)
        out.append(row)
    return out


ADAPTERS: dict[str, Any] = {"translation": Translation, "captioning": Captioning, "speech": Speech}
