"""The subword tokenizers of the translation data and their cache: trained on the training split in
``prepare_data`` (rank 0 of each node) and written atomically as JSON keyed by a hash of the training data and
the tokenizer settings; ``setup`` on every rank reads that file (or trains in memory when ``prepare_data`` was
not run)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_info

from core.text.tokenizers import BaseTokenizer, tokenizer_from_dict
from tasks.translation.sources import Pair
from tasks.translation.tokenization import train_subword

__all__ = ["TokenizerCache", "default_cache_dir"]

#: Bump when the preprocessing changes so stale tokenizer caches are not reused.
_CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``$ATTN_SUITE_DATA_CACHE`` or ``~/.cache/attn-suite/translation``."""
    env = os.environ.get("ATTN_SUITE_DATA_CACHE")
    return Path(env).expanduser() if env else Path("~/.cache/attn-suite/translation").expanduser()


@dataclass(frozen=True)
class TokenizerCache:
    """Tokenizer training and caching for :class:`tasks.translation.data.TranslationDataModule`.

    Attributes:
        cache_dir: folder of the cache files (``tokenizers-<key>.json``).
        vocab_size: subword vocabulary size (per language, or total when ``joint_vocab``).
        tokenizer_model: ``bpe`` or ``unigram``.
        joint_vocab: one shared tokenizer for both languages.
        min_freq: minimum pair frequency for BPE merges.
        split_punctuation: split punctuation off words before subword training.
    """

    cache_dir: Path
    vocab_size: int
    tokenizer_model: str
    joint_vocab: bool
    min_freq: int
    split_punctuation: bool

    def key(self, train: list[Pair]) -> str:
        """A hash of the settings and the training pairs (the cache file's name)."""
        h = hashlib.sha256()
        h.update(
            json.dumps(
                [
                    _CACHE_VERSION,
                    self.vocab_size,
                    self.tokenizer_model,
                    self.joint_vocab,
                    self.min_freq,
                    self.split_punctuation,
                ]
            ).encode()
        )
        for s, t in train:
            h.update(s.encode())
            h.update(b"\t")
            h.update(t.encode())
            h.update(b"\n")
        return h.hexdigest()[:20]

    def path(self, train: list[Pair]) -> Path:
        """The cache file of the tokenizers of ``train``."""
        return self.cache_dir / f"tokenizers-{self.key(train)}.json"

    def train(self, train: list[Pair]) -> dict[str, Any]:
        """Train the tokenizers: ``{"src": dict, "tgt": dict, "joint": bool}``, the cache file's content."""
        src_texts = [s for s, _ in train]
        tgt_texts = [t for _, t in train]

        def subword(texts: list[str]) -> dict[str, Any]:
            return train_subword(
                texts,
                vocab_size=self.vocab_size,
                model=self.tokenizer_model,
                min_freq=self.min_freq,
                split_punctuation=self.split_punctuation,
            ).to_dict()

        if self.joint_vocab:
            joint = subword(src_texts + tgt_texts)
            return {"src": joint, "tgt": joint, "joint": True}
        return {"src": subword(src_texts), "tgt": subword(tgt_texts), "joint": False}

    def prepare(self, train: list[Pair]) -> None:
        """Train the tokenizers of ``train`` and write them to the cache, unless a cache file exists."""
        path = self.path(train)
        if path.exists():
            return
        toks = self.train(train)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Atomic write: another process (or a killed run) never sees a half-written cache file.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tok-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(toks, f)
        os.replace(tmp, path)
        rank_zero_info(f"tokenizers trained on {len(train)} pairs and cached at {path}")

    def load_or_train(self, train: list[Pair]) -> tuple[BaseTokenizer, BaseTokenizer]:
        """The source and target tokenizers of ``train``: read from the cache, or trained in memory when
        ``prepare`` was not run (plain Python use without a Trainer). With ``joint`` both are one object."""
        path = self.path(train)
        toks = json.loads(path.read_text(encoding="utf-8")) if path.exists() else self.train(train)
        src = tokenizer_from_dict(toks["src"])
        tgt = src if toks.get("joint") else tokenizer_from_dict(toks["tgt"])
        return src, tgt
