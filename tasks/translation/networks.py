"""The translation networks, built from :class:`~tasks.translation.options.TranslationOptions` without Lightning
or the training stack: the builders picked by ``--model.arch`` (:data:`NETWORKS`, :func:`build_network`). The
training module (``tasks.translation.module``) and the lean loader (``Translator.from_pretrained``) both build
through them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from torch import Tensor, nn

from core.decoding.beam import DecoderState, StepDecoder
from core.errors import ConfigError
from tasks.translation.models import RNNSeq2Seq, TransformerSeq2Seq
from tasks.translation.options import TranslationOptions

if TYPE_CHECKING:
    from tasks.translation.models.marian import MarianSeq2Seq

__all__ = [
    "NETWORKS",
    "Seq2SeqNetwork",
    "build_network",
    "rnn_network",
    "transformer_network",
]


def rnn_network(o: TranslationOptions, src_vocab: int, tgt_vocab: int) -> RNNSeq2Seq:
    """Bidirectional GRU/LSTM encoder and an attentional decoder with input feeding."""
    return RNNSeq2Seq(
        src_vocab,
        tgt_vocab,
        o.embed_dim,
        o.hidden_dim,
        o.encoder_layers,
        o.decoder_layers,
        o.rnn_type,
        o.attention,
        o.attention_options,
        o.dropout,
        o.tie_embeddings,
    )


def transformer_network(o: TranslationOptions, src_vocab: int, tgt_vocab: int) -> TransformerSeq2Seq:
    """Pre-norm Transformer encoder–decoder on core multi-head attention."""
    return TransformerSeq2Seq(
        src_vocab,
        tgt_vocab,
        o.hidden_dim,
        o.num_heads,
        o.ffn_dim,
        o.encoder_layers,
        o.decoder_layers,
        o.dropout,
        o.tie_embeddings,
        max_positions=max(512, o.max_len + 1, o.max_source_tokens),
    )


#: the networks built from scratch, by ``--model.arch`` (``marian`` is built from its pretrained model)
NETWORKS: dict[str, Callable[[TranslationOptions, int, int], RNNSeq2Seq | TransformerSeq2Seq]] = {
    "rnn": rnn_network,
    "transformer": transformer_network,
}


def build_network(
    o: TranslationOptions,
    src_vocab: int,
    tgt_vocab: int,
    pretrained_info: Mapping[str, Any] | None = None,
    backbone: nn.Module | None = None,
) -> RNNSeq2Seq | TransformerSeq2Seq | MarianSeq2Seq:
    """The network of ``o.arch`` for these vocabularies; Marian from its stored config (``pretrained_info``) and,
    when given, its loaded pretrained model (``backbone``)."""
    if o.arch == "marian":
        if not isinstance(pretrained_info, Mapping):
            raise ConfigError("--model.arch marian needs its pretrained config (--model.pretrained)")
        # Imported here: only Marian needs transformers and the fine-tuning helpers (which import Lightning);
        # RNN and Transformer models load and translate without either.
        from tasks.translation.models.marian import marian_network

        return marian_network(
            dict(pretrained_info), backbone, tgt_vocab, o.trainable_blocks, max(o.max_len, o.max_source_tokens)
        )
    if o.arch not in NETWORKS:
        raise ConfigError(f"--model.arch must be 'rnn', 'transformer' or 'marian', got {o.arch!r}")
    return NETWORKS[o.arch](o, src_vocab, tgt_vocab)


class Seq2SeqNetwork(StepDecoder, Protocol):
    """What every translation network provides (RNN, Transformer, Marian; ``tasks.translation.models``)."""

    def __call__(
        self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, need_weights: bool = False, **kwargs: Any
    ) -> tuple[Tensor, Tensor | None]:
        """Teacher forcing: ``src (B, S)``, ``src_lengths (B,)``, ``tgt_in (B, T)`` -> logits ``(B, T, V)``, attention
        ``(B, T, S)`` or None."""
        ...

    def init_state(self, src: Tensor, src_lengths: Tensor) -> DecoderState:
        """Encode ``src`` and return the decoder's first state."""
        ...

    def step(
        self, tokens: Tensor, state: DecoderState, need_weights: bool = False
    ) -> tuple[Tensor, DecoderState, Tensor | None]:
        """One decoding step: ``tokens (N,)`` -> log-probabilities ``(N, V)``, the next state, attention ``(N, S)``."""
        ...
