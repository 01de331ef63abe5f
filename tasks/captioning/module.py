"""`CaptioningModule`: CNN encoder + attention decoder, trained with teacher forcing.

Validation decodes with beam search and scores BLEU-1..4 / CIDEr-D (`tasks.captioning.metrics`,
COCO-toolkit style); it also logs per-word attention overlays of a few fixed validation images.
Checkpoints are self-contained: ``checkpoint["attn_suite"]`` carries the task name, the word
vocabulary and the image preprocessing, and `CaptioningModule.load_from_checkpoint` goes through
`core.checkpoint.load_checkpoint` (``weights_only=True``, task check).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image
from torch import Tensor

from core.checkpoint import META_KEY, load_checkpoint, make_metadata
from core.decoding import DecodeResult, beam_search
from core.distributed import gather_objects
from core.errors import CheckpointError, ConfigError
from core.training import build_scheduler
from tasks.captioning.data import Batch
from tasks.captioning.decoder import LSTMAttentionDecoder, TransformerCaptionDecoder
from tasks.captioning.encoder import EncoderName, ImageEncoder
from tasks.captioning.images import IMAGENET_MEAN, IMAGENET_STD, denormalize, eval_transform, load_rgb
from tasks.captioning.metrics import caption_scores
from tasks.captioning.vocab import CaptionVocab

TASK = "captioning"


def dedupe_by_index(items: Sequence[tuple[int, Any, Any]]) -> tuple[list[Any], list[Any]]:
    """Drop repeated dataset indices and sort, after gathering ``(index, hypothesis, refs)`` rows.

    Lightning's ``DistributedSampler`` pads the last shard with images that another rank already
    has (``drop_last=False``), so without this BLEU/CIDEr on more than one rank would count them
    twice. Sorting by index also makes the corpus order independent of the number of ranks.

    Args:
        items: ``(dataset index, hypothesis, references)`` per evaluated image, any order.

    Returns:
        ``(hypotheses, references)`` for the unique indices in ascending index order (the first
        row of a repeated index is kept; repeats decode the same image, so they are identical).
    """
    seen: dict[int, tuple[Any, Any]] = {}
    for index, hyp, refs in items:
        seen.setdefault(int(index), (hyp, refs))
    order = sorted(seen)
    return [seen[i][0] for i in order], [seen[i][1] for i in order]


def _state_dict_mismatch(expected: dict[str, Tensor], got: dict[str, Any], strict: bool) -> list[str]:
    """Human-readable differences between a model's state dict and a checkpoint's (first few)."""
    problems = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in got.items()
        if k in expected and isinstance(v, Tensor) and v.shape != expected[k].shape
    ]
    problems += [f"{k}: not a tensor ({type(v).__name__})" for k, v in got.items() if k in expected and not isinstance(v, Tensor)]
    if strict:
        problems += [f"missing {k}" for k in expected if k not in got]
        problems += [f"unexpected {k}" for k in got if k not in expected]
    return problems


class CaptioningModule(L.LightningModule):
    """Image captioning with visual attention (Show, Attend and Tell, plus a Transformer option).

    Args:
        vocab: word vocabulary as ``CaptionVocab.to_dict()``; the CLI links it from
            ``data.vocab`` (built from the training captions), so configs never spell it out.
        encoder: CNN backbone: ``tiny`` (from scratch, fast on CPU), ``resnet18/34/50``,
            ``mobilenet_v3_small/large``.
        pretrained: torchvision weights (``imagenet``/``DEFAULT``/an enum name; needs network
            once) or a local weights file (``state_dict`` of the torchvision model); None = random.
        trainable_blocks: -1 train the whole encoder, 0 freeze it, k fine-tune the last k blocks.
        grid_size: the encoder's feature map is pooled to ``grid_size x grid_size`` cells.
        feat_dim: size of each grid feature after projection.
        decoder: ``lstm`` (soft attention, Show-Attend-Tell) or ``transformer``.
        attention: `core.attention` mechanism for the LSTM decoder (additive, dot, general,
            scaled_dot, multihead, location).
        attention_dim: hidden size of additive/location attention.
        embed_dim: LSTM word embedding size.
        hidden_dim: LSTM state size.
        gate: LSTM: gating scalar beta on the attention context.
        alpha_reg: LSTM: weight lambda of the doubly stochastic attention regulariser
            ``lambda * mean_s (1 - sum_t alpha_ts)^2`` (0 disables it).
        d_model: Transformer width.
        num_layers: Transformer decoder layers.
        num_heads: attention heads (Transformer, or LSTM with multihead attention).
        ffn_dim: Transformer feed-forward width.
        dropout: decoder dropout.
        max_len: longest generated caption (words).
        lr: peak learning rate (AdamW).
        encoder_lr_scale: encoder LR = ``lr * encoder_lr_scale`` (lower for pretrained backbones).
        weight_decay: AdamW weight decay.
        warmup_steps: linear LR warmup steps.
        lr_schedule: after warmup: ``constant``, ``inverse_sqrt``, ``cosine`` or ``linear``
            (cosine/linear decay over ``total_steps`` = the trainer's estimate).
        label_smoothing: cross-entropy label smoothing.
        val_beam_size: beam size for validation/test decoding (1 = greedy, faster).
        plot_images: number of fixed validation images whose attention overlays are logged.
        image_size: network input side (linked from ``data.image_size``).
        mean: normalisation mean (linked from ``data.mean``).
        std: normalisation std (linked from ``data.std``).
    """

    def __init__(
        self,
        vocab: dict[str, Any] | None = None,
        encoder: EncoderName = "tiny",
        pretrained: str | None = None,
        trainable_blocks: int = -1,
        grid_size: int = 6,
        feat_dim: int = 256,
        decoder: Literal["lstm", "transformer"] = "lstm",
        attention: str = "additive",
        attention_dim: int = 256,
        embed_dim: int = 128,
        hidden_dim: int = 256,
        gate: bool = True,
        alpha_reg: float = 1.0,
        d_model: int = 256,
        num_layers: int = 2,
        num_heads: int = 4,
        ffn_dim: int = 1024,
        dropout: float = 0.3,
        max_len: int = 30,
        lr: float = 1e-3,
        encoder_lr_scale: float = 1.0,
        weight_decay: float = 1e-4,
        warmup_steps: int = 100,
        lr_schedule: Literal["constant", "inverse_sqrt", "cosine", "linear"] = "constant",
        label_smoothing: float = 0.0,
        val_beam_size: int = 3,
        plot_images: int = 4,
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
        try:
            self.vocab = CaptionVocab.from_dict(vocab)
        except ValueError as err:
            raise ConfigError(f"model.vocab: not a captioning word vocabulary: {err}") from None
        self.encoder = ImageEncoder(encoder, feat_dim, grid_size, pretrained, trainable_blocks, dropout=0.0)
        v = len(self.vocab)
        if decoder == "lstm":
            self.decoder: LSTMAttentionDecoder | TransformerCaptionDecoder = LSTMAttentionDecoder(
                v, feat_dim, embed_dim, hidden_dim, attention, attention_dim, num_heads, gate, dropout
            )
        elif decoder == "transformer":
            self.decoder = TransformerCaptionDecoder(
                # Positions also cover teacher-forced training captions, which may be longer than max_len.
                v, feat_dim, d_model, num_layers, num_heads, ffn_dim, dropout, max(max_len + 2, 128)
            )
        else:
            raise ConfigError(f"model.decoder={decoder!r}: expected 'lstm' or 'transformer'")
        self._transform = eval_transform(image_size, tuple(mean), tuple(std))
        # (dataset index, hypothesis, references) per evaluated image; the index drops DDP padding repeats
        self._val_out: list[tuple[int, str, list[str]]] = []
        self._test_out: dict[int, list[tuple[int, str, list[str]]]] = {}
        self._plot_batch: Tensor | None = None

    # ------------------------------------------------------------------ model
    def forward(self, images: Tensor, inputs: Tensor) -> tuple[Tensor, Tensor | None]:
        """Teacher-forced scores.

        Args:
            images: ``(B, 3, H, W)`` normalised images.
            inputs: ``(B, T)`` BOS-prefixed caption tokens.

        Returns:
            ``(logits (B, T, V), attention (B, T, S) or None)``.
        """
        return self.decoder(self.encoder(images), inputs)

    def _loss(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """Cross-entropy (+ doubly stochastic regulariser); returns ``(total, ce)``."""
        logits, alphas = self(batch.images, batch.inputs)  # (B, T, V), (B, T, S) | None
        ce = F.cross_entropy(
            logits.flatten(0, 1).float(),  # (B*T, V)
            batch.targets.flatten(),  # (B*T,)
            ignore_index=self.vocab.pad_id,
            label_smoothing=self.hparams.label_smoothing,
        )
        loss = ce
        if alphas is not None and self.hparams.alpha_reg > 0:
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
                    f"learned positions: set data.max_caption_len <= {positions - 1} or model.max_len >= {max_caption_len - 1}"
                )

    def _skipped_loss(self) -> Tensor:
        """Zero loss that reaches every trainable parameter (zero gradients, but a full backward).

        Under DDP every rank must run backward each step: the gradient all-reduce is a collective,
        so a rank that skipped it would leave the others waiting forever.
        """
        zero = torch.zeros((), device=self.device)
        # a Python sum, not torch.stack: parameters may not all share one dtype
        return sum((p.sum() * 0.0 for p in self.parameters() if p.requires_grad), zero)

    def training_step(self, batch: Batch | None, batch_idx: int) -> Tensor | None:
        n_skipped = 0 if batch is None else batch.skipped
        # Logged every step (0 when nothing was skipped): with sync_dist every rank must log the same
        # keys, and the epoch value is the total over steps and ranks.
        self.log("train/skipped_images", float(n_skipped), on_step=False, on_epoch=True, reduce_fx="sum",
                 sync_dist=True, batch_size=1)
        if batch is None or len(batch) == 0:  # every image of this batch failed to decode
            self.log("train/skipped_batches", 1.0, on_step=False, on_epoch=True, reduce_fx="sum",
                     sync_dist=True, batch_size=1)
            if self._trainer is not None and self.trainer.world_size > 1:
                return self._skipped_loss()  # keep the DDP gradient all-reduce in step across ranks
            return None  # single process: Lightning skips the step (no optimizer update at all)
        self.log("train/skipped_batches", 0.0, on_step=False, on_epoch=True, reduce_fx="sum",
                 sync_dist=True, batch_size=1)
        loss, ce = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        self.log("train/ce", ce, batch_size=len(batch))
        return loss

    # ------------------------------------------------------------------ decoding
    @torch.no_grad()
    def generate(
        self, images: Tensor, beam_size: int = 5, max_len: int | None = None, length_penalty: float = 1.0
    ) -> tuple[list[list[int]], list[Tensor | None]]:
        """Beam-search captions for a batch of preprocessed images.

        Args:
            images: ``(B, 3, H, W)`` normalised.
            beam_size: beam width (1 = greedy).
            max_len: maximum caption length in words (default: ``hparams.max_len``).
            length_penalty: exponent of the length normalisation.

        Returns:
            ``(token ids per image, attention (len, S) per image or None)``.
        """
        res = self.generate_nbest(images, beam_size, 1, max_len, length_penalty)
        return [t[0] for t in res.tokens], [a[0] for a in res.attention]

    @torch.no_grad()
    def generate_nbest(
        self, images: Tensor, beam_size: int = 5, nbest: int = 1, max_len: int | None = None,
        length_penalty: float = 1.0,
    ) -> DecodeResult:
        """Like `generate`, but the ``nbest`` best hypotheses of each image with their scores.

        Returns:
            `core.decoding.DecodeResult`: ``tokens[b][k]``, ``scores[b][k]`` (length-normalised
            log-probability) and ``attention[b][k]`` ``(len, S)``, best first.
        """
        feats = self.encoder(images)  # (B, S, D)
        return beam_search(
            self.decoder.step,
            self.decoder.init_state(feats),
            batch_size=images.shape[0],
            bos_id=self.vocab.bos_id,
            eos_id=self.vocab.eos_id,
            max_len=(max_len or self.hparams.max_len) + 1,  # +1: the EOS step
            beam_size=beam_size,
            length_penalty=length_penalty,
            pad_id=self.vocab.pad_id,
            nbest=nbest,
        )

    def _decode_batch(self, batch: Batch) -> list[str]:
        tokens, _ = self.generate(batch.images, beam_size=self.hparams.val_beam_size)
        return [self.vocab.decode(t) for t in tokens]

    # ------------------------------------------------------------------ validation / test
    def validation_step(self, batch: Batch | None, batch_idx: int) -> None:
        if batch is None or len(batch) == 0:
            return
        loss, _ = self._loss(batch)
        self.log("val/loss", loss, prog_bar=True, batch_size=len(batch), sync_dist=True)
        self._val_out += zip(batch.index.tolist(), self._decode_batch(batch), batch.refs)
        if batch_idx == 0 and self._plot_batch is None and self.hparams.plot_images > 0:
            # The first validation batch is the same every epoch (no shuffling): fixed plot images.
            self._plot_batch = batch.images[: self.hparams.plot_images].detach().cpu()

    def on_validation_epoch_end(self) -> None:
        hyps, refs = dedupe_by_index(gather_objects(self._val_out))
        self._val_out = []
        if hyps:
            # Every rank holds the gathered lists and computes the same values; sync_dist=True only
            # averages identical numbers (and keeps Lightning's epoch-level DDP check quiet).
            for name, value in caption_scores(hyps, refs).items():
                self.log(f"val/{name}", value, prog_bar=name in ("bleu4", "cider"), sync_dist=True)
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            self._log_attention_figures()

    def _log_attention_figures(self) -> None:
        """Per-word attention overlays of the fixed validation images (rank zero only)."""
        if self._plot_batch is None:
            return
        from core.training import log_figure
        from core.viz import plot_image_attention

        images = self._plot_batch.to(self.device)
        tokens, attn = self.generate(images, beam_size=self.hparams.val_beam_size)
        pix = denormalize(images, tuple(self.hparams.mean), tuple(self.hparams.std))  # (B, H, W, 3)
        g = self.hparams.grid_size
        for i, (tok, a) in enumerate(zip(tokens, attn)):
            if a is None or not tok:
                continue
            fig = plot_image_attention(pix[i], a.view(len(tok), g, g), self.vocab.words(tok))
            log_figure(self, f"val_attention/{i}", fig)

    def test_step(self, batch: Batch | None, batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch is None or len(batch) == 0:
            return
        self._test_out.setdefault(dataloader_idx, []).extend(zip(batch.index.tolist(), self._decode_batch(batch), batch.refs))

    def on_test_epoch_end(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        names = list(getattr(dm, "test_names", [])) if dm is not None else []
        # Every test dataloader, even one this rank got nothing from: gather_objects is a collective.
        for idx in sorted(set(self._test_out) | set(range(len(names)))):
            hyps, refs = dedupe_by_index(gather_objects(self._test_out.get(idx, [])))
            prefix = names[idx] if idx < len(names) else f"test{idx}"
            if hyps:
                for name, value in caption_scores(hyps, refs).items():
                    self.log(f"{prefix}/{name}", value, sync_dist=True, add_dataloader_idx=False)
        self._test_out = {}

    def predict_step(self, batch: Batch | None, batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Any]]:
        """``{"index", "caption", "references"}`` per image (`tasks.captioning.callbacks.CaptionWriter` writes them)."""
        if batch is None or len(batch) == 0:
            return []
        caps = self._decode_batch(batch)
        return [{"index": int(i), "caption": c, "references": r} for i, c, r in zip(batch.index, caps, batch.refs)]

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        enc = [p for p in self.encoder.parameters() if p.requires_grad]
        dec = [p for p in self.decoder.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(
            [{"params": enc, "lr": hp.lr * hp.encoder_lr_scale}, {"params": dec, "lr": hp.lr}],
            lr=hp.lr,
            weight_decay=hp.weight_decay,
            fused=self.device.type == "cuda",  # one kernel launch for all parameters on GPU
        )
        total = None
        if hp.lr_schedule in ("cosine", "linear"):
            total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 10_000
        return {"optimizer": opt, "lr_scheduler": build_scheduler(opt, hp.warmup_steps, hp.lr_schedule, total)}

    # ------------------------------------------------------------------ inference API
    @torch.no_grad()
    def caption(
        self,
        images: Sequence[str | os.PathLike[str] | Image.Image],
        beam: int = 5,
        return_attention: bool = False,
        batch_size: int = 16,
        nbest: int = 1,
    ) -> list[Any]:
        """Caption images.

        Args:
            images: file paths or PIL images (any mode; converted to RGB).
            beam: beam width (1 = greedy).
            return_attention: also return each caption's attention maps.
            batch_size: images per forward pass.
            nbest: hypotheses per image (<= beam).

        Returns:
            One caption per image; with ``return_attention``, ``(caption, weights)`` pairs where
            ``weights`` is ``(n_words, grid_size, grid_size)`` (row t = where word t looked).
            With ``nbest > 1``, a list per image of up to ``nbest`` ``(caption, score)`` pairs (or
            ``(caption, weights, score)`` with ``return_attention``), best first; ``score`` is the
            length-normalised log-probability.

        Raises:
            tasks.captioning.images.ImageError: a file is missing or not a readable image (the
                message names it; the CLI reports such files one by one and captions the rest).
        """
        if not 1 <= nbest <= beam:
            raise ConfigError(f"need 1 <= nbest <= beam, got nbest={nbest}, beam={beam}")
        was_training = self.training
        self.eval()
        pil = [im.convert("RGB") if isinstance(im, Image.Image) else load_rgb(im) for im in images]
        out: list[Any] = []
        g = self.hparams.grid_size
        try:
            for start in range(0, len(pil), batch_size):
                x = torch.stack([self._transform(im) for im in pil[start : start + batch_size]]).to(self.device)
                res = self.generate_nbest(x, beam_size=beam, nbest=nbest)
                for toks, scores, atts in zip(res.tokens, res.scores, res.attention):
                    hyps: list[Any] = []
                    for tok, score, a in zip(toks, scores, atts):
                        text = self.vocab.decode(tok)
                        maps = a.view(len(tok), g, g) if a is not None else torch.zeros(len(tok), g, g)
                        if nbest == 1:
                            hyps.append((text, maps) if return_attention else text)
                        else:
                            hyps.append((text, maps, score) if return_attention else (text, score))
                    out.append(hyps[0] if nbest == 1 else hyps)
        finally:
            self.train(was_training)
        return out

    def preprocess(self, image: Image.Image) -> Tensor:
        """RGB PIL image -> ``(3, image_size, image_size)`` normalised tensor (inference transform)."""
        return self._transform(image)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        hp = self.hparams
        checkpoint[META_KEY] = make_metadata(
            TASK,
            vocab=self.vocab.to_dict(),
            image_size=int(hp.image_size),
            mean=[float(x) for x in hp.mean],
            std=[float(x) for x in hp.std],
            grid_size=int(hp.grid_size),
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """``--ckpt_path`` restores (fit/validate/test/predict): a checkpoint that does not fit this
        model is a `CheckpointError` naming the file, not a ``load_state_dict`` traceback.

        Runs before Lightning loads the weights. A vocabulary with the same size but other words
        (data settings changed since training) only warns: the weights fit, the captions may not.
        """
        source = str(getattr(self._trainer, "ckpt_path", None) or "the checkpoint") if self._trainer else "the checkpoint"
        meta = checkpoint.get(META_KEY)
        vocab = meta.get("vocab") if isinstance(meta, dict) else None
        if vocab is not None:
            try:
                ckpt_vocab = CaptionVocab.from_dict(vocab)
            except ValueError as err:
                raise CheckpointError(f"checkpoint {source}: invalid vocabulary in '{META_KEY}.vocab': {err}") from None
            if ckpt_vocab.to_dict() != self.vocab.to_dict() and len(ckpt_vocab) == len(self.vocab):
                rank_zero_warn(f"checkpoint {source} was trained with another vocabulary of the same size than the data "
                               "module built now; check data.min_freq / data.max_vocab / the corpus")
        state = checkpoint.get("state_dict")
        if not isinstance(state, dict):
            raise CheckpointError(f"checkpoint {source} has no 'state_dict' (not a Lightning checkpoint)")
        strict = bool(getattr(self, "strict_loading", True))
        problems = _state_dict_mismatch(self.state_dict(), state, strict)
        if problems:
            hint = ""
            if vocab is not None and len(CaptionVocab.from_dict(vocab)) != len(self.vocab):
                hint = (f" (its vocabulary has {len(CaptionVocab.from_dict(vocab))} words, the data module's "
                        f"{len(self.vocab)}: train and evaluate with the same data settings)")
            raise CheckpointError(f"checkpoint {source} does not fit this CaptioningModule configuration{hint}: "
                                  + "; ".join(problems[:3]) + (f"; ... {len(problems) - 3} more" if len(problems) > 3 else ""))

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | os.PathLike[str],
        map_location: str | torch.device | None = "cpu",
        strict: bool = True,
        **overrides: Any,
    ) -> CaptioningModule:
        """Rebuild a module from a checkpoint, safely.

        Goes through `core.checkpoint.load_checkpoint` (``weights_only=True``; clear errors for
        missing, truncated, unsafe or other-task files) instead of Lightning's loader.

        Args:
            checkpoint_path: file path or http(s) URL.
            map_location: device for the tensors.
            strict: require an exact state-dict match.
            **overrides: hyper-parameters to change (e.g. ``val_beam_size=5``).

        Returns:
            The module in eval mode.

        Raises:
            CheckpointError: unreadable/unsafe/other-task file, a malformed vocabulary or
                hyper-parameters, or weights that do not fit (the message names the file).
        """
        ckpt = load_checkpoint(checkpoint_path, expected_task=TASK, map_location=map_location)
        # LightningCLI stores bookkeeping keys (``_instantiator``, ``_class_path``) next to the real
        # arguments: keep only what __init__ accepts.
        accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
        hparams = {k: v for k, v in dict(ckpt.get("hyper_parameters") or {}).items() if k in accepted}
        meta = ckpt[META_KEY]
        hparams["vocab"] = meta.get("vocab", hparams.get("vocab"))
        try:
            CaptionVocab.from_dict(hparams["vocab"])
        except ValueError as err:
            raise CheckpointError(f"checkpoint {checkpoint_path}: invalid vocabulary in '{META_KEY}.vocab': {err}") from None
        for key in ("image_size", "grid_size"):
            if key in meta:
                hparams[key] = meta[key]
        for key in ("mean", "std"):
            if key in meta:
                hparams[key] = tuple(meta[key])
        # The weights come from the state dict: never re-download or re-read "pretrained" weights.
        hparams["pretrained"] = None
        hparams.update(overrides)
        if not isinstance(ckpt.get("state_dict"), dict):
            raise CheckpointError(f"{checkpoint_path}: checkpoint has no 'state_dict'")
        try:
            model = cls(**hparams)
        except ConfigError as err:  # e.g. an unknown encoder/decoder name in tampered hyper-parameters
            raise CheckpointError(f"checkpoint {checkpoint_path}: its hyper-parameters do not build a model: {err}") from None
        except (TypeError, ValueError, KeyError) as err:
            raise CheckpointError(
                f"checkpoint {checkpoint_path}: its hyper-parameters do not build a model ({type(err).__name__}: {err})"
            ) from None
        problems = _state_dict_mismatch(model.state_dict(), ckpt["state_dict"], strict)
        if problems:
            raise CheckpointError(f"checkpoint {checkpoint_path}: weights do not fit the model: " + "; ".join(problems[:3])
                                  + (f"; ... {len(problems) - 3} more" if len(problems) > 3 else ""))
        try:
            model.load_state_dict(ckpt["state_dict"], strict=strict)
        except RuntimeError as err:  # anything the shape check above did not foresee
            raise CheckpointError(f"checkpoint {checkpoint_path}: weights do not fit the model ({' '.join(str(err).split())[:300]})") from None
        if map_location is not None:
            model.to(map_location)
        return model.eval()


def save_attention_figure(
    image: Image.Image, caption: str, weights: Tensor, path: str | Path, image_size: int
) -> Path:
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
    from core.viz import plot_image_attention

    from torchvision.transforms import v2

    shown = v2.CenterCrop(image_size)(v2.Resize(image_size)(image))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_image_attention(shown, weights, caption.split(), path=path)
    return path
