"""Transcript normalisation and the small English grammar of the synthesised corpus.

`normalize_text` is the single normalisation used for training targets, for reference
transcripts at scoring time and for everything `transcribe` prints, so CER/WER are never
inflated by casing or punctuation differences between corpora.
"""

from __future__ import annotations

import random
import re
import unicodedata

__all__ = ["DIGIT_WORDS", "normalize_text", "sample_corpus_texts", "sample_digits", "sample_sentence"]

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

# Characters kept after normalisation: letters, apostrophe (LibriSpeech uses it: "don't") and space.
_KEEP = re.compile(r"[^a-z' ]+")
_SPACES = re.compile(r"\s+")
_DIGIT = re.compile(r"[0-9]")


def normalize_text(text: str) -> str:
    """Normalise a transcript: lower case, ASCII letters, apostrophes, single spaces.

    Accents are stripped (NFKD), digits are spelled out one by one ("42" -> "four two"), every
    other character (punctuation, symbols) becomes a space. The same function is applied to
    training targets and to references when scoring.

    Args:
        text: any Unicode transcript.

    Returns:
        The normalised transcript (may be empty).
    """
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = text.lower().replace("\u2019", "'").replace("`", "'")
    text = _DIGIT.sub(lambda m: f" {DIGIT_WORDS[int(m.group())]} ", text)
    text = _KEEP.sub(" ", text)
    # Apostrophes used as quotes ('hello') are not part of a word: drop them at word edges.
    words = [w.strip("'") for w in _SPACES.split(text)]
    return " ".join(w for w in words if w)


# A deliberately small vocabulary (about 70 words): the embedded corpus must be learnable to a
# low CER within minutes on a laptop CPU, while still exercising every letter of the alphabet.
_DET = ["the", "a", "my", "your", "every", "this"]
_ADJ = ["big", "small", "red", "green", "quick", "lazy", "happy", "old", "new", "yellow", "brown", "quiet"]
_NOUN = ["cat", "dog", "bird", "fox", "horse", "box", "house", "tree", "car", "book", "jacket", "zebra"]
_NAME = ["alice", "bob", "maria", "victor", "james", "olivia"]
_VERB_T = ["sees", "likes", "finds", "wants", "moves", "takes", "watches", "jumps over"]
_VERB_I = ["sleeps", "runs", "waits", "sings", "works", "laughs"]
_ADV = ["today", "quickly", "slowly", "again", "now", "at night"]
_IMP = ["please open", "please close", "bring me", "show me", "give me"]


def _np(rng: random.Random) -> str:
    """A noun phrase: determiner, optional adjective, noun, or a name."""
    if rng.random() < 0.2:
        return rng.choice(_NAME)
    words = [rng.choice(_DET)]
    if rng.random() < 0.6:
        words.append(rng.choice(_ADJ))
    words.append(rng.choice(_NOUN))
    return " ".join(words)


def sample_sentence(rng: random.Random) -> str:
    """Sample one sentence of the grammar (3-8 words, already normalised)."""
    kind = rng.random()
    if kind < 0.45:
        s = f"{_np(rng)} {rng.choice(_VERB_T)} {_np(rng)}"
    elif kind < 0.7:
        s = f"{_np(rng)} {rng.choice(_VERB_I)}"
    else:
        s = f"{rng.choice(_IMP)} {_np(rng)}"
    if rng.random() < 0.35:
        s += f" {rng.choice(_ADV)}"
    # "a" before a vowel-initial adjective/noun would read oddly; eSpeak does not care, but keep it English.
    return re.sub(r"\ba (?=[aeiou])", "an ", s)


def sample_digits(rng: random.Random, min_len: int = 3, max_len: int = 7) -> str:
    """Sample a spoken digit string such as "four two nine one"."""
    n = rng.randint(min_len, max_len)
    return " ".join(rng.choice(DIGIT_WORDS) for _ in range(n))


def sample_corpus_texts(rng: random.Random, n: int, digit_fraction: float = 0.25) -> list[str]:
    """Sample `n` transcripts: grammar sentences mixed with digit strings.

    Args:
        rng: seeded random generator (the corpus is deterministic per seed).
        n: number of transcripts.
        digit_fraction: share of digit strings.

    Returns:
        `n` normalised transcripts.
    """
    return [sample_digits(rng) if rng.random() < digit_fraction else sample_sentence(rng) for _ in range(n)]
