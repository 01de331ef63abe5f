"""attn-app against hostile input: no request is left hanging whatever it raises (a Rust library's
``PanicException`` is a ``BaseException``), absurd beam sizes from an HTTP client are refused with the app's
message, unreadable JSON in a model folder is one ``error:`` line, and the app leaves no temporary folder.
"""

# The fixtures come from app_fixtures (imported below, see its docstring): test arguments "redefine" them.
# ruff: noqa: F811
from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from app_fixtures import app_server, checkpoints, models  # noqa: F401  (fixtures)
from app_tiny_models import REPO

from core.errors import CheckpointError, ConfigError
from tasks.app.inference import AppInputError, Limits, TabResult, run_translation

gr = pytest.importorskip("gradio", reason="the app extra is not installed (pip install -e '.[app]')")


def panic_exception_type() -> type[BaseException]:
    """``pyo3_runtime.PanicException``, taken from a real panic of the ``tokenizers`` library (a pattern that
    backtracks past the regex engine's limit)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("(a+)+$"), "isolated")
    try:
        tok.encode("a" * 40 + "b")
    except Exception as err:  # pragma: no cover - the point is that it is not an Exception
        raise AssertionError(f"expected a panic, got {err!r}") from err
    except BaseException as err:
        assert type(err).__name__ == "PanicException" and not isinstance(err, Exception)
        return type(err)
    raise AssertionError("the backtracking pattern did not make the library panic")


def _raiser(exc: BaseException) -> Callable[..., Any]:
    def fail(*_a: Any, **_k: Any) -> Any:
        raise exc

    return fail


def _outputs(r: TabResult) -> tuple:
    return (r.text,)


# ------------------------------------------------------------------------------------------------ the handler
def test_a_panic_in_a_handler_becomes_an_error_naming_the_input() -> None:
    from tasks.app.app import _handler

    panic = panic_exception_type()
    model = SimpleNamespace(translate=_raiser(panic("Onig: Regex search error: retry-limit-in-match over")))
    handle = _handler(run_translation, model, Limits(), _outputs)
    with pytest.raises(gr.Error) as info:
        handle("the red car\nI love you", 2, 1)
    msg = info.value.message
    assert 'internal error on the text "the red car" (+1 more lines)' in msg, msg
    assert "PanicException: Onig: Regex search error" in msg and "the app keeps running" in msg, msg


def _message(fn: Callable[[], Any]) -> str:
    with pytest.raises(gr.Error) as info:
        fn()
    return info.value.message


def test_handler_errors_name_the_input() -> None:
    from tasks.app.app import _handler

    model = SimpleNamespace(translate=_raiser(ConfigError("need 1 <= nbest <= beam")))
    handle = _handler(run_translation, model, Limits(), _outputs)
    assert _message(lambda: handle("hello", 2, 1)) == 'the text "hello": need 1 <= nbest <= beam'
    model.translate = _raiser(RecursionError("maximum recursion depth exceeded"))
    msg = _message(lambda: handle("hi", 2, 1))
    assert msg.startswith('internal error on the text "hi" (RecursionError: maximum recursion'), msg
    assert _message(lambda: handle("   ", 2, 1)).startswith("no text to translate")  # the app's own: as it is


def test_describe_input_of_files_and_odd_values() -> None:
    from tasks.app.app import describe_input

    assert describe_input({"path": "/tmp/gradio/abc/x.png", "orig_name": "holiday.jpg"}) == "the file holiday.jpg"
    assert describe_input({"path": "/tmp/gradio/abc/x.png"}) == "the file x.png"
    assert describe_input("x" * 100).startswith('the text "' + "x" * 39 + "…")
    assert describe_input(None) == "the request" and describe_input(3) == "the input int"


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_handler_lets_interrupts_through(exc: type[BaseException]) -> None:
    from tasks.app.app import _handler

    model = SimpleNamespace(translate=_raiser(exc()))
    with pytest.raises(exc):
        _handler(run_translation, model, Limits(), _outputs)("hello", 2, 1)


# ------------------------------------------------------------------------------------------------ beam sizes
@pytest.mark.parametrize(
    "beam", [10**6, 10**4000, 1e6, 11, 0, -3, 2.5, math.nan, math.inf, True, "many", "1e6", None, [3]]
)
def test_absurd_beam_sizes_are_refused(beam: Any) -> None:
    model = SimpleNamespace(translate=_raiser(AssertionError("the model must not be called")))
    with pytest.raises(AppInputError, match=r"^beam size must be between 1 and 10 \(a whole number\), got ") as info:
        run_translation(model, "hello", beam, 1, Limits())
    assert len(str(info.value)) < 150  # a 4,000-digit number is not echoed back


def test_whole_beam_sizes_from_any_client_are_accepted(models: dict[str, Any]) -> None:
    for beam, nbest, rows in [(2, 2, 2), (2.0, 5, 2), ("2", "1", 1)]:  # n-best is capped at the beam
        assert len(run_translation(models["translation"], "the red car", beam, nbest, Limits()).nbest) == rows
    with pytest.raises(AppInputError, match="n-best must be at least 1"):
        run_translation(models["translation"], "the red car", 2, 0, Limits())


def test_limits_refuse_absurd_values() -> None:
    with pytest.raises(ConfigError, match="max_beam must be between 1 and 128, got 1000000"):
        Limits(max_beam=10**6)
    for bad in ({"max_sentences": 0}, {"max_chars": -1}, {"max_upload_mb": math.inf}, {"max_audio_seconds": 0.0}):
        with pytest.raises(ConfigError, match=f"app limit {next(iter(bad))} must be"):
            Limits(**bad)


# ------------------------------------------------------------------------------------------------ the server
def test_a_panic_during_a_request_is_answered_and_the_app_goes_on(
    app_server: dict[str, Any], models: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the fix the client waited forever (heartbeats only): Gradio's queue task died with the panic."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    panic = panic_exception_type()
    client = Client(app_server["url"], verbose=False, download_files=False)
    monkeypatch.setattr(type(models["translation"]), "translate", _raiser(panic("retry-limit-in-match over")))
    with pytest.raises(AppError, match=r'internal error on the text "the red car" \(PanicException'):
        client.submit("the red car", 2, 1, api_name="/translate").result(timeout=60)
    monkeypatch.undo()
    assert client.submit("I love you", 1, 1, api_name="/translate").result(timeout=60)[0] is not None


def _call(base: str, api: str, data: list[Any]) -> str:
    """One request through the plain HTTP API; returns the event stream."""

    def http(url: str, payload: Any = None) -> str:
        body = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.read().decode()

    event = json.loads(http(f"{base}/gradio_api/call/{api}", {"data": data}))["event_id"]
    return http(f"{base}/gradio_api/call/{api}/{event}")


def test_api_refuses_absurd_beam_sizes(app_server: dict[str, Any], tmp_path: Path) -> None:
    import soundfile as sf
    from app_tiny_models import tone
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    from tasks.app.inference import example_images

    base = app_server["url"].rstrip("/")
    for beam in (10**6, "many", 1e9, -1):  # plain HTTP, as curl would send them
        stream = _call(base, "translate", ["the red car", beam, 1])
        assert "event: error" in stream and "beam size must be between 1 and 10" in stream, stream
    assert "event: complete" in _call(base, "translate", ["the red car", 2, 1])
    (image,) = example_images(tmp_path, count=1)
    sf.write(tmp_path / "tone.wav", tone(1.0, 600.0), 16000)
    client = Client(app_server["url"], verbose=False, download_files=False)
    for api, path in [("/caption", image), ("/transcribe", tmp_path / "tone.wav")]:
        with pytest.raises(AppError, match=r"beam size must be between 1 and 10 \(a whole number\), got 1000000"):
            client.submit(handle_file(str(path)), 10**6, 1, api_name=api).result(timeout=60)


# ------------------------------------------------------------------------------------------------ start-up
def _subword_folder(tmp_path: Path) -> Path:
    """A tiny translation model folder whose tokenizers are subword ones (random weights)."""
    import torch

    from tasks.translation.module import TranslationModule
    from tasks.translation.tokenization import train_subword

    texts = ["the red car is here.", "I love you, ¿dónde está?", "hello world"] * 4
    torch.manual_seed(0)
    m = TranslationModule(embed_dim=8, hidden_dim=8, beam_size=1, plot_examples=0)
    m.set_tokenizers(train_subword(texts, 50, min_freq=1), train_subword(texts, 50, min_freq=1))
    m.build_model()
    return Path(m.save_pretrained(tmp_path / "model"))


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("config.json", "[" * 200_000 + "]" * 200_000, "config.json: nested too deeply"),
        ("config.json", '{"library_name": "attn-suite", "x": ' + "7" * 5000 + "}", "config.json: a value cannot be"),
        ("tokenizer_src.json", '{"model": {"type": "BPE", "dropout": 1' + "0" * 5000 + "}}", "tokenizer_src.json"),
        ("tokenizer_src.json", None, "pre_tokenizer.pretokenizers[2] is a 'Split'"),
    ],
)
def test_app_cli_bad_json_in_a_model_folder_is_one_error_line(
    name: str, content: str | None, expected: str, tmp_path: Path, user_error: Callable[[], str]
) -> None:
    from tasks.app.cli import main

    folder = _subword_folder(tmp_path)
    if content is None:  # a backtracking Split regex added to the saved tokenizer
        data = json.loads((folder / name).read_text(encoding="utf-8"))
        data["pre_tokenizer"]["pretokenizers"].append(
            {"type": "Split", "pattern": {"Regex": "(a+)+$"}, "behavior": "Isolated", "invert": False}
        )
        content = json.dumps(data)
    (folder / name).write_text(content, encoding="utf-8")
    assert main(["--translation", str(folder)]) == 2
    err = user_error()
    assert str(folder) in err and expected in err, err


def test_load_task_model_checks_the_json_of_a_model_folder(tmp_path: Path) -> None:
    from tasks.app.loading import load_task_model

    folder = _subword_folder(tmp_path)
    (folder / "config.json").write_text("[" * 100_000, encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"^model folder .*config.json: nested too deeply"):
        load_task_model("translation", folder)


def _examples_folders(root: Path) -> list[Path]:
    return sorted(root.glob("attn-app-examples-*"))


def test_starting_and_closing_the_app_leaves_no_examples_folder(
    models: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks.app.app import build_app, launch_app

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    demo = build_app({"captioning": models["captioning"]}, Limits())
    (folder,) = _examples_folders(tmp_path)
    assert len(list(folder.glob("scene_*.png"))) == 3  # the examples exist while the app runs
    launch_app(demo, host="127.0.0.1", port=None, block=False)
    demo.close()
    assert _examples_folders(tmp_path) == []
    build_app({"captioning": models["captioning"]}, Limits()).close()  # built, never launched, closed
    assert _examples_folders(tmp_path) == []


@pytest.mark.slow  # a fresh interpreter imports torch and Gradio: ~15 s on 2 cores
def test_a_process_that_exits_without_closing_leaves_no_examples_folder(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    """The ``Ctrl+C`` path: the process ends with the app still open; the folder goes with it."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    code = (
        "import tempfile, sys; tempfile.tempdir = sys.argv[2]\n"
        "from tasks.app.app import build_app\n"
        "from tasks.app.loading import load_task_model\n"
        "demo = build_app({'captioning': load_task_model('captioning', sys.argv[1])})\n"
        "assert len(list(__import__('pathlib').Path(sys.argv[2]).glob('attn-app-examples-*'))) == 1\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(checkpoints["captioning"]), str(tmp)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _examples_folders(tmp) == []
