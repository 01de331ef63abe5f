"""`CaptioningModule`: CNN encoder + attention decoder, trained with teacher forcing, on the core module.

Its options are the ``--model.*`` of ``attn-caption`` (the optimizer's eight are documented once, in
`core.train.schedule.OptimizerOptions`); `core.train.module.TaskModule` runs what it trains, decodes and scores:
:class:`tasks.captioning.task.CaptioningTask`. Validation decodes with beam search and scores BLEU-1..4 / CIDEr-D
(`tasks.captioning.metrics`, COCO-toolkit style); it also logs per-word attention overlays of a few fixed
validation images and, on generated scenes, whether the attention points at the object each word names
(``val/pointing``, `tasks.captioning.alignment`); see :mod:`tasks.captioning.evaluation`. Checkpoints are
self-contained: ``checkpoint["attn_suite"]`` carries the task name, the word vocabulary and the image
preprocessing (:mod:`tasks.captioning.stored`); loading goes through ``core.io.rebuild`` (``weights_only=True``,
task check, validated hyper-parameters). Captioning itself is :class:`tasks.captioning.inference.Captioner`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from PIL import Image
from torch import Tensor

from core.errors import ConfigError
from core.layers import AttentionalRNNDecoder
from core.train.module import TaskModule
from core.train.task import options_from
from tasks.captioning import stored
from tasks.captioning.decoder import TransformerCaptionDecoder
from tasks.captioning.encoder import ImageEncoder
from tasks.captioning.hf_encoder import HFImageEncoder
from tasks.captioning.images import IMAGENET_MEAN, IMAGENET_STD
from tasks.captioning.inference import Caption
from tasks.captioning.network import CaptionNetwork, NetworkOptions
from tasks.captioning.stored import CaptioningFiles
from tasks.captioning.task import CaptioningTask, TaskOptions
from tasks.captioning.vocab import CaptionVocab

__all__ = ["CaptioningModule"]


class CaptioningModule(TaskModule[CaptionNetwork]):
    """Image captioning with visual attention (Show, Attend and Tell, plus a Transformer option).

    Args:
        vocab: word vocabulary as ``CaptionVocab.to_dict()``; the CLI links it from
            ``data.vocab`` (built from the training captions), so configs never spell it out.
        encoder: CNN backbone: ``tiny`` (from scratch, fast on CPU), ``resnet18/34/50``,
            ``mobilenet_v3_small/large``, or ``hf:<hub-id-or-folder>``: a ``transformers`` vision backbone
            (ViT, DINOv2, ConvNeXt, ResNet, CLIP/SigLIP vision tower; `tasks.captioning.hf_encoder`) whose
            patch/grid features are attended, with its image processor's size and normalisation.
        pretrained: torchvision weights (``imagenet``/``DEFAULT``/an enum name; needs network
            once) or a local weights file (``state_dict`` of the torchvision model); None = random.
        trainable_blocks: -1 train the whole encoder, 0 freeze it, k fine-tune the last k blocks.
        unfreeze_after_steps: ``hf:`` encoders: frozen for this many optimizer steps first (the decoder
            trains alone), then ``trainable_blocks`` applies; None = from the start.
        pretrained_config: ``hf:`` encoders: the backbone's config and processor settings as plain data.
            Filled from a checkpoint's metadata when one is loaded (the backbone is then rebuilt offline,
            never downloaded); leave it None.
        grid_size: the encoder's feature map is pooled to ``grid_size x grid_size`` cells (``hf:``
            encoders: set to their own patch/feature grid).
        encoder_dim: size of each grid feature after projection.
        decoder: ``rnn`` (soft attention, Show-Attend-Tell) or ``transformer``.
        rnn_type: ``lstm`` (the paper's) or ``gru``, for the RNN decoder.
        attention: `core.attention` mechanism of the RNN decoder (additive, dot, general,
            scaled_dot, multihead, location), or ``none``: no attention, every word sees the mean grid
            feature (Show and Tell's image summary; the baseline of "what attention buys").
        attention_options: its options (default ``{"hidden_dim": 256}`` / ``{"num_heads": 4}``); ignored
            with a warning for ``none``, which takes none.
        embed_dim: RNN word embedding size.
        hidden_dim: decoder width: RNN state size / Transformer d_model.
        decoder_layers: stacked RNN cells / Transformer layers.
        num_heads: Transformer attention heads.
        ffn_dim: Transformer feed-forward width.
        gate: RNN: gating scalar beta on the attention context.
        alpha_reg: RNN: weight lambda of the doubly stochastic attention regulariser
            ``lambda * mean_s (1 - sum_t alpha_ts)^2`` (0 disables it).
        dropout: decoder dropout.
        max_len: longest generated caption (words).
        optimizer, lr, weight_decay, betas, eps, warmup_steps, lr_schedule, min_lr_ratio: the optimizer and its
            schedule (`core.train.schedule.OptimizerOptions`).
        encoder_lr_scale: encoder LR = ``lr * encoder_lr_scale`` (lower for pretrained backbones).
        label_smoothing: cross-entropy label smoothing.
        beam_size: beam size of validation/test/predict decoding (1 = greedy, faster).
        plot_examples: fixed validation images whose attention overlays are logged.
        image_size: network input side (linked from ``data.image_size``).
        mean: normalisation mean (linked from ``data.mean``).
        std: normalisation std (linked from ``data.std``).
    """

    TASK, MONITOR, MONITOR_MODE = CaptioningFiles.TASK, "val/bleu4", "max"
    HPARAMS_FROM_DATA = ("vocab", "image_size", "mean", "std")
    # what a file of this module holds, shared with the Lightning-free loader (`tasks.captioning.stored`)
    HPARAM_BOUNDS = CaptioningFiles.HPARAM_BOUNDS
    HPARAM_RENAMES = CaptioningFiles.HPARAM_RENAMES
    FOLDER_FILES = CaptioningFiles.FOLDER_FILES
    task: CaptioningTask

    def __init__(
        self,
        vocab: dict[str, Any] | None = None,
        encoder: str = "tiny",
        pretrained: str | None = None,
        trainable_blocks: int = -1,
        unfreeze_after_steps: int | None = None,
        pretrained_config: dict[str, Any] | None = None,
        grid_size: int = 6,
        encoder_dim: int = 256,
        decoder: Literal["rnn", "transformer"] = "rnn",
        rnn_type: Literal["gru", "lstm"] = "lstm",
        attention: str = "additive",
        attention_options: dict[str, int | float | str | bool | None] | None = None,
        embed_dim: int = 128,
        hidden_dim: int = 256,
        decoder_layers: int = 1,
        num_heads: int = 4,
        ffn_dim: int = 1024,
        gate: bool = True,
        alpha_reg: float = 1.0,
        dropout: float = 0.3,
        max_len: int = 30,
        optimizer: Literal["adamw", "adam", "sgd"] = "adamw",
        lr: float = 1e-3,
        encoder_lr_scale: float = 1.0,
        weight_decay: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        warmup_steps: int = 100,
        lr_schedule: Literal["constant", "inverse_sqrt", "cosine", "linear"] = "constant",
        min_lr_ratio: float = 0.0,
        label_smoothing: float = 0.0,
        beam_size: int = 3,
        plot_examples: int = 4,
        image_size: int = 96,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        if vocab is None:
            raise ConfigError(
                "model.vocab is missing: it is built by the data module (the CLI links data.vocab); "
                "in Python pass vocab=datamodule.vocab"
            )
        try:
            words = CaptionVocab.from_dict(vocab)
        except ValueError as err:
            raise ConfigError(f"model.vocab: not a captioning word vocabulary: {err}") from None
        recorded = NetworkOptions.recorded_attention_options(decoder, attention, attention_options, hidden_dim)
        # the constructor's arguments each part reads
        network = options_from(NetworkOptions, locals(), attention_options=recorded)
        options = options_from(TaskOptions, locals(), mean=tuple(mean), std=tuple(std))
        super().__init__(CaptioningTask(words, network, options, pretrained_config))
        self.save_hyperparameters()
        self.model = self.task.build_network()
        # what was built is what is recorded (and reloaded without a warning): the options of `none` dropped, an
        # hf: backbone's own feature grid
        self.hparams.update(attention_options=network.attention_options, grid_size=self.task.grid_size)

    # ------------------------------------------------------------------ earlier checkpoints and model folders
    @classmethod
    def upgrade_hparams(cls, hparams: dict[str, Any], version: int) -> dict[str, Any]:
        return stored.upgrade_hparams(hparams, version)

    @classmethod
    def upgrade_state_dict(cls, state: dict[str, Any], version: int) -> dict[str, Any]:
        return stored.upgrade_state_dict(state, version)

    @classmethod
    def hparams_from_metadata(cls, meta: Mapping[str, Any], source: str) -> dict[str, Any]:
        return stored.hparams_from_metadata(meta)

    # ------------------------------------------------------------------ what other code reads off the module
    @property
    def vocab(self) -> CaptionVocab:
        """The word vocabulary (a data module encodes targets with a restored model's own)."""
        return self.task.vocab

    @property
    def encoder(self) -> ImageEncoder | HFImageEncoder:
        """The network's image encoder."""
        return self.network.encoder

    @property
    def decoder(self) -> AttentionalRNNDecoder | TransformerCaptionDecoder:
        """The network's caption decoder."""
        return self.network.decoder

    # ------------------------------------------------------------------ the library API
    def caption(
        self,
        images: str | os.PathLike[str] | Image.Image | Sequence[str | os.PathLike[str] | Image.Image],
        beam: int = 5,
        nbest: int = 1,
        return_attention: bool = False,
        batch_size: int = 16,
    ) -> Any:
        """:meth:`tasks.captioning.inference.Captioner.caption` with this model: one image or a list of them."""
        return self.task.captioner(self.network).caption(images, beam, nbest, return_attention, batch_size)

    def caption_images(
        self, images: Sequence[Image.Image], beam: int = 5, nbest: int = 1, batch_size: int = 16
    ) -> list[list[Caption]]:
        """``nbest`` captions (with scores and attention) of each RGB PIL image, best first."""
        return self.task.captioner(self.network).caption_images(images, beam, nbest, batch_size)

    def generate(
        self,
        images: Tensor,
        beam_size: int = 5,
        nbest: int = 1,
        max_len: int | None = None,
        length_penalty: float = 1.0,
    ) -> list[list[Caption]]:
        """Beam-search captions for ``(B, 3, H, W)`` preprocessed images: ``nbest`` per image, best first
        (``max_len`` words at most, default ``hparams.max_len``)."""
        return self.task.captioner(self.network).generate(images, beam_size, nbest, max_len, length_penalty)

    def preprocess(self, image: Image.Image) -> Tensor:
        """RGB PIL image -> ``(3, image_size, image_size)`` normalised tensor (inference transform)."""
        return self.task.transform(image)
