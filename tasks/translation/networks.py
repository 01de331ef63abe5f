"""The translation networks and what a translation file holds, without Lightning or the training stack.

:class:`TranslationOptions` (the network and decoding options of ``TranslationModule``), the builders picked by
``--model.arch`` (:data:`NETWORKS`, :func:`build_network`) and :class:`TranslationFiles`: the task's name, the
bounds and old names of its options, its model-folder files and the upgrades of old weights. The training
module (``tasks.translation.module``) and the lean loader (``Translator.from_pretrained``) both read them, so a
file is checked the same way whichever loads it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from torch import nn

from core.attention import attention_options as attention_options_for  # the field has its name
from core.errors import ConfigError
from core.io.hparams import BEAM, FRACTION, LAYERS, LENGTH, SIZE
from tasks.translation.marian_tokenizer import FILES as MARIAN_FILES
from tasks.translation.models import RNNSeq2Seq, TransformerSeq2Seq
from tasks.translation.models.rnn import RNNType, upgrade_state_dict_v1
from tasks.translation.models.transformer import upgrade_state_dict_v2

if TYPE_CHECKING:
    from tasks.translation.models.marian import MarianSeq2Seq

__all__ = [
    "FOLDER_FILES",
    "FOLDER_RAW_FILES",
    "HPARAM_BOUNDS",
    "HPARAM_RENAMES",
    "NETWORKS",
    "TASK",
    "TranslationFiles",
    "TranslationOptions",
    "build_network",
    "rnn_network",
    "transformer_network",
]

TASK = "translation"

#: inclusive bounds of the numeric options (sizes capped: a tampered file cannot make us allocate gigabytes)
HPARAM_BOUNDS: dict[str, tuple[float, float]] = {
    "embed_dim": SIZE,
    "hidden_dim": SIZE,
    "encoder_layers": LAYERS,
    "decoder_layers": LAYERS,
    "num_heads": LAYERS,
    "ffn_dim": SIZE,
    "dropout": FRACTION,
    "label_smoothing": FRACTION,
    "beam_size": BEAM,
    "length_penalty": (-10.0, 10.0),
    "max_len": LENGTH,
    "max_source_tokens": LENGTH,
    "val_bleu_sentences": (0, 10**9),
    "plot_examples": (0, 1000),
    "trainable_blocks": (-1, 1000),
}
#: names of format-1 checkpoints (before one vocabulary of names across the tasks)
HPARAM_RENAMES: dict[str, str] = {
    "emb_dim": "embed_dim",
    "enc_layers": "encoder_layers",
    "dec_layers": "decoder_layers",
    "ff_dim": "ffn_dim",
    "val_beam": "beam_size",
    "num_plot_sentences": "plot_examples",
    "max_decode_len": "max_len",
}
#: artifacts (dotted metadata names) kept in their own file of a model folder
FOLDER_FILES: dict[str, str] = {
    "tokenizers.src": "tokenizer_src.json",
    "tokenizers.tgt": "tokenizer_tgt.json",
    "known_words": "known_words.json",
}
#: a Marian model's own tokenizer files, byte for byte (`tasks.translation.marian_tokenizer`)
FOLDER_RAW_FILES: dict[str, str] = {f"hf_tokenizer.{name}": name for name in MARIAN_FILES}


@dataclass(frozen=True)
class TranslationOptions:
    """The network and decoding options of ``TranslationModule`` (see its docstring); typed as its constructor,
    so the lean loader validates a file's hyper-parameters against these fields.

    ``attention="none"`` drops the options written for another mechanism (naming them), so what is recorded is
    what was built.
    """

    arch: Literal["rnn", "transformer", "marian"] = "rnn"
    embed_dim: int = 256
    hidden_dim: int = 256
    encoder_layers: int = 1
    decoder_layers: int = 1
    rnn_type: RNNType = "gru"
    attention: str = "additive"
    attention_options: dict[str, int | float | str | bool | None] | None = None
    num_heads: int = 4
    ffn_dim: int = 1024
    dropout: float = 0.1
    label_smoothing: float = 0.1
    tie_embeddings: bool = False
    beam_size: int = 5
    length_penalty: float = 1.0
    max_len: int = 100
    max_source_tokens: int = 100
    val_bleu_sentences: int | None = None
    plot_examples: int = 3
    trainable_blocks: int = -1

    def __post_init__(self) -> None:
        if self.beam_size < 1:
            raise ConfigError(f"--model.beam_size must be >= 1, got {self.beam_size}")
        if self.attention == "none":
            normalised = attention_options_for("none", self.attention_options, self.hidden_dim) or None
            object.__setattr__(self, "attention_options", normalised)


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


class TranslationFiles:
    """What reading a translation checkpoint or model folder needs (``core.io.rebuild.RebuildSpec``): written by
    ``TranslationModule``, whose class attributes are these."""

    TASK: ClassVar[str] = TASK
    ARCHITECTURE: ClassVar[str] = "TranslationModule"  # the ``architecture`` of its model folders' config.json
    HPARAM_BOUNDS: ClassVar[Mapping[str, tuple[float, float]]] = HPARAM_BOUNDS
    HPARAM_RENAMES: ClassVar[Mapping[str, str]] = HPARAM_RENAMES
    FOLDER_FILES: ClassVar[Mapping[str, str]] = FOLDER_FILES
    FOLDER_RAW_FILES: ClassVar[Mapping[str, str]] = FOLDER_RAW_FILES

    @classmethod
    def hparam_bounds(cls) -> dict[str, tuple[float, float]]:
        return dict(HPARAM_BOUNDS)

    @classmethod
    def upgrade_hparams(cls, hparams: dict[str, Any], version: int) -> dict[str, Any]:
        return hparams

    @classmethod
    def upgrade_state_dict(cls, state: dict[str, Any], version: int) -> dict[str, Any]:
        """Format 1 kept the RNN decoder's parts directly under the seq2seq model; before the Transformer stacks
        moved to ``core.layers``, its layers and norms sat directly under the network."""
        if version < 2 and any(k.startswith("model.cells.") for k in state):
            state = upgrade_state_dict_v1(state)
        if any(k.startswith(("model.enc_layers.", "model.dec_layers.")) for k in state):
            state = upgrade_state_dict_v2(state)
        return state

    @classmethod
    def hparams_from_metadata(cls, meta: Mapping[str, Any], source: str) -> dict[str, Any]:
        """A Marian model is rebuilt from the config stored with it: loading never downloads it."""
        return {"pretrained_config": meta["pretrained"]} if isinstance(meta.get("pretrained"), dict) else {}
