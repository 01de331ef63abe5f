"""What attention buys in speech: word spans from the synthesiser, the attention-in-span score, and the two models
without attention (``attention="none"`` and CTC alone).

Tests that synthesise skip when the optional eSpeak NG extra (`espeakng-loader`) is missing; the rest use tones
and random features. Models are tiny and train a few steps.
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from tasks.speech.alignment import (
    char_frame_spans,
    encoder_frame_times,
    match_words,
    off_diagonal,
    span_scores,
)
from tasks.speech.data import SpeechDataModule, make_char_tokenizer
from tasks.speech.inference import Hypothesis
from tasks.speech.sources import Utterance, read_source
from tasks.speech.synth import word_spans

try:
    import espeakng_loader  # noqa: F401

    HAVE_ESPEAK = True
except ImportError:  # optional GPL extra
    HAVE_ESPEAK = False
needs_espeak = pytest.mark.skipif(not HAVE_ESPEAK, reason="espeakng-loader (attn-suite[speech]) not installed")

TINY: dict[str, Any] = {
    "encoder_dim": 16,
    "encoder_layers": 1,
    "hidden_dim": 24,
    "embed_dim": 8,
    "attention_options": {"hidden_dim": 8, "conv_channels": 2, "kernel_size": 5},
    "beam_size": 2,
    "plot_examples": 0,
}


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def tiny_batch(texts: list[str], frames: list[int]) -> dict[str, Any]:
    """A hand-made batch of random features (the losses' inputs)."""
    tk = make_char_tokenizer()
    tokens = torch.nn.utils.rnn.pad_sequence([torch.tensor(tk.encode(t)) for t in texts], batch_first=True)
    return {
        "feats": torch.randn(len(texts), max(frames), 80),
        "feat_lens": torch.tensor(frames),
        "tokens": tokens,
        "token_lens": torch.tensor([len(t) for t in texts]),
        "texts": texts,
    }


# ---------------------------------------------------------------------------------------------
# word spans
# ---------------------------------------------------------------------------------------------
def test_word_spans_take_each_words_first_event_and_end_at_the_next_start() -> None:
    # "42" is spoken as two words (two events), "dr" got none in the second case.
    text = "say 42 now"
    spans = word_spans(text, [(0, 0), (4, 1000), (5, 1500), (7, 3000)], ends=[4000], n_samples=4410, sample_rate=1000)
    assert spans == [("say", 0.0, 1.0), ("42", 1.0, 3.0), ("now", 3.0, 4.0)]
    assert word_spans("dr smith", [(3, 500)], ends=[], n_samples=900, sample_rate=1000) is None
    # no clause end reported: the last word runs to the end of the audio
    assert word_spans("a b", [(0, 0), (2, 300)], ends=[], n_samples=900, sample_rate=1000)[-1] == ("b", 0.3, 0.9)


@needs_espeak
def test_synthesised_word_spans_are_ordered_inside_the_audio_and_start_after_the_pauses() -> None:
    from tasks.speech.synth import VoiceSpec, synthesize_with_words

    wav, sr, spans = synthesize_with_words("One. Two. Three.", VoiceSpec("en-us", "", 175))
    assert spans is not None and [w for w, _, _ in spans] == ["One.", "Two.", "Three."]
    starts, ends = [a for _, a, _ in spans], [b for _, _, b in spans]
    assert starts[0] >= 0.0 and ends[-1] <= len(wav) / sr + 1e-4
    assert all(a < b for a, b in zip(starts, ends)) and ends[:-1] == starts[1:]
    for _, a, b in spans:  # every word is spoken in its span
        assert rms(wav[int(a * sr) : int(b * sr)]) > 0.02
    # A sentence break is a pause: the next word starts where it ends, so its first 150 ms are speech
    # and the 150 ms before it silence. Starts off by 100 ms either way would fail this.
    n = int(0.15 * sr)
    for a in starts[1:]:
        k = int(a * sr)
        assert rms(wav[k : k + n]) > 5 * rms(wav[k - n : k]), a


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthesised corpus (its manifests carry word spans)."""
    if not HAVE_ESPEAK:
        pytest.skip("espeakng-loader not installed")
    from tasks.speech.synth import generate_corpus

    return generate_corpus(tmp_path_factory.mktemp("synth"), num_train=16, num_val=4, num_test=4, progress=False)


def test_corpus_rows_have_spans_of_the_16k_audio_and_old_caches_get_them(corpus: Path, tmp_path: Path) -> None:
    from tasks.speech.synth import generate_corpus

    rows = [json.loads(line) for line in (corpus / "val.jsonl").read_text().splitlines()]
    for row in rows:
        words = row["words"]
        assert [w for w, _, _ in words] == row["text"].split()
        dur = sf.info(str(corpus / row["path"])).duration  # the 16 kHz FLAC
        assert words[0][1] >= 0.0 and all(a < b for _, a, b in words) and words[-1][2] <= dur
        assert words[-1][2] > dur - 0.1  # speech runs to the end of the synthesised audio
    utts = read_source(corpus / "val.jsonl")
    assert [list(map(list, u.words or [])) for u in utts] == [r["words"] for r in rows]

    # A corpus cached before word spans: same directory, audio and texts; spans added in place.
    old_root = tmp_path / "old"
    old = old_root / corpus.name
    shutil.copytree(corpus, old)
    for split in ("train", "val", "test"):
        stripped = [{k: v for k, v in json.loads(x).items() if k != "words"} for x in (old / f"{split}.jsonl").open()]
        (old / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in stripped))
    meta = json.loads((old / "meta.json").read_text())
    del meta["word_spans"]
    (old / "meta.json").write_text(json.dumps(meta))
    again = generate_corpus(old_root, num_train=16, num_val=4, num_test=4, progress=False)
    assert again == old
    for split in ("train", "val", "test"):
        assert (old / f"{split}.jsonl").read_text() == (corpus / f"{split}.jsonl").read_text()


def test_manifest_words_field_is_kept_only_when_well_formed(tmp_path: Path) -> None:
    sf.write(tmp_path / "a.wav", np.zeros(1600, dtype=np.float32), 16000)
    rows = [
        {"path": "a.wav", "text": "hi there", "words": [["hi", 0.0, 0.04], ["there", 0.04, 0.1]]},
        {"path": "a.wav", "text": "hi there", "words": 2},  # another tool's field of that name
        {"path": "a.wav", "text": "hi there", "words": [["hi", 0.05, 0.04]]},  # end before start
    ]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    utts = read_source(tmp_path / "m.jsonl")
    assert [u.words for u in utts] == [[("hi", 0.0, 0.04), ("there", 0.04, 0.1)], None, None]


# ---------------------------------------------------------------------------------------------
# the score
# ---------------------------------------------------------------------------------------------
def test_match_words_pairs_substitutions_and_leaves_insertions_out() -> None:
    assert match_words(["a", "b", "c"], ["a", "b", "c"]) == [0, 1, 2]
    assert match_words(["one", "too", "extra", "three"], ["one", "two", "three"]) == [0, 1, None, 2]
    assert match_words(["one", "three"], ["one", "two", "three"]) == [0, 2]
    assert match_words([], ["a"]) == [] and match_words(["a"], []) == [None]


def test_char_frame_spans_use_40_ms_frames_and_skip_spaces() -> None:
    words = [("one", 0.0, 0.4), ("two", 0.4, 0.81)]
    spans = char_frame_spans("one two", words, 0.04, 0.0, n_frames=30)
    assert spans == [(0, 10)] * 3 + [(0, 0)] + [(10, 21)] * 3
    assert char_frame_spans("one two", words, 0.04, 0.0, n_frames=15)[-1] == (10, 15)  # clipped to the frames


WORDS = [("one", 0.0, 0.4), ("two", 0.4, 0.8), ("three", 0.8, 1.2)]  # 10 encoder frames of 40 ms each
CENTRES = {"one": 5, "two": 15, "three": 25}


def forced_attention(hyp: str, n_frames: int, inside: bool) -> torch.Tensor:
    """`(len(hyp), S)` attention peaked at the middle of each character's word (or of the next word)."""
    order = ["one", "two", "three"]
    rows = []
    for word in hyp.split(" "):
        ref = {"too": "two", "extra": "two"}.get(word, word)
        target = ref if inside else order[(order.index(ref) + 1) % 3]
        for _ in word:
            rows.append(
                torch.nn.functional.one_hot(torch.tensor(CENTRES[target]), n_frames).float() * 0.9 + 0.1 / n_frames
            )
        rows.append(torch.full((n_frames,), 1.0 / n_frames))  # the space
    return torch.stack(rows[:-1])


@pytest.mark.parametrize(
    ("hyp", "inside", "share", "chars"),
    [
        ("one two three", True, 1.0, 11),
        ("one two three", False, 0.0, 11),
        ("one too extra three", True, 1.0, 11),  # "too" scored on "two"; the inserted "extra" is not scored
    ],
)
def test_span_scores_of_forced_attention(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hyp: str, inside: bool, share: float, chars: int
) -> None:
    from tasks.speech.module import SpeechModule

    model = SpeechModule(**TINY)
    assert encoder_frame_times(model.model) == (0.04, 0.0)
    sf.write(tmp_path / "u.wav", np.zeros(int(1.2 * 16000), dtype=np.float32), 16000)  # 121 frames -> 31
    items = [Utterance(str(tmp_path / "u.wav"), "one two three", 1.2, words=WORDS)] * 2

    def decode(feats: torch.Tensor, lens: torch.Tensor, beam: int = 5, with_attention: bool = False, **_: Any):
        assert with_attention and feats.shape[1] == 121
        return [[Hypothesis(hyp, 0.0, forced_attention(hyp, 31, inside))] for _ in range(feats.shape[0])]

    monkeypatch.setattr(model, "decode_features", decode)
    scores = span_scores(model, items, beam=3)
    assert scores["char_in_span"] == share and scores["chars_scored"] == 2 * chars
    assert 0.0 <= scores["off_diagonal"] < 1.0


def test_off_diagonal_is_low_on_the_diagonal_and_high_when_stuck() -> None:
    diag = torch.eye(20)
    stuck = torch.zeros(20, 20)
    stuck[:, 0] = 1.0
    assert off_diagonal(diag) < 0.05 < 0.3 < off_diagonal(stuck)
    assert math.isnan(off_diagonal(torch.zeros(0, 5)))


def test_models_without_attention_have_no_span_score(tmp_path: Path) -> None:
    from tasks.speech.module import SpeechModule

    items = [Utterance(str(tmp_path / "never-read.wav"), "one two three", 1.2, words=WORDS)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        none = SpeechModule(**{**TINY, "attention": "none"})
    assert span_scores(none, items) == {}  # uniform weights: nothing to score
    assert span_scores(SpeechModule(**{**TINY, "ctc_weight": 1.0}), items) == {}  # no decoder at decoding


# ---------------------------------------------------------------------------------------------
# the two models without attention
# ---------------------------------------------------------------------------------------------
def test_none_attention_drops_location_options_and_guidance() -> None:
    from tasks.speech.module import SpeechModule

    with pytest.warns(UserWarning) as caught:
        m = SpeechModule(**TINY, attention="none", guided_attention_weight=2.0)
    said = " ".join(str(w.message) for w in caught)
    assert "attention 'none' takes no options: {'hidden_dim': 8, 'conv_channels': 2, 'kernel_size': 5} ignored" in said
    assert "guided_attention_weight is ignored with attention=none" in said
    assert m.hparams.attention_options is None  # what was built, also in the checkpoint
    m.train()
    losses = m.task.losses(m.model, tiny_batch(["a cat", "dogs run"], [120, 90]))
    assert "guided" not in losses and torch.isfinite(losses["loss"])


def test_ctc_alone_loss_is_ctc_and_the_decoder_is_frozen() -> None:
    from tasks.speech.module import SpeechModule

    torch.manual_seed(0)
    m = SpeechModule(**TINY, ctc_weight=1.0, spec_augment=False)
    m.train()
    losses = m.task.losses(m.model, tiny_batch(["a cat", "dogs run"], [120, 90]))
    assert "ce" not in losses and torch.equal(losses["loss"], losses["ctc"])
    losses["loss"].backward()
    dec = {id(p) for p in m.model.decoder.parameters()}
    assert all(p.grad is None and not p.requires_grad for p in m.model.decoder.parameters())
    assert all(p.grad is not None for p in m.parameters() if id(p) not in dec)


def test_ctc_alone_decoding_is_the_ctc_prefix_search_and_ignores_the_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.nn.functional as F

    from core.decoding.beam import beam_search
    from tasks.speech.ctc_prefix import CTCPrefixScorer, joint_search_inputs
    from tasks.speech.module import SpeechModule

    torch.manual_seed(0)
    m = SpeechModule(**TINY, ctc_weight=1.0).eval()
    tk = m.tokenizer
    feats, lens = torch.randn(2, 160, 80), torch.tensor([160, 100])
    hyps = m.decode_features(feats, lens, beam=3, nbest=2, with_attention=True)
    assert all(h.attention is None for hs in hyps for h in hs) and [len(h) for h in hyps] == [2, 2]

    # The joint search at w = 1 with the (untrained) decoder gives the same hypotheses and scores.
    with torch.no_grad():
        enc, mask, ctc_lp = m.model.encode(m.stats(feats), lens)
    dec = m.model.decoder
    scorer = CTCPrefixScorer(ctc_lp, mask.sum(-1), blank=tk.pad_id, eos=tk.eos_id, never=(tk.bos_id,))
    step, state = joint_search_inputs(dec.step, dec.init_state(enc, mask), scorer, 1.0)
    res = beam_search(
        step, state, batch_size=2, bos_id=tk.bos_id, eos_id=tk.eos_id, max_len=enc.shape[1] + 5, beam_size=3,
        nbest=2, length_penalty=m.hparams.length_penalty, pad_id=tk.pad_id, suppress=(tk.pad_id, tk.bos_id),
    )  # fmt: skip
    for b in range(2):
        assert [h.text for h in hyps[b]] == [tk.decode(t) for t in res.tokens[b]]
        assert [h.score for h in hyps[b]] == [float(s) for s in res.scores[b]]
        # and a score is the hypothesis' CTC log-probability, length-normalised
        ids = tk.encode(hyps[b][0].text)
        n = int(mask[b].sum())
        ctc = -F.ctc_loss(ctc_lp[b, :n, None], torch.tensor([ids]), [n], [len(ids)], blank=tk.pad_id, reduction="sum")
        assert hyps[b][0].score == pytest.approx(float(ctc) / (len(ids) + 1) ** m.hparams.length_penalty, abs=1e-4)

    # The decoder is not run at all (so its untrained, even NaN, log-probabilities cannot matter).
    def broken(tokens: torch.Tensor, st: Any) -> Any:
        raise AssertionError("the decoder must not run")

    monkeypatch.setattr(dec, "step", broken)
    again = m.decode_features(feats, lens, beam=3, nbest=2)
    assert [[h.text for h in hs] for hs in again] == [[h.text for h in hs] for hs in hyps]


# ---------------------------------------------------------------------------------------------
# training: the scores land in callback_metrics
# ---------------------------------------------------------------------------------------------
def fit_tiny(corpus: Path, **model: Any) -> tuple[Any, Any, Any]:
    import lightning as L

    from tasks.speech.module import SpeechModule

    torch.manual_seed(0)
    dm = SpeechDataModule(
        cache_dir=str(corpus.parent), synth_train=16, synth_val=4, synth_test=4, num_workers=0, max_frames=6000
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = SpeechModule(**{**TINY, **model})
    trainer = L.Trainer(
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(m, dm)
    return trainer, m, dm


def test_validation_and_test_log_attention_in_span(corpus: Path) -> None:
    trainer, m, dm = fit_tiny(corpus)
    metrics = trainer.callback_metrics
    for key in ("val/char_in_span", "val/off_diagonal"):
        assert key in metrics and 0.0 <= float(metrics[key]) <= 1.0, (key, metrics.get(key))
    trainer.test(m, dm, verbose=False)
    assert 0.0 <= float(trainer.callback_metrics["test/char_in_span"]) <= 1.0


@pytest.mark.parametrize("model", [{"attention": "none", "guided_attention_weight": 1.0}, {"ctc_weight": 1.0}])
def test_models_without_attention_fit_and_decode(corpus: Path, model: dict[str, Any]) -> None:
    from tasks.speech.module import SpeechModule

    torch.manual_seed(0)  # as fit_tiny: the same initial weights
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        before = SpeechModule(**{**TINY, **model}).model.decoder.state_dict()
    trainer, m, dm = fit_tiny(corpus, **model)
    metrics = trainer.callback_metrics
    assert "val/cer" in metrics and math.isfinite(float(metrics["train/loss"]))
    assert "val/char_in_span" not in metrics and "train/guided" not in metrics  # no attention to score or guide
    moved = any(not torch.equal(v, m.model.decoder.state_dict()[k]) for k, v in before.items())
    assert moved == ("ctc_weight" not in model)  # CTC alone: the frozen decoder did not move
    texts = m.transcribe([u.audio for u in dm.splits["val"][:2]], beam=2)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_figures_draw_the_first_validation_utterances(corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After each validation: spectrogram and attention of the first ``plot_examples`` utterances of the first
    validation batch, decoded with their attention."""
    from tasks.speech import task as speech_task
    from tasks.speech.module import SpeechModule

    dm = SpeechDataModule(
        cache_dir=str(corpus.parent), synth_train=16, synth_val=4, synth_test=4, num_workers=0, max_frames=6000
    )
    dm.setup("fit")
    first = next(iter(dm.val_dataloader()))
    seen: list[list[int]] = []

    def decode(network: Any, tokenizer: Any, search: Any, feats: torch.Tensor, lens: torch.Tensor, **kw: Any) -> Any:
        assert kw["with_attention"] and feats.shape[0] == len(lens)
        seen.append(lens.tolist())
        return [[Hypothesis("ab", 0.0, torch.full((2, 5), 0.2))] for _ in range(feats.shape[0])]

    monkeypatch.setattr(speech_task, "decode_features", decode)
    m = SpeechModule(**{**TINY, "plot_examples": 2})
    figures = m.task.figures(m.model, dm)
    assert [tag for tag, _ in figures] == ["val/alignment_0", "val/alignment_1"]
    assert seen == [first["feat_lens"][:2].tolist()]  # the first batch's first two utterances
    assert SpeechModule(**{**TINY, "plot_examples": 2, "ctc_weight": 1.0}).task.figures(m.model, dm) == []
