"""The captioning network: an image encoder (a grid of features) and a caption decoder attending over it.

:class:`CaptionNetwork` holds the two parts (weights ``encoder.*`` and ``decoder.*``; ``model.encoder.*`` and
``model.decoder.*`` in a checkpoint) and gives the two ways of running them: teacher forcing (``forward``) and
one decoding step at a time (``init_state`` / ``step``, the ``core.decoding.beam`` contract). The image
transform and the vocabulary are the task's (:mod:`tasks.captioning.task`). :func:`build_network` builds it
from the ``--model.*`` options (:class:`NetworkOptions`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor, nn

from core.attention import attention_options as attention_options_for  # the field has its name
from core.decoding.beam import DecoderState
from core.errors import ConfigError
from core.io.pretrained import is_hf_spec
from core.layers import AttentionalRNNDecoder
from tasks.captioning.decoder import TransformerCaptionDecoder, show_attend_tell_decoder
from tasks.captioning.encoder import ImageEncoder
from tasks.captioning.hf_encoder import HFImageEncoder, hf_image_encoder

__all__ = ["CaptionNetwork", "NetworkOptions", "build_network"]

Encoder = ImageEncoder | HFImageEncoder
Decoder = AttentionalRNNDecoder | TransformerCaptionDecoder


class CaptionNetwork(nn.Module):
    """Image encoder + caption decoder.

    Args:
        encoder: images ``(B, 3, H, W)`` -> grid features ``(B, g*g, D)``.
        decoder: the caption decoder over those features.
    """

    def __init__(self, encoder: Encoder, decoder: Decoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    @property
    def grid_size(self) -> int:
        """Side ``g`` of the feature grid attended over (an ``hf:`` backbone's own grid)."""
        return int(self.encoder.grid_size)

    def encode(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` normalised images -> ``(B, g*g, D)`` grid features."""
        feats: Tensor = self.encoder(images)
        return feats

    def init_state(self, feats: Tensor) -> DecoderState:
        """Decoder state for grid features ``(B, S, D)``; the mean feature is the image summary."""
        return self.decoder.init_state(feats, None, summary=feats.mean(1))

    def step(
        self, tokens: Tensor, state: DecoderState, need_weights: bool = True
    ) -> tuple[Tensor, DecoderState, Tensor | None]:
        """One decoding step: ``tokens (N,)`` -> ``(log_probs (N, V), state, attention (N, S) or None)``."""
        return self.decoder.step(tokens, state, need_weights)

    def forward(self, images: Tensor, inputs: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """Teacher-forced scores.

        Args:
            images: ``(B, 3, H, W)`` normalised images.
            inputs: ``(B, T)`` BOS-prefixed caption tokens.
            need_weights: also return the attention (RNN decoder).

        Returns:
            ``(logits (B, T, V), attention (B, T, S) or None)``.
        """
        feats = self.encode(images)  # (B, S, D)
        return self.decoder(feats, None, inputs, summary=feats.mean(1), need_weights=need_weights)


@dataclass(frozen=True)
class NetworkOptions:
    """The ``--model.*`` options the network is built from (their meaning: ``CaptioningModule``).

    ``attention_options`` are the options as recorded: for an RNN decoder without attention (``none``) they are
    dropped (:meth:`recorded_attention_options`).
    """

    encoder: str = "tiny"
    pretrained: str | None = None
    trainable_blocks: int = -1
    unfreeze_after_steps: int | None = None
    grid_size: int = 6
    encoder_dim: int = 256
    decoder: str = "rnn"
    rnn_type: Literal["gru", "lstm"] = "lstm"
    attention: str = "additive"
    attention_options: Mapping[str, Any] | None = None
    embed_dim: int = 128
    hidden_dim: int = 256
    decoder_layers: int = 1
    num_heads: int = 4
    ffn_dim: int = 1024
    gate: bool = True
    dropout: float = 0.3
    max_len: int = 30

    @property
    def positions(self) -> int | None:
        """Learned word positions of the Transformer decoder (BOS included; they also cover teacher-forced
        training captions, which may be longer than ``max_len``); None for the RNN decoder."""
        return max(self.max_len + 2, 128) if self.decoder == "transformer" else None

    @property
    def attends(self) -> bool:
        """False for the baseline without attention (an RNN decoder with ``attention=none``)."""
        return not (self.decoder == "rnn" and self.attention == "none")

    @staticmethod
    def recorded_attention_options(
        decoder: str, attention: str, options: Mapping[str, Any] | None, hidden_dim: int
    ) -> Mapping[str, Any] | None:
        """The options recorded for what is built: for ``none`` (RNN decoder), options written for another
        mechanism are dropped, with one warning here, so that reloading the checkpoint does not warn again."""
        if decoder == "rnn" and attention == "none":
            return attention_options_for("none", options, hidden_dim) or None
        return options


def build_network(
    options: NetworkOptions,
    vocab_size: int,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    pretrained_config: Mapping[str, Any] | None,
) -> tuple[CaptionNetwork, dict[str, Any] | None]:
    """The network of ``options`` for a vocabulary of ``vocab_size`` words.

    Args:
        options: the ``--model.*`` options.
        vocab_size: V.
        image_size, mean, std: the images an ``hf:`` backbone gets (warned about when not its processor's).
        pretrained_config: an ``hf:`` backbone's stored config (then it is rebuilt offline from it), or None.

    Returns:
        ``(network, pretrained_info)``: the ``hf:`` backbone's config and processor settings as plain data (what
        a checkpoint stores to rebuild it), None for the other encoders.

    Raises:
        ConfigError: an unknown decoder, or a feature grid with more cells than the Transformer's positions.
    """
    o = options
    info: dict[str, Any] | None = None
    encoder: Encoder
    if is_hf_spec(o.encoder):
        encoder, info = hf_image_encoder(
            o.encoder,
            dict(pretrained_config) if pretrained_config is not None else None,
            o.encoder_dim,
            image_size,
            o.trainable_blocks,
            o.unfreeze_after_steps,
            mean,
            std,
        )
    else:
        encoder = ImageEncoder(o.encoder, o.encoder_dim, o.grid_size, o.pretrained, o.trainable_blocks, dropout=0.0)
    decoder: Decoder
    if o.decoder == "rnn":
        decoder = show_attend_tell_decoder(
            vocab_size,
            o.encoder_dim,
            o.embed_dim,
            o.hidden_dim,
            o.decoder_layers,
            o.rnn_type,
            o.attention,
            attention_options_for(o.attention, o.attention_options, hidden_dim=256),
            o.gate,
            o.dropout,
        )
    elif o.decoder == "transformer":
        positions = o.positions
        assert positions is not None  # set for every transformer decoder
        decoder = TransformerCaptionDecoder(
            vocab_size, o.encoder_dim, o.hidden_dim, o.decoder_layers, o.num_heads, o.ffn_dim, o.dropout, positions
        )
        cells = decoder.feat_pos.shape[1]
        if encoder.grid_size**2 > cells:  # an hf: backbone's own grid may be larger than the positions
            g = encoder.grid_size
            raise ConfigError(
                f"model.encoder={o.encoder}: its {g}x{g} feature grid has more cells than the transformer "
                f"decoder's {cells} positions; use model.decoder=rnn or a smaller data.image_size"
            )
    else:
        raise ConfigError(f"model.decoder={o.decoder!r}: expected 'rnn' or 'transformer'")
    return CaptionNetwork(encoder, decoder), info
