"""Validation and test of captioning beyond the corpus scores: attention figures and pointing.

The core module scores the captions of each evaluation loader as one corpus (BLEU-1..4 / CIDEr-D of
`tasks.captioning.metrics`, each image once over every rank), logged under the loader's split: ``val/*``,
``test/*`` and, on the generated scenes, ``unseen/*`` (`tasks.captioning.task.CaptioningTask.eval_prefixes`).
Here:

* :func:`attention_figures`: the per-word attention overlays of a few fixed validation images;
* :func:`split_pointing`: on the generated scenes corpus, whether the attention points at the object each word
  names (`tasks.captioning.alignment`): ``val/pointing`` (and ``_colour`` / ``_shape`` / ``_words``) on the first
  `~tasks.captioning.alignment.POINTING_SCENES` validation scenes, ``test/pointing`` and ``unseen/pointing`` on
  those of each test set.
"""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure
from torch import Tensor

from core.viz import plot_image_attention
from tasks.captioning.alignment import caption_pointing, gold_scenes
from tasks.captioning.images import denormalize
from tasks.captioning.inference import Captioner

__all__ = ["attention_figures", "split_pointing"]


def attention_figures(
    captioner: Captioner, images: Tensor, beam: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> list[tuple[str, Figure]]:
    """``("val_attention/<i>", figure)``: where each word of the best caption of image ``i`` looked.

    Args:
        captioner: the network and its vocabulary.
        images: ``(B, 3, H, W)`` normalised images (any device).
        beam: beam width.
        mean, std: their normalisation (undone for the picture).
    """
    images = images.to(next(captioner.network.parameters()).device)
    captions = captioner.generate(images, beam_size=beam)
    pix = denormalize(images, mean, std)  # (B, H, W, 3)
    figures = []
    for i, hyps in enumerate(captions):
        best = hyps[0]
        if best.attention is not None and best.words:
            figures.append((f"val_attention/{i}", plot_image_attention(pix[i], best.attention, best.words)))
    return figures


def split_pointing(captioner: Captioner, datamodule: Any, split: str, beam: int) -> dict[str, float]:
    """Pointing scores (`tasks.captioning.alignment.caption_pointing`) on the first scenes of ``split``.

    Empty unless the data module is the generated scenes corpus (only it has object positions). Every rank
    captions the same few dozen scenes with the same weights and gets the same numbers: cheaper than sharding
    them and gathering the maps, and no collective call that one rank could miss. The scenes are rendered again
    each time (about a millisecond each), so they always match the data module in use.
    """
    scenes = gold_scenes(datamodule, split)
    if not scenes:
        return {}
    return caption_pointing(captioner.caption_images([s.image for s in scenes], beam=beam), scenes)
