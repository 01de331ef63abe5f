"""Subword tokenizer files from strangers: only the components this suite writes are read, one text is
bounded, and a panic inside the Rust ``tokenizers`` library becomes a ``UserError``.

Every crafted file is built here from a tokenizer trained in the test (milliseconds).
"""

from __future__ import annotations

import io
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core.errors import CheckpointError, UserError
from core.text.tokenizers import (
    MAX_ENCODE_CHARS,
    SubwordTokenizer,
    _rust_call,
    check_subword_json,
    tokenizer_from_dict,
)

TEXTS = ["the red car is here.", "I love you, ¿dónde está?", "hello world", "te quiero", "el coche rojo"] * 4
BACKTRACKING = "(a+)+$"  # exponential backtracking on "aaaa…b": the regex engine gives up and the library panics


def _trained(model: str = "bpe", split_punctuation: bool = False) -> SubwordTokenizer:
    from tasks.translation.tokenization import train_subword

    return train_subword(TEXTS, vocab_size=60, model=model, min_freq=1, split_punctuation=split_punctuation)


def _json(tok: SubwordTokenizer) -> dict[str, Any]:
    return json.loads(tok.hf.to_str())


def _split(pattern: str = BACKTRACKING) -> dict[str, Any]:
    return {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False}


@pytest.fixture(scope="module")
def good() -> dict[str, Any]:
    return _json(_trained("bpe", split_punctuation=True))


@pytest.mark.parametrize("model", ["bpe", "unigram"])
@pytest.mark.parametrize("split_punctuation", [False, True])
def test_every_tokenizer_the_suite_trains_passes_and_round_trips(model: str, split_punctuation: bool) -> None:
    tok = _trained(model, split_punctuation)
    check_subword_json(_json(tok))
    again = tokenizer_from_dict(tok.to_dict(), what="tokenizer_src.json")
    assert again.encode("the red car") == tok.encode("the red car")
    assert again.decode(again.encode("¿dónde está?")) == tok.decode(tok.encode("¿dónde está?"))


def _put(data: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(data))
    data[field] = value
    return data


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("pre_tokenizer", _split(), "pre_tokenizer is a 'Split' with the regex pattern '(a+)+$'"),
        (
            "pre_tokenizer",
            {"type": "Sequence", "pretokenizers": [{"type": "Metaspace", "replacement": "▁"}, _split()]},
            "pre_tokenizer.pretokenizers[1] is a 'Split'",
        ),
        (
            "normalizer",
            {"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Replace", "pattern": {"Regex": "(x+)+y"}}]},
            "normalizer.normalizers[1] is a 'Replace' with the regex pattern '(x+)+y'; this suite writes no Replace",
        ),
        ("decoder", {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, "decoder is a 'Replace'"),
        ("pre_tokenizer", {"type": "ByteLevel"}, "pre_tokenizer is of type 'ByteLevel'; expected one of Metaspace"),
        ("model", {"type": "WordPiece", "vocab": {}}, "model is of type 'WordPiece'; expected one of BPE, Unigram"),
        ("model", {"vocab": {}, "merges": []}, "model must be an object with a 'type'"),
        ("post_processor", {"type": "TemplateProcessing"}, "post_processor is of type 'TemplateProcessing'"),
        ("padding", {"strategy": {"Fixed": 10**9}}, "padding is {'strategy'"),
        ("truncation", {"max_length": 1}, "truncation is"),
    ],
)
def test_components_the_suite_does_not_write_are_refused(
    good: dict[str, Any], field: str, value: Any, expected: str
) -> None:
    text = json.dumps(_put(good, field, value))
    with pytest.raises(CheckpointError, match="not a tokenizer this suite writes") as info:
        tokenizer_from_dict({"type": "subword", "json": text}, what="model folder m: tokenizer_src.json")
    assert str(info.value).startswith("model folder m: tokenizer_src.json: "), info.value
    assert expected in str(info.value), info.value


def test_refused_before_the_library_parses_it(good: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The check runs on the file's JSON: ``Tokenizer.from_str`` never sees a refused file."""
    import tokenizers

    def boom(*_a: Any) -> None:
        raise AssertionError("Tokenizer.from_str was called")

    monkeypatch.setattr(tokenizers.Tokenizer, "from_str", boom)
    with pytest.raises(CheckpointError, match="Split"):
        tokenizer_from_dict({"type": "subword", "json": json.dumps(_put(good, "pre_tokenizer", _split()))})


def test_a_live_tokenizer_is_checked_too(good: dict[str, Any]) -> None:
    """``SubwordTokenizer(hf)`` checks what the library built (its own serialisation), not only files."""
    from tokenizers import Tokenizer

    hf = Tokenizer.from_str(json.dumps(_put(good, "pre_tokenizer", _split())))
    with pytest.raises(CheckpointError, match="pre_tokenizer is a 'Split'"):
        SubwordTokenizer(hf, what="x.json")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[" * 200_000 + "]" * 200_000, "nested too deeply"),
        ('{"model": {"type": "BPE", "dropout": ' + "9" * 5000 + "}}", "a value cannot be read"),
        ("{not json", "not valid JSON"),
    ],
)
def test_unreadable_json_is_a_user_error_naming_it(text: str, expected: str) -> None:
    with pytest.raises(UserError, match=expected) as info:
        tokenizer_from_dict({"type": "subword", "json": text}, what="tokenizer_tgt.json")
    assert str(info.value).startswith("tokenizer_tgt.json: ")


def test_one_text_is_bounded_and_a_long_fair_line_works() -> None:
    tok = _trained()
    line = ("the red car is here " * 600)[:MAX_ENCODE_CHARS]
    start = time.perf_counter()
    assert len(tok.encode(line)) > 1000
    assert time.perf_counter() - start < 2
    with pytest.raises(UserError, match=f"has {MAX_ENCODE_CHARS + 1:,} characters.*MAX_ENCODE_CHARS=10,000"):
        tok.encode("a" * (MAX_ENCODE_CHARS + 1))


def _panicking(good: dict[str, Any]) -> Any:
    """A ``tokenizers.Tokenizer`` with a backtracking ``Split`` (built past our check, as a tampered file was)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_str(json.dumps(_put(good, "pre_tokenizer", _split())))


def panic_exception_type(good: dict[str, Any]) -> type[BaseException]:
    """``pyo3_runtime.PanicException``, from a real panic of the library."""
    try:
        _panicking(good).encode("a" * 40 + "b")
    except Exception as err:  # pragma: no cover - the point is that it is not an Exception
        raise AssertionError(f"expected a panic, got {err!r}") from err
    except BaseException as err:
        return type(err)
    raise AssertionError("the backtracking pattern did not make the library panic")


def test_a_library_panic_becomes_a_user_error(good: dict[str, Any]) -> None:
    panic = panic_exception_type(good)
    assert panic.__name__ == "PanicException" and not issubclass(panic, Exception)
    tok = object.__new__(SubwordTokenizer)  # what a tampered tokenizer was before files were checked
    tok.hf, tok.what = _panicking(good), "model folder m: tokenizer_src.json"
    with pytest.raises(UserError, match=r"model folder m: tokenizer_src.json: the tokenizers library failed \(Panic"):
        tok.encode("a" * 40 + "b")


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit, GeneratorExit, ValueError])
def test_the_panic_guard_lets_other_exceptions_through(exc: type[BaseException]) -> None:
    def raise_it() -> None:
        raise exc()

    with pytest.raises(exc):
        _rust_call("t", raise_it)


# ------------------------------------------------------------------------ through a model folder and the CLI
@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A tiny translation model folder with subword tokenizers (random weights)."""
    import torch

    from tasks.translation.module import TranslationModule

    torch.manual_seed(0)
    m = TranslationModule(embed_dim=8, hidden_dim=8, beam_size=1, plot_examples=0)
    m.set_tokenizers(_trained("bpe", True), _trained("unigram", True))
    m.build_model()
    return Path(m.save_pretrained(tmp_path / "model"))


def test_a_model_folder_with_a_tampered_tokenizer_is_refused(
    folder: Path, user_error: Callable[[], str], capsys: pytest.CaptureFixture[str]
) -> None:
    from core.io.model_folder import load_task_model
    from tasks.translation.cli import main
    from tasks.translation.module import TranslationModule

    assert main(["translate", "--ckpt", str(folder), "--beam", "1", "the red car"]) == 0
    capsys.readouterr()
    path = folder / "tokenizer_src.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["pre_tokenizer"]["pretokenizers"].append(_split())
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(CheckpointError) as info:
        load_task_model(TranslationModule, folder)
    msg = str(info.value)
    assert str(folder) in msg and "'src'" in msg and "pre_tokenizer.pretokenizers[2] is a 'Split'" in msg, msg
    assert main(["translate", "--ckpt", str(folder), "--beam", "1", "a" * 40 + "b"]) == 2
    err = user_error()
    assert str(folder) in err and "'Split'" in err, err


def test_cli_names_the_line_that_is_too_long(
    folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 93 KB line costs its own line only (error naming it and the limit); the others are translated."""
    from tasks.translation.cli import main

    raw = ("the red car\n" + "hello world " * 7750 + "\nI love you\n").encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8"))
    start = time.perf_counter()
    code = main(["translate", "--ckpt", str(folder), "--beam", "1"])
    out, err = capsys.readouterr()
    assert time.perf_counter() - start < 30
    assert code == 1 and "Traceback" not in err, err
    lines = out.split("\n")[:-1]
    assert len(lines) == 3 and lines[1] == "", lines
    assert "error: stdin line 2: the text 'hello world" in err and "MAX_ENCODE_CHARS=10,000" in err, err
