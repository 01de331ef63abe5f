"""Speech recognition with a trained network: beam search with CTC rescoring or joint CTC prefix scores, chunked
transcription of audio files and waveforms, and their result types. :class:`Transcriber` holds what they need
(``SpeechModule.transcribe`` and ``SpeechModule.decode_features`` are its methods on the module's network).

Nothing here imports Lightning or the training stack: :meth:`Transcriber.from_pretrained` loads a model folder,
``.ckpt`` or ``hf://`` model without them (through the same checks as ``SpeechModule.from_pretrained``,
``core.io.rebuild``), and transcribes exactly as the module does. Only an ``hf:`` encoder needs ``transformers``
(it is rebuilt from its stored config).

Example:
    >>> transcriber = Transcriber.from_pretrained("demo_output/speech/model")  # doctest: +SKIP
    >>> transcriber.transcribe("hello.wav")                                     # doctest: +SKIP
    'hello world'
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.decoding.beam import DecoderState, StepDecoder, StepFn, beam_search
from core.decoding.fast_paths import eval_mode
from core.engines.folder import read_engine_folder
from core.engines.onnx import EngineNetwork
from core.errors import ConfigError
from core.io.checks import checked_parts
from core.io.folder_files import HUB_PREFIX, folder_engine, resolve_hub
from core.io.model_folder import read_task_files
from core.io.rebuild import construct_checked, load_checked_weights
from core.text.tokenizers import BaseTokenizer
from tasks.speech.audio import SAMPLE_RATE, AudioInput, is_silent, load_audio, split_on_silence
from tasks.speech.ctc_prefix import CTCPrefixScorer, joint_search_inputs
from tasks.speech.features import FeatureConfig, FeatureStats, LogMel
from tasks.speech.network import SpeechNetwork, build_network
from tasks.speech.onnx_graphs import OnnxSpeechNetwork, load_onnx
from tasks.speech.stored import (
    SpeechFiles,
    StoredOptions,
    check_stats,
    make_char_tokenizer,
    read_chunk_seconds,
    read_units,
)

__all__ = [
    "ENGINES",
    "ChunkAlignment",
    "Hypothesis",
    "LoadedSpeech",
    "SearchOptions",
    "Transcriber",
    "Transcription",
    "as_inputs",
    "ctc_alone_search_inputs",
    "decode_features",
    "load_speech",
    "transcribe",
]


ENGINES = ("onnxruntime",)  # the engines an export may run on (``attn-asr export --format onnx``)


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
    network: SpeechNetwork | OnnxSpeechNetwork,
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
        network: the network (run in eval mode, its mode restored after), or its ONNX Runtime graphs.
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
    network: SpeechNetwork | OnnxSpeechNetwork,
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


@dataclass
class LoadedSpeech:
    """A PyTorch speech model read by :func:`load_speech`: its network (eval mode) and what goes with it.

    Attributes:
        network: the network, its weights loaded.
        options: its validated options.
        units: its character units.
        meta: the file's checked metadata (units, front end, statistics, chunking range, an ``hf:`` encoder's
            config), as an export writes it again.
        source: the file, for messages.
    """

    network: SpeechNetwork
    options: StoredOptions
    units: BaseTokenizer
    meta: dict[str, Any]
    source: str


def _options(hp: dict[str, Any], overrides: dict[str, Any], source: str) -> StoredOptions:
    unknown = sorted(set(overrides) - {f.name for f in fields(StoredOptions)})
    if unknown:
        raise ConfigError(f"Transcriber.from_pretrained: no option {', '.join(unknown)} (StoredOptions)")
    return construct_checked(lambda: StoredOptions(**{**hp, **overrides}), source, "a SpeechModule", None)


def _artifacts(meta: Mapping[str, Any], source: str) -> tuple[BaseTokenizer, FeatureConfig]:
    """The stored units and front end (what the module's task restores from the file, ``SpeechTask.restore``)."""
    units = read_units(meta, source, make_char_tokenizer().vocab_size) or make_char_tokenizer()
    cfg = meta.get("feature_config")
    return units, FeatureConfig() if cfg is None else FeatureConfig.from_dict(cfg, source)


def load_speech(
    path: str | os.PathLike[str],
    map_location: str | torch.device | None = "cpu",
    strict: bool = True,
    sha256: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> LoadedSpeech:
    """A PyTorch speech model (folder, ``hf://``, ``.ckpt`` or URL) read without Lightning and checked (see
    :meth:`Transcriber.from_pretrained`, which wraps it; an export reads it to write the engine's files)."""
    stored = read_task_files(SpeechFiles, path, sha256)
    source = stored.source
    # The module's training options (optimizer, losses, evaluation) do not concern inference: dropped without a
    # word (the module warns about names no version takes).
    hp, meta, state = checked_parts(
        SpeechFiles, stored.hparams, stored.meta, stored.state, source, StoredOptions, warn_unknown=False
    )
    options = _options(hp, dict(overrides or {}), source)
    units, feature_cfg = _artifacts(meta, source)
    read_chunk_seconds(meta, source)  # checked before the weights are read

    def build(device: str | None) -> nn.Module:
        def make() -> nn.Module:
            holder = nn.Module()  # the module's weights are its network's under "model."
            stats = FeatureStats(feature_cfg.n_mels)  # its values are in the weights
            holder.model, _ = build_network(options, units.vocab_size, feature_cfg, stats, options.pretrained_config)
            return holder

        return construct_checked(make, source, "a speech network", device)

    holder = load_checked_weights(build, state, strict, source, "the speech network of its own options")
    network = holder.get_submodule("model")
    assert isinstance(network, SpeechNetwork)  # what build_network returns
    check_stats(network.stats, source)
    if map_location is not None and not callable(map_location) and not isinstance(map_location, dict):
        network.to(map_location)
    network.eval()
    return LoadedSpeech(network, options, units, meta, source)


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


@dataclass
class Transcriber:
    """A speech network with its units, scoring options and chunking range: what transcription needs.

    ``SpeechModule.transcribe`` / ``decode_features`` are these methods on the module's network (with the scoring
    options read from its hyper-parameters at every call).

    Attributes:
        network: the front end, encoder, attention decoder and CTC head (or their ONNX Runtime graphs, the front
            end in PyTorch).
        tokenizer: the character units.
        search: how the beam is scored.
        max_chunk_seconds: longer audio is cut into chunks (None: 15 s).
    """

    network: SpeechNetwork | OnnxSpeechNetwork
    tokenizer: BaseTokenizer
    search: SearchOptions = field(default_factory=SearchOptions)
    max_chunk_seconds: float | None = None

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        map_location: str | torch.device | None = "cpu",
        strict: bool = True,
        sha256: str | None = None,
        threads: int | None = None,
        **overrides: Any,
    ) -> Transcriber:
        """A speech model folder, ``hf://ORG/NAME[@REVISION]``, ``.ckpt`` file or URL, loaded without Lightning; or an
        ONNX export (``attn-asr export --format onnx``), run on ONNX Runtime.

        The same safe path as ``SpeechModule.from_pretrained`` (``core.io.rebuild``): no unpickling, the
        hyper-parameters validated against :class:`~tasks.speech.stored.StoredOptions` with the module's bounds and
        old names, old weights upgraded, the stored units, front end and chunking range validated, shapes and dtypes
        checked on the ``meta`` device before anything is allocated, non-finite weights and feature statistics
        refused. Transcripts are identical to the module's.

        Args:
            path: the model.
            map_location: device of the network (None keeps CPU; an ONNX export runs on the CPU).
            strict: exact state-dict match.
            sha256: expected digest (or prefix) of the file (a folder's weights).
            threads: an ONNX export's CPU threads (None: ONNX Runtime's default); PyTorch uses
                ``torch.set_num_threads``.
            **overrides: options to change (e.g. ``ctc_weight=0.5``), fields of ``StoredOptions``.

        Raises:
            core.errors.CheckpointError: an unreadable, unsafe or other-task file, bad hyper-parameters or
                artifacts, or weights that do not fit (the message names the file).
            core.errors.ConfigError: an override that is no option, or an ONNX export without ``onnxruntime``.
        """
        local = resolve_hub(os.fspath(path)) if os.fspath(path).startswith(HUB_PREFIX) else Path(path).expanduser()
        if folder_engine(local) is not None:
            if sha256 is not None:
                raise ConfigError("sha256 pins a checkpoint or a model folder's weights; an engine export has none")
            return cls._from_engine(local, map_location, threads, overrides)
        loaded = load_speech(path, map_location, strict, sha256, overrides)
        return cls.for_options(loaded.network, loaded.options, loaded.units, loaded.meta, loaded.source)

    @classmethod
    def for_options(
        cls,
        network: SpeechNetwork | OnnxSpeechNetwork,
        options: StoredOptions,
        units: BaseTokenizer,
        meta: Mapping[str, Any],
        source: str,
    ) -> Transcriber:
        """``network`` with its units, the scoring options of ``options`` and the stored chunking range."""
        chunk = read_chunk_seconds(meta, source)
        search = SearchOptions(options.ctc_weight, options.joint_ctc_decoding, options.length_penalty)
        return cls(network, units, search, chunk if chunk is not None else options.max_chunk_seconds)

    @classmethod
    def _from_engine(
        cls, path: Path, map_location: str | torch.device | None, threads: int | None, overrides: dict[str, Any]
    ) -> Transcriber:
        """An ONNX export: its options, units and front end checked, its network on ONNX Runtime."""
        folder = read_engine_folder(SpeechFiles, path, StoredOptions, ENGINES)
        options = _options(folder.hparams, overrides, folder.source)
        units, feature_cfg = _artifacts(folder.meta, folder.source)
        device = "cpu" if map_location is None else str(map_location)
        if device != "cpu":
            raise ConfigError(f"{folder.source}: the ONNX export runs on the CPU (map_location={device!r})")
        network = load_onnx(folder, options, feature_cfg, threads)
        return cls.for_options(network, options, units, folder.meta, folder.source)

    @property
    def device(self) -> torch.device:
        """Where the network's weights are."""
        return self.network.device

    @property
    def engine(self) -> str:
        """What runs the network: ``"pytorch"`` or ``"onnxruntime"``."""
        return self.network.engine if isinstance(self.network, EngineNetwork) else "pytorch"

    @property
    def logmel(self) -> LogMel:
        """Waveform -> log-mel features ``(frames, n_mels)`` (the network's front end)."""
        return self.network.logmel

    @property
    def stats(self) -> FeatureStats:
        """The feature statistics the network normalises with."""
        return self.network.stats

    @property
    def feature_cfg(self) -> FeatureConfig:
        """The log-mel front end's settings."""
        return self.network.feature_cfg

    @property
    def reads_waveforms(self) -> bool:
        """Whether the encoder reads raw 16 kHz audio (an ``hf:`` encoder) instead of log-mel features."""
        return self.network.reads_waveforms

    def decode_features(
        self,
        feats: Tensor,
        lens: Tensor,
        beam: int = 5,
        nbest: int = 1,
        with_attention: bool = False,
        wavs: Tensor | None = None,
        wav_lens: Tensor | None = None,
    ) -> list[list[Hypothesis]]:
        """Beam search over a batch of log-mel features (:func:`decode_features`; ``SpeechModule.decode_features``
        documents the arguments)."""
        return decode_features(
            self.network, self.tokenizer, self.search, feats, lens, beam, nbest, with_attention, wavs, wav_lens
        )

    def transcribe(
        self,
        inputs: AudioInput | Sequence[AudioInput],
        beam: int = 5,
        nbest: int = 1,
        return_attention: bool = False,
        batch_size: int = 16,
    ) -> str | Transcription | list[str] | list[Transcription]:
        """Transcribe one audio file or waveform, or a list of them (``SpeechModule.transcribe`` documents it)."""
        items, single = as_inputs(inputs)
        results = transcribe(
            self.network,
            self.tokenizer,
            self.search,
            items,
            self.max_chunk_seconds,
            beam,
            nbest,
            return_attention,
            batch_size,
        )
        out: list[str] | list[Transcription] = results if return_attention or nbest > 1 else [r.text for r in results]
        return out[0] if single else out
