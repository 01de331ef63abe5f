"""`CaptioningModule`: CNN encoder + attention decoder, trained with teacher forcing.

Validation decodes with beam search and scores BLEU-1..4 / CIDEr-D (`tasks.captioning.metrics`,
COCO-toolkit style); it also logs per-word attention overlays of a few fixed validation images and, on
generated scenes, whether the attention points at the object each word names (``val/pointing``,
`tasks.captioning.alignment`); see :mod:`tasks.captioning.evaluation`. Checkpoints are self-contained:
``checkpoint["attn_suite"]`` carries the task name, the word vocabulary and the image preprocessing
(:mod:`tasks.captioning.stored`); loading goes through ``core.io.rebuild`` (``weights_only=True``, task check,
validated hyper-parameters). Captioning itself is in :mod:`tasks.captioning.inference`.
"""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
import torch.nn.functional as F
from torch import Tensor

from core.attention import attention_options as attention_options_for  # the argument has its name
from core.cli.predict import Prediction
from core.errors import ConfigError
from core.io.hparams import BEAM, FRACTION, LAYERS, LENGTH, RATE, SIZE, STEPS
from core.io.pretrained import is_hf_spec
from core.io.task_io import TaskCheckpointMixin
from core.train.callbacks import empty_batch_loss
from core.train.finetune import FreezeSchedule, optimizer_groups
from core.train.progress_bar import ThroughputMixin
from core.train.schedule import OptimizerOptions, configure_optimizer
from tasks.captioning.data import Batch
from tasks.captioning.decoder import TransformerCaptionDecoder, show_attend_tell_decoder
from tasks.captioning.encoder import ImageEncoder
from tasks.captioning.evaluation import CaptioningEvalMixin
from tasks.captioning.hf_encoder import hf_image_encoder
from tasks.captioning.images import IMAGENET_MEAN, IMAGENET_STD, eval_transform
from tasks.captioning.inference import CaptionMixin
from tasks.captioning.stored import CaptioningStoredMixin
from tasks.captioning.vocab import CaptionVocab

TASK = "captioning"


def _dataset_of(trainer: Any, dataloader_idx: int) -> Any:
    """The dataset behind predict dataloader ``dataloader_idx`` (None when unknown)."""
    loaders = getattr(trainer, "predict_dataloaders", None) if trainer is not None else None
    if isinstance(loaders, (list, tuple)):
        loaders = loaders[dataloader_idx] if dataloader_idx < len(loaders) else None
    return getattr(loaders, "dataset", None)


class CaptioningModule(
    CaptionMixin, CaptioningEvalMixin, CaptioningStoredMixin, TaskCheckpointMixin, ThroughputMixin, L.LightningModule
):
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
        optimizer: ``adamw``, ``adam`` or ``sgd`` (``core.train.schedule.configure_optimizer``).
        lr: peak learning rate.
        encoder_lr_scale: encoder LR = ``lr * encoder_lr_scale`` (lower for pretrained backbones).
        weight_decay: weight decay (not on biases and norms).
        betas: Adam betas.
        eps: Adam epsilon.
        warmup_steps: linear LR warmup steps.
        lr_schedule: after warmup: ``constant``, ``inverse_sqrt``, ``cosine`` or ``linear``
            (cosine/linear decay over the trainer's step budget).
        min_lr_ratio: floor of cosine/linear decay, as a fraction of ``lr``.
        label_smoothing: cross-entropy label smoothing.
        beam_size: beam size of validation/test/predict decoding (1 = greedy, faster).
        plot_examples: fixed validation images whose attention overlays are logged.
        image_size: network input side (linked from ``data.image_size``).
        mean: normalisation mean (linked from ``data.mean``).
        std: normalisation std (linked from ``data.std``).
    """

    TASK = TASK
    MONITOR, MONITOR_MODE = "val/bleu4", "max"
    THROUGHPUT_UNIT = "img"
    HPARAMS_FROM_DATA = ("vocab", "image_size", "mean", "std")
    HPARAM_BOUNDS = {
        "trainable_blocks": (-1, 1000),
        "unfreeze_after_steps": STEPS,
        "grid_size": (1, 64),
        "encoder_dim": SIZE,
        "embed_dim": SIZE,
        "hidden_dim": SIZE,
        "decoder_layers": LAYERS,
        "num_heads": LAYERS,
        "ffn_dim": SIZE,
        "alpha_reg": (0.0, 1000.0),
        "dropout": FRACTION,
        "max_len": LENGTH,
        "lr": RATE,
        "encoder_lr_scale": RATE,
        "weight_decay": RATE,
        "betas": (0.0, 0.999999),
        "eps": (0.0, 1.0),
        "warmup_steps": STEPS,
        "min_lr_ratio": (0.0, 1.0),
        "label_smoothing": FRACTION,
        "beam_size": BEAM,
        "plot_examples": (0, 1000),
        "image_size": (16, 1024),
        "mean": (-10.0, 10.0),
        "std": (1e-3, 10.0),
    }
    HPARAM_RENAMES = {"feat_dim": "encoder_dim", "val_beam_size": "beam_size", "plot_images": "plot_examples"}
    FOLDER_FILES = {"vocab": "vocab.json"}

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
        super().__init__()
        if vocab is None:
            raise ConfigError(
                "model.vocab is missing: it is built by the data module (the CLI links data.vocab); "
                "in Python pass vocab=datamodule.vocab"
            )
        self.save_hyperparameters()
        if decoder == "rnn" and attention == "none":
            # options written for another mechanism are dropped (and named) here, so the checkpoint records what
            # was built and reloading it does not warn again
            self.hparams["attention_options"] = attention_options_for("none", attention_options, hidden_dim) or None
        try:
            self.vocab = CaptionVocab.from_dict(vocab)
        except ValueError as err:
            raise ConfigError(f"model.vocab: not a captioning word vocabulary: {err}") from None
        self.pretrained_info: dict[str, Any] | None = None
        if is_hf_spec(encoder):
            self.encoder: Any = self._hf_encoder(
                encoder, pretrained_config, encoder_dim, image_size, mean, std, trainable_blocks, unfreeze_after_steps
            )
        else:
            self.encoder = ImageEncoder(encoder, encoder_dim, grid_size, pretrained, trainable_blocks, dropout=0.0)
        v = len(self.vocab)
        if decoder == "rnn":
            self.decoder: Any = show_attend_tell_decoder(
                v,
                encoder_dim,
                embed_dim,
                hidden_dim,
                decoder_layers,
                rnn_type,
                attention,
                attention_options_for(attention, self.hparams.attention_options, hidden_dim=256),
                gate,
                dropout,
            )
        elif decoder == "transformer":
            self.decoder = TransformerCaptionDecoder(
                # Positions also cover teacher-forced training captions, which may be longer than max_len.
                v,
                encoder_dim,
                hidden_dim,
                decoder_layers,
                num_heads,
                ffn_dim,
                dropout,
                max(max_len + 2, 128),
            )
        else:
            raise ConfigError(f"model.decoder={decoder!r}: expected 'rnn' or 'transformer'")
        cells = getattr(getattr(self.decoder, "feat_pos", None), "shape", (0, 10**9))[1]
        if self.hparams.grid_size**2 > cells:  # an hf: backbone's own grid may be larger than the positions
            raise ConfigError(
                f"model.encoder={encoder}: its {self.hparams.grid_size}x{self.hparams.grid_size} feature "
                f"grid has more cells than the transformer decoder's {cells} positions; use "
                f"model.decoder=rnn or a smaller data.image_size"
            )
        self._transform = eval_transform(image_size, tuple(mean), tuple(std))
        # (dataset index, (hypothesis, references)) per evaluated image; the index drops DDP padding repeats
        self._val_out: list[tuple[int, tuple[str, list[str]]]] = []
        self._test_out: dict[int, list[tuple[int, tuple[str, list[str]]]]] = {}
        self._plot_batch: Tensor | None = None

    def _hf_encoder(
        self,
        encoder: str,
        stored: dict[str, Any] | None,
        dim: int,
        image_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        trainable_blocks: int,
        unfreeze_after_steps: int | None,
    ) -> Any:
        """The ``hf:`` backbone (`tasks.captioning.hf_encoder`); ``grid_size`` becomes its feature grid."""
        enc, self.pretrained_info = hf_image_encoder(
            encoder, stored, dim, image_size, trainable_blocks, unfreeze_after_steps, mean, std
        )
        self.hparams["grid_size"] = enc.grid_size
        return enc

    def batch_units(self, batch: Batch | None) -> float:
        return float(len(batch)) if batch is not None else 0.0

    # ------------------------------------------------------------------ model
    def forward(self, images: Tensor, inputs: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """Teacher-forced scores.

        Args:
            images: ``(B, 3, H, W)`` normalised images.
            inputs: ``(B, T)`` BOS-prefixed caption tokens.
            need_weights: also return the attention (RNN decoder).

        Returns:
            ``(logits (B, T, V), attention (B, T, S) or None)``.
        """
        feats = self.encoder(images)  # (B, S, D)
        return self.decoder(feats, None, inputs, summary=feats.mean(1), need_weights=need_weights)

    def _loss(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """Cross-entropy (+ doubly stochastic regulariser); returns ``(total, ce)``."""
        reg = self.hparams.alpha_reg > 0 and self.hparams.decoder == "rnn"
        logits, alphas = self(batch.images, batch.inputs, need_weights=reg)  # (B, T, V), (B, T, S) | None
        ce = F.cross_entropy(
            logits.flatten(0, 1).float(),  # (B*T, V)
            batch.targets.flatten(),  # (B*T,)
            ignore_index=self.vocab.pad_id,
            label_smoothing=self.hparams.label_smoothing,
        )
        loss = ce
        if alphas is not None and reg:
            valid = (batch.targets != self.vocab.pad_id).unsqueeze(-1).to(alphas.dtype)  # (B, T, 1)
            coverage = (alphas * valid).sum(1)  # (B, S): total attention each cell received
            # Paper eq. 14: encourage every cell to be attended about once over the caption. Averaged
            # over cells (as in the widely used PyTorch port) rather than summed, so lambda does not
            # need rescaling when the grid size changes.
            loss = loss + self.hparams.alpha_reg * ((1.0 - coverage) ** 2).mean()
        return loss, ce

    def setup(self, stage: str) -> None:
        """Fail early (a `ConfigError`) when the data's captions cannot fit the Transformer positions."""
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        max_caption_len = getattr(getattr(dm, "hparams", None), "max_caption_len", None)
        positions = getattr(self.decoder, "max_len", None)
        if isinstance(self.decoder, TransformerCaptionDecoder) and isinstance(max_caption_len, int) and positions:
            if max_caption_len + 1 > positions:  # +1: the BOS-prefixed decoder input
                raise ConfigError(
                    f"data.max_caption_len={max_caption_len} does not fit the transformer decoder's {positions} "
                    f"learned positions: set data.max_caption_len <= {positions - 1} "
                    f"or model.max_len >= {max_caption_len - 1}"
                )

    def training_step(self, batch: Batch | None, batch_idx: int) -> Tensor | None:
        n_skipped = 0 if batch is None else batch.skipped
        # Logged every step (0 when nothing was skipped): with sync_dist every rank must log the same
        # keys, and the epoch value is the total over steps and ranks.
        self.log(
            "train/skipped_images",
            float(n_skipped),
            on_step=False,
            on_epoch=True,
            reduce_fx="sum",
            sync_dist=True,
            batch_size=1,
        )
        if batch is None or len(batch) == 0:  # every image of this batch failed to decode
            self.log(
                "train/skipped_batches",
                1.0,
                on_step=False,
                on_epoch=True,
                reduce_fx="sum",
                sync_dist=True,
                batch_size=1,
            )
            return empty_batch_loss(self)
        self.log(
            "train/skipped_batches", 0.0, on_step=False, on_epoch=True, reduce_fx="sum", sync_dist=True, batch_size=1
        )
        loss, ce = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        self.log("train/ce", ce, batch_size=len(batch))
        return loss

    # ------------------------------------------------------------------ prediction (validation/test: evaluation.py)
    def predict_step(self, batch: Batch | None, batch_idx: int, dataloader_idx: int = 0) -> list[Prediction]:
        """One ``(dataset index, (image name, caption))`` row per image (``core.cli.predict.PredictionWriter``).

        Images are named by their dataset (the file path for ``data.predict_path`` and real corpora,
        ``scene test/3 (seed 0)`` for generated scenes); unreadable ones were skipped with a warning.
        """
        if batch is None or len(batch) == 0:
            return []
        namer = getattr(_dataset_of(self._trainer, dataloader_idx), "name", None)
        return [
            Prediction(int(i), (namer(int(i)) if callable(namer) else f"item {int(i)}", c))
            for i, c in zip(batch.index.tolist(), self._decode_batch(batch))
        ]

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> dict[str, Any]:
        groups = optimizer_groups(self, self.hparams.encoder_lr_scale)  # hf: backbone, projection, decoder
        if groups is not None:
            return configure_optimizer(self, OptimizerOptions.from_hparams(self.hparams), groups)
        enc = [p for p in self.encoder.parameters() if p.requires_grad]
        dec = [p for p in self.decoder.parameters() if p.requires_grad]
        return configure_optimizer(
            self, OptimizerOptions.from_hparams(self.hparams), [(enc, self.hparams.encoder_lr_scale), (dec, 1.0)]
        )

    def configure_callbacks(self) -> list[Any]:
        """`core.train.finetune.FreezeSchedule` for an ``hf:`` encoder (``unfreeze_after_steps``)."""
        return [FreezeSchedule()] if self.pretrained_info is not None else []
