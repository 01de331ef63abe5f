"""Tiny task models and their checkpoints, built in milliseconds (random weights, real metadata)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def tiny_translation() -> Any:
    from core.text.tokenizers import CharTokenizer
    from tasks.translation.module import TranslationModule

    torch.manual_seed(0)
    m = TranslationModule(embed_dim=8, hidden_dim=8, beam_size=2, plot_examples=0)
    m.set_tokenizers(CharTokenizer.train(["i love you", "the red car"]), CharTokenizer.train(["te quiero", "el coche"]))
    m.build_model()
    return m.eval()


def tiny_captioning() -> Any:
    from tasks.captioning.data import CaptionDataModule
    from tasks.captioning.module import CaptioningModule

    torch.manual_seed(0)
    return CaptioningModule(
        vocab=CaptionDataModule().vocab,
        encoder_dim=16,
        attention_options={"hidden_dim": 8},
        embed_dim=8,
        hidden_dim=16,
        max_len=4,
        image_size=32,
        beam_size=1,
    ).eval()


def tiny_speech() -> Any:
    from tasks.speech.module import SpeechModule

    torch.manual_seed(0)
    m = SpeechModule(
        encoder_dim=8,
        encoder_layers=1,
        hidden_dim=8,
        embed_dim=8,
        beam_size=1,
        max_chunk_seconds=4.0,
        attention_options={"hidden_dim": 8, "conv_channels": 2, "kernel_size": 3},
    )
    return m.eval()


BUILDERS = {"translation": tiny_translation, "captioning": tiny_captioning, "speech": tiny_speech}


def save_checkpoint(model: Any, path: Path) -> Path:
    """A checkpoint the way Lightning writes one (state dict, hyper-parameters, our metadata)."""
    ckpt: dict[str, Any] = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": "2.6.6",
    }
    model.on_save_checkpoint(ckpt)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


def run_once(task: str, model: Any) -> Any:
    """A small inference through the task's library call (what a user does right after loading)."""
    import numpy as np

    if task == "translation":
        return model.translate(["i love you"], beam=2, return_attention=True)[0].text
    if task == "captioning":
        from PIL import Image

        return model.caption([Image.fromarray(np.full((40, 40, 3), 128, np.uint8))], beam=2)[0]
    t = np.arange(8000) / 16000
    return model.transcribe([((0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 16000)], beam=2)[0]
