"""Tests for core.viz: each plot returns a Figure and saves a non-empty PNG, headless."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from core.viz import plot_alignment, plot_image_attention, plot_spectrogram_alignment

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000


def test_plot_alignment(tmp_path: Path) -> None:
    w = torch.softmax(torch.randn(4, 6), -1)
    fig = plot_alignment(
        w,
        ["¿Dónde", "está", "el", "niño", "?", "世界"],
        ["where", "is", "👋", "<eos>"],
        path=tmp_path / "a" / "align.png",
    )
    assert isinstance(fig, Figure)
    _check_png(tmp_path / "a" / "align.png")
    plot_alignment(w.numpy(), ["x"], [], path=tmp_path / "mismatch.png")  # label mismatch tolerated
    _check_png(tmp_path / "mismatch.png")


def test_plot_image_attention(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)
    flat = torch.softmax(torch.randn(7, 4 * 6), -1)  # (T, h*w), grid inferred from the aspect
    fig = plot_image_attention(img, flat, ["a", "dog", "runs", "on", "the", "grass", "."], path=tmp_path / "i.png")
    assert len(fig.axes) == 7
    _check_png(tmp_path / "i.png")
    plot_image_attention(Image.fromarray(img), flat.view(7, 4, 6)[:2], ["a", "b"], path=tmp_path / "j.png")
    _check_png(tmp_path / "j.png")
    # uint8 tensor, float 0..255 and channels-first float inputs all render (not clipped to white)
    as_t = torch.from_numpy(img)
    for variant in (as_t, as_t.float(), as_t.permute(2, 0, 1) / 255):
        fig = plot_image_attention(variant, flat[:1], ["x"])
        shown = fig.axes[0].images[0].get_array()
        arr = np.asarray(shown, dtype=np.float32)
        arr = arr / 255.0 if shown.dtype == np.uint8 else arr  # what imshow will display, in [0, 1]
        assert shown.shape == (64, 96, 3) and arr.max() <= 1.0 and 0.3 < arr.mean() < 0.7


def test_plot_spectrogram_alignment(tmp_path: Path) -> None:
    spec = torch.randn(40, 200)
    w = torch.softmax(torch.randn(5, 50), -1)  # encoder downsampled 4x
    fig = plot_spectrogram_alignment(spec, w, list("hola!"), path=tmp_path / "s.png")
    assert len(fig.axes) == 2
    _check_png(tmp_path / "s.png")
