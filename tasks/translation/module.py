"""LightningModule for attention-based translation (RNN or Transformer encoder–decoder).

The network is built in :meth:`TranslationModule.setup` from the data module's tokenizers (vocabulary
sizes are only known after the tokenizers are trained), or from the tokenizers stored in a checkpoint by
:meth:`TranslationModule.load_from_checkpoint`. Checkpoints are self-contained::

    checkpoint["attn_suite"] = {"task": "translation", "format": 1,
                                "tokenizers": {"src": {...}, "tgt": {...}}}

and load with ``torch.load(path, weights_only=True)``.

Example:
    >>> model = TranslationModule.load_from_checkpoint("model.ckpt")  # doctest: +SKIP
    >>> model.translate(["I love you", "the red car"])                  # doctest: +SKIP
    ['te quiero', 'el coche rojo']
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from core.checkpoint import META_KEY
from core.decoding import beam_search
from core.distributed import dedupe_by_index, gather_objects
from core.errors import CheckpointError, ConfigError
from core.inference import eval_mode
from core.hparams import BEAM, FRACTION, LAYERS, LENGTH, RATE, SIZE, STEPS
from core.metrics import corpus_bleu, corpus_chrf
from core.tokenizers import BOS_ID, EOS_ID, BaseTokenizer, tokenizer_from_dict
from core.task_io import TaskCheckpointMixin
from core.training import build_scheduler, log_figure
from tasks.translation.batching import pad_ids
from tasks.translation.models import RNNSeq2Seq, TransformerSeq2Seq

TASK = "translation"


@dataclass
class Translation:
    """One hypothesis with its alignment.

    Attributes:
        text: detokenized translation.
        score: length-normalised log-probability.
        src_tokens: source subword strings (S).
        tgt_tokens: output subword strings (T).
        attention: (T, S) weights used to emit each output token, or None.
    """

    text: str
    score: float
    src_tokens: list[str]
    tgt_tokens: list[str]
    attention: Tensor | None


def tokenizers_from_metadata(meta: Mapping[str, Any], source: str) -> tuple[BaseTokenizer, BaseTokenizer]:
    """The ``(src, tgt)`` tokenizers stored in a checkpoint's ``attn_suite`` metadata.

    Args:
        meta: the metadata dict.
        source: the checkpoint or folder, for messages.

    Raises:
        core.errors.CheckpointError: the tokenizers are missing or cannot be rebuilt (names ``source``).
    """
    toks = meta.get("tokenizers")
    if not isinstance(toks, dict) or not all(isinstance(toks.get(k), dict) for k in ("src", "tgt")):
        raise CheckpointError(f"{source} has no tokenizers (expected '{META_KEY}' -> 'tokenizers' "
                              f"-> 'src'/'tgt'); it was not written by this translation task or was modified")
    out = []
    for side in ("src", "tgt"):
        try:
            out.append(tokenizer_from_dict(toks[side]))
        # ValueError/KeyError/TypeError for malformed dicts; the HF `tokenizers` library raises a plain
        # Exception for an unparsable JSON string.
        except Exception as err:  # noqa: BLE001
            raise CheckpointError(f"{source}: the stored {side!r} tokenizer is malformed "
                                  f"({type(err).__name__}: {err})") from None
    return out[0], out[1]


class TranslationModule(TaskCheckpointMixin, pl.LightningModule):
    """Sequence-to-sequence translation with attention.

    Args:
        arch: ``rnn`` (bidirectional GRU/LSTM encoder, attentional decoder with input feeding) or
            ``transformer`` (pre-norm encoder–decoder on core multi-head attention).
        emb_dim: embedding size (RNN; the Transformer uses ``hidden_dim`` as d_model).
        hidden_dim: RNN decoder size / Transformer d_model.
        enc_layers: encoder layers.
        dec_layers: decoder layers.
        rnn_type: ``gru`` or ``lstm`` (RNN only).
        attention: core attention name for the RNN decoder (additive, location, dot, general,
            scaled_dot, multihead); the Transformer always uses multihead.
        attention_options: extra options of that mechanism, e.g. ``{"hidden_dim": 128}``.
        num_heads: Transformer heads.
        ff_dim: Transformer FFN size.
        dropout: dropout rate.
        label_smoothing: label smoothing of the cross-entropy.
        tie_embeddings: tie the target embedding and the output projection.
        lr: peak learning rate (AdamW).
        weight_decay: AdamW weight decay.
        warmup_steps: linear warmup steps.
        lr_schedule: decay after warmup: ``inverse_sqrt``, ``cosine``, ``linear`` or ``constant``
            (cosine/linear decay over the trainer's estimated total steps).
        min_lr_ratio: floor of cosine/linear decay, as a fraction of ``lr``.
        val_beam: beam size of the validation/test decoding behind BLEU/chrF.
        length_penalty: beam-search length normalisation exponent.
        max_decode_len: cap on output tokens (also ``2 * source length + 10``).
        max_source_tokens: longer inputs are truncated (with a warning) before translation.
        val_bleu_sentences: decode at most this many validation sentences per validation for BLEU
            (None = all); the loss always uses all.
        num_plot_sentences: fixed validation sentences whose attention heatmaps are logged.
    """

    TASK = TASK
    MONITOR, MONITOR_MODE = "val/bleu", "max"
    HPARAM_BOUNDS = {
        "emb_dim": SIZE, "hidden_dim": SIZE, "enc_layers": LAYERS, "dec_layers": LAYERS, "num_heads": LAYERS,
        "ff_dim": SIZE, "dropout": FRACTION, "label_smoothing": FRACTION, "lr": RATE, "weight_decay": RATE,
        "warmup_steps": STEPS, "min_lr_ratio": (0.0, 1.0), "val_beam": BEAM, "length_penalty": (-10.0, 10.0),
        "max_decode_len": LENGTH, "max_source_tokens": LENGTH, "val_bleu_sentences": (0, 10**9),
        "num_plot_sentences": (0, 1000),
    }

    def __init__(
        self,
        arch: Literal["rnn", "transformer"] = "rnn",
        emb_dim: int = 256,
        hidden_dim: int = 256,
        enc_layers: int = 1,
        dec_layers: int = 1,
        rnn_type: Literal["gru", "lstm"] = "gru",
        attention: str = "additive",
        attention_options: dict[str, Any] | None = None,
        num_heads: int = 4,
        ff_dim: int = 1024,
        dropout: float = 0.1,
        label_smoothing: float = 0.1,
        tie_embeddings: bool = False,
        lr: float = 2e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 200,
        lr_schedule: Literal["inverse_sqrt", "cosine", "linear", "constant"] = "inverse_sqrt",
        min_lr_ratio: float = 0.0,
        val_beam: int = 5,
        length_penalty: float = 1.0,
        max_decode_len: int = 100,
        max_source_tokens: int = 100,
        val_bleu_sentences: int | None = None,
        num_plot_sentences: int = 3,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if val_beam < 1:
            raise ConfigError(f"--model.val_beam must be >= 1, got {val_beam}")
        self.model: nn.Module | None = None
        self.src_tokenizer: BaseTokenizer | None = None
        self.tgt_tokenizer: BaseTokenizer | None = None
        # prefix -> [(dataset index, (hypothesis, reference))]; the index lets DDP padding repeats be dropped
        self._eval_outputs: dict[str, list[tuple[int, tuple[str, str]]]] = {}

    # ------------------------------------------------------------------ building
    def set_tokenizers(self, src: BaseTokenizer, tgt: BaseTokenizer) -> None:
        """Attach the tokenizers (vocabulary sizes decide the embedding shapes)."""
        self.src_tokenizer, self.tgt_tokenizer = src, tgt

    def build_model(self) -> None:
        """Create the network from the hyperparameters and the attached tokenizers (idempotent)."""
        if self.model is not None:
            return
        if self.src_tokenizer is None or self.tgt_tokenizer is None:
            raise RuntimeError("set_tokenizers() (or a data module with tokenizers) is needed before build_model()")
        hp = self.hparams
        sv, tv = self.src_tokenizer.vocab_size, self.tgt_tokenizer.vocab_size
        if hp.arch == "rnn":
            self.model = RNNSeq2Seq(sv, tv, hp.emb_dim, hp.hidden_dim, hp.enc_layers, hp.dec_layers, hp.rnn_type,
                                    hp.attention, hp.attention_options, hp.dropout, hp.tie_embeddings)
        elif hp.arch == "transformer":
            self.model = TransformerSeq2Seq(sv, tv, hp.hidden_dim, hp.num_heads, hp.ff_dim, hp.enc_layers,
                                            hp.dec_layers, hp.dropout, hp.tie_embeddings,
                                            max_positions=max(512, hp.max_decode_len + 1, hp.max_source_tokens))
        else:
            raise ConfigError(f"--model.arch must be 'rnn' or 'transformer', got {hp.arch!r}")

    def setup(self, stage: str) -> None:
        """Take the tokenizers from the data module (unless already set) and build the network."""
        if self.src_tokenizer is None:
            dm = self.trainer.datamodule if self._trainer is not None else None
            src, tgt = getattr(dm, "src_tokenizer", None), getattr(dm, "tgt_tokenizer", None)
            if src is None or tgt is None:
                raise ConfigError("TranslationModule needs a data module with src_tokenizer/tgt_tokenizer "
                                  "(e.g. tasks.translation.data.TranslationDataModule)")
            self.set_tokenizers(src, tgt)
        elif self._trainer is not None and getattr(self.trainer.datamodule, "set_tokenizers", None):
            # A model that already has tokenizers (loaded checkpoint) imposes them on the data.
            dm = self.trainer.datamodule
            if dm.src_tokenizer is None or dm.src_tokenizer.to_dict() != self.src_tokenizer.to_dict():
                dm.set_tokenizers(self.src_tokenizer, self.tgt_tokenizer)
                dm.datasets.clear()
                dm.setup(stage)
        self.build_model()

    # ------------------------------------------------------------------ checkpoints
    def task_metadata(self) -> dict[str, Any]:
        """The tokenizers (plain dicts), so the checkpoint alone can translate."""
        assert self.src_tokenizer is not None and self.tgt_tokenizer is not None
        return {"tokenizers": {"src": self.src_tokenizer.to_dict(), "tgt": self.tgt_tokenizer.to_dict()}}

    def restore_metadata(self, meta: Mapping[str, Any], source: str) -> None:
        """Take the file's tokenizers and build the network for them.

        During ``--ckpt_path`` restores the checkpoint's tokenizers win over the ones the data module
        trained: the network is rebuilt for them and the data module re-tokenizes its data.
        """
        toks = meta.get("tokenizers")
        if isinstance(toks, dict) and self.src_tokenizer is not None and self.tgt_tokenizer is not None \
                and self.src_tokenizer.to_dict() == toks.get("src") and self.tgt_tokenizer.to_dict() == toks.get("tgt"):
            return
        src, tgt = tokenizers_from_metadata(meta, source)
        had_data_tokenizers = self.src_tokenizer is not None
        self.set_tokenizers(src, tgt)
        self.model = None
        self.build_model()
        if self._trainer is None:
            return
        self.model.to(self.device)
        dm = self.trainer.datamodule
        if dm is not None and hasattr(dm, "set_tokenizers"):
            if had_data_tokenizers:
                rank_zero_warn("the checkpoint's tokenizers differ from the data module's; using the checkpoint's")
            dm.set_tokenizers(self.src_tokenizer, self.tgt_tokenizer)
            dm.datasets.clear()
            dm.setup(self.trainer.state.fn.value if self.trainer.state.fn else None)

    # ------------------------------------------------------------------ training
    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Keep a host copy of the source lengths (a tuple: Lightning moves only tensors), so the
        RNN encoder packs without copying lengths back from the GPU (a sync every step) and the
        Transformer drops the mask of unpadded batches."""
        if isinstance(batch, dict) and isinstance(batch.get("src_lengths"), Tensor) \
                and batch["src_lengths"].device.type == "cpu":
            batch["src_lengths_host"] = tuple(batch["src_lengths"].tolist())
        return batch

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, need_weights: bool = False,
                src_lengths_host: tuple[int, ...] | None = None) -> tuple[Tensor, Tensor | None]:
        """Teacher-forced logits (B, T, V) and attention (B, T, S) or None."""
        assert self.model is not None
        # Whether any source is padded, decided in Python (no tensor check, nothing for torch.compile
        # to break on); the RNN also packs padded batches from the host lengths.
        unpadded = src_lengths_host is not None and all(n == src.shape[1] for n in src_lengths_host)
        if isinstance(self.model, RNNSeq2Seq):
            host = None if src_lengths_host is None else torch.tensor(src_lengths_host, dtype=torch.long)  # (B,)
            return self.model(src, src_lengths, tgt_in, need_weights=need_weights, host_lengths=host,
                              unpadded=unpadded)
        return self.model(src, src_lengths, tgt_in, need_weights=need_weights, unpadded=unpadded)

    def _loss(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        logits, _ = self(batch["src"], batch["src_lengths"], batch["tgt_in"],
                         src_lengths_host=batch.get("src_lengths_host"))
        v = logits.shape[-1]
        loss = F.cross_entropy(logits.reshape(-1, v).float(), batch["tgt_out"].reshape(-1),  # (B*T, V), (B*T,)
                               ignore_index=0, label_smoothing=self.hparams.label_smoothing)
        n_tokens = (batch["tgt_out"] != 0).sum()
        return loss, n_tokens

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss, n_tokens = self._loss(batch)
        b = batch["src"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=b)
        # Tokens processed (source + target, unpadded): the throughput numerator of the benchmarks.
        self.log("train/tokens", (n_tokens + batch["src_lengths"].sum()).float(), reduce_fx="sum",
                 on_step=False, on_epoch=True, batch_size=b, sync_dist=True)
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if p.requires_grad:
                (no_decay if p.dim() < 2 or "norm" in name else decay).append(p)
        groups = [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        fused = self.device.type == "cuda"  # fused AdamW kernels: one launch for all params on GPU
        opt = torch.optim.AdamW(groups, lr=hp.lr, betas=(0.9, 0.98), eps=1e-9, fused=fused)
        schedule = hp.lr_schedule
        total = None
        if schedule in ("cosine", "linear"):
            est = self.trainer.estimated_stepping_batches
            if est is None or not math.isfinite(est):
                rank_zero_warn(f"lr_schedule={schedule} needs a step budget (trainer.max_steps/max_epochs); "
                               f"using inverse_sqrt")
                schedule = "inverse_sqrt"
            else:
                total = int(est)
        return {"optimizer": opt,
                "lr_scheduler": build_scheduler(opt, hp.warmup_steps, schedule, total, hp.min_lr_ratio)}

    # ------------------------------------------------------------------ evaluation
    def _eval_step(self, batch: dict[str, Any], prefix: str, limit: int | None) -> None:
        loss, _ = self._loss(batch)
        self.log(f"{prefix}/loss", loss, prog_bar=True, batch_size=batch["src"].shape[0], sync_dist=True)
        src, lengths, refs = batch["src"], batch["src_lengths"], batch["tgt_text"]
        indices = batch["index"].tolist()
        if limit is not None:
            # Decode a fixed subset (dataset index < limit): batches are length-sorted, so taking the
            # first batches would score only the shortest sentences.
            keep = (batch["index"] < limit).nonzero().squeeze(1)  # (K,)
            if keep.numel() == 0:
                return
            src, lengths = src.index_select(0, keep), lengths.index_select(0, keep)
            refs = [refs[i] for i in keep.tolist()]
            indices = [indices[i] for i in keep.tolist()]
        res = self._decode(src, lengths, beam=self.hparams.val_beam, nbest=1, need_weights=False)
        assert self.tgt_tokenizer is not None
        out = self._eval_outputs.setdefault(prefix, [])
        for index, hyps, ref in zip(indices, res.tokens, refs):
            out.append((index, (self.tgt_tokenizer.decode(hyps[0]), ref)))

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val", self.hparams.val_bleu_sentences)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test", None)

    def _finish_eval(self, prefix: str) -> None:
        outputs = self._eval_outputs.pop(prefix, [])
        # BLEU is corpus-level: every rank needs every hypothesis, not an average of rank scores.
        outputs = gather_objects(outputs)
        # Every rank runs the same number of eval steps, so the last batches repeat earlier examples
        # (TokenBucketBatchSampler padding); score each dataset example exactly once.
        pairs = dedupe_by_index(outputs)
        if not pairs:
            return
        hyps, refs = [h for h, _ in pairs], [r for _, r in pairs]
        # Same value on every rank (computed from the gathered corpus); sync_dist just averages equal
        # values once per epoch and keeps Lightning's distributed bookkeeping consistent.
        self.log(f"{prefix}/bleu", corpus_bleu(hyps, refs), prog_bar=True, sync_dist=True)
        self.log(f"{prefix}/chrf", corpus_chrf(hyps, refs), sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        self._eval_outputs.pop("val", None)

    def on_validation_epoch_end(self) -> None:
        self._finish_eval("val")
        if not self.trainer.sanity_checking and self.trainer.is_global_zero:
            self._log_heatmaps()

    def on_test_epoch_end(self) -> None:
        self._finish_eval("test")

    def _log_heatmaps(self) -> None:
        from core.viz import plot_alignment

        n = self.hparams.num_plot_sentences
        dm = self.trainer.datamodule
        if n <= 0 or dm is None or not hasattr(dm, "fixed_examples"):
            return
        examples = dm.fixed_examples(n)
        if not examples:
            return
        results = self.translate([s for s, _ in examples], beam=1, return_attention=True)
        for i, (r, (src, _)) in enumerate(zip(results, examples)):
            if r.attention is None:
                continue
            fig = plot_alignment(r.attention, r.src_tokens, r.tgt_tokens, title=f"{src} → {r.text}")
            log_figure(self, f"val/attention_{i}", fig)

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> list[str]:
        """Translations (beam ``val_beam``) of a batch, in batch order."""
        res = self._decode(batch["src"], batch["src_lengths"], beam=self.hparams.val_beam, nbest=1,
                           need_weights=False)
        assert self.tgt_tokenizer is not None
        # Empty input lines stay empty so output line i always translates input line i.
        return ["" if not src.strip() else self.tgt_tokenizer.decode(h[0])
                for h, src in zip(res.tokens, batch["src_text"])]

    # ------------------------------------------------------------------ inference
    def _decode(self, src: Tensor, src_lengths: Tensor, beam: int, nbest: int, need_weights: bool) -> Any:
        assert self.model is not None
        model = self.model
        state = model.init_state(src, src_lengths)
        max_len = min(self.hparams.max_decode_len, int(src_lengths.max()) * 2 + 10)

        def step_fn(last: Tensor, st: Any) -> tuple[Tensor, Any, Tensor | None]:
            return model.step(last, st, need_weights)

        return beam_search(step_fn, state, batch_size=src.shape[0], bos_id=BOS_ID, eos_id=EOS_ID, max_len=max_len,
                           beam_size=beam, length_penalty=self.hparams.length_penalty, nbest=nbest,
                           device=src.device)

    @torch.no_grad()
    def translate(self, texts: list[str], beam: int = 5, nbest: int = 1, return_attention: bool = False,
                  batch_size: int = 64) -> list[Any]:
        """Translate sentences.

        Characters never seen in training map to the unknown token (never an error). Inputs longer than
        ``max_source_tokens`` subwords are truncated with a warning.

        Args:
            texts: source sentences.
            beam: beam size (1 = greedy).
            nbest: hypotheses per sentence (≤ beam).
            return_attention: return :class:`Translation` objects with (T, S) attention instead of strings.
            batch_size: sentences decoded together.

        Returns:
            ``nbest == 1``: one item per input; else a list of ``nbest`` items per input. Items are
            strings, or :class:`Translation` when ``return_attention``.
        """
        if self.model is None:
            self.build_model()
        if not 1 <= nbest <= beam:
            raise ConfigError(f"need 1 <= nbest <= beam, got nbest={nbest}, beam={beam}")
        assert self.src_tokenizer is not None and self.tgt_tokenizer is not None
        limit = self.hparams.max_source_tokens
        encoded = []
        for i, t in enumerate(texts):
            ids = self.src_tokenizer.encode(t)
            if len(ids) > limit:
                rank_zero_warn(f"input {i} has {len(ids)} subword tokens; truncated to "
                               f"max_source_tokens={limit}")
                ids = ids[:limit]
            encoded.append(ids)
        # Decode in length-sorted batches (little padding), then restore the input order.
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
        results: list[Any] = [None] * len(texts)
        with eval_mode(self):
            for k in range(0, len(order), batch_size):
                idx = order[k:k + batch_size]
                src, lengths = pad_ids([encoded[i] for i in idx])  # (B, S), (B,)
                res = self._decode(src.to(self.device), lengths.to(self.device), beam, nbest, return_attention)
                for j, i in enumerate(idx):
                    hyps = []
                    for toks, score, att in zip(res.tokens[j], res.scores[j], res.attention[j]):
                        text = self.tgt_tokenizer.decode(toks)
                        if return_attention:
                            s_len = max(1, len(encoded[i]))
                            hyps.append(Translation(
                                text, float(score), [self.src_tokenizer.id_to_token(t) for t in encoded[i]],
                                [self.tgt_tokenizer.id_to_token(t) for t in toks],
                                None if att is None else att[:, :s_len].float().cpu()))  # (T, S)
                        else:
                            hyps.append(text)
                    results[i] = hyps[0] if nbest == 1 else hyps
        return results
