"""What a speech checkpoint or model folder stores beyond the weights, and how it is read back.

The artifacts (``attn_suite.*`` in a checkpoint; ``units.json``, ``preprocessor_config.json`` and ``config.json``
in a model folder) are the character units, the log-mel front end, its statistics (for reading; the weights hold
them too), the chunking range and an ``hf:`` encoder's config. Everything read back is untrusted: each reader
validates its field and names the file in its error. Old weight names are mapped by
`tasks.speech.network.upgrade_state_dict`.

:class:`SpeechFiles` gathers these rules with the bounds and old names of the options and the model-folder files
(``core.io.checks.RebuildSpec``), and :class:`StoredOptions` types the options a file is rebuilt from:
``SpeechModule`` and the Lightning-free ``Transcriber.from_pretrained`` both read them, so a file is checked the
same way whichever loads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from core.attention import attention_options as attention_options_for  # the field has its name
from core.errors import CheckpointError, ConfigError
from core.io.checks import META_KEY
from core.io.hparams import BEAM, FRACTION, LAYERS, RATE, SIZE, STEPS
from core.io.pretrained import is_hf_spec
from core.text.tokenizers import BaseTokenizer, CharTokenizer, tokenizer_from_dict
from tasks.speech.features import FeatureConfig, FeatureStats
from tasks.speech.network import ENCODERS, upgrade_state_dict

__all__ = [
    "CHARSET",
    "FOLDER_FILES",
    "HPARAM_BOUNDS",
    "HPARAM_RENAMES",
    "TASK",
    "SpeechFiles",
    "StoredOptions",
    "check_encoder_options",
    "check_stats",
    "make_char_tokenizer",
    "read_chunk_seconds",
    "read_units",
    "speech_artifacts",
]

TASK = "speech"
#: inclusive bounds of the numeric options (sizes capped: a tampered file cannot make us allocate gigabytes)
HPARAM_BOUNDS: dict[str, tuple[float, float]] = {
    "encoder_dim": SIZE,
    "encoder_layers": LAYERS,
    "num_heads": LAYERS,
    "hidden_dim": SIZE,
    "embed_dim": SIZE,
    "ctc_weight": (0.0, 1.0),
    "dropout": FRACTION,
    "label_smoothing": FRACTION,
    "beam_size": BEAM,
    "length_penalty": (-10.0, 10.0),
    "plot_examples": (0, 1000),
    "max_chunk_seconds": (1.0, 600.0),
    "cpu_threads": (1, 1024),
    "trainable_blocks": (-1, 1000),
    "encoder_lr_scale": RATE,
    "unfreeze_after_steps": STEPS,
    "guided_attention_weight": (0.0, 1000.0),
    "guided_attention_sigma": (1e-3, 10.0),
    "guided_attention_steps": STEPS,
    "guided_attention_final_weight": (0.0, 1000.0),
    "encoder_conv_channels": SIZE,
}
#: names of format-1 checkpoints (before one vocabulary of names across the tasks)
HPARAM_RENAMES: dict[str, str] = {
    "encoder_hidden": "encoder_dim",
    "encoder_heads": "num_heads",
    "decoder_hidden": "hidden_dim",
}
#: artifacts kept in their own file of a model folder
FOLDER_FILES: dict[str, str] = {"units": "units.json", "feature_config": "preprocessor_config.json"}

# Every character `normalize_text` can output: the fixed character inventory (known before any data
# is read, so the model can be built by LightningCLI before `setup`).
CHARSET = "abcdefghijklmnopqrstuvwxyz' "


def make_char_tokenizer() -> CharTokenizer:
    """Character units over `CHARSET` (plus pad/bos/eos/unk), identical for every corpus."""
    return CharTokenizer.train([CHARSET])


def speech_artifacts(
    units: BaseTokenizer,
    feature_cfg: FeatureConfig,
    stats: FeatureStats,
    max_chunk_seconds: float | None,
    pretrained: dict[str, Any] | None,
) -> dict[str, Any]:
    """Units, feature front end and statistics, chunking range (and an ``hf:`` encoder's config, from which it is
    rebuilt offline), as plain data: the checkpoint alone can transcribe."""
    meta = {
        "units": units.to_dict(),
        "feature_config": feature_cfg.to_dict(),
        "feature_stats": {"mean": stats.mean.tolist(), "std": stats.std.tolist()},
        "max_chunk_seconds": max_chunk_seconds,
    }
    if pretrained is not None:
        meta["pretrained"] = pretrained
    return meta


def read_units(meta: Mapping[str, Any], source: str, vocab_size: int) -> BaseTokenizer | None:
    """The stored units (None when the file has none), which must number the model's output layer.

    Raises:
        CheckpointError: malformed units, or a number that does not fit (names ``source``).
    """
    if "units" not in meta:
        return None
    try:
        units = tokenizer_from_dict(meta["units"])
    except Exception as err:
        raise CheckpointError(
            f"{source}: malformed speech units in '{META_KEY}.units' ({type(err).__name__}: {err})"
        ) from None
    if units.vocab_size != vocab_size:
        raise CheckpointError(
            f"{source}: its speech units number {units.vocab_size}, the model's output layer {vocab_size}"
        )
    return units


def read_chunk_seconds(meta: Mapping[str, Any], source: str) -> float | None:
    """The stored chunking range in seconds (None when the file has none).

    Raises:
        CheckpointError: not a number in [1, 600] (names ``source``).
    """
    chunk = meta.get("max_chunk_seconds")
    if chunk is None:
        return None
    if isinstance(chunk, bool) or not isinstance(chunk, (int, float)) or not 1.0 <= chunk <= 600.0:
        raise CheckpointError(f"{source}: max_chunk_seconds = {chunk!r}, expected seconds in [1, 600]")
    return float(chunk)


def check_stats(stats: FeatureStats, source: str) -> None:
    """Feature statistics must be finite, with positive spreads (they divide every feature).

    Raises:
        CheckpointError: they are not (names ``source``).
    """
    mean, std = stats.mean, stats.std
    if not (bool(torch.isfinite(mean).all()) and bool(torch.isfinite(std).all()) and bool((std > 0).all())):
        raise CheckpointError(
            f"{source}: feature statistics are not finite or have a zero/negative std "
            f"(model.stats.mean/model.stats.std); the file was modified or its training data was broken"
        )


@dataclass(frozen=True)
class StoredOptions:
    """The options of ``SpeechModule`` a speech network and its decoding are rebuilt from, typed as its constructor
    (so a file's hyper-parameters are validated alike) and checked as it checks them; their meaning is documented
    there. Training's options (optimizer, losses, evaluation) are not among them: inference does not read them.

    ``attention="none"`` drops the options written for another mechanism, as the module records them.

    Raises:
        ConfigError: ``ctc_weight`` outside [0, 1] or an unknown encoder (the module's messages).
    """

    encoder: str = "lstm"
    encoder_dim: int = 160
    encoder_layers: int = 2
    num_heads: int = 4
    hidden_dim: int = 192
    embed_dim: int = 48
    attention: str = "location"
    attention_options: dict[str, int | float | str | bool | None] | None = None
    ctc_weight: float = 0.3
    dropout: float = 0.1
    spec_augment: bool = True
    length_penalty: float = 1.0
    max_chunk_seconds: float | None = None
    trainable_blocks: int = -1
    unfreeze_after_steps: int | None = None
    pretrained_config: dict[str, Any] | None = None
    joint_ctc_decoding: bool = False
    encoder_conv_channels: int = 32

    def __post_init__(self) -> None:
        check_encoder_options(self.encoder, self.ctc_weight)
        if self.attention == "none":
            normalised = attention_options_for("none", self.attention_options, self.hidden_dim) or None
            object.__setattr__(self, "attention_options", normalised)


def check_encoder_options(encoder: str, ctc_weight: float) -> None:
    """The checks of ``SpeechModule``'s constructor on the CTC weight and the encoder.

    Raises:
        ConfigError: ``ctc_weight`` outside [0, 1], or an encoder that is neither built in nor ``hf:``.
    """
    if not 0.0 <= ctc_weight <= 1.0:
        raise ConfigError(f"model.ctc_weight must be in [0, 1], got {ctc_weight}")
    if not is_hf_spec(encoder) and encoder not in ENCODERS:
        raise ConfigError(
            f"model.encoder={encoder!r}: expected one of {', '.join(ENCODERS)} or "
            f"hf:<hub-id-or-folder> (a pretrained wav2vec2 / HuBERT / WavLM / Whisper)"
        )


class SpeechFiles:
    """What reading a speech checkpoint or model folder needs (``core.io.checks.RebuildSpec``): written by
    ``SpeechModule``, whose class attributes and upgrades are these."""

    TASK: ClassVar[str] = TASK
    ARCHITECTURE: ClassVar[str] = "SpeechModule"  # the ``architecture`` of its model folders' config.json
    HPARAM_BOUNDS: ClassVar[Mapping[str, tuple[float, float]]] = HPARAM_BOUNDS
    HPARAM_RENAMES: ClassVar[Mapping[str, str]] = HPARAM_RENAMES
    FOLDER_FILES: ClassVar[Mapping[str, str]] = FOLDER_FILES
    FOLDER_RAW_FILES: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def hparam_bounds(cls) -> dict[str, tuple[float, float]]:
        return dict(HPARAM_BOUNDS)

    @classmethod
    def upgrade_hparams(cls, hparams: dict[str, Any], version: int) -> dict[str, Any]:
        return hparams

    @classmethod
    def upgrade_state_dict(cls, state: dict[str, Any], version: int) -> dict[str, Any]:
        """Format-1 names, and the front end that sat on the module itself before the core module (``model.``)."""
        return upgrade_state_dict(state, version)

    @classmethod
    def hparams_from_metadata(cls, meta: Mapping[str, Any], source: str) -> dict[str, Any]:
        """An ``hf:`` encoder is rebuilt from the config stored with it: loading never downloads it."""
        return {"pretrained_config": meta["pretrained"]} if isinstance(meta.get("pretrained"), dict) else {}
