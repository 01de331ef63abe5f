"""What a translation file holds, as plain data (no PyTorch): the options of the network and decoding, and the
rules for reading a checkpoint, model folder or engine export of this task.

:class:`TranslationOptions` (the network and decoding options of ``TranslationModule``) and
:class:`TranslationFiles`: the task's name, the bounds and old names of its options, its model-folder files and the
upgrades of old weights' names. The training module, the lean loader (``Translator.from_pretrained``) and the
engine exports all read them, so a file is checked the same way whichever loads it; the networks they describe
are built in ``tasks.translation.networks``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal

from core.errors import ConfigError
from core.io.checks import checked_call
from core.io.hparams import BEAM, FRACTION, LAYERS, LENGTH, SIZE
from tasks.translation.marian_tokenizer import FILES as MARIAN_FILES

__all__ = [
    "FOLDER_FILES",
    "FOLDER_RAW_FILES",
    "HPARAM_BOUNDS",
    "HPARAM_RENAMES",
    "TASK",
    "RNNType",
    "TranslationFiles",
    "TranslationOptions",
    "checked_options",
    "upgrade_state_dict_v1",
    "upgrade_state_dict_v2",
]

RNNType = Literal["gru", "lstm"]

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
            # Imported here: the registry imports every mechanism (PyTorch), and only an RNN without attention
            # needs it; a CTranslate2 export's options are read without PyTorch.
            from core.attention.registry import attention_options

            normalised = attention_options("none", self.attention_options, self.hidden_dim) or None
            object.__setattr__(self, "attention_options", normalised)


def checked_options(hp: dict[str, Any], overrides: dict[str, Any], source: str) -> TranslationOptions:
    """A file's validated options with a caller's overrides (``Translator.from_pretrained(..., max_len=50)``).

    Raises:
        ConfigError: an override that is not an option.
        CheckpointError: options that do not build (names ``source``).
    """
    unknown = sorted(set(overrides) - {f.name for f in fields(TranslationOptions)})
    if unknown:
        raise ConfigError(f"Translator.from_pretrained: no option {', '.join(unknown)} (TranslationOptions)")
    return checked_call(lambda: TranslationOptions(**{**hp, **overrides}), source, "translation options")


def upgrade_state_dict_v1(state: dict[str, Any], prefix: str = "model.") -> dict[str, Any]:
    """Weights of a format-1 checkpoint (decoder parts directly under the seq2seq model) under today's names."""
    moved = ("tgt_embedding", "cells", "bridge", "key_proj", "attention", "combine", "pre_out", "out")
    renames = {"tgt_embedding": "embedding"}
    out: dict[str, Any] = {}
    for key, value in state.items():
        head, _, rest = key[len(prefix) :].partition(".") if key.startswith(prefix) else ("", "", "")
        if head in moved:
            key = f"{prefix}decoder.{renames.get(head, head)}.{rest}"
        out[key] = value
    return out


def upgrade_state_dict_v2(state: dict[str, Any], prefix: str = "model.") -> dict[str, Any]:
    """Weight names of Transformers written before the stacks moved to ``core.layers`` (``enc_layers``,
    ``enc_norm``, ``dec_layers``, ``dec_norm`` directly under the network) mapped to today's."""
    names = {
        "enc_layers.": "encoder.layers.",
        "enc_norm.": "encoder.norm.",
        "dec_layers.": "decoder.layers.",
        "dec_norm.": "decoder.norm.",
    }
    out = {}
    for key, value in state.items():
        for old, new in names.items():
            if key.startswith(prefix + old):
                key = prefix + new + key[len(prefix + old) :]
                break
        out[key] = value
    return out


class TranslationFiles:
    """What reading a translation checkpoint or model folder needs (``core.io.checks.RebuildSpec``): written by
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
