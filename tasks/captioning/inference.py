"""Captioning with a trained module: the library API (``CaptioningModule.caption``), its result type and the
per-word attention figure of one image."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from core.decoding.beam import beam_search
from core.decoding.fast_paths import eval_mode
from tasks.captioning.images import load_rgb

__all__ = ["Caption", "CaptionMixin", "save_attention_figure"]


@dataclass
class Caption:
    """One caption hypothesis of an image.

    Attributes:
        text: the caption.
        score: length-normalised log-probability.
        words: the emitted words (one per attention map).
        attention: ``(len(words), g, g)`` where each word looked on the ``g x g`` grid, or None.
    """

    text: str
    score: float
    words: list[str]
    attention: Tensor | None


class CaptionMixin:
    """``generate`` / ``caption`` for :class:`tasks.captioning.module.CaptioningModule` (needs ``encoder``,
    ``decoder``, ``vocab``, the eval transform and the ``max_len`` / ``grid_size`` hyper-parameters)."""

    @torch.no_grad()
    def generate(
        self,
        images: Tensor,
        beam_size: int = 5,
        nbest: int = 1,
        max_len: int | None = None,
        length_penalty: float = 1.0,
    ) -> list[list[Caption]]:
        """Beam-search captions for a batch of preprocessed images.

        Args:
            images: ``(B, 3, H, W)`` normalised.
            beam_size: beam width (1 = greedy).
            nbest: hypotheses per image (<= beam_size).
            max_len: maximum caption length in words (default: ``hparams.max_len``).
            length_penalty: exponent of the length normalisation.

        Returns:
            ``nbest`` captions per image, best first.
        """
        hp = self.hparams  # type: ignore[attr-defined]
        feats = self.encoder(images)  # type: ignore[attr-defined]  # (B, S, D)
        decoder, vocab = self.decoder, self.vocab  # type: ignore[attr-defined]
        res = beam_search(
            decoder.step,
            decoder.init_state(feats, None, summary=feats.mean(1)),
            batch_size=images.shape[0],
            bos_id=vocab.bos_id,
            eos_id=vocab.eos_id,
            max_len=(max_len or hp.max_len) + 1,  # +1: the EOS step
            beam_size=beam_size,
            nbest=nbest,
            length_penalty=length_penalty,
            pad_id=vocab.pad_id,
            suppress=(vocab.pad_id, vocab.bos_id),
        )
        g = int(hp.grid_size)
        out: list[list[Caption]] = []
        for toks, scores, attns in zip(res.tokens, res.scores, res.attention):
            out.append(
                [
                    Caption(
                        vocab.decode(t), float(s), vocab.words(t), None if a is None else a.view(len(t), g, g)
                    )  # (T, g*g) -> (T, g, g)
                    for t, s, a in zip(toks, scores, attns)
                ]
            )
        return out

    def _decode_batch(self, batch: Any) -> list[str]:
        """Best caption of each image of a training-loader batch (validation / test / predict)."""
        return [hyps[0].text for hyps in self.generate(batch.images, beam_size=self.hparams.beam_size)]  # type: ignore[attr-defined]

    @torch.no_grad()
    def caption_images(
        self, images: Sequence[Image.Image], beam: int = 5, nbest: int = 1, batch_size: int = 16
    ) -> list[list[Caption]]:
        """``nbest`` captions (with scores and attention) of each RGB PIL image, best first."""
        out: list[list[Caption]] = []
        device = self.device  # type: ignore[attr-defined]
        with eval_mode(self):  # type: ignore[arg-type]
            for start in range(0, len(images), batch_size):
                x = torch.stack([self.preprocess(im) for im in images[start : start + batch_size]]).to(device)
                out.extend(self.generate(x, beam_size=beam, nbest=nbest))
        return out

    @torch.no_grad()
    def caption(
        self,
        images: str | os.PathLike[str] | Image.Image | Sequence[str | os.PathLike[str] | Image.Image],
        beam: int = 5,
        nbest: int = 1,
        return_attention: bool = False,
        batch_size: int = 16,
    ) -> Any:
        """Caption one image or a list of them.

        Args:
            images: a file path or PIL image (any mode; converted to RGB), or a list of them; a single one
                gives its one result, not a list of one.
            beam: beam width (1 = greedy).
            nbest: captions per image (<= beam).
            return_attention: also return each caption's attention maps.
            batch_size: images per forward pass.

        Returns:
            ``nbest == 1``: one caption per image, or with ``return_attention`` a ``(caption, weights)`` pair
            where ``weights`` is ``(n_words, grid_size, grid_size)`` (row t = where word t looked).
            ``nbest > 1``: a list of :class:`Caption` per image.

        Raises:
            tasks.captioning.images.ImageError: a file is missing or not a readable image (the message
                names it; the CLI reports such files one by one and captions the rest).
        """
        if isinstance(images, (str, os.PathLike, Image.Image)):
            return self.caption([images], beam, nbest, return_attention, batch_size)[0]
        pil = [im.convert("RGB") if isinstance(im, Image.Image) else load_rgb(im) for im in images]
        hyps = self.caption_images(pil, beam=beam, nbest=nbest, batch_size=batch_size)
        if nbest > 1:
            return hyps
        g = int(self.hparams.grid_size)  # type: ignore[attr-defined]
        if not return_attention:
            return [h[0].text for h in hyps]
        return [
            (h[0].text, h[0].attention if h[0].attention is not None else torch.zeros(len(h[0].words), g, g))
            for h in hyps
        ]

    def preprocess(self, image: Image.Image) -> Tensor:
        """RGB PIL image -> ``(3, image_size, image_size)`` normalised tensor (inference transform)."""
        return self._transform(image)  # type: ignore[attr-defined,no-any-return]


def save_attention_figure(image: Image.Image, caption: str, weights: Tensor, path: str | Path, image_size: int) -> Path:
    """Write the per-word attention overlay of one captioned image as a PNG.

    Args:
        image: the RGB image that was captioned.
        caption: its caption (one panel per word).
        weights: ``(n_words, g, g)`` attention maps from `CaptioningModule.caption`.
        path: PNG destination (parent folders are created).
        image_size: the image is shown resized/cropped as the network saw it.

    Returns:
        The PNG path.
    """
    from torchvision.transforms import v2

    from core.viz import plot_image_attention, save_figure

    shown = v2.CenterCrop(image_size)(v2.Resize(image_size)(image))
    fig = plot_image_attention(shown, weights, caption.split())
    return save_figure(fig, path)
