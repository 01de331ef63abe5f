"""What a captioning checkpoint or model folder stores beyond the weights, and how earlier files are read.

The artifacts (``checkpoint["attn_suite"]``): the word vocabulary, the image preprocessing (size, normalisation,
feature grid) and an ``hf:`` backbone's config (:func:`artifacts`); read back, they decide those options
(:func:`hparams_from_metadata`) and a ``--ckpt_path`` restore checks its vocabulary against the data module's
(:func:`check_vocab`). Format-1 option names (:func:`upgrade_hparams`) and weight names, and the weight names of
the module before the core module and of the Transformer decoder's layers before they formed a
``core.layers.TransformerDecoder`` (:func:`upgrade_state_dict`), map to today's.

:class:`CaptioningFiles` gathers these rules with the bounds and old names of the options and the model-folder
files (``core.io.checks.RebuildSpec``), and :class:`StoredOptions` types the options a file is rebuilt from:
``CaptioningModule`` and the Lightning-free ``Captioner.from_pretrained`` both read them, so a file is checked the
same way whichever loads it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from core.errors import CheckpointError
from core.io.checks import META_KEY
from core.io.hparams import BEAM, FRACTION, LAYERS, LENGTH, RATE, SIZE, STEPS
from tasks.captioning.decoder import upgrade_decoder_v1
from tasks.captioning.images import IMAGENET_MEAN, IMAGENET_STD
from tasks.captioning.vocab import CaptionVocab

__all__ = [
    "FOLDER_FILES",
    "HPARAM_BOUNDS",
    "HPARAM_RENAMES",
    "TASK",
    "CaptioningFiles",
    "StoredOptions",
    "artifacts",
    "check_vocab",
    "hparams_from_metadata",
    "upgrade_hparams",
    "upgrade_state_dict",
]

TASK = "captioning"
#: inclusive bounds of the numeric options (sizes capped: a tampered file cannot make us allocate gigabytes)
HPARAM_BOUNDS: dict[str, tuple[float, float]] = {
    "trainable_blocks": (-1, 1000),
    "unfreeze_after_steps": STEPS,
    "grid_size": (1, 64),
    "encoder_dim": SIZE,
    "embed_dim": SIZE,
    "hidden_dim": SIZE,
    "decoder_layers": LAYERS,
    "num_heads": LAYERS,
    "ffn_dim": SIZE,
    "alpha_reg": (0.0, 1000.0),
    "dropout": FRACTION,
    "max_len": LENGTH,
    "encoder_lr_scale": RATE,
    "label_smoothing": FRACTION,
    "beam_size": BEAM,
    "plot_examples": (0, 1000),
    "image_size": (16, 1024),
    "mean": (-10.0, 10.0),
    "std": (1e-3, 10.0),
}
#: names of format-1 checkpoints
HPARAM_RENAMES: dict[str, str] = {
    "feat_dim": "encoder_dim",
    "val_beam_size": "beam_size",
    "plot_images": "plot_examples",
}
#: artifacts kept in their own file of a model folder
FOLDER_FILES: dict[str, str] = {"vocab": "vocab.json"}

#: the network's parts; before the core module they sat on the module itself (no ``model.`` prefix)
_NETWORK_PARTS = ("encoder.", "decoder.")
#: the Transformer caption decoder's layers and final norm, before they sat in its ``stack`` (core.layers)
_STACK_PARTS = ("model.decoder.layers.", "model.decoder.norm.")


def artifacts(
    vocab: CaptionVocab,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    grid_size: int,
    pretrained: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The vocabulary and the image preprocessing (and an ``hf:`` backbone's config), so that the checkpoint
    alone can caption."""
    meta: dict[str, Any] = {
        "vocab": vocab.to_dict(),
        "image_size": int(image_size),
        "mean": [float(x) for x in mean],
        "std": [float(x) for x in std],
        "grid_size": int(grid_size),
    }
    if pretrained is not None:  # the hf: backbone's config: rebuilt from it, offline
        meta["pretrained"] = dict(pretrained)
    return meta


def hparams_from_metadata(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Vocabulary and preprocessing from the metadata; ``pretrained`` off: the weights are in the file,
    so loading never downloads or reads backbone weights."""
    out: dict[str, Any] = {k: meta[k] for k in ("vocab", "image_size", "grid_size", "mean", "std") if k in meta}
    out["pretrained"] = None
    if isinstance(meta.get("pretrained"), dict):  # an hf: backbone: rebuilt from its stored config
        out["pretrained_config"] = meta["pretrained"]
    return out


def check_vocab(meta: Mapping[str, Any], vocab: CaptionVocab, source: str) -> None:
    """``--ckpt_path`` restores: warn when the data module built another vocabulary of the same size than the
    checkpoint's (the weights fit, the captions may not); refuse one of another size.

    Raises:
        CheckpointError: the stored vocabulary is invalid or of another size (names ``source``).
    """
    stored = meta.get("vocab")
    if stored is None:
        return
    try:
        ckpt_vocab = CaptionVocab.from_dict(stored)
    except ValueError as err:
        raise CheckpointError(f"{source}: invalid vocabulary in '{META_KEY}.vocab': {err}") from None
    if ckpt_vocab.to_dict() != vocab.to_dict():
        if len(ckpt_vocab) == len(vocab):
            # a training restore's warning (the lean loader reads the vocabulary it checks): Lightning only here
            from lightning.pytorch.utilities import rank_zero_warn

            rank_zero_warn(
                f"{source} was trained with another vocabulary of the same size than the data "
                "module built now; check data.min_freq / data.max_vocab / the corpus"
            )
        else:
            raise CheckpointError(
                f"{source} has a vocabulary of {len(ckpt_vocab)} words, the data module "
                f"{len(vocab)}: train and evaluate with the same data settings"
            )


def upgrade_hparams(hparams: dict[str, Any], version: int) -> dict[str, Any]:
    """Format 1 named the RNN decoder ``lstm`` and spelled its attention options as ``attention_dim`` /
    ``num_heads``, and the Transformer's width and depth as ``d_model`` / ``num_layers``."""
    if version >= 2:
        return hparams
    hp = dict(hparams)
    attention_dim, heads = hp.pop("attention_dim", None), hp.get("num_heads")
    d_model, layers = hp.pop("d_model", None), hp.pop("num_layers", None)
    if hp.get("decoder", "lstm") == "lstm":
        hp.update(decoder="rnn", rnn_type="lstm", decoder_layers=1)
        if hp.get("attention", "additive") in ("additive", "location") and attention_dim is not None:
            hp["attention_options"] = {"hidden_dim": attention_dim}
        elif hp.get("attention") == "multihead" and heads is not None:
            hp["attention_options"] = {"num_heads": heads}
    else:
        if d_model is not None:
            hp["hidden_dim"] = d_model
        if layers is not None:
            hp["decoder_layers"] = layers
    return hp


def upgrade_state_dict(state: dict[str, Any], version: int) -> dict[str, Any]:
    """Format-1 decoder weight names to today's, then the module's own ``encoder.*`` / ``decoder.*`` (every file
    written before the core module, of any format) to the network's ``model.encoder.*`` / ``model.decoder.*``, then
    the Transformer decoder's layers and final norm to the ``core.layers.TransformerDecoder`` stack they now form
    (``model.decoder.layers.*`` / ``model.decoder.norm.*`` -> ``model.decoder.stack.*``)."""
    if version < 2:
        state = upgrade_decoder_v1(state)
    state = {f"model.{k}" if k.startswith(_NETWORK_PARTS) else k: v for k, v in state.items()}
    if "model.decoder.feat_pos" not in state:  # an RNN decoder: nothing moved
        return state
    return {_stack_name(k): v for k, v in state.items()}


def _stack_name(key: str) -> str:
    """A Transformer caption decoder's weight name written before its layers and final norm became the
    ``core.layers.TransformerDecoder`` stack (``stack.*``), as today; any other name as it is."""
    for old in _STACK_PARTS:
        if key.startswith(old):
            return "model.decoder.stack." + key[len("model.decoder.") :]
    return key


@dataclass(frozen=True)
class StoredOptions:
    """The options of ``CaptioningModule`` a captioning network and its preprocessing are rebuilt from, typed as
    its constructor (so a file's hyper-parameters are validated alike); their meaning is documented there.
    Training's options (optimizer, loss, evaluation) are not among them: inference does not read them."""

    vocab: dict[str, Any] | None = None
    encoder: str = "tiny"
    pretrained: str | None = None
    trainable_blocks: int = -1
    unfreeze_after_steps: int | None = None
    pretrained_config: dict[str, Any] | None = None
    grid_size: int = 6
    encoder_dim: int = 256
    decoder: Literal["rnn", "transformer"] = "rnn"
    rnn_type: Literal["gru", "lstm"] = "lstm"
    attention: str = "additive"
    attention_options: dict[str, int | float | str | bool | None] | None = None
    embed_dim: int = 128
    hidden_dim: int = 256
    decoder_layers: int = 1
    num_heads: int = 4
    ffn_dim: int = 1024
    gate: bool = True
    dropout: float = 0.3
    max_len: int = 30
    image_size: int = 96
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


class CaptioningFiles:
    """What reading a captioning checkpoint or model folder needs (``core.io.checks.RebuildSpec``): written by
    ``CaptioningModule``, whose class attributes and upgrades are these."""

    TASK: ClassVar[str] = TASK
    ARCHITECTURE: ClassVar[str] = "CaptioningModule"  # the ``architecture`` of its model folders' config.json
    HPARAM_BOUNDS: ClassVar[Mapping[str, tuple[float, float]]] = HPARAM_BOUNDS
    HPARAM_RENAMES: ClassVar[Mapping[str, str]] = HPARAM_RENAMES
    FOLDER_FILES: ClassVar[Mapping[str, str]] = FOLDER_FILES
    FOLDER_RAW_FILES: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def hparam_bounds(cls) -> dict[str, tuple[float, float]]:
        return dict(HPARAM_BOUNDS)

    @classmethod
    def upgrade_hparams(cls, hparams: dict[str, Any], version: int) -> dict[str, Any]:
        return upgrade_hparams(hparams, version)

    @classmethod
    def upgrade_state_dict(cls, state: dict[str, Any], version: int) -> dict[str, Any]:
        return upgrade_state_dict(state, version)

    @classmethod
    def hparams_from_metadata(cls, meta: Mapping[str, Any], source: str) -> dict[str, Any]:
        return hparams_from_metadata(meta)
