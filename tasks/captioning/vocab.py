"""Word vocabulary for captions, on top of `core.text.tokenizers.WordTokenizer`.

Captions are PTB-normalised first (`tasks.captioning.text.normalize_caption`), so a caption is
already a space-separated token list; splitting on spaces (rather than WordTokenizer's regex,
which would cut ``n't`` into ``n ' t``) keeps the vocabulary's tokens identical to the tokens
the metrics score. The table itself is a plain `WordTokenizer`, serialised with ``to_dict()``
into the checkpoint and rebuilt with `core.text.tokenizers.tokenizer_from_dict`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from core.text.tokenizers import SPECIAL_TOKENS, WordTokenizer, tokenizer_from_dict


class CaptionVocab:
    """Whitespace word vocabulary with the shared special ids (pad 0, bos 1, eos 2, unk 3).

    Args:
        tokenizer: the id <-> word table.
    """

    def __init__(self, tokenizer: WordTokenizer) -> None:
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_id
        self.bos_id = tokenizer.bos_id
        self.eos_id = tokenizer.eos_id
        self.unk_id = tokenizer.unk_id
        self._specials = {self.pad_id, self.bos_id, self.eos_id}

    @classmethod
    def build(cls, captions: Iterable[str], min_freq: int = 1, max_size: int | None = None) -> CaptionVocab:
        """Vocabulary of the words seen at least ``min_freq`` times (rarer words -> unk).

        Args:
            captions: normalised captions (space-separated tokens).
            min_freq: frequency threshold.
            max_size: cap on the table size, specials included.
        """
        counts: Counter[str] = Counter()
        for c in captions:
            counts.update(c.split())
        # Same ordering rule as core (frequency desc, then alphabetical): deterministic.
        items = sorted(
            (kv for kv in counts.items() if kv[1] >= min_freq and kv[0] not in SPECIAL_TOKENS),
            key=lambda kv: (-kv[1], kv[0]),
        )
        if max_size is not None:
            items = items[: max(0, max_size - len(SPECIAL_TOKENS))]
        return cls(WordTokenizer(list(SPECIAL_TOKENS) + [w for w, _ in items]))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CaptionVocab:
        """Rebuild from `to_dict` output (e.g. read from a checkpoint).

        Raises:
            ValueError: ``d`` is not a word-vocabulary dict (the message says what is wrong); callers
                turn it into a `core.errors.CheckpointError` / `ConfigError` naming the source.
        """
        if not isinstance(d, dict):
            raise ValueError(f"expected a word-vocabulary dict, got {type(d).__name__}")
        if d.get("type") != "word":
            raise ValueError(
                f"captioning expects a word vocabulary (type 'word'), got tokenizer type {d.get('type')!r}"
            )
        words = d.get("vocab")
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise ValueError("its 'vocab' entry must be a list of words")
        if list(words[: len(SPECIAL_TOKENS)]) != list(SPECIAL_TOKENS):
            raise ValueError(
                f"its 'vocab' must start with the special tokens {list(SPECIAL_TOKENS)}, "
                f"got {words[: len(SPECIAL_TOKENS)]}"
            )
        if len(set(words)) != len(words):
            raise ValueError("its 'vocab' lists a word twice")
        try:
            tok = tokenizer_from_dict(d)
        except (KeyError, TypeError, ValueError) as err:  # anything else the core reader rejects
            raise ValueError(f"malformed word vocabulary ({type(err).__name__}: {err})") from None
        if not isinstance(tok, WordTokenizer):  # pragma: no cover - type checked above
            raise ValueError(f"captioning expects a word vocabulary, got tokenizer type {d.get('type')!r}")
        return cls(tok)

    def to_dict(self) -> dict[str, Any]:
        """Checkpoint-safe dict (plain str/int/list)."""
        return self.tokenizer.to_dict()

    def __len__(self) -> int:
        return self.tokenizer.vocab_size

    def encode(self, caption: str) -> list[int]:
        """Ids of a normalised caption, without BOS/EOS; unknown words -> unk."""
        return [self.tokenizer.token_to_id(w) for w in caption.split()]

    def decode(self, ids: Sequence[int]) -> str:
        """Space-joined words, PAD/BOS/EOS dropped (unk shown as ``<unk>``)."""
        return " ".join(self.tokenizer.id_to_token(int(i)) for i in ids if int(i) not in self._specials)

    def words(self, ids: Sequence[int]) -> list[str]:
        """Word per id (for plot labels), PAD/BOS/EOS dropped."""
        return [self.tokenizer.id_to_token(int(i)) for i in ids if int(i) not in self._specials]
