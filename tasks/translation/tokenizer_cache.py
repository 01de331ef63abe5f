"""The subword tokenizers of the translation data and their cache: trained on the training split in
``prepare_data`` (rank 0 of each node) and written atomically as JSON keyed by a hash of the training data and
the tokenizer settings; ``setup`` on every rank reads that file (or trains in memory when ``prepare_data`` was
not run)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_info

from core.text.tokenizers import tokenizer_from_dict
from tasks.translation.sources import Pair
from tasks.translation.tokenization import train_subword

__all__ = ["TokenizerCacheMixin", "default_cache_dir"]

#: Bump when the preprocessing changes so stale tokenizer caches are not reused.
_CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``$ATTN_SUITE_DATA_CACHE`` or ``~/.cache/attn-suite/translation``."""
    env = os.environ.get("ATTN_SUITE_DATA_CACHE")
    return Path(env).expanduser() if env else Path("~/.cache/attn-suite/translation").expanduser()


class TokenizerCacheMixin:
    """Tokenizer training and caching of :class:`tasks.translation.data.TranslationDataModule` (needs
    ``load_splits``, ``cache_dir``, the tokenizer settings ``vocab_size`` / ``tokenizer_model`` / ``joint_vocab`` /
    ``min_freq`` / ``split_punctuation``, and sets ``src_tokenizer`` / ``tgt_tokenizer``)."""

    def _cache_key(self, train: list[Pair]) -> str:
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

    def _cache_path(self, train: list[Pair]) -> Path:
        return self.cache_dir / f"tokenizers-{self._cache_key(train)}.json"

    def _train_tokenizers(self, train: list[Pair]) -> dict[str, dict]:
        src_texts = [s for s, _ in train]
        tgt_texts = [t for _, t in train]
        kw = {
            "vocab_size": self.vocab_size,
            "model": self.tokenizer_model,
            "min_freq": self.min_freq,
            "split_punctuation": self.split_punctuation,
        }
        if self.joint_vocab:
            tok = train_subword(src_texts + tgt_texts, **kw)  # type: ignore[arg-type]
            return {"src": tok.to_dict(), "tgt": tok.to_dict(), "joint": True}
        return {
            "src": train_subword(src_texts, **kw).to_dict(),  # type: ignore[arg-type]
            "tgt": train_subword(tgt_texts, **kw).to_dict(),
            "joint": False,
        }  # type: ignore[arg-type]

    def prepare_data(self) -> None:
        """Rank 0 of each node: train the tokenizers on the training split and cache them."""
        train = self.load_splits()["train"]
        path = self._cache_path(train)
        if path.exists():
            return
        toks = self._train_tokenizers(train)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Atomic write: another process (or a killed run) never sees a half-written cache file.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tok-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(toks, f)
        os.replace(tmp, path)
        rank_zero_info(f"tokenizers trained on {len(train)} pairs and cached at {path}")

    def _load_tokenizers(self) -> None:
        if self.src_tokenizer is not None:
            return
        train = self.load_splits()["train"]
        path = self._cache_path(train)
        if path.exists():
            toks = json.loads(path.read_text(encoding="utf-8"))
        else:
            # prepare_data was not run (plain Python use without a Trainer): train here, in memory.
            toks = self._train_tokenizers(train)
        self.src_tokenizer = tokenizer_from_dict(toks["src"])
        self.tgt_tokenizer = self.src_tokenizer if toks.get("joint") else tokenizer_from_dict(toks["tgt"])
