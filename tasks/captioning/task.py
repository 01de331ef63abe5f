"""The captioning task on the core module (`core.train.module.TaskModule`): what it trains, decodes and scores.

:class:`CaptioningTask` is the plain object ``CaptioningModule`` hands the core module: cross-entropy with
Show-Attend-Tell's doubly stochastic attention regulariser (:func:`caption_loss`), beam-search captions scored
as one corpus (BLEU-1..4 / CIDEr-D), pointing on generated scenes and attention overlays
(:mod:`tasks.captioning.evaluation`), the checkpoint artifacts (:mod:`tasks.captioning.stored`), prediction rows
and the optimizer groups of a pretrained encoder. It owns the word vocabulary and the image transform.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor, nn

from core.cli.output import Prediction
from core.errors import ConfigError
from core.train.finetune import FreezeSchedule, optimizer_groups
from core.train.task import EvalKind, EvalStage, Evaluation, Objective, Stage, Task
from tasks.captioning import stored
from tasks.captioning.batching import Batch
from tasks.captioning.evaluation import attention_figures, split_pointing
from tasks.captioning.images import IMAGENET_MEAN, IMAGENET_STD, eval_transform
from tasks.captioning.inference import Captioner
from tasks.captioning.metrics import caption_scores
from tasks.captioning.network import CaptionNetwork, NetworkOptions, build_network
from tasks.captioning.vocab import CaptionVocab

__all__ = ["CaptioningTask", "TaskOptions", "caption_loss"]


@dataclass(frozen=True)
class TaskOptions:
    """The ``--model.*`` options of the images, training and evaluation (their meaning: ``CaptioningModule``)."""

    image_size: int = 96
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    alpha_reg: float = 1.0
    label_smoothing: float = 0.0
    encoder_lr_scale: float = 1.0
    beam_size: int = 3
    plot_examples: int = 4


def caption_loss(
    network: CaptionNetwork, batch: Batch, pad_id: int, alpha_reg: float, label_smoothing: float
) -> tuple[Tensor, Tensor]:
    """Cross-entropy of the teacher-forced captions plus ``alpha_reg`` times the doubly stochastic regulariser.

    Args:
        network: the captioner.
        batch: images and their BOS-prefixed inputs / next-token targets ``(B, T)``.
        pad_id: the padding id (ignored).
        alpha_reg: weight of the regulariser (0 or a decoder without attention maps: none).
        label_smoothing: of the cross-entropy.

    Returns:
        ``(total, cross-entropy)``, scalars.
    """
    logits, alphas = network(batch.images, batch.inputs, need_weights=alpha_reg > 0)  # (B, T, V), (B, T, S) | None
    ce = F.cross_entropy(
        logits.flatten(0, 1).float(),  # (B*T, V)
        batch.targets.flatten(),  # (B*T,)
        ignore_index=pad_id,
        label_smoothing=label_smoothing,
    )
    loss = ce
    if alphas is not None and alpha_reg > 0:
        valid = (batch.targets != pad_id).unsqueeze(-1).to(alphas.dtype)  # (B, T, 1)
        coverage = (alphas * valid).sum(1)  # (B, S): total attention each cell received
        # Paper eq. 14: encourage every cell to be attended about once over the caption. Averaged over cells
        # (as in the widely used PyTorch port) rather than summed, so lambda does not need rescaling when the
        # grid size changes.
        loss = loss + alpha_reg * ((1.0 - coverage) ** 2).mean()
    return loss, ce


class CaptioningTask(Task[CaptionNetwork, Batch]):
    """Image captioning with visual attention (see the module docstring).

    Args:
        vocab: the word vocabulary.
        network: the network's options.
        options: the images', training's and evaluation's options.
        pretrained_config: an ``hf:`` backbone's stored config (rebuilt offline from it), or None.
    """

    unit = "img"

    def __init__(
        self,
        vocab: CaptionVocab,
        network: NetworkOptions,
        options: TaskOptions,
        pretrained_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.vocab = vocab
        self.network_options = network
        self.options = options
        self.pretrained_config = pretrained_config
        self.transform = eval_transform(options.image_size, options.mean, options.std)
        #: the hf: backbone's config and processor settings (what a checkpoint stores), None for other encoders
        self.pretrained_info: dict[str, Any] | None = None
        self.grid_size = network.grid_size  # an hf: backbone's own grid, once built
        self._plot_images: Tensor | None = None  # (n, 3, H, W) fixed validation images of the figures

    # ------------------------------------------------------------------ the network
    def build_network(self) -> CaptionNetwork:
        o = self.options
        network, self.pretrained_info = build_network(
            self.network_options, len(self.vocab), o.image_size, o.mean, o.std, self.pretrained_config
        )
        self.grid_size = network.grid_size
        return network

    def captioner(self, network: CaptionNetwork) -> Captioner:
        """The library calls (``caption`` ...) on ``network``."""
        return Captioner(network, self.vocab, self.transform, self.network_options.max_len, self.options.image_size)

    def setup(self, stage: str, datamodule: Any | None) -> bool:
        """Fail early (a `ConfigError`) when the data's captions cannot fit the Transformer decoder's positions."""
        max_caption_len = getattr(getattr(datamodule, "hparams", None), "max_caption_len", None)
        positions = self.network_options.positions
        if positions is not None and isinstance(max_caption_len, int) and max_caption_len + 1 > positions:
            raise ConfigError(  # +1: the BOS-prefixed decoder input
                f"data.max_caption_len={max_caption_len} does not fit the transformer decoder's {positions} "
                f"learned positions: set data.max_caption_len <= {positions - 1} "
                f"or model.max_len >= {max_caption_len - 1}"
            )
        return False

    # ------------------------------------------------------------------ training
    def objective(self, network: CaptionNetwork, batch: Batch, stage: Stage) -> Objective:
        counts: dict[str, Tensor] = {}
        if stage == "train":
            # every step (0 when nothing was skipped): with sync_dist every rank must log the same keys, and the
            # epoch value is the total over steps and ranks
            device = batch.images.device
            counts = {
                "skipped_images": torch.tensor(float(batch.skipped), device=device),
                "skipped_batches": torch.tensor(float(len(batch) == 0), device=device),
            }
        if len(batch) == 0:  # every image of this batch failed to decode
            return Objective(None, 0, counts=counts)
        regularise = self.network_options.decoder == "rnn"  # the Transformer decoder returns no maps in training
        loss, ce = caption_loss(
            network,
            batch,
            self.vocab.pad_id,
            self.options.alpha_reg if regularise else 0.0,
            self.options.label_smoothing,
        )
        return Objective(loss, len(batch), terms={"ce": ce} if stage == "train" else {}, counts=counts)

    def batch_units(self, batch: Batch) -> float:
        return float(len(batch))

    def param_groups(self, network: CaptionNetwork) -> list[tuple[list[nn.Parameter], float]]:
        """An ``hf:`` backbone, the projection and the decoder (`core.train.finetune.optimizer_groups`); else the
        encoder at ``lr * encoder_lr_scale`` and the decoder at ``lr``."""
        scale = self.options.encoder_lr_scale
        groups = optimizer_groups(network, scale)
        if groups is not None:
            return groups
        encoder = [p for p in network.encoder.parameters() if p.requires_grad]
        decoder = [p for p in network.decoder.parameters() if p.requires_grad]
        return [(encoder, scale), (decoder, 1.0)]

    def callbacks(self) -> list[pl.Callback]:
        """`core.train.finetune.FreezeSchedule` for an ``hf:`` encoder (``unfreeze_after_steps``)."""
        return [FreezeSchedule()] if self.pretrained_info is not None else []

    # ------------------------------------------------------------------ evaluation
    def eval_prefixes(self, stage: EvalKind, datamodule: Any | None) -> list[str]:
        """Test loaders are named after their splits (the data module's ``test_names``: ``test`` and, on the
        generated scenes, ``unseen``), so their scores are ``test/bleu4``, ``unseen/bleu4`` ..."""
        names = getattr(datamodule, "test_names", None) if stage == "test" else None
        return [str(name) for name in names] if names else [stage]

    def evaluate(self, network: CaptionNetwork, batch: Batch, stage: EvalStage) -> Evaluation:
        """The best beam-search caption of each image (``stage``: the loader's split, see `eval_prefixes`)."""
        if stage == "val" and self._plot_images is None and self.options.plot_examples > 0:
            # the first validation batch is the same every epoch (no shuffling): fixed plot images
            self._plot_images = batch.images[: self.options.plot_examples].detach().cpu()
        hyps = self.captioner(network).best(batch.images, self.options.beam_size)
        return Evaluation(batch.index.tolist(), hyps, batch.refs)

    def score(self, hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
        return caption_scores(hypotheses, references)

    def epoch_scores(self, network: CaptionNetwork, datamodule: Any | None, stage: EvalStage) -> dict[str, float]:
        """Pointing accuracy on the first generated scenes of the loader's split ``stage`` (``val``, ``test``,
        ``unseen``; none without attention or scenes)."""
        if not self.network_options.attends:  # the uniform "map" of no attention points nowhere
            return {}
        return split_pointing(self.captioner(network), datamodule, stage, self.options.beam_size)

    def figures(self, network: CaptionNetwork, datamodule: Any | None) -> list[tuple[str, Figure]]:
        if self._plot_images is None:
            return []
        o = self.options
        return attention_figures(self.captioner(network), self._plot_images, o.beam_size, o.mean, o.std)

    def predict(
        self, network: CaptionNetwork, batch: Batch, datamodule: Any | None, dataloader_idx: int
    ) -> list[Prediction]:
        """One ``(dataset index, (image name, caption))`` row per image (``core.cli.predict.PredictionWriter``).

        Images are named by their dataset (the file path for ``data.predict_path`` and real corpora,
        ``scene test/3 (seed 0)`` for generated scenes); unreadable ones were skipped with a warning.
        """
        if len(batch) == 0:
            return []
        namer = getattr(getattr(datamodule, "predict_dataset", None), "name", None)
        hyps = self.captioner(network).best(batch.images, self.options.beam_size)
        return [
            Prediction(int(i), (namer(int(i)) if callable(namer) else f"item {int(i)}", c))
            for i, c in zip(batch.index.tolist(), hyps)
        ]

    # ------------------------------------------------------------------ what a checkpoint holds besides weights
    def artifacts(self) -> dict[str, Any]:
        o = self.options
        return stored.artifacts(self.vocab, o.image_size, o.mean, o.std, self.grid_size, self.pretrained_info)

    def restore(self, artifacts: Mapping[str, Any], source: str) -> bool:
        stored.check_vocab(artifacts, self.vocab, source)
        return False
