"""Character, word and subword tokenizers with checkpoint-safe serialisation.

All tokenizers share the special ids ``pad=0, bos=1, eos=2, unk=3``, NFC-normalise their input (so
"é" typed as one code point or as "e" + combining accent maps to the same ids), never crash on unseen
symbols (they map to ``unk_id``), and serialise to dicts of plain ``str``/``int``/``list`` so they can
live inside a checkpoint loaded with ``torch.load(weights_only=True)``.

``encode`` adds no BOS/EOS; ``decode`` drops PAD/BOS/EOS and renders UNK as ``"<unk>"``.

A subword tokenizer's JSON (``tokenizer_src.json`` in a model folder, or inside a checkpoint) comes from
whoever made the file, like the weights. It is checked against what :meth:`SubwordTokenizer.train` writes
before the Rust ``tokenizers`` library sees it (:func:`check_subword_json`): a regex pre-tokenizer or
normaliser (``Split``, ``Replace``) can backtrack for minutes or make the library panic, so any component
this suite does not write is refused with a ``CheckpointError``. One text to encode is at most
:data:`MAX_ENCODE_CHARS` characters, and a panic inside the library (``pyo3_runtime.PanicException``, a
``BaseException`` that ``except Exception`` lets through) becomes a ``UserError``.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, TypeVar

from core.errors import CheckpointError, UserError
from core.io.jsonio import loads_untrusted

__all__ = [
    "MAX_ENCODE_CHARS",
    "SPECIAL_TOKENS",
    "SUBWORD_COMPONENTS",
    "BaseTokenizer",
    "CharTokenizer",
    "SubwordTokenizer",
    "WordTokenizer",
    "check_subword_json",
    "tokenizer_from_dict",
]

T = TypeVar("T")

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


#: Longest text (in characters) a subword tokenizer encodes at once: about 40 times a long sentence. A
#: line longer than this is not a sentence (split it first); the bound keeps one request's cost small.
MAX_ENCODE_CHARS = 10_000

#: The HF ``tokenizers`` component types a subword tokenizer of this suite may hold, per field, and
#: nothing else: exactly what ``SubwordTokenizer.train`` and ``tasks.translation.tokenization.train_subword``
#: write (an NFC normaliser; a Metaspace pre-tokenizer, optionally in a Sequence with Punctuation; a BPE
#: or Unigram model; a Metaspace decoder; no post-processor). No regex component (``Split``,
#: ``Replace``) is allowed: the suite writes none, and a crafted pattern backtracks for minutes or
#: panics the library. ``Sequence`` is accepted where each of its members is allowed.
SUBWORD_COMPONENTS: dict[str, frozenset[str]] = {
    "normalizer": frozenset({"NFC"}),
    "pre_tokenizer": frozenset({"Metaspace", "Punctuation"}),
    "model": frozenset({"BPE", "Unigram"}),
    "decoder": frozenset({"Metaspace"}),
    "post_processor": frozenset(),
}
_SEQUENCE_KEYS = {"normalizer": "normalizers", "pre_tokenizer": "pretokenizers", "decoder": "decoders"}
#: Regex patterns, per component type, this suite writes (none): a ``Split``/``Replace`` is refused.
SUBWORD_PATTERNS: dict[str, frozenset[str]] = {"Split": frozenset(), "Replace": frozenset()}
_REFUSED = "not a tokenizer this suite writes (made elsewhere or modified); it is refused"


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_component(value: Any, field: str, path: str, what: str) -> None:
    """One component (and the members of a ``Sequence``) against :data:`SUBWORD_COMPONENTS`."""
    allowed = SUBWORD_COMPONENTS[field]
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if item is None and where == path and field != "model":
            continue
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise CheckpointError(f"{what}: {where} must be an object with a 'type', got {_short(item)} — {_REFUSED}")
        kind = item["type"]
        seq_key = _SEQUENCE_KEYS.get(field)
        if kind == "Sequence" and seq_key is not None:
            members = item.get(seq_key)
            if not isinstance(members, list):
                raise CheckpointError(f"{what}: {where}.{seq_key} must be a list, got {_short(members)} — {_REFUSED}")
            stack.extend((m, f"{where}.{seq_key}[{i}]") for i, m in enumerate(members))
            continue
        pattern = item.get("pattern")
        if kind in SUBWORD_PATTERNS:  # a regex component: its exact pattern must be one this suite writes
            text = pattern.get("Regex", pattern.get("String")) if isinstance(pattern, dict) else pattern
            known = SUBWORD_PATTERNS[kind]
            if kind in allowed and text in known:
                continue
            writes = f"only the patterns {', '.join(map(repr, sorted(known)))}" if known else f"no {kind} pattern"
            raise CheckpointError(
                f"{what}: {where} is a {kind!r} with the regex pattern {_short(text)}; this suite writes "
                f"{writes} — {_REFUSED}"
            )
        if kind not in allowed:
            expected = f"one of {', '.join(sorted(allowed))}" if allowed else "null"
            if field in _SEQUENCE_KEYS and allowed:
                expected += " (or a Sequence of them)"
            raise CheckpointError(f"{what}: {where} is of type {kind!r}; expected {expected} — {_REFUSED}")


def check_subword_json(data: Any, what: str = "subword tokenizer") -> None:
    """Refuse a HF ``tokenizer.json`` (parsed) holding anything :meth:`SubwordTokenizer.train` does not write.

    Checks every component field against :data:`SUBWORD_COMPONENTS` (inside ``Sequence`` too) and that
    ``truncation`` and ``padding`` are null (a padding length in the file would make every encode that long).

    Args:
        data: the parsed JSON.
        what: the file or field, for messages.

    Raises:
        core.errors.CheckpointError: names ``what``, the field and what was expected.
    """
    if not isinstance(data, dict):
        raise CheckpointError(f"{what}: a subword tokenizer must be a JSON object, got {type(data).__name__}")
    for field in SUBWORD_COMPONENTS:
        if field == "model" and "model" not in data:
            raise CheckpointError(f"{what}: no 'model' (expected a BPE or Unigram model) — {_REFUSED}")
        _check_component(data.get(field), field, field, what)
    for field in ("truncation", "padding"):
        if data.get(field) is not None:
            raise CheckpointError(f"{what}: {field} is {_short(data[field])}; expected null — {_REFUSED}")
    if not isinstance(data.get("added_tokens", []), list):
        raise CheckpointError(f"{what}: added_tokens must be a list")


def _rust_call(what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call into the Rust ``tokenizers`` library; a panic there becomes a ``UserError`` naming ``what``.

    A Rust panic surfaces as ``pyo3_runtime.PanicException``, a ``BaseException``: ``except Exception``
    lets it through and it ends whatever called it (an app's request task, a CLI run). Only such
    non-``Exception`` errors are translated; ``KeyboardInterrupt``/``SystemExit``/``GeneratorExit`` and
    ordinary exceptions pass unchanged.
    """
    try:
        return fn(*args, **kwargs)
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except Exception:
        raise
    except BaseException as err:  # pyo3_runtime.PanicException
        first = (str(err).strip().splitlines() or [""])[0]
        raise UserError(
            f"{what}: the tokenizers library failed ({type(err).__name__}: {first[:200]}); the tokenizer "
            f"file is damaged or not one this suite writes"
        ) from None


class SubwordTokenizer(BaseTokenizer):
    """BPE or unigram subwords via HF ``tokenizers`` (NFC normaliser, Metaspace pre-tokenizer/decoder).

    Metaspace turns spaces into ``"▁"`` before splitting and back on decode, so ``decode(encode(x))``
    restores the spacing of ``x`` (for symbols seen in training). Only the components this suite
    writes are accepted (:func:`check_subword_json`); one text is at most :data:`MAX_ENCODE_CHARS`.
    """

    kind: ClassVar[str] = "subword"
    what: str = "subword tokenizer"  # where it came from, for messages

    def __init__(self, hf_tokenizer: Any, what: str = "subword tokenizer") -> None:
        """Check and wrap a HF tokenizer.

        Args:
            hf_tokenizer: a ``tokenizers.Tokenizer`` whose first ids are ``SPECIAL_TOKENS``.
            what: where it came from, for messages.

        Raises:
            core.errors.CheckpointError: it holds a component this suite does not write.
            ValueError: the special tokens are not at ids 0..3.
        """
        try:
            text = _rust_call(what, hf_tokenizer.to_str)
        except UserError:
            raise
        except Exception as err:  # e.g. a custom (Python) component cannot be serialised
            raise CheckpointError(f"{what}: cannot be serialised ({err}) — {_REFUSED}") from None
        # what the library built (not only what a file said): a component it read some other way is still seen
        check_subword_json(loads_untrusted(text, what), what)
        for i, s in enumerate(SPECIAL_TOKENS):
            if hf_tokenizer.token_to_id(s) != i:
                raise ValueError(f"subword tokenizer must map {s!r} to id {i}")
        self.hf = hf_tokenizer
        self.what = what

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int = 8000, model: str = "bpe", min_freq: int = 2
    ) -> SubwordTokenizer:
        """Train a ``"bpe"`` or ``"unigram"`` model of at most ``vocab_size`` entries on ``texts``."""
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

        unk = SPECIAL_TOKENS[UNK_ID]
        trainer: trainers.Trainer
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
        """Subword ids of ``text`` (no BOS/EOS).

        Raises:
            core.errors.UserError: ``text`` is longer than :data:`MAX_ENCODE_CHARS`, or the library failed.
        """
        if isinstance(text, str) and len(text) > MAX_ENCODE_CHARS:
            raise UserError(
                f"the text {_short(text, 40)} has {len(text):,} characters; the subword tokenizer encodes at most "
                f"MAX_ENCODE_CHARS={MAX_ENCODE_CHARS:,} characters per text (split it into sentences)"
            )
        return list(_rust_call(self.what, self.hf.encode, text, add_special_tokens=False).ids)

    def decode(self, ids: Iterable[int]) -> str:
        # keep <unk> visible instead of silently dropping it (skip_special_tokens would drop it)
        n = self.vocab_size
        ids = [i if 0 <= i < n else self.unk_id for i in self._strip(ids)]  # out-of-range -> unk
        return _rust_call(self.what, self.hf.decode, ids, skip_special_tokens=False)

    def id_to_token(self, i: int) -> str:
        tok = _rust_call(self.what, self.hf.id_to_token, int(i))
        return tok if tok is not None else SPECIAL_TOKENS[UNK_ID]

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "json": self.hf.to_str()}


_REGISTRY: dict[str, type[BaseTokenizer]] = {"char": CharTokenizer, "word": WordTokenizer, "subword": SubwordTokenizer}


def tokenizer_from_dict(d: dict[str, Any], what: str = "subword tokenizer") -> BaseTokenizer:
    """Rebuild a tokenizer from ``to_dict()`` output (e.g. read back from a checkpoint or a model folder).

    A subword tokenizer's JSON is parsed with ``core.io.jsonio``'s limits and checked with
    :func:`check_subword_json` before the ``tokenizers`` library reads it.

    Args:
        d: the dict.
        what: its file or field (e.g. ``"model folder m: tokenizer_src.json"``), for messages.

    Raises:
        ValueError: unknown ``type`` or malformed dict.
        core.errors.UserError: a subword JSON that is not acceptable JSON (too deep, huge numbers);
            ``CheckpointError`` for one holding a component this suite does not write.
    """
    kind = d.get("type") if isinstance(d, dict) else None
    if kind == "char":
        return CharTokenizer(d["vocab"])
    if kind == "word":
        return WordTokenizer(d["vocab"], lowercase=bool(d.get("lowercase", 0)))
    if kind == "subword":
        from tokenizers import Tokenizer

        text = d["json"]
        if not isinstance(text, str):
            raise ValueError(f"{what}: 'json' must be a string, got {type(text).__name__}")
        check_subword_json(loads_untrusted(text, what), what)
        return SubwordTokenizer(_rust_call(what, Tokenizer.from_str, text), what)
    raise ValueError(f"unknown tokenizer dict type {kind!r}; expected one of {sorted(_REGISTRY)}")
