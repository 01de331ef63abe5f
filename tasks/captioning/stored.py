"""What a captioning checkpoint or model folder stores and restores beyond the weights: the word vocabulary, the
image preprocessing (size, normalisation, feature grid) and an ``hf:`` backbone's config (written by
`CaptioningStoredMixin.task_metadata`, read back and validated by the other hooks of `core.io.task_io`), and the
mapping of format-1 hyper-parameters and weight names to today's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning.pytorch.utilities import rank_zero_warn

from core.errors import CheckpointError
from core.io.checkpoint import META_KEY
from tasks.captioning.decoder import upgrade_decoder_v1
from tasks.captioning.vocab import CaptionVocab

__all__ = ["CaptioningStoredMixin"]


class CaptioningStoredMixin:
    """The `core.io.task_io.TaskCheckpointMixin` hooks of :class:`tasks.captioning.module.CaptioningModule` (mix in
    before ``TaskCheckpointMixin``; needs ``vocab``, ``pretrained_info`` and the ``image_size`` / ``mean`` /
    ``std`` / ``grid_size`` hyper-parameters)."""

    @classmethod
    def upgrade_hparams(cls, hparams: dict[str, Any], version: int) -> dict[str, Any]:
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

    @classmethod
    def upgrade_state_dict(cls, state: dict[str, Any], version: int) -> dict[str, Any]:
        return upgrade_decoder_v1(state) if version < 2 else state

    def task_metadata(self) -> dict[str, Any]:
        """The vocabulary and the image preprocessing, so the checkpoint alone can caption."""
        hp = self.hparams
        meta = {
            "vocab": self.vocab.to_dict(),
            "image_size": int(hp.image_size),
            "mean": [float(x) for x in hp.mean],
            "std": [float(x) for x in hp.std],
            "grid_size": int(hp.grid_size),
        }
        if self.pretrained_info is not None:  # the hf: backbone's config: rebuilt from it, offline
            meta["pretrained"] = self.pretrained_info
        return meta

    @classmethod
    def hparams_from_metadata(cls, meta: Mapping[str, Any], source: str) -> dict[str, Any]:
        """Vocabulary and preprocessing from the metadata; ``pretrained`` off: the weights are in the file,
        so loading never downloads or reads backbone weights."""
        out: dict[str, Any] = {k: meta[k] for k in ("vocab", "image_size", "grid_size", "mean", "std") if k in meta}
        out["pretrained"] = None
        if isinstance(meta.get("pretrained"), dict):  # an hf: backbone: rebuilt from its stored config
            out["pretrained_config"] = meta["pretrained"]
        return out

    def restore_metadata(self, meta: Mapping[str, Any], source: str) -> None:
        """``--ckpt_path`` restores: warn when the data module built another vocabulary of the same size
        (the weights fit, the captions may not)."""
        vocab = meta.get("vocab")
        if vocab is None:
            return
        try:
            ckpt_vocab = CaptionVocab.from_dict(vocab)
        except ValueError as err:
            raise CheckpointError(f"{source}: invalid vocabulary in '{META_KEY}.vocab': {err}") from None
        if ckpt_vocab.to_dict() != self.vocab.to_dict():
            if len(ckpt_vocab) == len(self.vocab):
                rank_zero_warn(
                    f"{source} was trained with another vocabulary of the same size than the data "
                    "module built now; check data.min_freq / data.max_vocab / the corpus"
                )
            else:
                raise CheckpointError(
                    f"{source} has a vocabulary of {len(ckpt_vocab)} words, the data module "
                    f"{len(self.vocab)}: train and evaluate with the same data settings"
                )
