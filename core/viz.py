"""Attention plots: text alignment, image attention grid, spectrogram alignment.

Figures are built with the object-oriented API on an Agg canvas (``matplotlib.figure.Figure`` +
``FigureCanvasAgg``), never through ``pyplot``: that is headless by construction, leaves the global
pyplot figure registry alone (no leaked figures in long training runs), and works in any thread.
Every function returns the Figure and, with ``path=``, also writes a PNG.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["plain", "plot_alignment", "plot_image_attention", "plot_spectrogram_alignment", "save_figure"]


def _to_numpy(x: Any) -> np.ndarray:
    """Tensor / PIL image / array-like -> float or uint8 numpy array on the CPU."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        # keep uint8 images as uint8 (imshow reads them as 0..255); fp16/bf16 have no numpy twin
        return x.numpy() if x.dtype == torch.uint8 else x.float().numpy()
    return np.asarray(x)


def _as_rgb(image: Any) -> np.ndarray:
    """Any image-like -> ``(H, W, 3)`` array imshow renders correctly (uint8, or float in [0, 1])."""
    img = _to_numpy(image)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = np.transpose(img, (1, 2, 0))  # channels-first tensor (C, H, W) -> (H, W, C)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:  # grayscale -> RGB so imshow does not apply a colormap
        img = np.stack([img] * 3, axis=-1)
    if img.dtype != np.uint8:
        img = img.astype(np.float32)
        if img.size and (img.max() > 1.0 or img.min() < 0.0):
            # 0..255 floats or a still-normalised tensor: rescale instead of letting imshow clip to white
            img = (
                img / 255.0
                if img.min() >= 0.0 and img.max() <= 255.0
                else (img - img.min()) / max(float(img.max() - img.min()), 1e-8)
            )
    return img[..., :3]


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)  # attach a headless canvas so savefig / draw work without pyplot
    return fig


@contextmanager
def _quiet_glyphs() -> Iterator[None]:
    # Labels may hold CJK/emoji the default font lacks; a missing glyph is cosmetic, not worth a warning
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Gg]lyph.*missing.*")
        warnings.filterwarnings("ignore", message=".*not supported with the.*")
        yield


def plain(text: str) -> str:
    """``text`` drawn literally: matplotlib would parse a ``$...$`` span as TeX math (and raise on a bad
    one, e.g. a sentence about prices), so every user string is escaped before it is drawn."""
    return str(text).replace("$", r"\$")


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG to ``path`` (parent dirs created), atomically; returns the path.

    The PNG is rendered into a temporary file in the same folder and renamed over ``path``: a crash or a
    full disk never leaves a truncated figure, and an existing figure is replaced in one step.
    """
    import os
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png.part")
    try:
        with os.fdopen(fd, "wb") as f, _quiet_glyphs():
            fig.savefig(f, format="png", bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def _finish(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_alignment(
    weights: Any,
    src_tokens: Sequence[str],
    tgt_tokens: Sequence[str],
    path: str | Path | None = None,
    title: str | None = None,
) -> Figure:
    """Heat map of target-to-source attention (Bahdanau et al. fig. 3 style).

    Args:
        weights: ``(T, S)`` attention, row ``t`` = weights used to emit ``tgt_tokens[t]``.
        src_tokens: ``S`` labels for the x axis (extra/missing labels are tolerated: cropped / blank).
        tgt_tokens: ``T`` labels for the y axis.
        path: optional PNG destination.
        title: optional title.

    Returns:
        The Figure.
    """
    w = _to_numpy(weights)  # (T, S)
    T, S = w.shape
    fig = _new_figure(max(3.0, 0.35 * S + 1.5), max(2.5, 0.35 * T + 1.2))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(w, cmap="viridis", aspect="auto", vmin=0.0, vmax=max(float(w.max(initial=0.0)), 1e-6))
    ax.set_xticks(range(S), labels=_labels(src_tokens, S), rotation=90)
    ax.set_yticks(range(T), labels=_labels(tgt_tokens, T))
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    if title:
        ax.set_title(plain(title))
    fig.colorbar(im, ax=ax, fraction=0.04)
    return _finish(fig, path)


def _labels(tokens: Sequence[str], n: int) -> list[str]:
    """Exactly ``n`` tick labels (pad with '' / crop) so a length mismatch never crashes a plot; drawn literally."""
    out = [plain(str(t)) for t in list(tokens)[:n]]
    return out + [""] * (n - len(out))


def _grid_shape(n: int, height: int, width: int) -> tuple[int, int]:
    """Factor ``n`` attention locations into ``(h, w)`` with an aspect closest to the image's."""
    target = height / max(width, 1)
    best = (1, n)
    for h in range(1, math.isqrt(n) + 1):
        if n % h == 0:
            for cand in ((h, n // h), (n // h, h)):
                if abs(math.log(cand[0] / cand[1] / target)) < abs(math.log(best[0] / best[1] / target)):
                    best = cand
    return best


def plot_image_attention(
    image: Any,
    weights: Any,
    words: Sequence[str],
    path: str | Path | None = None,
    grid_shape: tuple[int, int] | None = None,
    ncols: int = 5,
    alpha: float = 0.6,
) -> Figure:
    """Show-Attend-Tell style grid: one panel per emitted word, attention upsampled over the image.

    Args:
        image: ``(H, W, 3)`` uint8 array / tensor or a PIL image. Also accepted: float images in
            [0, 1] or [0, 255], channels-first ``(3, H, W)`` tensors, grayscale ``(H, W)``.
        weights: ``(T, h*w)`` or ``(T, h, w)`` attention over the encoder's spatial grid.
        words: ``T`` emitted words (panel titles).
        path: optional PNG destination.
        grid_shape: ``(h, w)`` of flat weights; default: the factorisation closest to the image aspect.
        ncols: panels per row.
        alpha: opacity of the attention overlay.

    Returns:
        The Figure.
    """
    img = _as_rgb(image)
    H, W = img.shape[:2]
    w = torch.as_tensor(_to_numpy(weights), dtype=torch.float32)
    if w.dim() == 2:  # (T, h*w) -> (T, h, w)
        h, ww = grid_shape or _grid_shape(w.size(1), H, W)
        w = w.view(w.size(0), h, ww)
    T = w.size(0)
    # bilinear upsampling to the image size gives the smooth blobs of the SAT figure
    up = F.interpolate(w.unsqueeze(1), size=(H, W), mode="bilinear", align_corners=False).squeeze(1)  # (T,H,W)
    lo = up.flatten(1).min(1).values.view(T, 1, 1)
    hi = up.flatten(1).max(1).values.view(T, 1, 1)
    maps = ((up - lo) / (hi - lo).clamp_min(1e-8)).numpy()  # per-word [0, 1] so weak maps stay visible

    ncols = max(1, min(ncols, T))
    nrows = max(1, math.ceil(T / ncols))
    fig = _new_figure(2.4 * ncols, 2.6 * nrows)
    labels = _labels(words, T)
    for t in range(T):
        ax = fig.add_subplot(nrows, ncols, t + 1)
        ax.imshow(img)
        ax.imshow(maps[t], cmap="gray", alpha=alpha, extent=(-0.5, W - 0.5, H - 0.5, -0.5))
        ax.set_title(labels[t], fontsize=10)
        ax.axis("off")
    if T == 0:
        fig.add_subplot(1, 1, 1).imshow(img)
    fig.tight_layout()
    return _finish(fig, path)


def plot_spectrogram_alignment(
    spec: Any,
    weights: Any,
    tokens: Sequence[str],
    path: str | Path | None = None,
    title: str | None = None,
) -> Figure:
    """Spectrogram on top, token-by-encoder-frame attention underneath, on a shared time axis.

    The encoder usually downsamples time (``S_enc <= frames``); each encoder step is drawn over the
    ``frames / S_enc`` spectrogram frames it summarises, so both panels line up in input frames.

    Args:
        spec: ``(F, frames)`` (log-)spectrogram, frequency bins first.
        weights: ``(T, S_enc)`` attention of each output token over encoder frames.
        tokens: ``T`` token labels.
        path: optional PNG destination.
        title: optional title.

    Returns:
        The Figure.
    """
    s = _to_numpy(spec)  # (F, frames)
    w = _to_numpy(weights)  # (T, S_enc)
    n_bins, frames = s.shape
    T = w.shape[0]
    fig = _new_figure(max(5.0, min(16.0, frames / 40 + 3)), 2.5 + max(1.5, 0.3 * T))
    gs = fig.add_gridspec(2, 1, height_ratios=[1.0, max(1.0, 0.12 * T)], hspace=0.08)
    ax_spec = fig.add_subplot(gs[0])
    ax_att = fig.add_subplot(gs[1], sharex=ax_spec)
    ax_spec.imshow(s, origin="lower", aspect="auto", cmap="magma", extent=(0, frames, 0, n_bins))
    ax_spec.set_ylabel("freq bin")
    ax_spec.tick_params(labelbottom=False)
    if title:
        ax_spec.set_title(plain(title))
    ax_att.imshow(
        w,
        aspect="auto",
        cmap="viridis",
        interpolation="nearest",
        extent=(0, frames, T, 0),
        vmin=0.0,
        vmax=max(float(w.max(initial=0.0)), 1e-6),
    )
    ax_att.set_yticks([t + 0.5 for t in range(T)], labels=_labels(tokens, T))
    ax_att.set_xlabel("input frame")
    ax_att.set_ylabel("output token")
    return _finish(fig, path)
