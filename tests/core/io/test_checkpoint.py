"""Tests for core.io.checkpoint: every user-caused failure is a clear CheckpointError naming the file."""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch

from core.errors import CheckpointError, UserError
from core.io import checkpoint as ckpt_mod
from core.io.checkpoint import load_checkpoint, make_metadata, resolve_checkpoint
from core.io.checks import FORMAT_VERSION
from core.io.rebuild import load_task_module
from core.train.module import TaskModule
from core.train.task import Objective, Stage, Task


class _Evil:
    """Unpickling this would call os.makedirs on a marker path (i.e. run code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


def _good(tmp_path: Path, task: str = "translation") -> Path:
    path = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "attn_suite": make_metadata(task, vocab=["a"])}, path)
    return path


def test_good_checkpoint_and_task(tmp_path: Path) -> None:
    path = _good(tmp_path)
    ck = load_checkpoint(path, expected_task="translation")
    assert ck["attn_suite"] == {"task": "translation", "format": FORMAT_VERSION, "vocab": ["a"]}
    with pytest.raises(CheckpointError, match=r"good\.ckpt.*'translation' checkpoint, expected a 'speech'"):
        load_checkpoint(path, expected_task="speech")
    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {}}, plain)
    with pytest.raises(CheckpointError, match="not an attn-suite checkpoint"):
        load_checkpoint(plain, expected_task="speech")


def test_missing(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"not found: .*nope\.ckpt"):
        load_checkpoint(tmp_path / "nope.ckpt")
    with pytest.raises(CheckpointError, match="not a file"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("kind", ["truncated", "empty", "text", "list", "tiny"])
def test_unreadable(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.ckpt"
    if kind == "truncated":
        data = _good(tmp_path).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not a checkpoint\n")
    elif kind == "tiny":
        path.write_bytes(b"junk")  # shorter than any pickle header: struct.error inside torch.load
    else:
        torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match=rf"{kind}\.ckpt"):
        load_checkpoint(path)


def test_unsafe_pickle_refused_and_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": _Evil(marker)}, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match=r"refusing to load checkpoint .*evil\.ckpt.*run code"):
        load_checkpoint(path)
    assert not marker.exists(), "the pickled payload was executed"


def test_sha256_local(tmp_path: Path) -> None:
    path = _good(tmp_path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert resolve_checkpoint(path, sha256=digest[:10]) == path
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        resolve_checkpoint(path, sha256="00" * 32)


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """Serve tmp_path/www on 127.0.0.1 (random port); yields (base_url, root, request log)."""
    root = tmp_path / "www"
    root.mkdir()
    log: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw) -> None:
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, fmt: str, *args) -> None:
            log.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root, log
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_url_download_cache_and_hash(tmp_path: Path, server, monkeypatch: pytest.MonkeyPatch) -> None:
    base, root, log = server
    cache = tmp_path / "cache"
    monkeypatch.setenv("ATTN_SUITE_CACHE", str(cache))
    src = _good(tmp_path)
    (root / "model.ckpt").write_bytes(src.read_bytes())
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    url = f"{base}/model.ckpt"

    ck = load_checkpoint(url, expected_task="translation", sha256=digest)
    assert "state_dict" in ck
    assert len(log) == 1
    local = resolve_checkpoint(url, sha256=digest)
    assert local.parent == cache and local.name.endswith("model.ckpt")
    assert len(log) == 1, "second resolve must hit the cache"

    with pytest.raises(CheckpointError, match=r"sha256 mismatch .*other\.ckpt"):
        (root / "other.ckpt").write_bytes(src.read_bytes())
        resolve_checkpoint(f"{base}/other.ckpt", sha256="ab" * 32)
    assert not any(p.name.endswith("other.ckpt") for p in cache.iterdir()), "bad download was cached"
    assert not any(p.name.startswith(".part-") for p in cache.iterdir())

    with pytest.raises(CheckpointError, match=r"could not download .*missing\.ckpt"):
        resolve_checkpoint(f"{base}/missing.ckpt")


def test_download_is_monkeypatchable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATTN_SUITE_CACHE", str(tmp_path / "c"))
    src = _good(tmp_path)
    monkeypatch.setattr(ckpt_mod, "_download", lambda url, dst: dst.write_bytes(src.read_bytes()))
    assert load_checkpoint("https://example.invalid/x/good.ckpt")["attn_suite"]["task"] == "translation"


class _ToyTask(Task[torch.nn.Linear, Any]):
    """A task storing a tokenizer dict beside the weights, the way the tasks do."""

    def __init__(self, hidden: int) -> None:
        self.hidden = hidden
        self.loaded_meta: dict | None = None

    def build_network(self) -> torch.nn.Linear:
        return torch.nn.Linear(2, self.hidden)

    def objective(self, network: torch.nn.Linear, batch: Any, stage: Stage) -> Objective:
        return Objective(network(batch[0]).pow(2).mean(), size=len(batch[0]))

    def artifacts(self) -> dict[str, Any]:
        from core.text.tokenizers import CharTokenizer

        return {"tokenizer": CharTokenizer.train(["ñandú"]).to_dict()}

    def restore(self, artifacts: Any, source: str) -> bool:
        self.loaded_meta = dict(artifacts)
        return False


class _TaskModule(TaskModule[torch.nn.Linear]):
    """A task module on the core module (its network is the one linear layer)."""

    TASK, MONITOR = "toy", "val/loss"
    HPARAM_BOUNDS = {"hidden": (1, 64)}

    def __init__(self, hidden: int = 3, name: str = "x", optimizer: str = "sgd", lr: float = 0.1) -> None:
        super().__init__(_ToyTask(hidden))
        self.save_hyperparameters()
        self.model = self.task.build_network()

    @property
    def lin(self) -> torch.nn.Linear:
        assert self.model is not None
        return self.model

    @property
    def loaded_meta(self) -> dict | None:
        assert isinstance(self.task, _ToyTask)
        return self.task.loaded_meta

    def train_dataloader(self) -> Any:
        data = torch.utils.data.TensorDataset(torch.randn(4, 2))
        return torch.utils.data.DataLoader(data, batch_size=2)


def _toy_checkpoint(tmp_path: Path) -> tuple[_TaskModule, Path]:
    model = _TaskModule(hidden=5, name="ñ")
    trainer = pl.Trainer(
        max_steps=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(model)
    path = tmp_path / "toy.ckpt"
    trainer.save_checkpoint(path)
    return model, path


def test_lightning_checkpoint_round_trip(tmp_path: Path) -> None:
    model, path = _toy_checkpoint(tmp_path)
    torch.load(path, weights_only=True)  # a Lightning checkpoint is weights_only-safe
    again = _TaskModule.load_from_checkpoint(path)
    assert again.hparams.hidden == 5 and again.hparams.name == "ñ" and not again.training
    assert again.loaded_meta is not None and again.loaded_meta["tokenizer"]["type"] == "char"
    torch.testing.assert_close(again.lin.weight, model.lin.weight)
    with pytest.raises(CheckpointError, match="is a 'toy' checkpoint, expected a 'other'"):
        load_task_module(type("Other", (_TaskModule,), {"TASK": "other"}), path)
    with pytest.raises(CheckpointError, match=r"model\.weight: \(5, 2\) in the file, \(4, 2\) in the model"):
        _TaskModule.load_from_checkpoint(path, hidden=4)


def test_sizes_are_checked_on_the_meta_device_before_any_allocation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, path = _toy_checkpoint(tmp_path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["hyper_parameters"]["hidden"] = 60  # in bounds, but not what the weights were trained with
    torch.save(ckpt, path)
    built: list[str] = []

    def spy(self: _TaskModule, meta: dict, source: str) -> None:  # runs right after each construction
        built.append(self.lin.weight.device.type)

    monkeypatch.setattr(_TaskModule, "restore_metadata", spy)
    with pytest.raises(CheckpointError, match=r"\(5, 2\) in the file, \(60, 2\) in the model"):
        _TaskModule.load_from_checkpoint(path)
    assert built == ["meta"]  # refused before the real module was ever built
    ckpt["hyper_parameters"]["hidden"] = 10**9
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"'hidden' = 1000000000: expected a value in \[1, 64\]"):
        _TaskModule.load_from_checkpoint(path)
    assert built == ["meta"]


def test_newer_format_and_bad_metadata_are_named(tmp_path: Path) -> None:
    _, path = _toy_checkpoint(tmp_path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["attn_suite"]["format"] = 99
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="newer attn-suite .*format 99"):
        _TaskModule.load_from_checkpoint(path)
    ckpt["attn_suite"]["format"] = 1
    ckpt["attn_suite"]["x"] = {"class_path": "os.system"}
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="class_path"):
        _TaskModule.load_from_checkpoint(path)


def test_cli_ckpt_path_url_is_made_local_checked_and_weights_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.cli.run import check_ckpt_path_arg

    bare = _good(tmp_path, task="speech")
    with pytest.raises(CheckpointError, match="not a Lightning training checkpoint"):
        check_ckpt_path_arg({"subcommand": "fit", "fit": {"ckpt_path": str(bare)}}, "speech")
    src = tmp_path / "trained.ckpt"
    torch.save({**torch.load(bare, weights_only=True), "pytorch-lightning_version": "2.6.6"}, src)
    monkeypatch.setenv("ATTN_SUITE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(ckpt_mod, "_download", lambda url, dst: dst.write_bytes(src.read_bytes()))
    config = {"subcommand": "test", "test": {"ckpt_path": "https://example.org/m/last.ckpt", "weights_only": None}}
    check_ckpt_path_arg(config, "speech")
    local = Path(config["test"]["ckpt_path"])
    assert local.is_file() and local != src and local.read_bytes() == src.read_bytes()  # Lightning loads this copy
    assert config["test"]["weights_only"] is True
    with pytest.raises(CheckpointError, match="speech"):  # another task's checkpoint is refused up front
        check_ckpt_path_arg({"subcommand": "fit", "fit": {"ckpt_path": str(src)}}, "captioning")
    keep = {"subcommand": "fit", "fit": {"ckpt_path": "last", "weights_only": False}}
    check_ckpt_path_arg(keep, "speech")  # "last" is Lightning's to resolve; an explicit choice is kept
    assert keep["fit"] == {"ckpt_path": "last", "weights_only": False}


def test_cli_ckpt_path_best_is_the_run_folders_best_ckpt(tmp_path: Path) -> None:
    from core.cli.run import check_ckpt_path_arg

    root = tmp_path / "run"
    config = {"subcommand": "test", "test": {"ckpt_path": "best", "trainer": {"default_root_dir": str(root)}}}
    with pytest.raises(CheckpointError, match="best.ckpt does not exist"):
        check_ckpt_path_arg(config, "speech")
    (root / "checkpoints").mkdir(parents=True)
    torch.save(
        {**torch.load(_good(tmp_path, task="speech"), weights_only=True), "pytorch-lightning_version": "2.6.6"},
        root / "checkpoints" / "best.ckpt",
    )
    check_ckpt_path_arg(config, "speech")
    assert config["test"]["ckpt_path"] == str(root / "checkpoints" / "best.ckpt")
