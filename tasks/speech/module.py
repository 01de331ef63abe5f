"""`SpeechModule`: joint CTC/attention ASR on the core module, and its library API (`transcribe`, `decode_features`).

What it trains, scores, draws and stores is `tasks.speech.task.SpeechTask`; the network (``self.model``: the log-mel
front end, the encoder, the attention decoder and the CTC head) is `tasks.speech.network.SpeechNetwork`; decoding
is `tasks.speech.inference`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from core.attention import attention_options as attention_options_for  # the argument has its name
from core.text.tokenizers import BaseTokenizer
from core.train.module import TaskModule
from core.train.task import options_from
from tasks.speech.audio import AudioInput
from tasks.speech.features import FeatureConfig, FeatureStats, LogMel
from tasks.speech.inference import Hypothesis, SearchOptions, Transcriber, Transcription
from tasks.speech.network import SpeechNetwork
from tasks.speech.stored import SpeechFiles, check_encoder_options
from tasks.speech.task import SpeechOptions, SpeechTask

__all__ = ["SpeechModule"]


class SpeechModule(TaskModule[SpeechNetwork]):
    """Listen-attend-spell style ASR with joint CTC.

    Args:
        encoder: "lstm" (conv x4 + BiLSTM), "pblstm" (pyramidal BiLSTM), "transformer", "conformer", or
            ``hf:<hub-id-or-folder>``: a pretrained wav2vec2 / HuBERT / WavLM (or Whisper's encoder) read through
            ``transformers`` from the raw waveform, a learned weighted sum of its layers under the decoder and
            CTC (`tasks.speech.hf_encoder`; ``encoder_dim``/``encoder_layers``/``num_heads`` are then its own).
        encoder_dim: encoder size (per direction for LSTMs, d_model otherwise).
        encoder_layers: encoder layers.
        num_heads: attention heads of transformer/conformer encoders.
        hidden_dim: decoder LSTM size.
        embed_dim: character embedding size.
        attention: `core.attention` mechanism of the decoder ("location", "additive", "dot",
            "general", "scaled_dot", "multihead"), or "none": no attention, one fixed context (the mean of
            the encoder frames) for every output step, the baseline of what attention buys (it is expected
            to fail on long input).
        attention_options: extra options of that mechanism (e.g. `{"hidden_dim": 128, "kernel_size": 31}`).
            "none" takes none: options given with it (e.g. a config's location-attention options under
            ``--model.attention none``) are dropped with a warning.
        ctc_weight: weight of the CTC loss (0 = attention only; also the weight of CTC when
            rescoring the beam's n-best). 1 = **CTC alone**, the practical model without attention: the
            loss is CTC only, the attention decoder is frozen (no gradient, no weight decay) and never
            run, and decoding is a CTC prefix beam search (`joint_ctc_decoding` is implied: rescoring an
            untrained decoder's beam would mean nothing).
        dropout: dropout.
        label_smoothing: label smoothing of the attention cross-entropy.
        optimizer, lr, weight_decay, betas, eps, warmup_steps, lr_schedule, min_lr_ratio: the optimizer and its
            schedule (`core.train.schedule.OptimizerOptions`).
        spec_augment: frequency/time masking during training.
        beam_size: beam width for validation/test/predict decoding.
        length_penalty: exponent of the beam's length normalisation.
        plot_examples: validation utterances whose alignment is plotted each validation (0 = none).
        max_chunk_seconds: `transcribe` cuts longer audio into chunks (at silences when possible);
            None = the longest training utterance seen (stored in the checkpoint).
        cpu_threads: torch intra-op threads when training/evaluating on CPU (None = torch's default).
            The per-step tensors of this model are small, so intra-op parallelism buys little and
            its barriers cost a lot when cores are shared: on a busy 2-core machine one thread
            trained at 108 audio-s/s and two threads at 13. DataLoader workers use the other cores.
        trainable_blocks: ``hf:`` encoders: -1 fine-tune all its Transformer layers, 0 freeze it (only the layer
            weights and what is above train), k the top k layers; its CNN feature encoder stays frozen.
        encoder_lr_scale: ``hf:`` encoders: their learning rate is ``lr * encoder_lr_scale``.
        unfreeze_after_steps: ``hf:`` encoders: frozen for this many optimizer steps first (decoder and CTC
            train alone), then ``trainable_blocks`` applies; None = from the start.
        pretrained_config: ``hf:`` encoders: their config and feature-extractor settings as plain data; filled
            from a checkpoint's metadata when one is loaded (rebuilt offline, never downloaded); leave it None.
        guided_attention_weight: weight of the guided attention loss (`tasks.speech.guided`), a
            diagonal prior that makes the decoder find the monotonic alignment early (0 = off; ignored,
            with a warning, for "none" and CTC alone, which have no attention to guide).
        guided_attention_sigma: width of that prior's diagonal band, as a fraction of the utterance.
        guided_attention_steps: the guided weight fades linearly to `guided_attention_final_weight` over this
            many optimizer steps (a prior to find the alignment, not a constraint on it later); None = constant.
        guided_attention_final_weight: the weight it fades to.
        encoder_conv_channels: channels of the encoder's conv2d subsampling (half of 32 halves its cost;
            measured 0.163 -> 0.082 CPU-s per encoder forward+backward of a demo batch).
        joint_ctc_decoding: beam search scores every step with `(1 - w)` attention + `w` CTC prefix
            log-probability (`tasks.speech.ctc_prefix`, `w = ctc_weight`) instead of rescoring the
            attention beam's n-best with CTC at the end. With ``ctc_weight`` 1 (CTC alone) the search uses
            the CTC prefix scores only, without running the decoder (the same scores `w = 1` gives here).
    """

    TASK = SpeechFiles.TASK
    MONITOR, MONITOR_MODE = "val/cer", "min"
    # what a file of this module holds, shared with the Lightning-free loader (`tasks.speech.stored`)
    HPARAM_BOUNDS = SpeechFiles.HPARAM_BOUNDS
    HPARAM_RENAMES = SpeechFiles.HPARAM_RENAMES
    FOLDER_FILES = SpeechFiles.FOLDER_FILES

    task: SpeechTask

    def __init__(
        self,
        encoder: str = "lstm",
        encoder_dim: int = 160,
        encoder_layers: int = 2,
        num_heads: int = 4,
        hidden_dim: int = 192,
        embed_dim: int = 48,
        attention: str = "location",
        attention_options: dict[str, int | float | str | bool | None] | None = None,
        ctc_weight: float = 0.3,
        dropout: float = 0.1,
        label_smoothing: float = 0.1,
        optimizer: Literal["adamw", "adam", "sgd"] = "adamw",
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        warmup_steps: int = 200,
        lr_schedule: Literal["inverse_sqrt", "cosine", "linear", "constant"] = "inverse_sqrt",
        min_lr_ratio: float = 0.0,
        spec_augment: bool = True,
        beam_size: int = 5,
        length_penalty: float = 1.0,
        plot_examples: int = 2,
        max_chunk_seconds: float | None = None,
        cpu_threads: int | None = 1,
        trainable_blocks: int = -1,
        encoder_lr_scale: float = 1.0,
        unfreeze_after_steps: int | None = None,
        pretrained_config: dict[str, Any] | None = None,
        guided_attention_weight: float = 0.0,
        guided_attention_sigma: float = 0.2,
        guided_attention_steps: int | None = None,
        guided_attention_final_weight: float = 0.0,
        joint_ctc_decoding: bool = False,
        encoder_conv_channels: int = 32,
    ) -> None:
        check_encoder_options(encoder, ctc_weight)
        if guided_attention_weight > 0 and (attention == "none" or ctc_weight >= 1.0):
            what = "attention=none (uniform weights)" if attention == "none" else "ctc_weight=1 (CTC alone)"
            rank_zero_warn(f"model.guided_attention_weight is ignored with {what}: there is no attention to guide")
        if attention == "none":
            # options written for another mechanism are dropped (and named) here, so the checkpoint records what
            # was built and reloading it does not warn again
            attention_options = attention_options_for("none", attention_options, hidden_dim) or None
        options = options_from(SpeechOptions, locals())  # the constructor's arguments the task reads
        super().__init__(SpeechTask(options, max_chunk_seconds, pretrained_config))
        self.save_hyperparameters()
        self.hparams["attention_options"] = attention_options
        self.model = self.task.build_network()

    # ------------------------------------------------------------------ what other code reads of the model
    @property
    def tokenizer(self) -> BaseTokenizer:
        """The character units."""
        return self.task.tokenizer

    @property
    def feature_cfg(self) -> FeatureConfig:
        """The log-mel front end's settings."""
        return self.task.feature_cfg

    @property
    def logmel(self) -> LogMel:
        """Waveform -> log-mel features ``(frames, n_mels)`` (the network's front end)."""
        return self.network.logmel

    @property
    def stats(self) -> FeatureStats:
        """The feature statistics the network normalises with."""
        return self.network.stats

    @property
    def reads_waveforms(self) -> bool:
        """Whether the encoder reads raw 16 kHz audio (an ``hf:`` encoder) instead of log-mel features."""
        return self.task.reads_waveforms

    @property
    def pretrained_info(self) -> dict[str, Any] | None:
        """An ``hf:`` encoder's config as plain data (stored with the model), else None."""
        return self.task.pretrained_info

    @property
    def max_chunk_seconds(self) -> float | None:
        """``transcribe`` cuts longer audio into chunks (stored with the model; None until the data decides)."""
        return self.task.max_chunk_seconds

    @max_chunk_seconds.setter
    def max_chunk_seconds(self, seconds: float | None) -> None:
        self.task.max_chunk_seconds = seconds

    # ------------------------------------------------------------------ earlier files
    @classmethod
    def upgrade_state_dict(cls, state: dict[str, Any], version: int) -> dict[str, Any]:
        """Format-1 names, and the front end that sat on the module itself before the core module (``model.``)."""
        return SpeechFiles.upgrade_state_dict(state, version)

    @classmethod
    def hparams_from_metadata(cls, meta: Mapping[str, Any], source: str) -> dict[str, Any]:
        """An ``hf:`` encoder is rebuilt from the config stored with it: loading never downloads it."""
        return SpeechFiles.hparams_from_metadata(meta, source)

    # ------------------------------------------------------------------ the library API
    @property
    def transcriber(self) -> Transcriber:
        """This model as a :class:`~tasks.speech.inference.Transcriber` (no Lightning needed to run it), with the
        scoring options of its hyper-parameters now."""
        return Transcriber(
            self.network, self.tokenizer, SearchOptions.from_hparams(self.hparams), self.max_chunk_seconds
        )

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
        """Beam search over a batch of log-mel features (`tasks.speech.inference.decode_features`).

        The scoring options (``ctc_weight``, ``joint_ctc_decoding``, ``length_penalty``) are read from
        ``hparams`` at every call, so a caller may switch them (e.g. the attention decoder alone).

        Args:
            feats: unnormalised log-mel `(B, T, F)`.
            lens: valid frames `(B,)`.
            beam: beam width (1 = greedy).
            nbest: hypotheses returned per utterance (<= beam).
            with_attention: keep each hypothesis' attention `(T_out, S_enc)`.
            wavs: `(B, N)` 16 kHz waveforms, for an encoder that reads them (``reads_waveforms``).
            wav_lens: their valid samples `(B,)`.

        Returns:
            Per utterance, ``nbest`` hypotheses sorted by the joint score.
        """
        return self.transcriber.decode_features(feats, lens, beam, nbest, with_attention, wavs, wav_lens)

    def transcribe(
        self,
        inputs: AudioInput | Sequence[AudioInput],
        beam: int = 5,
        nbest: int = 1,
        return_attention: bool = False,
        batch_size: int = 16,
    ) -> str | Transcription | list[str] | list[Transcription]:
        """Transcribe one audio file or waveform, or a list of them.

        Audio longer than the trained range (`max_chunk_seconds`) is cut into chunks at the quietest points
        (energy-based) and the chunk transcripts are joined with a space. A silent chunk (digital silence or near
        it) is not decoded: it has no words, and a decoder asked anyway would make some up. The scoring options are
        read from ``hparams`` at every call (as in :meth:`decode_features`).

        Args:
            inputs: paths, or `(waveform, sample_rate)` with the waveform `(N,)` or `(channels, N)`;
                any sample rate and channel count (resampled to 16 kHz, downmixed). A single path or
                `(waveform, sample_rate)` pair gives its one result, not a list of one.
            beam: beam width.
            nbest: alternatives kept per input (in ``Transcription.nbest``).
            return_attention: return `Transcription` objects with per-chunk spectrogram/attention.
            batch_size: chunks decoded together.

        Returns:
            One normalised transcript per input, or `Transcription` objects with ``return_attention`` or
            ``nbest > 1``.

        Raises:
            core.errors.DataError: an input is missing, unreadable, corrupt, empty or too short (the message
                names it); use one call per file to keep going over bad files.
        """
        return self.transcriber.transcribe(inputs, beam, nbest, return_attention, batch_size)
