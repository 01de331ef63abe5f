"""Validation and test of captioning beyond the corpus scores: attention figures, pointing, the extra test split.

The core module scores each evaluation's captions as one corpus (BLEU-1..4 / CIDEr-D of
`tasks.captioning.metrics`, each image once over every rank). Here:

* :func:`attention_figures`: the per-word attention overlays of a few fixed validation images;
* :func:`split_pointing`: on the generated scenes corpus, whether the attention points at the object each word
  names (`tasks.captioning.alignment`): ``val/pointing`` (and ``_colour`` / ``_shape`` / ``_words``) on the first
  `~tasks.captioning.alignment.POINTING_SCENES` validation scenes, ``test/pointing`` and ``unseen/pointing`` on
  those of each test set;
* :class:`ExtraTestSplits`: the scores of the test splits after the first (the scenes' ``unseen`` set), logged
  as ``unseen/bleu4`` etc. The core module runs one test loader and scores one test corpus; the data module
  serves every test split in that loader, each row tagged with its split (``Batch.splits``), and the task hands
  the rows of the other splits to this callback.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import lightning.pytorch as pl
from matplotlib.figure import Figure
from torch import Tensor

from core.metrics.corpus import CorpusOutputs
from core.viz import plot_image_attention
from tasks.captioning.alignment import caption_pointing, gold_scenes
from tasks.captioning.images import denormalize
from tasks.captioning.inference import Captioner
from tasks.captioning.network import CaptionNetwork

__all__ = ["ExtraTestSplits", "attention_figures", "split_pointing"]


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


class ExtraTestSplits(pl.Callback):
    """Scores and logs the test splits after the first, as ``<split>/<score>`` (see the module docstring).

    Args:
        corpora: split name -> the outputs of its rows (the task's own mapping, filled while testing).
        epoch_scores: ``(network, datamodule, split)`` -> scores computed once per test (pointing).
    """

    def __init__(
        self,
        corpora: Mapping[str, CorpusOutputs],
        epoch_scores: Callable[[CaptionNetwork, Any, str], dict[str, float]],
    ) -> None:
        self.corpora = corpora
        self.epoch_scores = epoch_scores

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for corpus in self.corpora.values():
            corpus.reset()  # an interrupted test may have left outputs

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        network = getattr(pl_module, "model", None)
        if not isinstance(network, CaptionNetwork):
            return
        datamodule = getattr(trainer, "datamodule", None)
        for split, corpus in self.corpora.items():
            corpus.to(pl_module.device)  # gathered where the module runs (NCCL gathers GPU tensors only)
            # compute() is a collective under DDP: every rank calls it, also one that saw no row of this split
            scores = corpus.compute() if corpus.update_called or trainer.world_size > 1 else {}
            corpus.reset()
            scores.update(self.epoch_scores(network, datamodule, split))
            for name, value in scores.items():
                # the same value on every rank (computed from the gathered corpus); sync_dist averages equal values
                pl_module.log(f"{split}/{name}", value, sync_dist=True)
