"""Tiny checkpoints of the three tasks for the app tests (a few training steps each, seconds on a CPU).

Each is written by a real Lightning ``Trainer.save_checkpoint`` after a few optimizer steps, so it
goes through the tasks' own checkpoint code and loads with their ``load_from_checkpoint``.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]


def _trainer(steps: int) -> pl.Trainer:
    return pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
    )


def tiny_translation(folder: Path, steps: int = 8) -> Path:
    """A 2-layer, 2-head Transformer on the embedded grammar corpus (per-layer/per-head views)."""
    from tasks.translation.data import TranslationDataModule
    from tasks.translation.module import TranslationModule

    pl.seed_everything(0)
    dm = TranslationDataModule(
        n_pairs=300,
        val_size=8,
        test_size=8,
        vocab_size=200,
        min_freq=1,
        max_tokens=512,
        cache_dir=str(folder / "cache"),
    )
    model = TranslationModule(
        arch="transformer",
        hidden_dim=32,
        num_heads=2,
        ffn_dim=64,
        encoder_layers=2,
        decoder_layers=2,
        dropout=0.0,
        lr=5e-3,
        warmup_steps=1,
        lr_schedule="constant",
        plot_examples=0,
        max_len=12,
    )
    trainer = _trainer(steps)
    trainer.fit(model, dm)
    path = folder / "translation.ckpt"
    trainer.save_checkpoint(path)
    return path


def tiny_captioning(folder: Path) -> Path:
    """The captioning task's own tiny overlay (2 steps on generated scenes) through its CLI."""
    from tasks.captioning.cli import main

    configs = REPO / "configs" / "captioning"
    code = main(
        [
            "fit",
            "-c",
            str(configs / "default.yaml"),
            "-c",
            str(configs / "tiny.yaml"),
            f"--trainer.default_root_dir={folder / 'cap'}",
            "--model.plot_examples=0",
        ]
    )
    assert code == 0, code
    found = sorted((folder / "cap").rglob("last.ckpt"))
    assert found, list((folder / "cap").rglob("*"))
    path = folder / "captioning.ckpt"
    found[0].rename(path)
    return path


def tone(seconds: float, freq: float = 440.0, sr: int = 16000) -> np.ndarray:
    """A sine tone ``(N,)`` float32 at amplitude 0.3."""
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def tiny_speech(folder: Path, steps: int = 3) -> Path:
    """A tiny listen-attend-spell model trained a few steps on tones labelled with short words."""
    from tasks.speech.batching import collate_items
    from tasks.speech.module import SpeechModule

    pl.seed_everything(0)
    model = SpeechModule(
        encoder_dim=32,
        encoder_layers=1,
        hidden_dim=48,
        embed_dim=16,
        attention_options={"hidden_dim": 32, "conv_channels": 4, "kernel_size": 5},
        warmup_steps=1,
        spec_augment=False,
        beam_size=2,
        plot_examples=0,
        max_chunk_seconds=4.0,
    )
    items = []
    for i, (freq, text) in enumerate([(300.0, "low"), (600.0, "mid"), (900.0, "high"), (450.0, "hum")]):
        feats = model.logmel(torch.from_numpy(tone(0.6 + 0.1 * i, freq)))  # (T, F)
        items.append({"feats": feats, "tokens": torch.tensor(model.tokenizer.encode(text)), "text": text, "id": str(i)})
    model.stats.fit(it["feats"] for it in items)
    batch = collate_items(items, pad_id=model.tokenizer.pad_id)
    batch["skipped"] = torch.tensor(0)
    loader = torch.utils.data.DataLoader([batch], batch_size=None)
    trainer = _trainer(steps)
    trainer.fit(model, train_dataloaders=loader)
    path = folder / "speech.ckpt"
    trainer.save_checkpoint(path)
    return path


def tiny_checkpoints(folder: Path) -> dict[str, Path]:
    """All three, laid out as ``make demo`` lays them out: ``folder/<task>/<task>.ckpt``."""
    out = {}
    for task, make in (("translation", tiny_translation), ("captioning", tiny_captioning), ("speech", tiny_speech)):
        sub = folder / task
        sub.mkdir(parents=True, exist_ok=True)
        out[task] = make(sub)
    return out
