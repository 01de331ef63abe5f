"""What a translation checkpoint or model folder stores and restores beyond the weights: the source and target
tokenizers (plain dicts, or a Marian model's own tokenizer files) and a Marian model's config (written by
`TranslationStoredMixin.task_metadata`, read back and validated by `tokenizers_from_metadata` and the other hooks
of `core.io.task_io`), and the mapping of format-1 weight names to today's modules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning.pytorch.utilities import rank_zero_warn

from core.errors import CheckpointError, ConfigError, UserError
from core.io.checkpoint import META_KEY
from core.text.known_words import KnownWords
from core.text.tokenizers import BaseTokenizer, tokenizer_from_dict
from tasks.translation.marian_tokenizer import files_from_metadata, files_to_metadata, marian_tokenizers
from tasks.translation.models.rnn import upgrade_state_dict_v1

__all__ = ["TranslationStoredMixin", "tokenizers_from_metadata"]


def tokenizers_from_metadata(meta: Mapping[str, Any], source: str) -> tuple[BaseTokenizer, BaseTokenizer]:
    """The ``(src, tgt)`` tokenizers stored in a checkpoint's ``attn_suite`` metadata.

    Args:
        meta: the metadata dict.
        source: the checkpoint or folder, for messages.

    Raises:
        core.errors.CheckpointError: the tokenizers are missing or cannot be rebuilt (names ``source``).
    """
    toks = meta.get("tokenizers")
    if not isinstance(toks, dict) or not all(isinstance(toks.get(k), dict) for k in ("src", "tgt")):
        raise CheckpointError(
            f"{source} has no tokenizers (expected '{META_KEY}' -> 'tokenizers' "
            f"-> 'src'/'tgt'); it was not written by this translation task or was modified"
        )
    if toks["src"].get("type") == "marian":  # a pretrained Marian model's own tokenizer, files stored once
        try:
            return marian_tokenizers(files_from_metadata(meta, source), source)
        except ConfigError as err:
            raise CheckpointError(str(err)) from None
    out = []
    for side in ("src", "tgt"):
        try:
            out.append(tokenizer_from_dict(toks[side], what=f"{source}: the {side!r} tokenizer"))
        except UserError as err:  # already names the source and the field
            raise CheckpointError(str(err)) from None
        # ValueError/KeyError/TypeError for malformed dicts; the HF `tokenizers` library raises a plain
        # Exception for an unparsable JSON string.
        except Exception as err:
            raise CheckpointError(
                f"{source}: the stored {side!r} tokenizer is malformed ({type(err).__name__}: {err})"
            ) from None
    return out[0], out[1]


class TranslationStoredMixin:
    """The `core.io.task_io.TaskCheckpointMixin` hooks of :class:`tasks.translation.module.TranslationModule` (mix in
    before ``TaskCheckpointMixin``; needs ``src_tokenizer``, ``tgt_tokenizer``, ``pretrained_info``,
    ``hf_tokenizer_files``, ``known_words``, ``set_tokenizers`` and ``build_model``)."""

    @classmethod
    def upgrade_state_dict(cls, state: dict[str, Any], version: int) -> dict[str, Any]:
        """Format 1 kept the RNN decoder's parts directly under the seq2seq model."""
        if version < 2 and any(k.startswith("model.cells.") for k in state):
            return upgrade_state_dict_v1(state)
        return state

    def task_metadata(self) -> dict[str, Any]:
        """The tokenizers (plain dicts), so the checkpoint alone can translate."""
        assert self.src_tokenizer is not None and self.tgt_tokenizer is not None
        meta: dict[str, Any] = {
            "tokenizers": {"src": self.src_tokenizer.to_dict(), "tgt": self.tgt_tokenizer.to_dict()}
        }
        if self.pretrained_info is not None:  # marian: its config (rebuilt from it, offline) and tokenizer files
            meta["pretrained"] = self.pretrained_info
        if self.hf_tokenizer_files is not None:
            meta["hf_tokenizer"] = files_to_metadata(self.hf_tokenizer_files)
        if self.known_words is not None:
            meta["known_words"] = self.known_words.to_dict()
        return meta

    @classmethod
    def hparams_from_metadata(cls, meta: Mapping[str, Any], source: str) -> dict[str, Any]:
        """A Marian model is rebuilt from the config stored with it: loading never downloads it."""
        return {"pretrained_config": meta["pretrained"]} if isinstance(meta.get("pretrained"), dict) else {}

    def restore_metadata(self, meta: Mapping[str, Any], source: str) -> None:
        """Take the file's tokenizers and build the network for them.

        During ``--ckpt_path`` restores the checkpoint's tokenizers win over the ones the data module
        trained: the network is rebuilt for them and the data module re-tokenizes its data.
        """
        if "known_words" in meta:  # absent in models written before it, and in Marian fine-tunes
            self.known_words = KnownWords.from_dict(meta["known_words"], source)
        toks = meta.get("tokenizers")
        if (
            isinstance(toks, dict)
            and self.src_tokenizer is not None
            and self.tgt_tokenizer is not None
            and self.src_tokenizer.to_dict() == toks.get("src")
            and self.tgt_tokenizer.to_dict() == toks.get("tgt")
        ):
            return
        src, tgt = tokenizers_from_metadata(meta, source)
        if getattr(src, "kind", None) == "marian":
            self.hf_tokenizer_files = files_from_metadata(meta, source)
        had_data_tokenizers = self.src_tokenizer is not None
        self.set_tokenizers(src, tgt)
        self.model = None
        self.build_model()
        if self._trainer is None:
            return
        self.model.to(self.device)
        dm = self.trainer.datamodule
        if dm is not None and hasattr(dm, "set_tokenizers"):
            if had_data_tokenizers:
                rank_zero_warn("the checkpoint's tokenizers differ from the data module's; using the checkpoint's")
            dm.set_tokenizers(self.src_tokenizer, self.tgt_tokenizer)
            dm.datasets.clear()
            dm.setup(self.trainer.state.fn.value if self.trainer.state.fn else None)
