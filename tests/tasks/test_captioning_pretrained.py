"""Captioning with `transformers` vision backbones (``--model.encoder hf:...``): tiny ViT / ConvNeXt / ResNet / CLIP
/ DINOv2 folders built here, fit through the CLI, checkpoints that load offline, attention plots, bad input."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import ConfigError
from tasks.captioning.cli import main
from tasks.captioning.data import CaptionDataModule
from tasks.captioning.module import CaptioningModule

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hf_tiny import speech_folder, vision_folder
from tiny_models import save_checkpoint

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "captioning"


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hf_vision")


def _fit_args(root: Path, encoder: Path, *extra: str) -> list[str]:
    return [
        "fit",
        "-c",
        str(CONFIGS / "default.yaml"),
        "-c",
        str(CONFIGS / "tiny.yaml"),
        f"--trainer.default_root_dir={root}",
        f"--model.encoder=hf:{encoder}",
        *extra,
    ]


@pytest.fixture(scope="module")
def vit_run(hf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``fit`` through the CLI with a 2-layer ViT (last block fine-tuned at a tenth of the LR); (ckpt, folder)."""
    folder = vision_folder(hf_dir / "vit")
    root = tmp_path_factory.mktemp("vit_fit")
    assert main(_fit_args(root, folder, "--model.trainable_blocks=1", "--model.encoder_lr_scale=0.1")) == 0
    ckpts = sorted(root.rglob("last.ckpt"))
    assert ckpts
    return ckpts[0], folder


def _no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a checkpoint must not touch the hub nor read pretrained weights."""
    import huggingface_hub
    import transformers

    def refuse(*a: Any, **k: Any) -> None:
        raise AssertionError("a checkpoint load tried to download or read pretrained weights")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", classmethod(refuse))


def test_vit_checkpoint_is_self_contained_and_loads_offline(
    vit_run: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt, folder = vit_run
    raw = torch.load(ckpt, weights_only=True, map_location="cpu")
    meta, hp = raw["attn_suite"], raw["hyper_parameters"]
    assert meta["pretrained"]["model_type"] == "vit" and meta["pretrained"]["source"] == str(folder)
    assert meta["pretrained"]["processor"] == {"image_size": 48, "mean": [0.5] * 3, "std": [0.5] * 3}
    assert hp["grid_size"] == 6 and hp["image_size"] == 48 and list(hp["mean"]) == [0.5] * 3  # from the processor
    assert "model.encoder.backbone.embeddings.patch_embeddings.projection.weight" in raw["state_dict"]
    trained = raw["state_dict"]["model.encoder.backbone.layers.1.attention.q_proj.weight"]
    frozen = raw["state_dict"]["model.encoder.backbone.layers.0.attention.q_proj.weight"]
    original = CaptioningModule(
        vocab=CaptionDataModule().vocab, encoder=f"hf:{folder}", image_size=48, mean=(0.5,) * 3, std=(0.5,) * 3
    ).encoder.backbone.state_dict()
    assert torch.equal(frozen, original["layers.0.attention.q_proj.weight"])  # trainable_blocks=1
    assert not torch.equal(trained, original["layers.1.attention.q_proj.weight"])

    shutil.rmtree(folder)  # the pretrained source is gone: the checkpoint alone must do
    _no_downloads(monkeypatch)
    model = CaptioningModule.load_from_checkpoint(ckpt)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 70, 3), dtype=np.uint8))
    text, weights = model.caption([image], beam=2, return_attention=True)[0]
    assert weights.shape[1:] == (6, 6)  # one weight per 8x8 patch of the 48 px input
    out = model.save_pretrained(tmp_path / "exported")
    again = CaptioningModule.from_pretrained(out)
    assert again.caption([image], beam=2) == [text]
    image.save(tmp_path / "img.png")
    assert (
        main(
            ["caption", "--ckpt", str(out), str(tmp_path / "img.png"), "--beam", "2", "--plot", str(tmp_path / "plots")]
        )
        == 0
    )
    assert capsys.readouterr().out.strip().endswith(text)
    assert len(list((tmp_path / "plots").glob("*.png"))) == 1


@pytest.mark.parametrize("model_type,grid", [("convnext", 6), ("resnet", 6), ("clip", 6), ("dinov2", 6)])
def test_other_backbones_grid_checkpoint_round_trip(hf_dir: Path, tmp_path: Path, model_type: str, grid: int) -> None:
    folder = vision_folder(hf_dir / model_type, model_type)
    torch.manual_seed(0)
    model = CaptioningModule(
        vocab=CaptionDataModule().vocab,
        encoder=f"hf:{folder}",
        image_size=48,
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
        encoder_dim=16,
        embed_dim=8,
        hidden_dim=16,
        max_len=4,
        attention_options={"hidden_dim": 8},
        trainable_blocks=1,
    ).eval()
    assert model.hparams.grid_size == grid == model.encoder.grid_size
    feats = model.encoder(torch.randn(2, 3, 48, 48))
    assert feats.shape == (2, grid * grid, 16)
    image = Image.fromarray(np.full((48, 48, 3), 100, np.uint8))
    expected = model.caption([image], beam=2, return_attention=True)[0]
    loaded = CaptioningModule.load_from_checkpoint(save_checkpoint(model, tmp_path / "m.ckpt"))
    got = loaded.caption([image], beam=2, return_attention=True)[0]
    assert got[0] == expected[0] and torch.allclose(got[1], expected[1])
    never = {"clip": "post_layernorm.weight", "convnext": "layernorm.weight"}.get(model_type)
    if never:  # unused pooling parts never train (DDP would find them unused)
        assert not dict(model.encoder.backbone.named_parameters())[never].requires_grad


def test_transformer_decoder_and_bf16_on_cpu(hf_dir: Path, tmp_path: Path) -> None:
    """The Transformer decoder over ViT patches, trained in bf16 autocast (what --trainer.precision bf16-mixed does
    on a GPU, here on the CPU)."""
    folder = hf_dir / "vit" if (hf_dir / "vit").exists() else vision_folder(hf_dir / "vit")
    assert (
        main(
            _fit_args(
                tmp_path,
                folder,
                "--model.decoder=transformer",
                "--model.hidden_dim=32",
                "--model.num_heads=2",
                "--model.ffn_dim=32",
                "--trainer.precision=bf16-mixed",
                "--trainer.limit_val_batches=0",
                "--model.unfreeze_after_steps=1",
            )
        )
        == 0
    )
    assert sorted(tmp_path.rglob("last.ckpt"))


def test_bad_pretrained_folders_are_one_line_errors(
    hf_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user_error: Any
) -> None:
    import huggingface_hub.constants as hc

    speech = speech_folder(tmp_path / "w2v")
    assert main(_fit_args(tmp_path / "r1", speech)) == 2
    assert "holds a 'wav2vec2' model (a speech encoder); --model.encoder expects a vision backbone" in user_error()
    no_proc = tmp_path / "vit-noproc"
    vision_folder(no_proc)
    (no_proc / "preprocessor_config.json").unlink()
    assert main(_fit_args(tmp_path / "r2", no_proc)) == 2
    assert f"preprocessor_config.json is missing in {no_proc}" in user_error()
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    assert (
        main(
            [
                "fit",
                "-c",
                str(CONFIGS / "default.yaml"),
                "-c",
                str(CONFIGS / "tiny.yaml"),
                f"--trainer.default_root_dir={tmp_path / 'r3'}",
                "--model.encoder=hf:google/vit-base-patch16-224",
            ]
        )
        == 2
    )
    line = user_error()
    assert "'google/vit-base-patch16-224' is not a local folder" in line and "local model folder" in line
    with pytest.raises(ConfigError, match="expected one of"):
        CaptioningModule(vocab=CaptionDataModule().vocab, encoder="vit")


def test_grid_larger_than_transformer_positions_is_a_config_error(tmp_path: Path) -> None:
    folder = vision_folder(tmp_path / "vit144", image_size=144)  # 18 x 18 patches = 324 cells > 256 positions
    with pytest.raises(ConfigError, match=r"its 18x18 feature grid has more cells than the transformer decoder's 256"):
        CaptioningModule(
            vocab=CaptionDataModule().vocab,
            encoder=f"hf:{folder}",
            decoder="transformer",
            image_size=144,
            mean=(0.5,) * 3,
            std=(0.5,) * 3,
        )
    assert (
        CaptioningModule(
            vocab=CaptionDataModule().vocab, encoder=f"hf:{folder}", image_size=144, mean=(0.5,) * 3, std=(0.5,) * 3
        ).hparams.grid_size
        == 18
    )  # the RNN decoder has no limit
