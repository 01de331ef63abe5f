"""Tests for core.text.tokenizers: unicode round trips, unk handling, checkpoint-safe serialisation."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
import torch

from core.text.tokenizers import CharTokenizer, SubwordTokenizer, WordTokenizer, tokenizer_from_dict

SPANISH = "¿Dónde está el niño? Él comió pingüino."
UNICODE = "Hola 👋🏽 世界, naïve café — ¡sí!"
CORPUS = [
    SPANISH,
    UNICODE,
    "El niño come pan.",
    "¿Dónde está la niña?",
    "The cat sat on the mat.",
    "Él comió pingüino con pan y café.",
    "世界 你好 👋🏽",
] * 5


def _tokenizers() -> list:
    return [
        CharTokenizer.train(CORPUS),
        WordTokenizer.train(CORPUS),
        SubwordTokenizer.train(CORPUS, vocab_size=120, model="bpe", min_freq=1),
        SubwordTokenizer.train(CORPUS, vocab_size=80, model="unigram"),
    ]


@pytest.fixture(scope="module")
def toks() -> list:
    return _tokenizers()


def test_special_ids(toks: list) -> None:
    for tok in toks:
        assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)
        assert [tok.id_to_token(i) for i in range(4)] == ["<pad>", "<s>", "</s>", "<unk>"]
        assert tok.vocab_size > 4


@pytest.mark.parametrize("text", [SPANISH, UNICODE])
def test_round_trip(toks: list, text: str) -> None:
    for tok in toks:
        ids = tok.encode(text)
        assert tok.unk_id not in ids, type(tok).__name__
        assert tok.decode(ids) == text, type(tok).__name__
        # BOS/EOS/PAD around the ids are dropped by decode
        assert tok.decode([tok.bos_id, *ids, tok.eos_id, tok.pad_id]) == text
        assert len(tok.tokens(text)) == len(ids)


def test_nfd_input_normalised(toks: list) -> None:
    nfd = unicodedata.normalize("NFD", SPANISH)
    assert nfd != SPANISH
    for tok in toks:
        assert tok.encode(nfd) == tok.encode(SPANISH)


def test_unknown_symbols_map_to_unk(toks: list) -> None:
    for tok in toks:
        ids = tok.encode("Zebra ∮ ☃ qqq")
        assert tok.unk_id in ids, type(tok).__name__
        assert all(0 <= i < tok.vocab_size for i in ids)
        tok.decode(ids)  # must not crash
        tok.decode([10**6, -1])  # nor out-of-range ids
    char = CharTokenizer.train(["ab"])
    assert char.encode("a☃") == [char.token_to_id("a"), char.unk_id]


def test_word_min_freq() -> None:
    tok = WordTokenizer.train(["a a a b", "a c c"], min_freq=2)
    assert tok.encode("a c b") == [tok.token_to_id("a"), tok.token_to_id("c"), tok.unk_id]
    assert tok.tokens("a b") == ["a", "<unk>"]
    assert WordTokenizer.train(["Hi there"], lowercase=True).encode("HI") != [3]


def test_serialisation_weights_only(toks: list, tmp_path: Path) -> None:
    path = tmp_path / "tok.pt"
    torch.save({"tokenizers": [t.to_dict() for t in toks]}, path)
    loaded = torch.load(path, weights_only=True)["tokenizers"]
    for tok, d in zip(toks, loaded):
        again = tokenizer_from_dict(d)
        assert type(again) is type(tok)
        assert again.vocab_size == tok.vocab_size
        assert again.encode(SPANISH) == tok.encode(SPANISH)
        assert again.decode(again.encode(UNICODE)) == UNICODE


def test_bad_dict() -> None:
    with pytest.raises(ValueError, match="unknown tokenizer"):
        tokenizer_from_dict({"type": "nope"})
