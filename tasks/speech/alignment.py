"""Does the speech decoder's attention point at the right place? Scores against the word timings of the audio.

The synthesised corpus knows where each word is in its audio (eSpeak NG's word events, `tasks.speech.synth`;
the manifests' ``words``, `tasks.speech.sources.Utterance.words`). Every emitted character should attend to
the audio of the word it is part of, so:

* ``char_in_span``: the share of emitted characters whose attention peak (the encoder frame of largest weight)
  lies inside their word's span (`core.metrics.alignment.span_accuracy`), over a corpus: hits summed over
  utterances, divided by characters scored summed over utterances.
* ``off_diagonal``: the expected guided-attention penalty of the attention (`tasks.speech.guided`, band
  width 0.2 of the utterance), per output step, averaged over utterances; 0 is attention on the diagonal
  band, about 0.5 attention stuck in one place. The demo reports it in percent (``attention_off_diagonal``).

Which word a character belongs to is read from the emitted transcript: its words (runs of non-space
characters) are matched to the reference words (:func:`match_words`). When the hypothesis is the
reference, word i is word i; otherwise a word-level edit-distance (Levenshtein) alignment pairs them (a
substitution costs the words' normalised character distance, so a misspelt word pairs with the word it
misspells), and a hypothesis word aligned to a reference word (the same word or a substitution) takes that
word's span, while an inserted word is not scored. Spaces are not scored: a space lies between two words,
and the spans say nothing about where it should look.

Encoder frames and time: the encoders here shorten 10 ms feature frames 4x, so an encoder frame is 40 ms.
Two stride-2 convolutions with padding 1 centre output frame k on feature frame 4k (time 40k ms); the
pyramidal BiLSTM's concatenated pairs centre it on feature frame 4k + 1.5. A pretrained ``hf:`` encoder is
taken as 20 ms frames centred at 20k + 10 ms (wav2vec2-style conv stacks; within half a frame). A word's
span ``[start, end)`` covers the frames whose centre lies in it (at least the one nearest its middle).

Models without attention to score: ``attention="none"`` (a fixed, uniform average over the frames) and CTC
alone (``ctc_weight=1``: the attention decoder is neither trained nor run when decoding). For them
:func:`span_scores` returns ``{}``, and validation logs neither score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from core.metrics.alignment import span_accuracy
from tasks.speech.guided import diagonal_penalty
from tasks.speech.model import SpeechEncoder
from tasks.speech.network import SpeechNetwork
from tasks.speech.text import normalize_text

__all__ = [
    "SpanTally",
    "char_frame_spans",
    "encoder_frame_times",
    "has_attention_to_score",
    "match_words",
    "off_diagonal",
    "span_scores",
    "utterance_scores",
]

#: ``(word, start seconds, end seconds)``, as in `tasks.speech.sources.Utterance.words`.
WordSpan = tuple[str, float, float]
#: Band width of the off-diagonal measure (the demo's, and the guided-attention default).
OFF_DIAGONAL_SIGMA = 0.2


def has_attention_to_score(attention: str, ctc_weight: float) -> bool:
    """Whether a decoder's attention says where it listens: not ``none``, not CTC alone.

    Args:
        attention: the decoder's mechanism (``--model.attention``).
        ctc_weight: the weight of CTC (``--model.ctc_weight``; 1 is CTC alone).
    """
    return attention != "none" and ctc_weight < 1.0


def encoder_frame_times(network: SpeechNetwork) -> tuple[float, float]:
    """``(seconds per encoder frame, centre of frame 0 in seconds)`` of a network (module docstring).

    Returns:
        E.g. ``(0.04, 0.0)`` for the conv2d-subsampling encoders.
    """
    if network.reads_waveforms:
        return 0.02, 0.01
    hop = network.feature_cfg.hop_length / network.feature_cfg.sample_rate  # 10 ms
    pyramid = isinstance(network.encoder, SpeechEncoder) and network.encoder.kind == "pblstm"
    return 4 * hop, 1.5 * hop if pyramid else 0.0


def _char_distance(a: str, b: str) -> float:
    """Levenshtein distance of two words' characters over the longer length: 0 same word, 1 nothing shared."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j - 1] + (ca != cb), prev[j] + 1, cur[j - 1] + 1))
        prev = cur
    return prev[-1] / max(len(a), len(b), 1)


def match_words(hyp: Sequence[str], ref: Sequence[str]) -> list[int | None]:
    """The reference word each hypothesis word is aligned to (None: inserted), by word edit distance.

    Levenshtein alignment of the words: an insertion or a deletion costs 1, a substitution the two words'
    normalised character distance (0 for the same word, at most 1), so a misspelt word pairs with the word
    it misspells rather than with an inserted neighbour ("one too extra three" / "one two three": "too" is
    "two", "extra" inserted). The backtrace prefers the diagonal, then an insertion, then a deletion.

    Args:
        hyp: hypothesis words.
        ref: reference words.

    Returns:
        ``len(hyp)`` reference indices (increasing) or None.
    """
    if list(hyp) == list(ref):
        return list(range(len(hyp)))
    n, m = len(hyp), len(ref)
    sub = [[_char_distance(h, r) for r in ref] for h in hyp]  # (n, m)
    d = [[float(i + j) if i == 0 or j == 0 else 0.0 for j in range(m + 1)] for i in range(n + 1)]  # (n+1, m+1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i][j] = min(d[i - 1][j - 1] + sub[i - 1][j - 1], d[i - 1][j] + 1, d[i][j - 1] + 1)
    out: list[int | None] = [None] * n
    i, j = n, m
    while i > 0:
        # the same float sums as above, so a step on the best path compares equal
        if j > 0 and d[i][j] == d[i - 1][j - 1] + sub[i - 1][j - 1]:
            out[i - 1] = j - 1
            i, j = i - 1, j - 1
        elif d[i][j] == d[i - 1][j] + 1:
            i -= 1  # hypothesis word i - 1 is inserted
        else:
            j -= 1  # reference word j - 1 is missing from the hypothesis
    return out


def _frames_of(start: float, end: float, frame_s: float, centre_s: float, n_frames: int) -> tuple[int, int]:
    """Encoder frames ``[a, b)`` whose centre lies in ``[start, end)`` seconds (at least the nearest one)."""
    eps = 1e-9  # 0.12 / 0.04 is 2.9999999999999996 in floating point
    a = max(0, math.ceil((start - centre_s) / frame_s - eps))
    b = min(n_frames, math.ceil((end - centre_s) / frame_s - eps))
    if a >= b:
        k = min(max(round(((start + end) / 2 - centre_s) / frame_s), 0), n_frames - 1)
        a, b = k, k + 1
    return a, b


def char_frame_spans(
    hyp: str, words: Sequence[WordSpan], frame_s: float, centre_s: float, n_frames: int
) -> list[tuple[int, int]]:
    """Per character of `hyp`, the encoder frames ``[a, b)`` of its word, ``(0, 0)`` where it is not scored.

    Args:
        hyp: the emitted transcript (one attention row per character).
        words: reference words with their spans in seconds.
        frame_s: seconds per encoder frame.
        centre_s: centre of encoder frame 0, in seconds.
        n_frames: valid encoder frames of the utterance.

    Returns:
        ``len(hyp)`` half-open spans; empty for spaces and for characters of unmatched words.
    """
    runs: list[tuple[int, int]] = []  # (first char, end char) of each hypothesis word
    for k, c in enumerate(hyp):
        if c == " ":
            continue
        if runs and runs[-1][1] == k:
            runs[-1] = (runs[-1][0], k + 1)
        else:
            runs.append((k, k + 1))
    # The reference words as transcripts are normalised (a manifest may write "Hello,"; ours are normalised).
    matched = match_words([hyp[a:b] for a, b in runs], [normalize_text(w) for w, _, _ in words])
    spans = [(0, 0)] * len(hyp)
    for (a, b), r in zip(runs, matched):
        if r is not None and n_frames > 0:
            frames = _frames_of(words[r][1], words[r][2], frame_s, centre_s, n_frames)
            spans[a:b] = [frames] * (b - a)
    return spans


def off_diagonal(attention: Tensor, sigma: float = OFF_DIAGONAL_SIGMA) -> float:
    """Expected distance of one utterance's attention from the diagonal, per output step.

    Args:
        attention: ``(T_out, S_enc)`` weights over the valid encoder frames.
        sigma: band width, as a fraction of the utterance.

    Returns:
        The mean over output steps of ``sum_s A[l, s] W[l, s]`` (`tasks.speech.guided.diagonal_penalty`), in
        [0, 1); NaN for an empty transcript.
    """
    t, s = attention.shape
    if t == 0 or s == 0:
        return float("nan")
    w = diagonal_penalty(torch.tensor([t]), torch.tensor([s]), t, s, sigma)[0]  # (T_out, S_enc)
    return float((attention.float().cpu() * w).sum() / t)


def utterance_scores(
    hyp: str, attention: Tensor, words: Sequence[WordSpan], frame_s: float, centre_s: float
) -> tuple[int, int]:
    """``(characters whose attention peak is in their word's span, characters scored)`` of one utterance.

    Args:
        hyp: the emitted transcript.
        attention: ``(len(hyp), S_enc)`` attention of its characters over the valid encoder frames.
        words: reference words with their spans in seconds.
        frame_s: seconds per encoder frame.
        centre_s: centre of encoder frame 0, in seconds.

    Returns:
        The two counts; ``(0, 0)`` when the attention has not one row per character.
    """
    if attention.shape[0] != len(hyp) or attention.shape[1] == 0:
        return 0, 0
    spans = char_frame_spans(hyp, words, frame_s, centre_s, attention.shape[1])
    scored = sum(a < b for a, b in spans)
    if scored == 0:
        return 0, 0
    share = span_accuracy(attention.float().cpu(), spans)
    return round(share * scored), scored


@dataclass
class SpanTally:
    """Corpus counts of the scores: characters in their span, characters scored, off-diagonal sum, utterances."""

    hits: int = 0
    scored: int = 0
    off_diagonal_sum: float = 0.0
    utterances: int = 0

    def add(
        self, hyp: str, attention: Tensor | None, words: Sequence[WordSpan], frame_s: float, centre_s: float
    ) -> None:
        """Count one decoded utterance (nothing when it has no attention or no word spans)."""
        if attention is None or not words:
            return
        hits, scored = utterance_scores(hyp, attention, words, frame_s, centre_s)
        self.hits += hits
        self.scored += scored
        off = off_diagonal(attention)
        if not math.isnan(off):
            self.off_diagonal_sum += off
            self.utterances += 1

    def result(self) -> dict[str, float]:
        """``{"char_in_span", "chars_scored", "off_diagonal"}`` (shares NaN when nothing was scored)."""
        return {
            "char_in_span": self.hits / self.scored if self.scored else float("nan"),
            "chars_scored": float(self.scored),
            "off_diagonal": self.off_diagonal_sum / self.utterances if self.utterances else float("nan"),
        }

    def means(self) -> dict[str, tuple[float, float]]:
        """``{"char_in_span", "off_diagonal"}`` as ``(value, weight)`` (weights: characters scored, utterances), so
        that the weighted mean over batches and ranks is the corpus share and the mean over utterances.

        Weight 0 when nothing was scored (e.g. an untrained model's empty transcripts): the scores are still
        reported, so every rank logs them; an epoch with nothing scored at all gives NaN.
        """
        return {
            "char_in_span": (self.hits / self.scored if self.scored else 0.0, float(self.scored)),
            "off_diagonal": (
                self.off_diagonal_sum / self.utterances if self.utterances else 0.0,
                float(self.utterances),
            ),
        }


@torch.no_grad()
def span_scores(model: Any, items: Sequence[Any], beam: int = 3, batch_size: int = 16) -> dict[str, float]:
    """Where `model`'s attention looks, on held-out utterances with word spans (module docstring).

    Each utterance is decoded (`SpeechModule.decode_features` with ``with_attention=True``; batches sorted by
    length), and every character of the best hypothesis is scored against the span of the reference word it
    is matched to.

    Args:
        model: a `tasks.speech.module.SpeechModule`.
        items: `tasks.speech.sources.Utterance` records; those without ``words`` are left out.
        beam: beam width of the decoding.
        batch_size: utterances decoded together.

    Returns:
        ``{"char_in_span": share in [0, 1], "chars_scored": characters scored, "off_diagonal": mean expected
        penalty in [0, 1)}``; ``{}`` for a model without attention to score (``attention="none"``, CTC alone)
        or when no item has word spans.
    """
    from tasks.speech.audio import load_audio
    from tasks.speech.features import LogMel

    todo = [u for u in items if u.words]
    if not has_attention_to_score(model.hparams.attention, model.hparams.ctc_weight) or not todo:
        return {}
    frame_s, centre_s = encoder_frame_times(model.model)
    logmel = LogMel(model.feature_cfg)
    wavs = [load_audio(u.audio) for u in todo]
    feats = [logmel(w) for w in wavs]
    order = sorted(range(len(todo)), key=lambda i: feats[i].shape[0])
    tally = SpanTally()
    dev = model.device
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        x = [feats[i] for i in idx]
        lens = torch.tensor([f.shape[0] for f in x], device=dev)
        batch = torch.nn.utils.rnn.pad_sequence(x, batch_first=True).to(dev)  # (B, T, F)
        extra: dict[str, Tensor] = {}
        if getattr(model, "reads_waveforms", False):
            extra["wavs"] = torch.nn.utils.rnn.pad_sequence([wavs[i] for i in idx], batch_first=True).to(dev)
            extra["wav_lens"] = torch.tensor([wavs[i].numel() for i in idx], device=dev)
        hyps = model.decode_features(batch, lens, beam=beam, with_attention=True, **extra)
        for i, (best, *_) in zip(idx, hyps):
            tally.add(best.text, best.attention, todo[i].words, frame_s, centre_s)
    return tally.result()
