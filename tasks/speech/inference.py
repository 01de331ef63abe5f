"""Speech recognition with a trained network: beam search with CTC rescoring or joint CTC prefix scores, chunked
transcription of audio files and waveforms, and their result types (``SpeechModule.transcribe`` and
``SpeechModule.decode_features`` call these functions with the module's network and options)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from core.decoding.beam import DecoderState, StepDecoder, StepFn, beam_search
from core.decoding.fast_paths import eval_mode
from core.text.tokenizers import BaseTokenizer
from tasks.speech.audio import SAMPLE_RATE, AudioInput, is_silent, load_audio, split_on_silence
from tasks.speech.ctc_prefix import CTCPrefixScorer, joint_search_inputs
from tasks.speech.network import SpeechNetwork

__all__ = [
    "ChunkAlignment",
    "Hypothesis",
    "SearchOptions",
    "Transcription",
    "as_inputs",
    "ctc_alone_search_inputs",
    "decode_features",
    "transcribe",
]


@dataclass(frozen=True)
class SearchOptions:
    """How the beam is scored (``SpeechModule``'s options of the same names).

    Attributes:
        ctc_weight: weight ``w`` of CTC in the joint score ``(1 - w) * attention + w * CTC`` (1: CTC alone).
        joint_ctc_decoding: CTC prefix scores in every step of the search instead of rescoring its n-best.
        length_penalty: exponent of the beam's length normalisation.
    """

    ctc_weight: float = 0.3
    joint_ctc_decoding: bool = False
    length_penalty: float = 1.0

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any]) -> SearchOptions:
        """The options among a module's hyper-parameters, read when it decodes (a caller may switch them)."""
        return cls(
            ctc_weight=float(hparams["ctc_weight"]),
            joint_ctc_decoding=bool(hparams["joint_ctc_decoding"]),
            length_penalty=float(hparams["length_penalty"]),
        )


@dataclass
class Hypothesis:
    """One decoded transcript of an utterance.

    Attributes:
        text: normalised transcript.
        score: ``(1 - w) * attention + w * CTC`` log-probability (length-normalised; ``w = ctc_weight``).
        attention: ``(T_out, S_enc)`` weights of each output unit over the encoder frames, or None.
    """

    text: str
    score: float
    attention: Tensor | None = None


@dataclass
class ChunkAlignment:
    """Attention of one decoded chunk (for plots).

    Attributes:
        spec: log-mel `(n_mels, frames)` of the chunk (unnormalised).
        weights: `(T, S_enc)` attention of each output unit over encoder frames.
        tokens: the `T` output units (characters).
        start: chunk start in seconds within the input.
    """

    spec: Tensor
    weights: Tensor
    tokens: list[str]
    start: float


@dataclass
class Transcription:
    """`transcribe(..., return_attention=True)` result for one input.

    Attributes:
        text: the best transcript (chunk transcripts joined with a space).
        chunks: per decoded chunk, its spectrogram and alignment.
        nbest: ``(text, score)`` alternatives, best first. For audio cut into chunks, alternative k joins
            the k-th best of every chunk (the best where a chunk has fewer) and averages their scores.
    """

    text: str
    chunks: list[ChunkAlignment] = field(default_factory=list)
    nbest: list[tuple[str, float]] = field(default_factory=list)


@torch.no_grad()
def decode_features(
    network: SpeechNetwork,
    tokenizer: BaseTokenizer,
    search: SearchOptions,
    feats: Tensor,
    lens: Tensor,
    beam: int = 5,
    nbest: int = 1,
    with_attention: bool = False,
    wavs: Tensor | None = None,
    wav_lens: Tensor | None = None,
) -> list[list[Hypothesis]]:
    """Beam search, the n-best rescored with CTC (or CTC prefix scores at every step: ``joint_ctc_decoding``).

    With ``ctc_weight`` 1 (CTC alone) it is a CTC prefix beam search: the attention decoder is not run, every
    step is scored by the CTC prefix log-probability alone, and hypotheses carry no attention.

    Args:
        network: the network (run in eval mode, its mode restored after).
        tokenizer: its units.
        search: how the beam is scored.
        feats: unnormalised log-mel `(B, T, F)`.
        lens: valid frames `(B,)`.
        beam: beam width (1 = greedy).
        nbest: hypotheses returned per utterance (<= beam).
        with_attention: keep each hypothesis' attention `(T_out, S_enc)`.
        wavs: `(B, N)` 16 kHz waveforms, for an encoder that reads them (``network.reads_waveforms``).
        wav_lens: their valid samples `(B,)`.

    Returns:
        Per utterance, ``nbest`` hypotheses sorted by the joint score.
    """
    tk, w = tokenizer, search.ctc_weight
    with eval_mode(network):
        enc, mask, ctc_lp = network.encode_batch(feats, lens, wavs, wav_lens)
        dec: StepDecoder = network  # the decoding contract, checked by the type checker
        ctc_alone = w >= 1.0
        joint = ctc_alone or (search.joint_ctc_decoding and w > 0)
        if ctc_alone:
            # The untrained decoder is not run at all: a weight of 0 would still let its -inf or NaN
            # log-probabilities through (0 * -inf is NaN), and it would cost a decoder step per step.
            step_fn, state = ctc_alone_search_inputs(_prefix_scorer(ctc_lp, mask, tk))
        elif joint:  # CTC prefix scores in every step's scores: nothing left to rescore
            step_fn, state = joint_search_inputs(
                dec.step, network.init_state(enc, mask), _prefix_scorer(ctc_lp, mask, tk), w
            )
        else:
            step_fn, state = dec.step, network.init_state(enc, mask)
        # CTC rescoring needs alternatives: keep the whole beam when CTC has a say.
        keep = beam if w > 0 and not joint else nbest
        # 40 ms encoder frames; even fast speech stays under ~1 character per frame.
        res = beam_search(
            step_fn,
            state,
            batch_size=enc.shape[0],
            bos_id=tk.bos_id,
            eos_id=tk.eos_id,
            max_len=enc.shape[1] + 5,
            beam_size=beam,
            nbest=keep,
            length_penalty=search.length_penalty,
            pad_id=tk.pad_id,
            suppress=(tk.pad_id, tk.bos_id),
        )
        out = []
        for b in range(enc.shape[0]):
            n_frames = int(mask[b].sum())
            scores = (
                [float(x) for x in res.scores[b]]
                if joint
                else _joint_scores(res.tokens[b], res.scores[b], ctc_lp[b, :n_frames], tk.pad_id, search)
            )
            order = sorted(range(len(scores)), key=lambda k: scores[k], reverse=True)[:nbest]
            hyps = []
            for k in order:
                att = res.attention[b][k] if with_attention else None
                hyps.append(
                    Hypothesis(tk.decode(res.tokens[b][k]), scores[k], None if att is None else att[:, :n_frames])
                )
            out.append(hyps)
        return out


def _prefix_scorer(ctc_lp: Tensor, mask: Tensor, tk: BaseTokenizer) -> CTCPrefixScorer:
    """CTC prefix scores of a batch (blank = pad; BOS never emitted)."""
    return CTCPrefixScorer(ctc_lp, mask.sum(-1), blank=tk.pad_id, eos=tk.eos_id, never=(tk.bos_id,))


def _joint_scores(
    hyps: list[list[int]], scores: list[float], ctc_lp: Tensor, blank: int, search: SearchOptions
) -> list[float]:
    """``(1 - w) * attention + w * CTC`` per hypothesis (length-normalised; the attention score alone
    when ``ctc_weight`` is 0).

    Args:
        hyps: n-best token lists.
        scores: their length-normalised attention log-probs.
        ctc_lp: CTC log-probs of the utterance `(S, V)`.
        blank: the CTC blank id.
        search: the weight ``w`` and the length penalty.
    """
    w, lp = search.ctc_weight, search.length_penalty
    if w == 0 or not hyps:
        return [float(s) for s in scores]
    n = len(hyps)
    targets = torch.tensor([t for h in hyps for t in h], dtype=torch.long)  # concatenated (sum L_i,)
    tlens = torch.tensor([len(h) for h in hyps], dtype=torch.long)
    lp_in = ctc_lp.float().cpu().unsqueeze(1).expand(-1, n, -1)  # (S, N, V): one utterance, N hypotheses
    in_lens = torch.full((n,), ctc_lp.shape[0], dtype=torch.long)
    ctc = -F.ctc_loss(lp_in, targets, in_lens, tlens, blank=blank, reduction="none")  # (N,)
    norm = torch.tensor([(len(h) + 1) ** lp for h in hyps], dtype=torch.float32)
    total = (1 - w) * torch.tensor(scores, dtype=torch.float32) + w * ctc / norm
    return torch.nan_to_num(total, nan=-math.inf, posinf=-math.inf).tolist()


@torch.no_grad()
def transcribe(
    network: SpeechNetwork,
    tokenizer: BaseTokenizer,
    search: SearchOptions,
    inputs: Sequence[AudioInput],
    max_chunk_seconds: float | None,
    beam: int = 5,
    nbest: int = 1,
    return_attention: bool = False,
    batch_size: int = 16,
) -> list[Transcription]:
    """Transcribe audio files or waveforms (``SpeechModule.transcribe``, where the arguments are described).

    Audio longer than ``max_chunk_seconds`` (None: 15 s) is cut into chunks at the quietest points (energy-based)
    and the chunk transcripts are joined with a space. A silent chunk (digital silence or near it) is not decoded:
    it has no words, and a decoder asked anyway would make some up.

    Returns:
        One `Transcription` per input (chunk alignments only with ``return_attention``).

    Raises:
        core.errors.DataError: an input is missing, unreadable, corrupt, empty or too short (the message names it).
    """
    dev, max_s = network.device, max_chunk_seconds or 15.0
    # (input index, start s, features (T, F), silent, waveform (N,))
    chunks: list[tuple[int, float, Tensor, bool, Tensor]] = []
    with eval_mode(network):
        for i, src in enumerate(inputs):
            wav = load_audio(src)
            for a, b in split_on_silence(wav, max_s):
                piece = wav[a:b]
                # the front end's filterbank lives on the network's device (e.g. after map_location="cuda")
                chunks.append((i, a / SAMPLE_RATE, network.logmel(piece.to(dev)), is_silent(piece), piece))
        # Decode the non-silent chunks sorted by length so batches carry little padding.
        todo = sorted((j for j, c in enumerate(chunks) if not c[3]), key=lambda j: chunks[j][2].shape[0])
        decoded: dict[int, list[Hypothesis]] = {}
        for s in range(0, len(todo), batch_size):
            idx = todo[s : s + batch_size]
            feats = [chunks[j][2] for j in idx]
            lens = torch.tensor([f.shape[0] for f in feats], device=dev)
            batch = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True).to(dev)  # (B, T, F)
            wavs = wav_lens = None
            if network.reads_waveforms:
                waves = [chunks[j][4] for j in idx]
                wavs = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True).to(dev)  # (B, N)
                wav_lens = torch.tensor([w.numel() for w in waves], device=dev)
            hyps = decode_features(
                network, tokenizer, search, batch, lens, beam, nbest, return_attention, wavs, wav_lens
            )
            decoded.update(zip(idx, hyps))
    per_input: list[list[tuple[list[Hypothesis], ChunkAlignment | None]]] = [[] for _ in inputs]
    for j, (i, start, feats_j, _, _) in enumerate(chunks):
        hyps_j = decoded.get(j, [])
        best = hyps_j[0] if hyps_j else None
        align = (
            ChunkAlignment(feats_j.T.cpu(), best.attention.cpu(), list(best.text), start)
            if return_attention and best is not None and best.attention is not None
            else None
        )
        per_input[i].append((hyps_j, align))
    return [_join(parts) for parts in per_input]


def ctc_alone_search_inputs(scorer: CTCPrefixScorer) -> tuple[StepFn, DecoderState]:
    """Beam-search step function and state of CTC prefix scores alone (CTC alone: no attention decoder).

    Each step scores every extension by its change in CTC prefix log-probability, so a finished hypothesis'
    summed score is ``log p_ctc(y)``: exactly the joint search's ``(1 - w) log p_att + w log p_ctc`` at ``w = 1``.

    Args:
        scorer: CTC prefix scorer of the batch.

    Returns:
        ``(step_fn, state)`` for `core.decoding.beam.beam_search`; the step returns no attention.
    """

    def step(tokens: Tensor, st: DecoderState) -> tuple[Tensor, DecoderState, None]:
        delta, new = scorer.step(tokens, st.beams, st.source)  # (N, V)
        return delta, DecoderState(beams=new, source=st.source), None

    return step, DecoderState(beams=scorer.initial_state(), source=scorer.static())


def _join(parts: list[tuple[list[Hypothesis], ChunkAlignment | None]]) -> Transcription:
    """One input's transcription from its chunks' n-best lists (silent chunks have none)."""
    spoken = [hyps for hyps, _ in parts if hyps]
    depth = max((len(h) for h in spoken), default=0)
    nbest = []
    for k in range(depth):
        picks = [h[min(k, len(h) - 1)] for h in spoken]
        text = " ".join(p.text for p in picks if p.text)
        nbest.append((text, sum(p.score for p in picks) / len(picks)))
    text = nbest[0][0] if nbest else ""
    return Transcription(text, [a for _, a in parts if a is not None], nbest)


def as_inputs(inputs: AudioInput | Sequence[AudioInput]) -> tuple[list[AudioInput], bool]:
    """The inputs as a list, and whether one input was given: a path or one ``(waveform, sample_rate)`` pair (not a
    list of two)."""
    if isinstance(inputs, (str, os.PathLike)) or _is_waveform_pair(inputs):
        return [cast(AudioInput, inputs)], True
    return list(cast(Sequence[AudioInput], inputs)), False


def _is_waveform_pair(x: Any) -> bool:
    return isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], int) and not isinstance(x[1], bool)
