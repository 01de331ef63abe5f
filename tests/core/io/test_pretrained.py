"""core.io.pretrained and core.train.finetune: resolving hf: names offline, the model-type allowlist, rebuilding from a
stored config, freezing / unfreezing and the optimizer groups (tiny models built here, nothing downloaded)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from core.errors import ConfigError
from core.io.pretrained import (
    build_from_config,
    check_config,
    export_config,
    load_pretrained,
    read_model_type,
    resolve_pretrained,
)
from core.train.finetune import FreezePolicy, FreezeSchedule, find_blocks, optimizer_groups
from core.train.schedule import OptimizerOptions, configure_optimizer

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from hf_tiny import speech_folder, vision_folder


@pytest.fixture(scope="module")
def vit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return vision_folder(tmp_path_factory.mktemp("hf") / "vit")


def _offline_hub(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    import huggingface_hub.constants as hc

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))


def test_hub_id_offline_is_a_clear_error_and_the_cache_is_used(
    vit: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _offline_hub(monkeypatch, tmp_path / "hub")
    with pytest.raises(
        ConfigError,
        match=r"--model.encoder: 'org/vit-tiny' is not a local folder.*HF_HUB_OFFLINE"
        r".*local model folder: --model.encoder hf:/path/to/folder",
    ):
        resolve_pretrained("hf:org/vit-tiny", "--model.encoder")
    # the same id once it is in the cache (a user who downloaded it before): no request at all
    snap = tmp_path / "hub" / "models--org--vit-tiny" / "snapshots" / ("b" * 40)
    shutil.copytree(vit, snap)
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("b" * 40, encoding="utf-8")
    assert resolve_pretrained("hf:org/vit-tiny", "--model.encoder") == snap
    assert resolve_pretrained(f"hf:{vit}", "--model.encoder") == vit  # a folder is used as it is
    with pytest.raises(ConfigError, match="no such folder"):
        resolve_pretrained(str(tmp_path / "nope" / "x"), "--model.encoder")
    (tmp_path / "f.bin").write_bytes(b"x")
    with pytest.raises(ConfigError, match="a file, expected a Hugging Face model folder"):
        resolve_pretrained(str(tmp_path / "f.bin"), "--model.encoder")


def test_model_type_allowlist_names_folder_and_kind(vit: Path, tmp_path: Path) -> None:
    assert read_model_type(vit, "vision", "--model.encoder") == "vit"
    with pytest.raises(
        ConfigError,
        match=r"vit.*holds a 'vit' model \(a vision backbone\); --model.encoder expects "
        r"a speech encoder of type wav2vec2",
    ):
        read_model_type(vit, "speech", "--model.encoder")
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bert holds a 'bert' model; --model.pretrained expects a translation"):
        read_model_type(bert, "translation", "--model.pretrained")
    (bert / "config.json").write_text(json.dumps({"library_name": "attn-suite"}), encoding="utf-8")
    with pytest.raises(ConfigError, match="is an attn-suite model folder.*--ckpt"):
        read_model_type(bert, "vision", "--model.encoder")
    with pytest.raises(ConfigError, match="config.json is missing"):
        read_model_type(tmp_path, "vision", "--model.encoder")


def test_mismatched_hidden_sizes_name_the_folder(vit: Path, tmp_path: Path) -> None:
    bad = tmp_path / "vit-bad"
    shutil.copytree(vit, bad)
    cfg = json.loads((bad / "config.json").read_text(encoding="utf-8"))
    cfg["hidden_size"], cfg["intermediate_size"] = 64, 128
    (bad / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"vit-bad: its weights do not fit its config.json \(mismatched sizes"):
        load_pretrained(bad, "vision", "--model.encoder")


def test_stored_config_is_checked_and_rebuilt_offline(vit: Path) -> None:
    model, config = load_pretrained(vit, "vision", "--model.encoder")
    assert config["model_type"] == "vit" and "_name_or_path" not in config and "architectures" not in config
    json.dumps(config)  # plain data
    with torch.device("meta"):  # how core.io.rebuild probes shapes: nothing allocated
        probe = build_from_config(config, "vision", "ckpt")
    assert {k: v.shape for k, v in probe.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    rebuilt = build_from_config(config, "vision", "ckpt")
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 48, 48)
    assert torch.equal(rebuilt.eval()(x).last_hidden_state, model.eval()(x).last_hidden_state)
    for bad, match in (
        ({**config, "auto_map": {"AutoModel": "evil.Model"}}, "auto_map"),
        ({**config, "model_type": "bert"}, "model_type 'bert' is not one of"),
        ({**config, "hidden_size": 10**6}, r"hidden_size = 1000000: expected a value in \[1, 16384\]"),
        ({**config, "layer_norm_eps": float("nan")}, "finite"),
        ({**config, "x": {"class_path": "os.system"}}, "class_path"),
        ({**config, "attn_implementation": "kernels-community/flash-attn"}, "attn_implementation"),
        ({**config, "_attn_implementation": "sdpa"}, "_attn_implementation"),
        ("vit", "expected an object"),
    ):
        with pytest.raises(ConfigError, match=match):
            check_config(bad, "vision", "ckpt")


class _Backbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 4)
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList([nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)) for _ in range(3)])
        self.norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 4)  # an unused head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for layer in self.encoder.layers:
            x = layer(x)
        return self.norm(x)


def _trainable(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_freeze_policy_blocks_never_and_schedule() -> None:
    m = _Backbone()
    blocks = find_blocks(m)
    assert len(blocks) == 3
    FreezePolicy(m, blocks, -1, never=("head.",))
    assert _trainable(m) == {n for n, _ in m.named_parameters() if not n.startswith("head.")}
    FreezePolicy(m, blocks, 0)
    assert _trainable(m) == set()
    pol = FreezePolicy(m, blocks, 1, unfreeze_after_steps=5, never=("head.",))
    assert _trainable(m) == set() and pol.fully_frozen  # step 0: frozen phase
    m.train()
    pol.fix_modes()
    assert not m.training  # all of it in eval mode while frozen
    pol.apply(5)
    assert _trainable(m) == {"encoder.layers.2.0.weight", "encoder.layers.2.0.bias", "norm.weight", "norm.bias"}
    m.train()
    pol.fix_modes()
    assert m.encoder.layers[2].training and not m.encoder.layers[0].training and not m.embed.training
    with pytest.raises(ConfigError, match=r"trainable_blocks=4: expected -1 \(all\), 0 \(frozen\) or 1..3"):
        FreezePolicy(m, blocks, 4)


class _Tiny(pl.LightningModule):
    """A pretrained part (frozen for 2 steps) under a new head, trained through Lightning."""

    def __init__(self) -> None:
        super().__init__()
        self.save_hyperparameters(
            {
                "lr": 0.1,
                "weight_decay": 0.1,
                "betas": (0.9, 0.99),
                "eps": 1e-8,
                "warmup_steps": 0,
                "lr_schedule": "constant",
                "min_lr_ratio": 0.0,
            }
        )
        self.backbone = _Backbone()
        self.backbone.freeze_policy = FreezePolicy(
            self.backbone,
            find_blocks(self.backbone),
            -1,  # type: ignore[assignment]
            unfreeze_after_steps=2,
            never=("head.",),
        )
        self.out = nn.Linear(4, 1)
        self.snapshots: list[torch.Tensor] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.snapshots.append(self.backbone.embed.weight.detach().clone())
        return self.out(self.backbone(batch[0])).pow(2).mean()

    def configure_optimizers(self) -> Any:
        return configure_optimizer(self, OptimizerOptions.from_hparams(self.hparams), optimizer_groups(self, 0.5))

    def configure_callbacks(self) -> list[Any]:
        return [FreezeSchedule()]


def test_unfreeze_after_steps_through_lightning(tmp_path: Path) -> None:
    model = _Tiny()
    groups = optimizer_groups(model, 0.5)
    assert groups is not None and len(groups[0][0]) == 10 and groups[0][1] == 0.5  # frozen ones included
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(12, 4)), batch_size=2)
    trainer = pl.Trainer(
        max_steps=5,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, data)
    s = model.snapshots
    assert torch.equal(s[0], s[1]) and torch.equal(s[1], s[2])  # frozen for steps 0 and 1 (no decay either)
    assert not torch.equal(s[2], s[3])  # trains from step 2
    lrs = sorted({g["lr"] for g in trainer.optimizers[0].param_groups})
    assert lrs == [0.05, 0.1]  # pretrained part at lr * 0.5
    assert not model.backbone.head.weight.requires_grad


def test_speech_and_vision_kinds_load(tmp_path: Path) -> None:
    folder = speech_folder(tmp_path / "w2v")
    model, config = load_pretrained(folder, "speech", "--model.encoder")
    assert config["model_type"] == "wav2vec2" and type(model).__name__ == "Wav2Vec2Model"
    assert export_config(model.config)["hidden_size"] == 32


def test_hostile_folder_configs_and_pickled_weights_are_clear_errors(vit: Path, tmp_path: Path) -> None:
    config = json.loads((vit / "config.json").read_text(encoding="utf-8"))
    kernel = tmp_path / "kernel"
    shutil.copytree(vit, kernel)
    (kernel / "config.json").write_text(
        json.dumps({**config, "attn_implementation": "kernels-community/flash-attn"}), encoding="utf-8"
    )
    with pytest.raises(ConfigError, match=r"attn_implementation = 'kernels-community/flash-attn'.*refused"):
        load_pretrained(kernel, "vision", "--model.encoder")
    (kernel / "config.json").write_text(json.dumps({**config, "attn_implementation": "eager"}), encoding="utf-8")
    load_pretrained(kernel, "vision", "--model.encoder")  # a built-in kernel is fine
    deep = tmp_path / "deep"
    deep.mkdir()
    (deep / "config.json").write_text("[" * 200_000 + "]" * 200_000, encoding="utf-8")
    with pytest.raises(ConfigError, match="nested too deeply"):
        read_model_type(deep, "vision", "--model.encoder")
    (deep / "config.json").write_text('{"model_type": "vit", "hidden_size": ' + "9" * 5000 + "}", encoding="utf-8")
    with pytest.raises(ConfigError, match="config.json"):
        read_model_type(deep, "vision", "--model.encoder")
    # pickled weights with a global in them: the safe unpickler refuses, and the user gets one line
    pickled = tmp_path / "pickled"
    shutil.copytree(vit, pickled)
    (pickled / "model.safetensors").unlink()
    torch.save({"w": torch.ones(1), "evil": shutil.rmtree}, pickled / "pytorch_model.bin")
    with pytest.raises(ConfigError, match=r"pickle \(pytorch_model.bin\).*could run code"):
        load_pretrained(pickled, "vision", "--model.encoder")
