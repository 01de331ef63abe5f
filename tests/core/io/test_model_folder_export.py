"""`export` and `save_pretrained` never lose a user's file, keep a folder's record, and name every bad path.

Each case builds its own folders in ``tmp_path``; the CLI is the translation task's (the export code is
core's, shared by every task).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_models import BUILDERS, run_once, save_checkpoint

from core.errors import CheckpointError
from core.io.model_folder import save_pretrained
from tasks.translation.cli import main

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32  # only the signature is checked


@pytest.fixture(scope="module")
def model() -> Any:
    return BUILDERS["translation"]()


@pytest.fixture
def ckpt(model: Any, tmp_path: Path) -> Path:
    return save_checkpoint(model, tmp_path / "m.ckpt")


def _export(*args: str) -> int:
    return main(["export", *args])


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_folder_of_user_files_is_refused_and_left_untouched(
    ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = tmp_path / "mydocs"
    (docs / "sub").mkdir(parents=True)
    (docs / "thesis.tex").write_text("years of work", encoding="utf-8")
    (docs / "sub" / "data.csv").write_text("a,b\n", encoding="utf-8")
    before = _tree(docs)
    assert _export("--ckpt", str(ckpt), "--out", str(docs)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not an attn-suite model folder" in err and "--overwrite" in err
    assert "Traceback" not in err
    assert _tree(docs) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ckpt", "mydocs"]  # no temporary folder left


def test_overwrite_adds_the_model_beside_user_files_and_never_replaces_one(
    ckpt: Path, tmp_path: Path, model: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = tmp_path / "mydocs"
    docs.mkdir()
    (docs / "notes.txt").write_text("mine", encoding="utf-8")
    assert _export("--ckpt", str(ckpt), "--out", str(docs), "--overwrite") == 0
    assert (docs / "notes.txt").read_text(encoding="utf-8") == "mine"
    assert run_once("translation", type(model).from_pretrained(docs)) == run_once("translation", model)
    # a user file with one of the model's names is never replaced, even with --overwrite
    other = tmp_path / "other"
    other.mkdir()
    (other / "README.md").write_text("my readme", encoding="utf-8")
    capsys.readouterr()
    assert _export("--ckpt", str(ckpt), "--out", str(other), "--overwrite") == 2
    assert "README.md" in capsys.readouterr().err
    assert _tree(other) == {"README.md": b"my readme"}


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_an_existing_file_is_never_replaced(
    ckpt: Path, tmp_path: Path, overwrite: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me", encoding="utf-8")
    assert _export("--ckpt", str(ckpt), "--out", str(notes), *overwrite) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert notes.read_text(encoding="utf-8") == "keep me"
    # and a path below a file names the file instead of an OS error
    assert _export("--ckpt", str(ckpt), "--out", str(notes / "model"), *overwrite) == 2
    assert f"{notes} is a file" in capsys.readouterr().err


def test_library_save_pretrained_refuses_a_foreign_folder(model: Any, tmp_path: Path) -> None:
    (tmp_path / "photo.jpg").write_bytes(b"jpeg")
    with pytest.raises(CheckpointError, match="not an attn-suite model folder"):
        model.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="is a file"):
        save_pretrained(model, tmp_path / "photo.jpg")
    assert _tree(tmp_path) == {"photo.jpg": b"jpeg"}


def test_re_export_replaces_only_its_own_files(model: Any, tmp_path: Path) -> None:
    folder = Path(model.save_pretrained(tmp_path / "f"))
    (folder / "my_eval.md").write_text("notes kept beside the model", encoding="utf-8")
    (folder / "tokenizer_stale.json").write_text("{}", encoding="utf-8")  # not listed: not the model's
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["files"].append("old_vocab.json")  # an earlier export wrote it; this one does not
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "old_vocab.json").write_text("{}", encoding="utf-8")
    model.save_pretrained(folder)
    names = {p.name for p in folder.iterdir()}
    assert "my_eval.md" in names and "tokenizer_stale.json" in names  # never written by an export: kept
    assert "old_vocab.json" not in names  # the earlier export's own file, no longer part of the model
    assert not [n for n in names if n.startswith(".")]  # no temporary folder left


def test_export_of_a_folder_onto_itself_keeps_figure_metrics_and_record(
    ckpt: Path, tmp_path: Path, model: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    fig = tmp_path / "fig.png"
    fig.write_bytes(PNG)
    scores = tmp_path / "scores.json"
    scores.write_text('{"test/bleu": 42.5}', encoding="utf-8")
    folder = tmp_path / "f"
    assert _export("--ckpt", str(ckpt), "--out", str(folder), "--figure", str(fig), "--metrics", str(scores)) == 0
    first = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert first["training"]["command"]  # the checkpoint's record travels into the folder
    for out in (folder, tmp_path / "g"):  # onto itself, and into a new folder
        assert _export("--ckpt", str(folder), "--out", str(out)) == 0
        config = json.loads((out / "config.json").read_text(encoding="utf-8"))
        assert config["metrics"] == {"test/bleu": 42.5}
        assert config["training"] == first["training"]
        assert (out / "attention.png").read_bytes() == PNG
        card = (out / "README.md").read_text(encoding="utf-8")
        assert "| `test/bleu` | 42.50 |" in card and "attention.png" in card
    again = type(model).from_pretrained(tmp_path / "g")
    assert run_once("translation", again) == run_once("translation", model)


def test_empty_and_dot_outputs_are_clear(
    ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _export("--ckpt", str(ckpt), "--out", "") == 2
    assert "--out is empty" in capsys.readouterr().err
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("x", encoding="utf-8")
    monkeypatch.chdir(work)
    assert _export("--ckpt", str(ckpt), "--out", ".") == 2  # the current folder holds a user's file
    assert "not an attn-suite model folder" in capsys.readouterr().err
    assert sorted(os.listdir(work)) == ["keep.txt"] and sorted(os.listdir(tmp_path)) == ["m.ckpt", "work"]
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    assert _export("--ckpt", str(ckpt), "--out", ".") == 0  # an empty current folder is a fine destination
    assert (empty / "model.safetensors").is_file() and not [n for n in os.listdir(empty) if n.startswith(".")]


def test_unwritable_destination_is_an_error_line(ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _export("--ckpt", str(ckpt), "--out", "/proc/attn-suite-test/model") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write the model folder /proc/attn-suite-test/model")


def test_push_without_network_is_an_error_line_and_the_folder_stays(
    ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import huggingface_hub.constants as hub_constants

    # a closed local port: the real client fails at once, and no traffic leaves the machine
    monkeypatch.setattr(hub_constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_TOKEN", "hf_test_token_not_real")
    out = tmp_path / "out"
    assert _export("--ckpt", str(ckpt), "--out", str(out), "--push", "org/name") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: push of") and "org/name" in err and "Traceback" not in err
    assert (out / "model.safetensors").is_file()


def _tamper(folder: Path, edit: Any) -> None:
    path = folder / "model.safetensors"
    state = load_file(str(path))
    edit(state)
    save_file(state, str(path), metadata={"format": "pt"})


def test_weights_of_another_kind_or_not_finite_are_refused(model: Any, tmp_path: Path) -> None:
    folder = Path(model.save_pretrained(tmp_path / "f"))
    name = next(k for k, v in load_file(str(folder / "model.safetensors")).items() if v.is_floating_point())
    clean = (folder / "model.safetensors").read_bytes()
    for edit, message in [
        (lambda s: s.update({name: s[name].to(torch.int8)}), "torch.int8 in the file, torch.float32 in the model"),
        (lambda s: s.update({name: s[name] != 0}), "torch.bool in the file"),
        (lambda s: s[name].view(-1).__setitem__(0, float("nan")), "NaN or infinite"),
        (lambda s: s[name].view(-1).__setitem__(0, float("inf")), "NaN or infinite"),
    ]:
        (folder / "model.safetensors").write_bytes(clean)
        _tamper(folder, edit)
        with pytest.raises(CheckpointError, match=message.replace(".", r"\.")) as info:
            type(model).from_pretrained(folder)
        assert name in str(info.value)
    # half precision of a float weight is a precision, not another kind: it loads
    (folder / "model.safetensors").write_bytes(clean)
    _tamper(folder, lambda s: s.update({name: s[name].half()}))
    type(model).from_pretrained(folder)


@pytest.mark.parametrize(
    "text",
    ["[" * 200_000 + "]" * 200_000, '{"test/bleu": ' + "9" * 5000 + "}", '{"a": ' * 100 + "1" + "}" * 100],
    ids=["200k-deep", "5000-digit", "100-deep"],
)
def test_hostile_json_is_an_error_line(
    text: str, model: Any, ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(text, encoding="utf-8")
    assert _export("--ckpt", str(ckpt), "--out", str(tmp_path / "o"), "--metrics", str(bad)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --metrics {bad}") and "Traceback" not in err
    folder = Path(model.save_pretrained(tmp_path / "f"))
    (folder / "config.json").write_text(text, encoding="utf-8")
    with pytest.raises(CheckpointError, match="config.json"):
        type(model).from_pretrained(folder)
    assert main(["translate", "--ckpt", str(folder), "hello"]) == 2
    assert "config.json" in capsys.readouterr().err
