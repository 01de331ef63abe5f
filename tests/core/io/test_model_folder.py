"""Model folders and the hub path: round trips for every task, safety, offline and mocked downloads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_models import BUILDERS, run_once, save_checkpoint

from core.errors import CheckpointError
from core.io.model_folder import load_task_model

TASKS = sorted(BUILDERS)


def _cls(task: str) -> Any:
    return type(BUILDERS[task]())


@pytest.mark.parametrize("task", TASKS)
def test_export_round_trip_identical_outputs(task: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = BUILDERS[task]()
    ckpt = save_checkpoint(model, tmp_path / "m.ckpt")
    folder = Path(model.save_pretrained(tmp_path / "folder", metrics={"test/score": 87.5}))
    files = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "config.json", "README.md"} <= files
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    optional = {"known_words.json"}  # written only for a model that knows its training words
    assert set(type(model).FOLDER_FILES.values()) - optional <= files  # tokenizers / vocabulary / front end
    assert set(config["files"]) <= files
    assert config["task"] == task and config["library_name"] == "attn-suite"
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert "| `test/score` | 87.50 |" in card and "pipeline_tag:" in card and "from_pretrained" in card

    def no_pickle(*a: Any, **k: Any) -> None:
        raise AssertionError("a model folder must load without torch.load / unpickling")

    monkeypatch.setattr(torch, "load", no_pickle)
    again = type(model).from_pretrained(folder)
    monkeypatch.undo()
    from_ckpt = type(model).load_from_checkpoint(ckpt)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[k], v)
    assert run_once(task, again) == run_once(task, model) == run_once(task, from_ckpt)


def test_translation_subword_tokenizer_is_a_hf_tokenizer_json(tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    from core.text.tokenizers import SubwordTokenizer
    from tasks.translation.module import TranslationModule

    m = TranslationModule(embed_dim=8, hidden_dim=8)
    texts = ["i love you", "the red car", "she sees them"] * 20
    m.set_tokenizers(SubwordTokenizer.train(texts, vocab_size=40), SubwordTokenizer.train(texts, vocab_size=40))
    m.build_model()
    folder = Path(m.save_pretrained(tmp_path / "f"))
    hf = Tokenizer.from_file(str(folder / "tokenizer_src.json"))  # the ecosystem reads it natively
    assert hf.encode("the red car").ids == m.src_tokenizer.hf.encode("the red car").ids
    again = TranslationModule.from_pretrained(folder)
    assert again.src_tokenizer.to_dict() == m.src_tokenizer.to_dict()


def test_folder_errors_name_the_folder_and_what_is_wrong(tmp_path: Path) -> None:
    from tasks.captioning.module import CaptioningModule
    from tasks.translation.module import TranslationModule

    folder = Path(BUILDERS["translation"]().save_pretrained(tmp_path / "tr"))
    with pytest.raises(CheckpointError, match="holds a 'translation' model, expected a 'captioning' model"):
        CaptioningModule.from_pretrained(folder)
    # strict: a missing weight is an error, never a random initialisation
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / "model.safetensors"))
    state.pop(next(iter(state)))
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match="missing"):
        TranslationModule.from_pretrained(folder)
    # config.json is untrusted data: class paths, absurd sizes, wrong types are refused before any build
    folder = Path(BUILDERS["translation"]().save_pretrained(tmp_path / "tr2"))
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    for key, value, match in (
        ("attention_options", {"class_path": "os.system"}, "class_path"),
        ("hidden_dim", 10**9, r"expected a value in"),
        ("arch", 3, "expected Literal"),
    ):
        bad = json.loads(json.dumps(config))
        bad["hyper_parameters"][key] = value
        (folder / "config.json").write_text(json.dumps(bad), encoding="utf-8")
        with pytest.raises(CheckpointError, match=match):
            TranslationModule.from_pretrained(folder)
    (folder / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        TranslationModule.from_pretrained(folder)
    (tmp_path / "hf_model").mkdir()
    (tmp_path / "hf_model" / "config.json").write_text('{"model_type": "bert"}', encoding="utf-8")
    with pytest.raises(CheckpointError, match="not an attn-suite model config"):
        TranslationModule.from_pretrained(tmp_path / "hf_model")


def test_weights_file_truncated(tmp_path: Path) -> None:
    from tasks.speech.module import SpeechModule

    folder = Path(BUILDERS["speech"]().save_pretrained(tmp_path / "sp"))
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="truncated or not a safetensors file"):
        SpeechModule.from_pretrained(folder)


def test_hub_id_uses_huggingface_hub_and_its_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``hf://ORG/NAME[@REV]`` goes through huggingface_hub.snapshot_download (mocked: no network in tests)."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    from tasks.speech.module import SpeechModule

    folder = Path(BUILDERS["speech"]().save_pretrained(tmp_path / "sp"))
    calls: list[tuple[str, str | None]] = []

    def fake(repo_id: str, revision: str | None = None, **kw: Any) -> str:
        calls.append((repo_id, revision))
        return str(folder)

    from types import SimpleNamespace

    files = [SimpleNamespace(rfilename="model.safetensors", size=2_000)]
    files.append(SimpleNamespace(rfilename="data/huge.bin", size=50 * 10**9))  # no pattern matches: never fetched
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, *a, **k: SimpleNamespace(siblings=files))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    m = load_task_model(SpeechModule, "hf://org/asr-tiny@v1")
    assert calls == [("org/asr-tiny", "v1")] and isinstance(m, SpeechModule)
    files.append(SimpleNamespace(rfilename="model-2.safetensors", size=50 * 10**9))
    with pytest.raises(CheckpointError, match=r"hf://org/asr-tiny: its files take 50.0 GB, more than"):
        load_task_model(SpeechModule, "hf://org/asr-tiny")
    assert len(calls) == 1  # refused before any download

    def unreachable(self: Any, *a: Any, **k: Any) -> None:
        raise OSError("the hub cannot be reached")  # then snapshot_download decides (cache, offline message)

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", unreachable)

    def offline(repo_id: str, **kw: Any) -> str:
        raise LocalEntryNotFoundError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(CheckpointError, match=r"hf://org/asr-tiny: not in the local Hugging Face cache.*local model"):
        load_task_model(SpeechModule, "hf://org/asr-tiny")

    class _Resp:
        status_code, headers, url, request = 404, {}, "https://huggingface.co/org/none", None

    def missing(repo_id: str, **kw: Any) -> str:
        raise RepositoryNotFoundError("not found", response=_Resp())  # type: ignore[arg-type]

    monkeypatch.setattr(huggingface_hub, "snapshot_download", missing)
    with pytest.raises(CheckpointError, match="repository org/none not found"):
        load_task_model(SpeechModule, "hf://org/none")
    with pytest.raises(CheckpointError, match="expected hf://ORG/NAME"):
        load_task_model(SpeechModule, "hf://just-a-name")


def test_hub_offline_mode_reads_the_local_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With HF_HUB_OFFLINE=1 the real huggingface_hub resolves a cached snapshot without any request."""
    import huggingface_hub.constants as hc

    from tasks.captioning.module import CaptioningModule

    cache = tmp_path / "hub"
    snapshot = cache / "models--org--cap" / "snapshots" / ("a" * 40)
    BUILDERS["captioning"]().save_pretrained(snapshot)
    (cache / "models--org--cap" / "refs").mkdir(parents=True)
    (cache / "models--org--cap" / "refs" / "main").write_text("a" * 40, encoding="utf-8")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    model = load_task_model(CaptioningModule, "hf://org/cap")
    assert isinstance(model, CaptioningModule)
    with pytest.raises(CheckpointError, match="not in the local Hugging Face cache"):
        load_task_model(CaptioningModule, "hf://org/other")


def test_export_cli_and_push_to_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import huggingface_hub

    from tasks.captioning.cli import main

    ckpt = save_checkpoint(BUILDERS["captioning"](), tmp_path / "m.ckpt")
    pushed: dict[str, Any] = {}

    class FakeApi:
        def __init__(self, token: str | None = None) -> None:
            pass

        def create_repo(self, repo_id: str, private: bool = False, exist_ok: bool = False) -> str:
            pushed.update(repo=repo_id, private=private)
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, folder_path: str, repo_id: str, commit_message: str, allow_patterns: list[str]) -> None:
            pushed["files"] = sorted(p.name for p in Path(folder_path).iterdir() if p.name in allow_patterns)

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    (tmp_path / "scores.json").write_text('{"test/bleu4": 61.2}', encoding="utf-8")
    code = main(
        [
            "export",
            "--ckpt",
            str(ckpt),
            "--out",
            str(tmp_path / "out"),
            "--push",
            "org/cap",
            "--private",
            "--metrics",
            str(tmp_path / "scores.json"),
        ]
    )
    assert code == 0
    assert pushed["repo"] == "org/cap" and pushed["private"] and "model.safetensors" in pushed["files"]
    assert "| `test/bleu4` | 61.20 |" in (tmp_path / "out" / "README.md").read_text(encoding="utf-8")
    out = capsys.readouterr().out.splitlines()
    assert out == [str(tmp_path / "out"), "https://huggingface.co/org/cap"]
    # the inference subcommand takes the folder too, and --sha256 pins its weights
    img = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (40, 40), (120, 10, 10)).save(img)
    assert main(["caption", "--ckpt", str(tmp_path / "out"), str(img)]) == 0
    assert main(["caption", "--ckpt", str(tmp_path / "out"), "--sha256", "0" * 64, str(img)]) == 2
    assert "sha256 mismatch" in capsys.readouterr().err
