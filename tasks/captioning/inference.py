"""Captioning with a trained network: the library API behind ``CaptioningModule.caption`` (:class:`Captioner`), its
result type and the per-word attention figure of one image."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from core.decoding.beam import StepDecoder, beam_search
from core.decoding.fast_paths import eval_mode
from tasks.captioning.images import load_rgb
from tasks.captioning.network import CaptionNetwork
from tasks.captioning.vocab import CaptionVocab

__all__ = ["Caption", "Captioner", "save_attention_figure"]


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


@dataclass(frozen=True)
class Captioner:
    """What captioning needs: the network, its vocabulary, the image preprocessing and the longest caption.

    ``CaptioningModule.caption`` / ``caption_images`` / ``generate`` / ``preprocess`` are these methods on the
    module's network (validation, test and prediction decode through them too).

    Attributes:
        network: the encoder and decoder.
        vocab: the word vocabulary.
        transform: RGB PIL image -> ``(3, image_size, image_size)`` normalised tensor.
        max_len: default longest caption (words).
    """

    network: CaptionNetwork
    vocab: CaptionVocab
    transform: Callable[[Image.Image], Tensor]
    max_len: int

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
            max_len: maximum caption length in words (default: :attr:`max_len`).
            length_penalty: exponent of the length normalisation.

        Returns:
            ``nbest`` captions per image, best first.
        """
        network, vocab = self.network, self.vocab
        decoder: StepDecoder = network  # the decoding contract, checked by the type checker
        res = beam_search(
            decoder.step,
            network.init_state(network.encode(images)),  # (B, S, D) grid features
            batch_size=images.shape[0],
            bos_id=vocab.bos_id,
            eos_id=vocab.eos_id,
            max_len=(max_len or self.max_len) + 1,  # +1: the EOS step
            beam_size=beam_size,
            nbest=nbest,
            length_penalty=length_penalty,
            pad_id=vocab.pad_id,
            suppress=(vocab.pad_id, vocab.bos_id),
        )
        g = network.grid_size
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

    def best(self, images: Tensor, beam_size: int) -> list[str]:
        """The best caption of each image of a batch (validation / test / predict)."""
        return [hyps[0].text for hyps in self.generate(images, beam_size=beam_size)]

    @torch.no_grad()
    def caption_images(
        self, images: Sequence[Image.Image], beam: int = 5, nbest: int = 1, batch_size: int = 16
    ) -> list[list[Caption]]:
        """``nbest`` captions (with scores and attention) of each RGB PIL image, best first."""
        out: list[list[Caption]] = []
        device = next(self.network.parameters()).device
        with eval_mode(self.network):
            for start in range(0, len(images), batch_size):
                x = torch.stack([self.transform(im) for im in images[start : start + batch_size]]).to(device)
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
        """Caption one image or a list of them (``CaptioningModule.caption`` documents it)."""
        if isinstance(images, (str, os.PathLike, Image.Image)):
            return self.caption([images], beam, nbest, return_attention, batch_size)[0]
        pil = [im.convert("RGB") if isinstance(im, Image.Image) else load_rgb(os.fspath(im)) for im in images]
        hyps = self.caption_images(pil, beam=beam, nbest=nbest, batch_size=batch_size)
        if nbest > 1:
            return hyps
        g = self.network.grid_size
        if not return_attention:
            return [h[0].text for h in hyps]
        return [
            (h[0].text, h[0].attention if h[0].attention is not None else torch.zeros(len(h[0].words), g, g))
            for h in hyps
        ]


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
