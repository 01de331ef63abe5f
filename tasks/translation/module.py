"""LightningModule for attention-based translation (RNN or Transformer encoder–decoder).

The network is built in :meth:`TranslationModule.setup` from the data module's tokenizers (vocabulary
sizes are only known after the tokenizers are trained), or from the tokenizers stored in a checkpoint or
model folder (``core.io.task_io``). Checkpoints are self-contained::

    checkpoint["attn_suite"] = {"task": "translation", "format": 2, "tokenizers": {"src": {...}, "tgt": {...}}}

and load with ``torch.load(path, weights_only=True)`` (what they store: :mod:`tasks.translation.stored`);
translation itself is in :mod:`tasks.translation.inference`, validation and test scoring in
:mod:`tasks.translation.evaluation`.

Example:
    >>> model = TranslationModule.load_from_checkpoint("model.ckpt")  # doctest: +SKIP
    >>> model.translate(["I love you", "the red car"])                  # doctest: +SKIP
    ['te quiero', 'el coche rojo']
"""

from __future__ import annotations

from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.attention import attention_options as attention_options_for  # the argument has its name
from core.cli.predict import Prediction
from core.errors import ConfigError
from core.io.hparams import BEAM, FRACTION, LAYERS, LENGTH, RATE, SIZE, STEPS
from core.io.task_io import TaskCheckpointMixin
from core.text.known_words import KnownWords
from core.text.tokenizers import BaseTokenizer
from core.train.progress_bar import ThroughputMixin
from core.train.schedule import OptimizerOptions, configure_optimizer
from tasks.translation.evaluation import TranslationEvalMixin
from tasks.translation.inference import TranslateMixin
from tasks.translation.marian_tokenizer import FILES as MARIAN_FILES
from tasks.translation.marian_tokenizer import marian_tokenizers
from tasks.translation.models import RNNSeq2Seq, TransformerSeq2Seq
from tasks.translation.models.marian import load_marian, marian_network
from tasks.translation.stored import TranslationStoredMixin

TASK = "translation"


class TranslationModule(
    TranslateMixin,
    TranslationEvalMixin,
    TranslationStoredMixin,
    TaskCheckpointMixin,
    ThroughputMixin,
    pl.LightningModule,
):
    """Sequence-to-sequence translation with attention.

    Args:
        arch: ``rnn`` (bidirectional GRU/LSTM encoder, attentional decoder with input feeding),
            ``transformer`` (pre-norm encoder–decoder on core multi-head attention) or ``marian``: a pretrained
            MarianMT from ``pretrained``, with its own tokenizer (`tasks.translation.models.marian`; the size
            options do not apply).
        embed_dim: embedding size (RNN; the Transformer uses ``hidden_dim`` as d_model).
        hidden_dim: decoder width: RNN decoder size / Transformer d_model.
        encoder_layers: encoder layers.
        decoder_layers: decoder layers.
        rnn_type: ``gru`` or ``lstm`` (RNN only).
        attention: core attention name for the RNN decoder (additive, location, dot, general,
            scaled_dot, multihead); the Transformer always uses multihead.
        attention_options: extra options of that mechanism, e.g. ``{"hidden_dim": 128}``.
        num_heads: Transformer heads.
        ffn_dim: Transformer feed-forward size.
        dropout: dropout rate.
        label_smoothing: label smoothing of the cross-entropy.
        tie_embeddings: tie the target embedding and the output projection.
        optimizer: ``adamw``, ``adam`` or ``sgd`` (``core.train.schedule.configure_optimizer``).
        lr: peak learning rate.
        weight_decay: weight decay (not on biases and norms).
        betas: Adam betas.
        eps: Adam epsilon.
        warmup_steps: linear warmup steps.
        lr_schedule: decay after warmup: ``inverse_sqrt``, ``cosine``, ``linear`` or ``constant``
            (cosine/linear decay over the trainer's estimated total steps).
        min_lr_ratio: floor of cosine/linear decay, as a fraction of ``lr``.
        beam_size: beam size of validation/test/predict decoding (BLEU/chrF).
        length_penalty: beam-search length normalisation exponent.
        max_len: cap on output tokens (also ``2 * source length + 10``).
        max_source_tokens: longer inputs are truncated (with a warning) before translation.
        val_bleu_sentences: decode at most this many validation sentences per validation for BLEU
            (None = all); the loss always uses all.
        plot_examples: fixed validation sentences whose attention heatmaps are logged.
        pretrained: ``marian``: the MarianMT model to fine-tune, a hub id (``Helsinki-NLP/opus-mt-en-es``) or a
            local folder (``hf:`` prefix allowed).
        trainable_blocks: ``marian``: -1 fine-tune all, k > 0 only its last k decoder layers (there is no
            ``unfreeze_after_steps``: a Marian model has no new layers that could train while it is frozen).
        pretrained_config: ``marian``: its config as plain data; filled from a checkpoint's metadata when one is
            loaded (rebuilt offline, never downloaded); leave it None.
    """

    TASK = TASK
    MONITOR, MONITOR_MODE = "val/bleu", "max"
    THROUGHPUT_UNIT = "tok"  # source + target tokens, padding excluded
    HPARAM_BOUNDS = {
        "embed_dim": SIZE,
        "hidden_dim": SIZE,
        "encoder_layers": LAYERS,
        "decoder_layers": LAYERS,
        "num_heads": LAYERS,
        "ffn_dim": SIZE,
        "dropout": FRACTION,
        "label_smoothing": FRACTION,
        "lr": RATE,
        "weight_decay": RATE,
        "betas": (0.0, 0.999999),
        "eps": (0.0, 1.0),
        "warmup_steps": STEPS,
        "min_lr_ratio": (0.0, 1.0),
        "beam_size": BEAM,
        "length_penalty": (-10.0, 10.0),
        "max_len": LENGTH,
        "max_source_tokens": LENGTH,
        "val_bleu_sentences": (0, 10**9),
        "plot_examples": (0, 1000),
        "trainable_blocks": (-1, 1000),
    }
    # Names of format-1 checkpoints (before one vocabulary of names across the tasks).
    HPARAM_RENAMES = {
        "emb_dim": "embed_dim",
        "enc_layers": "encoder_layers",
        "dec_layers": "decoder_layers",
        "ff_dim": "ffn_dim",
        "val_beam": "beam_size",
        "num_plot_sentences": "plot_examples",
        "max_decode_len": "max_len",
    }
    FOLDER_FILES = {
        "tokenizers.src": "tokenizer_src.json",
        "tokenizers.tgt": "tokenizer_tgt.json",
        "known_words": "known_words.json",
    }
    # a Marian model's own tokenizer files, byte for byte (`tasks.translation.marian_tokenizer`)
    FOLDER_RAW_FILES = {f"hf_tokenizer.{name}": name for name in MARIAN_FILES}

    def __init__(
        self,
        arch: Literal["rnn", "transformer", "marian"] = "rnn",
        embed_dim: int = 256,
        hidden_dim: int = 256,
        encoder_layers: int = 1,
        decoder_layers: int = 1,
        rnn_type: Literal["gru", "lstm"] = "gru",
        attention: str = "additive",
        attention_options: dict[str, int | float | str | bool | None] | None = None,
        num_heads: int = 4,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
        label_smoothing: float = 0.1,
        tie_embeddings: bool = False,
        optimizer: Literal["adamw", "adam", "sgd"] = "adamw",
        lr: float = 2e-3,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.98),
        eps: float = 1e-9,
        warmup_steps: int = 200,
        lr_schedule: Literal["inverse_sqrt", "cosine", "linear", "constant"] = "inverse_sqrt",
        min_lr_ratio: float = 0.0,
        beam_size: int = 5,
        length_penalty: float = 1.0,
        max_len: int = 100,
        max_source_tokens: int = 100,
        val_bleu_sentences: int | None = None,
        plot_examples: int = 3,
        pretrained: str | None = None,
        trainable_blocks: int = -1,
        pretrained_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if attention == "none":
            # options written for another mechanism are dropped (and named) here, so the checkpoint records what
            # was built and reloading it does not warn again
            self.hparams["attention_options"] = attention_options_for("none", attention_options, hidden_dim) or None
        if beam_size < 1:
            raise ConfigError(f"--model.beam_size must be >= 1, got {beam_size}")
        self.model: nn.Module | None = None
        self.src_tokenizer: BaseTokenizer | None = None
        self.tgt_tokenizer: BaseTokenizer | None = None
        self.pretrained_info: dict[str, Any] | None = None  # marian: {"source", "model_type", "config"}
        self.hf_tokenizer_files: dict[str, bytes] | None = None  # marian: its tokenizer files
        self.known_words: KnownWords | None = None  # the training sources' words (core.text.known_words)
        if arch == "marian":
            self._init_marian(pretrained, pretrained_config)
        elif pretrained is not None:
            raise ConfigError(f"--model.pretrained is for --model.arch marian, not {arch!r}")
        # prefix -> [(dataset index, (hypothesis, reference))]; the index lets DDP padding repeats be dropped
        self._eval_outputs: dict[str, list[tuple[int, tuple[str, str]]]] = {}

    def _init_marian(self, pretrained: str | None, stored: dict[str, Any] | None) -> None:
        """``arch=marian``: from a checkpoint's stored config (offline; tokenizers come with its metadata), or
        the pretrained model and its tokenizer read from ``pretrained`` (a hub id, downloaded once, or a folder)."""
        if stored is not None:
            self.pretrained_info = dict(stored)
            return
        backbone, self.hf_tokenizer_files, self.pretrained_info = load_marian(pretrained)
        self.set_tokenizers(*marian_tokenizers(self.hf_tokenizer_files, f"--model.pretrained={pretrained}"))
        self.build_model(backbone)

    # ------------------------------------------------------------------ building
    def set_tokenizers(self, src: BaseTokenizer, tgt: BaseTokenizer) -> None:
        """Attach the tokenizers (vocabulary sizes decide the embedding shapes)."""
        self.src_tokenizer, self.tgt_tokenizer = src, tgt

    def build_model(self, pretrained: nn.Module | None = None) -> None:
        """Create the network from the hyperparameters and the attached tokenizers (idempotent).

        Args:
            pretrained: ``marian``: the loaded ``MarianMTModel`` (default: rebuilt from ``pretrained_info``).
        """
        if self.model is not None:
            return
        if self.src_tokenizer is None or self.tgt_tokenizer is None:
            raise RuntimeError("set_tokenizers() (or a data module with tokenizers) is needed before build_model()")
        hp = self.hparams
        sv, tv = self.src_tokenizer.vocab_size, self.tgt_tokenizer.vocab_size
        if hp.arch == "marian":
            assert self.pretrained_info is not None
            self.model = marian_network(
                self.pretrained_info, pretrained, tv, hp.trainable_blocks, max(hp.max_len, hp.max_source_tokens)
            )
        elif hp.arch == "rnn":
            self.model = RNNSeq2Seq(
                sv,
                tv,
                hp.embed_dim,
                hp.hidden_dim,
                hp.encoder_layers,
                hp.decoder_layers,
                hp.rnn_type,
                hp.attention,
                hp.attention_options,
                hp.dropout,
                hp.tie_embeddings,
            )
        elif hp.arch == "transformer":
            self.model = TransformerSeq2Seq(
                sv,
                tv,
                hp.hidden_dim,
                hp.num_heads,
                hp.ffn_dim,
                hp.encoder_layers,
                hp.decoder_layers,
                hp.dropout,
                hp.tie_embeddings,
                max_positions=max(512, hp.max_len + 1, hp.max_source_tokens),
            )
        else:
            raise ConfigError(f"--model.arch must be 'rnn', 'transformer' or 'marian', got {hp.arch!r}")

    def setup(self, stage: str) -> None:
        """Take the tokenizers from the data module (unless already set) and build the network."""
        if self.hparams.arch == "marian" and self.src_tokenizer is None:
            # Rebuilt from a checkpoint's config (--ckpt_path): its tokenizers (never the data module's) arrive
            # with the checkpoint's metadata when Lightning restores it; restore_metadata builds the network.
            return
        if self.src_tokenizer is None:
            dm = self.trainer.datamodule if self._trainer is not None else None
            src, tgt = getattr(dm, "src_tokenizer", None), getattr(dm, "tgt_tokenizer", None)
            if src is None or tgt is None:
                raise ConfigError(
                    "TranslationModule needs a data module with src_tokenizer/tgt_tokenizer "
                    "(e.g. tasks.translation.data.TranslationDataModule)"
                )
            self.set_tokenizers(src, tgt)
        elif self._trainer is not None and getattr(self.trainer.datamodule, "set_tokenizers", None):
            # A model that already has tokenizers (loaded checkpoint) imposes them on the data.
            dm = self.trainer.datamodule
            if dm.src_tokenizer is None or dm.src_tokenizer.to_dict() != self.src_tokenizer.to_dict():
                dm.set_tokenizers(self.src_tokenizer, self.tgt_tokenizer)
                dm.datasets.clear()
                dm.setup(stage)
        dm = self.trainer.datamodule if self._trainer is not None else None
        if stage == "fit" and callable(getattr(dm, "known_source_words", None)):
            # a model trained further on new data knows the words of both
            new = dm.known_source_words()
            self.known_words = new if self.known_words is None else KnownWords(self.known_words.words | new.words)
        self.build_model()

    # ------------------------------------------------------------------ training
    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Keep a host copy of the source lengths (a tuple: Lightning moves only tensors), so the
        RNN encoder packs without copying lengths back from the GPU (a sync every step) and the
        Transformer drops the mask of unpadded batches."""
        if (
            isinstance(batch, dict)
            and isinstance(batch.get("src_lengths"), Tensor)
            and batch["src_lengths"].device.type == "cpu"
        ):
            batch["src_lengths_host"] = tuple(batch["src_lengths"].tolist())
        return super().on_before_batch_transfer(batch, dataloader_idx)  # ThroughputMixin counts the tokens

    def batch_units(self, batch: Any) -> float:
        """Tokens of a host batch: source lengths plus non-padding targets."""
        return float(sum(batch["src_lengths_host"]) + int((batch["tgt_out"] != 0).sum()))

    def forward(
        self,
        src: Tensor,
        src_lengths: Tensor,
        tgt_in: Tensor,
        need_weights: bool = False,
        src_lengths_host: tuple[int, ...] | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Teacher-forced logits (B, T, V) and attention (B, T, S) or None."""
        assert self.model is not None
        # Whether any source is padded, decided in Python (no tensor check, nothing for torch.compile
        # to break on); the RNN also packs padded batches from the host lengths.
        unpadded = src_lengths_host is not None and all(n == src.shape[1] for n in src_lengths_host)
        if isinstance(self.model, RNNSeq2Seq):
            host = None if src_lengths_host is None else torch.tensor(src_lengths_host, dtype=torch.long)  # (B,)
            return self.model(src, src_lengths, tgt_in, need_weights=need_weights, host_lengths=host, unpadded=unpadded)
        return self.model(src, src_lengths, tgt_in, need_weights=need_weights, unpadded=unpadded)

    def _loss(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        logits, _ = self(
            batch["src"], batch["src_lengths"], batch["tgt_in"], src_lengths_host=batch.get("src_lengths_host")
        )
        v = logits.shape[-1]
        loss = F.cross_entropy(
            logits.reshape(-1, v).float(),
            batch["tgt_out"].reshape(-1),  # (B*T, V), (B*T,)
            ignore_index=0,
            label_smoothing=self.hparams.label_smoothing,
        )
        n_tokens = (batch["tgt_out"] != 0).sum()
        return loss, n_tokens

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss, n_tokens = self._loss(batch)
        b = batch["src"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=b)
        # Tokens processed (source + target, unpadded): the throughput numerator of the benchmarks.
        self.log(
            "train/tokens",
            (n_tokens + batch["src_lengths"].sum()).float(),
            reduce_fx="sum",
            on_step=False,
            on_epoch=True,
            batch_size=b,
            sync_dist=True,
        )
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        if self.model is None:
            raise ConfigError(
                "--model.pretrained_config is filled from checkpoints; to start from a pretrained "
                "Marian model give --model.pretrained (or --ckpt_path for its checkpoint)"
            )
        return configure_optimizer(self, OptimizerOptions.from_hparams(self.hparams))

    # ------------------------------------------------------------------ prediction (validation/test: evaluation.py)
    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> list[Prediction]:
        """One ``(dataset index, (translation,))`` row per input line (beam ``beam_size``); an empty input
        line gets an empty output line, so output line i always translates input line i."""
        res = self._decode(batch["src"], batch["src_lengths"], beam=self.hparams.beam_size, nbest=1, need_weights=False)
        assert self.tgt_tokenizer is not None
        return [
            Prediction(int(i), ("" if not src.strip() else self.tgt_tokenizer.decode(h[0]),))
            for i, h, src in zip(batch["index"].tolist(), res.tokens, batch["src_text"])
        ]
