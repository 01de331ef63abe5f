"""Character, word and subword tokenizers with checkpoint-safe serialisation.

All tokenizers share the special ids ``pad=0, bos=1, eos=2, unk=3``, NFC-normalise their input (so
"é" typed as one code point or as "e" + combining accent maps to the same ids), never crash on unseen
symbols (they map to ``unk_id``), and serialise to dicts of plain ``str``/``int``/``list`` so they can
live inside a checkpoint loaded with ``torch.load(weights_only=True)``.

``encode`` adds no BOS/EOS; ``decode`` drops PAD/BOS/EOS and renders UNK as ``"<unk>"``.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

__all__ = [
    "SPECIAL_TOKENS",
    "BaseTokenizer",
    "CharTokenizer",
    "SubwordTokenizer",
    "WordTokenizer",
    "tokenizer_from_dict",
]

SPECIAL_TOKENS: tuple[str, str, str, str] = ("<pad>", "<s>", "</s>", "<unk>")
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


class BaseTokenizer:
    """Common interface; subclasses implement ``encode``, ``decode``, ``id_to_token`` and ``to_dict``."""

    pad_id: int = PAD_ID
    bos_id: int = BOS_ID
    eos_id: int = EOS_ID
    unk_id: int = UNK_ID
    kind: ClassVar[str] = "base"

    @property
    def vocab_size(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str) -> list[int]:  # pragma: no cover - overridden
        raise NotImplementedError

    def decode(self, ids: Iterable[int]) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def id_to_token(self, i: int) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def tokens(self, text: str) -> list[str]:
        """Token strings of ``encode(text)``, one per id (plot labels)."""
        return [self.id_to_token(i) for i in self.encode(text)]

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def _strip(self, ids: Iterable[int]) -> list[int]:
        """Drop PAD/BOS/EOS (decoders return text, not control symbols); accepts tensors too."""
        drop = {self.pad_id, self.bos_id, self.eos_id}
        return [int(i) for i in ids if int(i) not in drop]


class _VocabTokenizer(BaseTokenizer):
    """Shared machinery of the table-based (char / word) tokenizers."""

    def __init__(self, vocab: Sequence[str]) -> None:
        """Args: vocab: full id->token table; must start with ``SPECIAL_TOKENS``."""
        if tuple(vocab[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"vocab must start with {SPECIAL_TOKENS}, got {list(vocab[:4])}")
        self.itos: list[str] = list(vocab)
        self.stoi: dict[str, int] = {s: i for i, s in enumerate(self.itos)}

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def id_to_token(self, i: int) -> str:
        i = int(i)
        return self.itos[i] if 0 <= i < len(self.itos) else SPECIAL_TOKENS[UNK_ID]

    def token_to_id(self, token: str) -> int:
        return self.stoi.get(token, self.unk_id)

    @staticmethod
    def _build_vocab(counts: Counter[str], min_freq: int, max_size: int | None) -> list[str]:
        # frequency-descending, ties broken alphabetically so training is deterministic
        items = sorted(
            (c for c in counts.items() if c[1] >= min_freq and c[0] not in SPECIAL_TOKENS),
            key=lambda kv: (-kv[1], kv[0]),
        )
        if max_size is not None:
            items = items[: max(0, max_size - len(SPECIAL_TOKENS))]
        return list(SPECIAL_TOKENS) + [tok for tok, _ in items]


class CharTokenizer(_VocabTokenizer):
    """One id per Unicode code point (after NFC)."""

    kind: ClassVar[str] = "char"

    @classmethod
    def train(cls, texts: Iterable[str], min_freq: int = 1, max_size: int | None = None) -> CharTokenizer:
        """Build the vocabulary from ``texts`` (characters seen at least ``min_freq`` times)."""
        counts: Counter[str] = Counter()
        for t in texts:
            counts.update(_nfc(t))
        return cls(cls._build_vocab(counts, min_freq, max_size))

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(c, self.unk_id) for c in _nfc(text)]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.id_to_token(i) for i in self._strip(ids))

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "vocab": list(self.itos)}


# Words (letters/digits, keeping inner apostrophes/hyphens such as "don't", "bien-estar") or single
# punctuation symbols. \w is Unicode-aware, so "niño", "Él", CJK runs count as words. A symbol keeps
# its emoji modifiers (skin tones, variation selectors) and ZWJ-joined parts, so "👋🏽" is one token.
_EMOJI_MOD = "[\U0001f3fb-\U0001f3ff\ufe0e\ufe0f]*"
_WORD_RE = re.compile(rf"\w+(?:['’\-]\w+)*|[^\w\s]{_EMOJI_MOD}(?:\u200d[^\w\s]{_EMOJI_MOD})*", re.UNICODE)
_NO_SPACE_BEFORE = set(".,!?;:%)]}»”…")
_NO_SPACE_AFTER = set("¿¡([{«“")


class WordTokenizer(_VocabTokenizer):
    """Word-level tokenizer: regex word/punctuation split, frequency threshold, heuristic detokenizer.

    ``decode`` joins words with single spaces except before closing punctuation and after opening
    punctuation (``¿``, ``¡``, brackets), which restores ordinary Spanish/English text exactly; exotic
    spacing is normalised.
    """

    kind: ClassVar[str] = "word"

    def __init__(self, vocab: Sequence[str], lowercase: bool = False) -> None:
        super().__init__(vocab)
        self.lowercase = lowercase

    def split(self, text: str) -> list[str]:
        """Split (normalised) ``text`` into word / punctuation strings."""
        text = _nfc(text)
        return _WORD_RE.findall(text.lower() if self.lowercase else text)

    @classmethod
    def train(
        cls, texts: Iterable[str], min_freq: int = 1, max_size: int | None = None, lowercase: bool = False
    ) -> WordTokenizer:
        """Build the vocabulary from words seen at least ``min_freq`` times (rarer ones -> unk)."""
        splitter = cls(list(SPECIAL_TOKENS), lowercase=lowercase)
        counts: Counter[str] = Counter()
        for t in texts:
            counts.update(splitter.split(t))
        return cls(cls._build_vocab(counts, min_freq, max_size), lowercase=lowercase)

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(w, self.unk_id) for w in self.split(text)]

    def decode(self, ids: Iterable[int]) -> str:
        out: list[str] = []
        for w in (self.id_to_token(i) for i in self._strip(ids)):
            if out and not (w in _NO_SPACE_BEFORE or out[-1] in _NO_SPACE_AFTER):
                out.append(" ")
            out.append(w)
        return "".join(out)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "vocab": list(self.itos), "lowercase": int(self.lowercase)}


class SubwordTokenizer(BaseTokenizer):
    """BPE or unigram subwords via HF ``tokenizers`` (NFC normaliser, Metaspace pre-tokenizer/decoder).

    Metaspace turns spaces into ``"▁"`` before splitting and back on decode, so ``decode(encode(x))``
    restores the spacing of ``x`` (for symbols seen in training).
    """

    kind: ClassVar[str] = "subword"

    def __init__(self, hf_tokenizer: Any) -> None:
        """Args: hf_tokenizer: a ``tokenizers.Tokenizer`` whose first ids are ``SPECIAL_TOKENS``."""
        for i, s in enumerate(SPECIAL_TOKENS):
            if hf_tokenizer.token_to_id(s) != i:
                raise ValueError(f"subword tokenizer must map {s!r} to id {i}")
        self.hf = hf_tokenizer

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int = 8000, model: str = "bpe", min_freq: int = 2
    ) -> SubwordTokenizer:
        """Train a ``"bpe"`` or ``"unigram"`` model of at most ``vocab_size`` entries on ``texts``."""
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

        unk = SPECIAL_TOKENS[UNK_ID]
        if model == "bpe":
            tok = Tokenizer(models.BPE(unk_token=unk))
            trainer = trainers.BpeTrainer(
                vocab_size=vocab_size, min_frequency=min_freq, special_tokens=list(SPECIAL_TOKENS), show_progress=False
            )
        elif model == "unigram":
            tok = Tokenizer(models.Unigram())
            trainer = trainers.UnigramTrainer(
                vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), unk_token=unk, show_progress=False
            )
        else:
            raise ValueError(f"model must be 'bpe' or 'unigram', got {model!r}")
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
        tok.train_from_iterator(list(texts), trainer=trainer)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return int(self.hf.get_vocab_size())

    def encode(self, text: str) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Iterable[int]) -> str:
        # keep <unk> visible instead of silently dropping it (skip_special_tokens would drop it)
        n = self.vocab_size
        ids = [i if 0 <= i < n else self.unk_id for i in self._strip(ids)]  # out-of-range -> unk
        return self.hf.decode(ids, skip_special_tokens=False)

    def id_to_token(self, i: int) -> str:
        tok = self.hf.id_to_token(int(i))
        return tok if tok is not None else SPECIAL_TOKENS[UNK_ID]

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "json": self.hf.to_str()}


_REGISTRY: dict[str, type[BaseTokenizer]] = {"char": CharTokenizer, "word": WordTokenizer, "subword": SubwordTokenizer}


def tokenizer_from_dict(d: dict[str, Any]) -> BaseTokenizer:
    """Rebuild a tokenizer from ``to_dict()`` output (e.g. read back from a checkpoint).

    Raises:
        ValueError: unknown ``type`` or malformed dict.
    """
    kind = d.get("type") if isinstance(d, dict) else None
    if kind == "char":
        return CharTokenizer(d["vocab"])
    if kind == "word":
        return WordTokenizer(d["vocab"], lowercase=bool(d.get("lowercase", 0)))
    if kind == "subword":
        from tokenizers import Tokenizer

        return SubwordTokenizer(Tokenizer.from_str(d["json"]))
    raise ValueError(f"unknown tokenizer dict type {kind!r}; expected one of {sorted(_REGISTRY)}")
