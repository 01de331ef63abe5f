"""The speech network: the log-mel front end and its statistics in front of the ASR model (`tasks.speech.model`).

Everything that turns audio into encoder states, CTC log-probabilities and decoder scores is one module, the core
module's ``self.model``: its weights are ``model.*`` in checkpoints and model folders. Before the core module
(``tasks.speech.module`` up to commit bedf076) the front end sat on the LightningModule itself (``logmel.*``,
``stats.*``); :func:`upgrade_state_dict` maps those names, and the format-1 names (`tasks.speech.model`).
:func:`build_network` builds it from the ``--model.*`` options (the task, and the Lightning-free
``tasks.speech.inference.Transcriber.from_pretrained``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from core.decoding.beam import DecoderState
from core.io.pretrained import is_hf_spec
from tasks.speech.features import FeatureConfig, FeatureStats, LogMel, SpecAugment
from tasks.speech.hf_encoder import hf_speech_encoder
from tasks.speech.model import ASRModel, upgrade_state_dict_v1

__all__ = ["ENCODERS", "NetworkOptions", "SpeechNetwork", "build_network", "upgrade_state_dict"]

#: the encoders built here (``hf:<hub-id-or-folder>`` reads a pretrained one)
ENCODERS = ("lstm", "pblstm", "transformer", "conformer")

#: modules of the front end, whose weights were named without the ``model.`` prefix before the core module
FRONT_END = ("logmel.", "stats.", "specaug.")


class SpeechNetwork(ASRModel):
    """Audio front end + encoder + attention decoder + CTC head.

    Args:
        vocab_size: units including pad/bos/eos/unk.
        feature_cfg: the log-mel front end.
        stats: the global feature statistics; the task that builds the network fills them from the training data
            (`tasks.speech.task.SpeechTask.setup`), so every network it builds shares this one module.
        spec_augment: frequency/time masking of the normalised features in training.
        encoder, encoder_dim, encoder_layers, num_heads, hidden_dim, embed_dim, attention, attention_options,
            dropout, encoder_module, conv_channels: the ASR model (:class:`tasks.speech.model.ASRModel`);
            ``encoder_module`` an encoder that reads waveforms (``tasks.speech.hf_encoder``).
    """

    def __init__(
        self,
        vocab_size: int,
        feature_cfg: FeatureConfig,
        stats: FeatureStats,
        spec_augment: bool,
        encoder: str,
        encoder_dim: int,
        encoder_layers: int,
        num_heads: int,
        hidden_dim: int,
        embed_dim: int,
        attention: str,
        attention_options: dict[str, Any] | None,
        dropout: float,
        encoder_module: nn.Module | None = None,
        conv_channels: int = 32,
    ) -> None:
        super().__init__(
            vocab_size,
            feature_cfg.n_mels,
            encoder,
            encoder_dim,
            encoder_layers,
            num_heads,
            hidden_dim,
            embed_dim,
            attention,
            attention_options,
            dropout,
            encoder_module=encoder_module,
            conv_channels=conv_channels,
        )
        self.feature_cfg = feature_cfg
        self.logmel = LogMel(feature_cfg)
        self.stats = stats
        self.specaug = SpecAugment() if spec_augment else None
        #: whether the encoder reads raw 16 kHz audio (an ``hf:`` encoder) instead of log-mel features
        self.reads_waveforms = encoder_module is not None

    @property
    def device(self) -> torch.device:
        """Where the weights are (inputs are moved there)."""
        return self.ctc_head.weight.device

    def init_state(self, memory: Tensor, mask: Tensor) -> DecoderState:
        """The attention decoder's first state over encoder states ``(B, S, D)`` and their mask ``(B, S)``."""
        return self.decoder.init_state(memory, mask)

    def step(
        self, tokens: Tensor, state: DecoderState, need_weights: bool = True
    ) -> tuple[Tensor, DecoderState, Tensor | None]:
        """One attention-decoder step: ``tokens (N,)`` -> log-probabilities ``(N, V)``, state, attention ``(N, S)``."""
        return self.decoder.step(tokens, state, need_weights)

    def encode_batch(
        self, feats: Tensor, lens: Tensor, wavs: Tensor | None = None, wav_lens: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Encoder states ``(B, S, D)``, their mask ``(B, S)`` and CTC log-probs ``(B, S, V)`` of a batch.

        Args:
            feats: unnormalised log-mel ``(B, T, F)``; normalised here, and SpecAugmented in training.
            lens: valid frames ``(B,)``.
            wavs: ``(B, N)`` 16 kHz waveforms, what an encoder that reads waveforms encodes instead.
            wav_lens: their valid samples ``(B,)``.

        Raises:
            ValueError: the encoder reads waveforms and none were given.
        """
        if self.reads_waveforms:
            if wavs is None or wav_lens is None:
                raise ValueError("this model's encoder reads waveforms: pass wavs and wav_lens")
            return self.encode(wavs, wav_lens)
        x = self.stats(feats)
        if self.specaug is not None and self.training:
            x = self.specaug(x)
        return self.encode(x, lens)


def upgrade_state_dict(state: dict[str, Any], version: int) -> dict[str, Any]:
    """Weight names of earlier checkpoints and model folders under today's :class:`SpeechNetwork`.

    Args:
        state: the file's state dict.
        version: its format (``attn_suite.format``); format 1 also renamed the decoder's and encoder's layers.
    """
    if version < 2:
        state = upgrade_state_dict_v1(state)
    return {f"model.{k}" if k.startswith(FRONT_END) else k: v for k, v in state.items()}


class NetworkOptions(Protocol):
    """The options :func:`build_network` reads (``SpeechModule``'s of the same names, documented there): the
    task's ``SpeechOptions`` and the lean loader's ``StoredOptions`` both have them."""

    @property
    def encoder(self) -> str: ...
    @property
    def encoder_dim(self) -> int: ...
    @property
    def encoder_layers(self) -> int: ...
    @property
    def num_heads(self) -> int: ...
    @property
    def hidden_dim(self) -> int: ...
    @property
    def embed_dim(self) -> int: ...
    @property
    def attention(self) -> str: ...
    @property
    def attention_options(self) -> Mapping[str, Any] | None: ...
    @property
    def dropout(self) -> float: ...
    @property
    def spec_augment(self) -> bool: ...
    @property
    def ctc_weight(self) -> float: ...
    @property
    def trainable_blocks(self) -> int: ...
    @property
    def unfreeze_after_steps(self) -> int | None: ...
    @property
    def encoder_conv_channels(self) -> int: ...


def build_network(
    o: NetworkOptions,
    vocab_size: int,
    feature_cfg: FeatureConfig,
    stats: FeatureStats,
    pretrained: Mapping[str, Any] | None,
) -> tuple[SpeechNetwork, dict[str, Any] | None]:
    """The network of ``o`` for ``vocab_size`` units.

    Args:
        o: the ``--model.*`` options.
        vocab_size: units including pad/bos/eos/unk.
        feature_cfg: the log-mel front end.
        stats: the feature statistics module the network normalises with (shared with its caller).
        pretrained: an ``hf:`` encoder's stored config (then it is rebuilt offline from it), or None to read it
            from ``o.encoder``.

    Returns:
        ``(network, pretrained_info)``: an ``hf:`` encoder's config as plain data (what a checkpoint stores to
        rebuild it), None for the other encoders.
    """
    encoder_module, info = None, None
    if is_hf_spec(o.encoder):
        encoder_module, info = hf_speech_encoder(o.encoder, pretrained, o.trainable_blocks, o.unfreeze_after_steps)
    network = SpeechNetwork(
        vocab_size,
        feature_cfg,
        stats,
        o.spec_augment,
        o.encoder,
        o.encoder_dim,
        o.encoder_layers,
        o.num_heads,
        o.hidden_dim,
        o.embed_dim,
        o.attention,
        dict(o.attention_options) if o.attention_options is not None else None,
        o.dropout,
        encoder_module=encoder_module,
        conv_channels=o.encoder_conv_channels,
    )
    if o.ctc_weight >= 1.0:
        # CTC alone: the decoder has no loss and is never run. Frozen, it gets no gradient (DDP expects none of
        # it), no weight decay and no optimizer state; it stays in the network so that every setting has the
        # same weights.
        network.decoder.requires_grad_(False)
    return network, info
