"""Captioning on the real corpora in ../shared/data (skipped when they are absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
FLICKR = SHARED / "flickr8k-subset"
COCO = SHARED / "coco-tiny"
CONFIGS = REPO / "configs" / "captioning"

pytestmark = pytest.mark.shared_data


@pytest.mark.skipif(not (FLICKR / "captions.txt").is_file(), reason="../shared/data/flickr8k-subset is absent")
def test_flickr8k_subset_loads() -> None:
    from tasks.captioning.data import CaptionDataModule

    dm = CaptionDataModule(dataset="flickr", data_dir=str(FLICKR), image_size=64, batch_size=4, min_freq=3)
    dm.setup("fit")
    sizes = {k: len(v) for k, v in dm.datasets.items()}
    assert sum(sizes.values()) == 796 and sizes["val"] > 0 and sizes["test"] > 0
    assert 300 < len(dm.caption_vocab) < 2000
    batch = next(iter(dm.val_dataloader()))
    assert batch.images.shape == (4, 3, 64, 64) and all(len(r) == 5 for r in batch.refs)


@pytest.mark.slow
@pytest.mark.skipif(not (COCO / "annotations").is_dir(), reason="../shared/data/coco-tiny is absent")
def test_coco_tiny_load_train_evaluate(tmp_path: Path) -> None:
    from tasks.captioning.cli import main

    args = [
        "-c",
        str(CONFIGS / "coco.yaml"),
        "-c",
        str(CONFIGS / "tiny.yaml"),
        f"--data.data_dir={COCO}",
        "--data.image_size=64",
        "--data.num_workers=0",
        "--data.batch_size=8",
        "--model.encoder=tiny",
        "--model.grid_size=4",
        "--model.hidden_dim=64",
        "--model.num_heads=2",
        "--model.ffn_dim=128",
        "--model.decoder_layers=1",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    assert main(["fit", *args]) == 0
    ckpt = next(tmp_path.rglob("last.ckpt"))
    assert main(["test", *args, "--ckpt_path", str(ckpt)]) == 0
