"""The words a model saw in training, so that it can say which words of an input it has never seen.

A subword model never fails on a new word: it splits it into pieces and answers with confidence. Asked
"my brother is reading a book", a model that never saw "reading" still writes a Spanish verb, and nothing
tells the user that this word is a guess. A careful toolkit says so (Moses and JoeyNMT mark unknown words).
:class:`KnownWords` is the training side's vocabulary of *words* (not subwords), stored with the model as
plain data; ``unknown(text)`` lists the words of a text that are not in it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Any

from core.errors import CheckpointError

__all__ = ["MAX_KNOWN_WORDS", "KnownWords", "words_of"]

#: Most words kept (the most frequent first): enough for any corpus this suite trains on (Tatoeba's English
#: side has ~20k), small enough to keep a model folder light.
MAX_KNOWN_WORDS = 200_000
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")  # letters, with inner apostrophes ("don't"); no digits


def words_of(text: str) -> list[str]:
    """The words of ``text``, NFC-normalised and lower-cased, in order (numbers and punctuation are not words)."""
    return _WORD.findall(unicodedata.normalize("NFC", text).lower())


class KnownWords:
    """A set of words seen in training; ``unknown(text)`` names the others.

    Args:
        words: the known words (normalised as :func:`words_of` does).
    """

    def __init__(self, words: Iterable[str]) -> None:
        self.words = frozenset(words)

    @classmethod
    def from_texts(cls, texts: Iterable[str], limit: int = MAX_KNOWN_WORDS) -> KnownWords:
        """The words of ``texts`` (the training sources), the ``limit`` most frequent if there are more."""
        from collections import Counter

        counts = Counter(w for t in texts for w in words_of(t))
        return cls(w for w, _ in counts.most_common(limit))

    def unknown(self, text: str) -> list[str]:
        """Words of ``text`` never seen in training, each once, in order of appearance."""
        seen: dict[str, None] = {}
        for w in words_of(text):
            if w not in self.words:
                seen.setdefault(w)
        return list(seen)

    def __len__(self) -> int:
        return len(self.words)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a checkpoint or a model folder (``known_words.json``)."""
        return {"type": "known_words", "words": sorted(self.words)}

    @classmethod
    def from_dict(cls, value: Any, source: str) -> KnownWords:
        """Inverse of :meth:`to_dict`, validated (it comes from a file).

        Raises:
            CheckpointError: not a list of at most :data:`MAX_KNOWN_WORDS` short strings (names ``source``).
        """
        words = value.get("words") if isinstance(value, dict) and value.get("type") == "known_words" else None
        if not isinstance(words, list) or len(words) > MAX_KNOWN_WORDS:
            raise CheckpointError(
                f"{source}: known words must be {{'type': 'known_words', 'words': [...]}} with at most "
                f"{MAX_KNOWN_WORDS} words"
            )
        if not all(isinstance(w, str) and 0 < len(w) <= 100 for w in words):
            raise CheckpointError(f"{source}: known words must be non-empty strings of at most 100 characters")
        return cls(words)
