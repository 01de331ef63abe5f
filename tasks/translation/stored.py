"""What a translation checkpoint or model folder stores beyond the weights: the source and target tokenizers
(plain dicts, or a Marian model's own tokenizer files), a Marian model's config and the training sources' words
(written by :func:`write_artifacts`, read back and validated by :func:`read_artifacts`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.errors import CheckpointError, ConfigError, UserError
from core.io.checks import META_KEY
from core.text.known_words import KnownWords
from core.text.tokenizers import BaseTokenizer, tokenizer_from_dict
from tasks.translation.marian_tokenizer import files_from_metadata, files_to_metadata, marian_tokenizers

__all__ = ["StoredArtifacts", "read_artifacts", "tokenizers_from_metadata", "write_artifacts"]


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


@dataclass
class StoredArtifacts:
    """What :func:`read_artifacts` found: tokenizers (None when they equal the current ones), the training
    sources' words and a Marian model's tokenizer files (each None when absent)."""

    tokenizers: tuple[BaseTokenizer, BaseTokenizer] | None
    known_words: KnownWords | None
    hf_tokenizer_files: dict[str, bytes] | None


def write_artifacts(
    src: BaseTokenizer,
    tgt: BaseTokenizer,
    known_words: KnownWords | None,
    pretrained_info: dict[str, Any] | None,
    hf_tokenizer_files: dict[str, bytes] | None,
) -> dict[str, Any]:
    """The tokenizers (plain dicts), so the checkpoint alone can translate; a Marian model's config (rebuilt from
    it, offline) and tokenizer files; the training words."""
    meta: dict[str, Any] = {"tokenizers": {"src": src.to_dict(), "tgt": tgt.to_dict()}}
    if pretrained_info is not None:
        meta["pretrained"] = pretrained_info
    if hf_tokenizer_files is not None:
        meta["hf_tokenizer"] = files_to_metadata(hf_tokenizer_files)
    if known_words is not None:
        meta["known_words"] = known_words.to_dict()
    return meta


def read_artifacts(
    meta: Mapping[str, Any], source: str, src: BaseTokenizer | None, tgt: BaseTokenizer | None
) -> StoredArtifacts:
    """The artifacts of :func:`write_artifacts` read back from ``source`` (untrusted: checked, errors name it).

    Args:
        meta: the metadata.
        source: the checkpoint or folder, for messages.
        src: the current source tokenizer (the stored ones are not rebuilt when they equal the current ones).
        tgt: the current target tokenizer.
    """
    known = KnownWords.from_dict(meta["known_words"], source) if "known_words" in meta else None
    toks = meta.get("tokenizers")
    if (
        isinstance(toks, dict)
        and src is not None
        and tgt is not None
        and src.to_dict() == toks.get("src")
        and tgt.to_dict() == toks.get("tgt")
    ):
        return StoredArtifacts(None, known, None)
    pair = tokenizers_from_metadata(meta, source)
    files = files_from_metadata(meta, source) if getattr(pair[0], "kind", None) == "marian" else None
    return StoredArtifacts(pair, known, files)
