"""core.text.known_words: which words of an input a model never saw, stored with it and said by the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_models import BUILDERS, save_checkpoint

from core.errors import CheckpointError
from core.text.known_words import MAX_KNOWN_WORDS, KnownWords, words_of


def test_words_unknown_and_round_trip() -> None:
    assert words_of("My brother's reading 3 books, NOT él!") == ["my", "brother's", "reading", "books", "not", "él"]
    known = KnownWords.from_texts(["my brother is eating a book", "the red car"])
    assert known.unknown("My brother is reading a book. Reading!") == ["reading"]
    assert known.unknown("") == [] and len(known) == 9
    again = KnownWords.from_dict(known.to_dict(), "x")
    assert again.words == known.words
    assert len(KnownWords.from_texts(["a b b c c c"], limit=2)) == 2  # the most frequent are kept


@pytest.mark.parametrize(
    "bad",
    [
        ["a"],
        {"type": "known_words", "words": "abc"},
        {"type": "known_words", "words": [1, 2]},
        {"type": "known_words", "words": [""]},
        {"type": "known_words", "words": ["x" * 101]},
        {"type": "known_words", "words": ["w"] * (MAX_KNOWN_WORDS + 1)},
    ],
)
def test_malformed_known_words_are_refused(bad: object) -> None:
    with pytest.raises(CheckpointError, match="known words"):
        KnownWords.from_dict(bad, "model folder m")


def test_stored_in_checkpoint_and_folder_and_said_by_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tasks.translation.cli import main

    model = BUILDERS["translation"]()
    assert model.unknown_words("anything at all") == []  # a model that does not know its words says nothing
    model.known_words = KnownWords.from_texts(["i love you", "the red car"])
    assert model.unknown_words("I love the blue car") == ["blue"]
    ckpt = save_checkpoint(model, tmp_path / "m.ckpt")
    folder = Path(model.save_pretrained(tmp_path / "f"))
    assert (folder / "known_words.json").is_file()
    for source in (ckpt, folder):
        loaded = type(model).from_pretrained(source)
        assert loaded.unknown_words("I love the blue car") == ["blue"]
        capsys.readouterr()
        assert main(["translate", "--ckpt", str(source), "--beam", "1", "i love you", "the blue zebra"]) == 0
        captured = capsys.readouterr()
        assert len(captured.out.splitlines()) == 2  # the translations are still printed
        assert "warning: argument 2: never seen in training: blue, zebra" in captured.err
        assert "argument 1" not in captured.err
