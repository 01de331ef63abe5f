"""Translation on the core module: its typed options (:class:`TranslationModule`); the task's parts are
:class:`tasks.translation.task.TranslationTask`.

The network is built from the tokenizers (vocabulary sizes are only known once they are trained), taken from the
data module at ``setup`` or from a checkpoint or model folder. Checkpoints are self-contained::

    checkpoint["attn_suite"] = {"task": "translation", "format": 2, "tokenizers": {"src": {...}, "tgt": {...}}}

and load with ``torch.load(path, weights_only=True)`` (what they store: :mod:`tasks.translation.stored`).
Translation itself is :class:`tasks.translation.inference.Translator`, which needs no Lightning.

Example:
    >>> model = TranslationModule.load_from_checkpoint("model.ckpt")  # doctest: +SKIP
    >>> model.translate(["I love you", "the red car"])                  # doctest: +SKIP
    ['te quiero', 'el coche rojo']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from core.errors import ConfigError
from core.text.known_words import KnownWords
from core.text.tokenizers import BaseTokenizer
from core.train.module import TaskModule
from tasks.translation.inference import Translator
from tasks.translation.options import TASK, TranslationFiles, TranslationOptions
from tasks.translation.task import TranslationNetwork, TranslationTask


class TranslationModule(TaskModule[TranslationNetwork]):
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
        optimizer, lr, weight_decay, betas, eps, warmup_steps, lr_schedule, min_lr_ratio: the optimizer and
            its LR schedule (`core.train.schedule.OptimizerOptions`).
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
    # what a file of this module holds, shared with the Lightning-free loader (`tasks.translation.networks`)
    HPARAM_BOUNDS = TranslationFiles.HPARAM_BOUNDS
    HPARAM_RENAMES = TranslationFiles.HPARAM_RENAMES
    FOLDER_FILES = TranslationFiles.FOLDER_FILES
    FOLDER_RAW_FILES = TranslationFiles.FOLDER_RAW_FILES

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
        options = TranslationOptions(
            arch,
            embed_dim,
            hidden_dim,
            encoder_layers,
            decoder_layers,
            rnn_type,
            attention,
            attention_options,
            num_heads,
            ffn_dim,
            dropout,
            label_smoothing,
            tie_embeddings,
            beam_size,
            length_penalty,
            max_len,
            max_source_tokens,
            val_bleu_sentences,
            plot_examples,
            trainable_blocks,
        )
        super().__init__(TranslationTask(options))
        self.save_hyperparameters()
        # `attention: none` dropped the options written for another mechanism (naming them), so the checkpoint
        # records what was built and reloading it does not warn again
        self.hparams["attention_options"] = options.attention_options
        self.task: TranslationTask
        if arch == "marian":
            self.task.init_marian(pretrained, pretrained_config)
            if self.task.ready():
                self.model = self.task.build_network()
        elif pretrained is not None:
            raise ConfigError(f"--model.pretrained is for --model.arch marian, not {arch!r}")

    @classmethod
    def upgrade_state_dict(cls, state: dict[str, Any], version: int) -> dict[str, Any]:
        return TranslationFiles.upgrade_state_dict(state, version)

    @classmethod
    def hparams_from_metadata(cls, meta: Mapping[str, Any], source: str) -> dict[str, Any]:
        return TranslationFiles.hparams_from_metadata(meta, source)

    # ------------------------------------------------------------------ the library API
    @property
    def src_tokenizer(self) -> BaseTokenizer | None:
        return self.task.src_tokenizer

    @property
    def tgt_tokenizer(self) -> BaseTokenizer | None:
        return self.task.tgt_tokenizer

    @property
    def known_words(self) -> KnownWords | None:
        return self.task.known_words

    @known_words.setter
    def known_words(self, words: KnownWords | None) -> None:
        self.task.known_words = words

    @property
    def pretrained_info(self) -> dict[str, Any] | None:
        return self.task.pretrained_info

    def set_tokenizers(self, src: BaseTokenizer, tgt: BaseTokenizer) -> None:
        """Attach the tokenizers before :meth:`build_model` (building a model in Python, without a data module)."""
        self.task.set_tokenizers(src, tgt)

    def build_model(self) -> None:
        """Create the network for the attached tokenizers (idempotent)."""
        if self.model is None:
            self.model = self.task.build_network()

    @property
    def translator(self) -> Translator:
        """This model as a :class:`~tasks.translation.inference.Translator` (no Lightning needed to run it)."""
        return self.task.translator(self.network)

    def translate(
        self,
        texts: str | list[str],
        beam: int = 5,
        nbest: int = 1,
        return_attention: bool = False,
        batch_size: int = 64,
    ) -> Any:
        """:meth:`tasks.translation.inference.Translator.translate` with this model."""
        return self.translator.translate(texts, beam, nbest, return_attention, batch_size)

    def unknown_words(self, text: str) -> list[str]:
        """Words of ``text`` never seen in training (see :meth:`Translator.unknown_words`)."""
        return [] if self.known_words is None else self.known_words.unknown(text)
