"""`SpeechModule`: joint CTC/attention ASR as a LightningModule, plus `transcribe` for inference.

Besides CER/WER, validation and test score where the attention looks when the data knows where each word is
(the synthesised corpus' word spans, `tasks.speech.alignment`): ``val/char_in_span`` / ``test/char_in_span``,
the share of emitted characters whose attention peak lies inside their word's span, and ``val/off_diagonal`` /
``test/off_diagonal``, the attention's expected distance from the diagonal. Both come from the decoding the
CER needs anyway (nothing is decoded twice), and are not logged for a model without attention to score
(``attention="none"``, CTC alone) or data without spans.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torchmetrics.aggregation import MeanMetric
from torchmetrics.text import CharErrorRate, WordErrorRate

from core.attention import attention_options as attention_options_for  # the argument has its name
from core.cli.predict import Prediction
from core.errors import ConfigError
from core.io.hparams import BEAM, FRACTION, LAYERS, RATE, SIZE, STEPS
from core.io.pretrained import is_hf_spec
from core.io.task_io import TaskCheckpointMixin
from core.train.callbacks import empty_batch_loss
from core.train.finetune import FreezeSchedule, optimizer_groups
from core.train.progress_bar import ThroughputMixin
from core.train.schedule import OptimizerOptions, configure_optimizer
from tasks.speech.alignment import encoder_frame_times, has_attention_to_score, off_diagonal, utterance_scores
from tasks.speech.data import make_char_tokenizer
from tasks.speech.features import FeatureConfig, FeatureStats, LogMel, SpecAugment
from tasks.speech.hf_encoder import hf_speech_encoder
from tasks.speech.inference import Hypothesis, TranscribeMixin
from tasks.speech.losses import SpeechLossMixin
from tasks.speech.model import ASRModel
from tasks.speech.stored import SpeechStoredMixin

__all__ = ["SpeechModule"]

TASK = "speech"
ENCODERS = ("lstm", "pblstm", "transformer", "conformer")


class SpeechModule(
    TranscribeMixin, SpeechLossMixin, SpeechStoredMixin, TaskCheckpointMixin, ThroughputMixin, L.LightningModule
):
    """Listen-attend-spell style ASR with joint CTC.

    Args:
        encoder: "lstm" (conv x4 + BiLSTM), "pblstm" (pyramidal BiLSTM), "transformer", "conformer", or
            ``hf:<hub-id-or-folder>``: a pretrained wav2vec2 / HuBERT / WavLM (or Whisper's encoder) read through
            ``transformers`` from the raw waveform, a learned weighted sum of its layers under the decoder and
            CTC (`tasks.speech.hf_encoder`; ``encoder_dim``/``encoder_layers``/``num_heads`` are then its own).
        encoder_dim: encoder size (per direction for LSTMs, d_model otherwise).
        encoder_layers: encoder layers.
        num_heads: attention heads of transformer/conformer encoders.
        hidden_dim: decoder LSTM size.
        embed_dim: character embedding size.
        attention: `core.attention` mechanism of the decoder ("location", "additive", "dot",
            "general", "scaled_dot", "multihead"), or "none": no attention, one fixed context (the mean of
            the encoder frames) for every output step, the baseline of what attention buys (it is expected
            to fail on long input).
        attention_options: extra options of that mechanism (e.g. `{"hidden_dim": 128, "kernel_size": 31}`).
            "none" takes none: options given with it (e.g. a config's location-attention options under
            ``--model.attention none``) are dropped with a warning.
        ctc_weight: weight of the CTC loss (0 = attention only; also the weight of CTC when
            rescoring the beam's n-best). 1 = **CTC alone**, the practical model without attention: the
            loss is CTC only, the attention decoder is frozen (no gradient, no weight decay) and never
            run, and decoding is a CTC prefix beam search (`joint_ctc_decoding` is implied: rescoring an
            untrained decoder's beam would mean nothing).
        dropout: dropout.
        label_smoothing: label smoothing of the attention cross-entropy.
        optimizer: ``adamw``, ``adam`` or ``sgd`` (``core.train.schedule.configure_optimizer``).
        lr: peak learning rate.
        weight_decay: weight decay (not on biases and norms).
        betas: Adam betas.
        eps: Adam epsilon.
        warmup_steps: linear warmup steps.
        lr_schedule: decay after warmup: ``inverse_sqrt``, ``cosine``, ``linear`` or ``constant``.
        min_lr_ratio: floor of cosine/linear decay, as a fraction of ``lr``.
        spec_augment: frequency/time masking during training.
        beam_size: beam width for validation/test/predict decoding.
        length_penalty: exponent of the beam's length normalisation.
        plot_examples: validation utterances whose alignment is plotted each validation (0 = none).
        max_chunk_seconds: `transcribe` cuts longer audio into chunks (at silences when possible);
            None = the longest training utterance seen (stored in the checkpoint).
        cpu_threads: torch intra-op threads when training/evaluating on CPU (None = torch's default).
            The per-step tensors of this model are small, so intra-op parallelism buys little and
            its barriers cost a lot when cores are shared: on a busy 2-core machine one thread
            trained at 108 audio-s/s and two threads at 13. DataLoader workers use the other cores.
        trainable_blocks: ``hf:`` encoders: -1 fine-tune all its Transformer layers, 0 freeze it (only the layer
            weights and what is above train), k the top k layers; its CNN feature encoder stays frozen.
        encoder_lr_scale: ``hf:`` encoders: their learning rate is ``lr * encoder_lr_scale``.
        unfreeze_after_steps: ``hf:`` encoders: frozen for this many optimizer steps first (decoder and CTC
            train alone), then ``trainable_blocks`` applies; None = from the start.
        pretrained_config: ``hf:`` encoders: their config and feature-extractor settings as plain data; filled
            from a checkpoint's metadata when one is loaded (rebuilt offline, never downloaded); leave it None.
        guided_attention_weight: weight of the guided attention loss (`tasks.speech.guided`), a
            diagonal prior that makes the decoder find the monotonic alignment early (0 = off; ignored,
            with a warning, for "none" and CTC alone, which have no attention to guide).
        guided_attention_sigma: width of that prior's diagonal band, as a fraction of the utterance.
        guided_attention_steps: the guided weight fades linearly to `guided_attention_final_weight` over this
            many optimizer steps (a prior to find the alignment, not a constraint on it later); None = constant.
        guided_attention_final_weight: the weight it fades to.
        encoder_conv_channels: channels of the encoder's conv2d subsampling (half of 32 halves its cost;
            measured 0.163 -> 0.082 CPU-s per encoder forward+backward of a demo batch).
        joint_ctc_decoding: beam search scores every step with `(1 - w)` attention + `w` CTC prefix
            log-probability (`tasks.speech.ctc_prefix`, `w = ctc_weight`) instead of rescoring the
            attention beam's n-best with CTC at the end. With ``ctc_weight`` 1 (CTC alone) the search uses
            the CTC prefix scores only, without running the decoder (the same scores `w = 1` gives here).
    """

    TASK = TASK
    MONITOR, MONITOR_MODE = "val/cer", "min"
    THROUGHPUT_UNIT = "audio-s"  # seconds of audio per second of training
    HPARAM_BOUNDS = {
        "encoder_dim": SIZE,
        "encoder_layers": LAYERS,
        "num_heads": LAYERS,
        "hidden_dim": SIZE,
        "embed_dim": SIZE,
        "ctc_weight": (0.0, 1.0),
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
        "plot_examples": (0, 1000),
        "max_chunk_seconds": (1.0, 600.0),
        "cpu_threads": (1, 1024),
        "trainable_blocks": (-1, 1000),
        "encoder_lr_scale": RATE,
        "unfreeze_after_steps": STEPS,
        "guided_attention_weight": (0.0, 1000.0),
        "guided_attention_sigma": (1e-3, 10.0),
        "guided_attention_steps": STEPS,
        "guided_attention_final_weight": (0.0, 1000.0),
        "encoder_conv_channels": SIZE,
    }
    # Names of format-1 checkpoints (before one vocabulary of names across the tasks).
    HPARAM_RENAMES = {"encoder_hidden": "encoder_dim", "encoder_heads": "num_heads", "decoder_hidden": "hidden_dim"}
    FOLDER_FILES = {"units": "units.json", "feature_config": "preprocessor_config.json"}

    def __init__(
        self,
        encoder: str = "lstm",
        encoder_dim: int = 160,
        encoder_layers: int = 2,
        num_heads: int = 4,
        hidden_dim: int = 192,
        embed_dim: int = 48,
        attention: str = "location",
        attention_options: dict[str, int | float | str | bool | None] | None = None,
        ctc_weight: float = 0.3,
        dropout: float = 0.1,
        label_smoothing: float = 0.1,
        optimizer: Literal["adamw", "adam", "sgd"] = "adamw",
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        warmup_steps: int = 200,
        lr_schedule: Literal["inverse_sqrt", "cosine", "linear", "constant"] = "inverse_sqrt",
        min_lr_ratio: float = 0.0,
        spec_augment: bool = True,
        beam_size: int = 5,
        length_penalty: float = 1.0,
        plot_examples: int = 2,
        max_chunk_seconds: float | None = None,
        cpu_threads: int | None = 1,
        trainable_blocks: int = -1,
        encoder_lr_scale: float = 1.0,
        unfreeze_after_steps: int | None = None,
        pretrained_config: dict[str, Any] | None = None,
        guided_attention_weight: float = 0.0,
        guided_attention_sigma: float = 0.2,
        guided_attention_steps: int | None = None,
        guided_attention_final_weight: float = 0.0,
        joint_ctc_decoding: bool = False,
        encoder_conv_channels: int = 32,
    ) -> None:
        super().__init__()
        if not 0.0 <= ctc_weight <= 1.0:
            raise ConfigError(f"model.ctc_weight must be in [0, 1], got {ctc_weight}")
        if not is_hf_spec(encoder) and encoder not in ENCODERS:
            raise ConfigError(
                f"model.encoder={encoder!r}: expected one of {', '.join(ENCODERS)} or "
                f"hf:<hub-id-or-folder> (a pretrained wav2vec2 / HuBERT / WavLM / Whisper)"
            )
        if guided_attention_weight > 0 and (attention == "none" or ctc_weight >= 1.0):
            what = "attention=none (uniform weights)" if attention == "none" else "ctc_weight=1 (CTC alone)"
            rank_zero_warn(f"model.guided_attention_weight is ignored with {what}: there is no attention to guide")
        self.save_hyperparameters()
        if attention == "none":
            # options written for another mechanism are dropped (and named) here, so the checkpoint records what
            # was built and reloading it does not warn again
            self.hparams["attention_options"] = attention_options_for("none", attention_options, hidden_dim) or None
        self.tokenizer = make_char_tokenizer()
        self.feature_cfg = FeatureConfig()
        self.logmel = LogMel(self.feature_cfg)
        self.stats = FeatureStats(self.feature_cfg.n_mels)
        self.specaug = SpecAugment() if spec_augment else None
        self.pretrained_info: dict[str, Any] | None = None
        hf_encoder = None
        if is_hf_spec(encoder):
            hf_encoder, self.pretrained_info = hf_speech_encoder(
                encoder, pretrained_config, trainable_blocks, unfreeze_after_steps
            )
        self.model = ASRModel(
            self.tokenizer.vocab_size,
            self.feature_cfg.n_mels,
            encoder,
            encoder_dim,
            encoder_layers,
            num_heads,
            hidden_dim,
            embed_dim,
            attention,
            self.hparams.attention_options,
            dropout,
            encoder_module=hf_encoder,
            conv_channels=encoder_conv_channels,
        )
        if ctc_weight >= 1.0:
            # CTC alone: the decoder has no loss and is never run. Frozen, it gets no gradient (DDP expects
            # none of it), no weight decay and no optimizer state; it stays in the model so that every
            # setting has the same weights.
            self.model.decoder.requires_grad_(False)
        self.max_chunk_seconds = max_chunk_seconds
        self.val_cer, self.val_wer = CharErrorRate(), WordErrorRate()
        self.test_cer, self.test_wer = CharErrorRate(), WordErrorRate()
        # Attention against word spans (tasks.speech.alignment): weighted means, so that the epoch value is the
        # corpus share (characters in span / characters scored) and the mean over utterances, across ranks too.
        self.val_in_span, self.val_off_diagonal = MeanMetric(), MeanMetric()
        self.test_in_span, self.test_off_diagonal = MeanMetric(), MeanMetric()
        self._span_utts: dict[str, list[Any] | None] = {}

    # ------------------------------------------------------------------------------------------
    # setup (what a checkpoint stores beyond the weights: tasks.speech.stored)
    # ------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Take feature statistics and the trained duration range from the datamodule (fresh runs)."""
        if self._trainer is not None and self.hparams.cpu_threads and self.trainer.strategy.root_device.type == "cpu":
            torch.set_num_threads(self.hparams.cpu_threads)
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None:
            return
        if self.reads_waveforms and hasattr(dm, "waveforms"):
            dm.waveforms = True  # before the loaders are made: batches carry the raw audio too
        if not bool(self.stats.initialized) and getattr(dm, "feature_stats", None) is not None:
            self.stats.set(*dm.feature_stats)
        if self.max_chunk_seconds is None and getattr(dm, "splits", None):
            durs = [u.duration or 0.0 for u in dm.splits.get("train", [])]
            if durs:
                # within the bounds a checkpoint may hold (1-600 s): clips shorter than a second still make a
                # loadable checkpoint, and longer audio is cut where it must be anyway
                self.max_chunk_seconds = float(min(600.0, max(1.0, max(durs))))

    def batch_units(self, batch: dict[str, Any]) -> float:
        """Seconds of audio in a host batch (10 ms frames)."""
        return float(batch["feat_lens"].sum()) * self.feature_cfg.hop_length / self.feature_cfg.sample_rate

    @property
    def reads_waveforms(self) -> bool:
        """Whether the encoder reads raw 16 kHz audio (an ``hf:`` encoder) instead of log-mel features."""
        return self.pretrained_info is not None

    def configure_callbacks(self) -> list[Any]:
        """`core.train.finetune.FreezeSchedule` for an ``hf:`` encoder (``unfreeze_after_steps``)."""
        return [FreezeSchedule()] if self.pretrained_info is not None else []

    # ------------------------------------------------------------------------------------------
    # training (the losses: tasks.speech.losses)
    # ------------------------------------------------------------------------------------------
    def _log_counts(self, stage: str, batch: dict[str, Any]) -> Tensor:
        """Per-epoch sums of skipped utterances and batches; returns a device zero for other counts.

        Logged for every batch, empty or not, on every rank, so all ranks hold the same keys;
        `on_step=False` keeps the cross-rank sum (`sync_dist`) to one all-reduce at epoch end. The
        values are device tensors derived from the batch's `skipped` tensor (logging a Python
        number would copy it to the device and synchronise every step).
        """
        skipped = batch.get("skipped")
        if not isinstance(skipped, Tensor):  # a batch built by hand
            skipped = torch.tensor(int(skipped or 0), device=self.device)
        kw: dict[str, Any] = {
            "reduce_fx": "sum",
            "on_step": False,
            "on_epoch": True,
            "sync_dist": True,
            "batch_size": 1,
        }
        zero = skipped.new_zeros((), dtype=torch.float32)
        self.log(f"{stage}/skipped_utterances", skipped.float(), **kw)
        self.log(f"{stage}/skipped_batches", zero + 1.0 if batch.get("empty") else zero, **kw)
        return zero

    def _log_ctc_infeasible(self, stage: str, count: Tensor) -> None:
        """Per-epoch sum of utterances whose CTC loss was infinite (zeroed by `zero_infinity`)."""
        self.log(
            f"{stage}/ctc_infeasible",
            count,
            reduce_fx="sum",
            on_step=False,
            on_epoch=True,
            sync_dist=True,
            batch_size=1,
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        zero = self._log_counts("train", batch)
        if batch.get("empty"):
            # Every utterance of this batch was unusable (warned and counted).
            if self.hparams.ctc_weight > 0:
                self._log_ctc_infeasible("train", zero)  # same keys on every rank, every step
            return empty_batch_loss(self)
        losses = self._losses(batch)
        if "ctc_infeasible" in losses:
            self._log_ctc_infeasible("train", losses["ctc_infeasible"])
        b = len(batch["texts"])
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=b)
        if "ce" in losses:  # not with CTC alone
            self.log("train/ce", losses["ce"], batch_size=b)
        if "ctc" in losses:
            self.log("train/ctc", losses["ctc"], batch_size=b)
        if "guided" in losses:
            self.log("train/guided", losses["guided"], batch_size=b)
        # audio seconds in this batch: feature frames are 10 ms
        self.log(
            "train/audio_seconds",
            batch["feat_lens"].sum().float() * self.feature_cfg.hop_length / self.feature_cfg.sample_rate,
            reduce_fx="sum",
            batch_size=b,
        )
        return losses["loss"]

    def _eval_step(self, batch: dict[str, Any], batch_idx: int, stage: str) -> None:
        self._log_counts(stage, batch)
        if batch.get("empty"):
            return
        b = len(batch["texts"])
        losses = self._losses(batch)
        self.log(f"{stage}/loss", losses["loss"], prog_bar=True, batch_size=b, sync_dist=True)
        span_utts = self._span_utts.get(stage)
        hyps = [
            h[0]
            for h in self.decode_features(
                batch["feats"],
                batch["feat_lens"],
                beam=self.hparams.beam_size,
                # the beam search keeps the attention anyway: returning it costs a slice
                with_attention=(stage == "val" and batch_idx == 0) or span_utts is not None,
                wavs=batch.get("wavs"),
                wav_lens=batch.get("wav_lens"),
            )
        ]
        texts = [h.text for h in hyps]
        cer, wer = (self.val_cer, self.val_wer) if stage == "val" else (self.test_cer, self.test_wer)
        cer.update(texts, batch["texts"])
        wer.update(texts, batch["texts"])
        self.log(f"{stage}/cer", cer, prog_bar=True, batch_size=b)
        self.log(f"{stage}/wer", wer, batch_size=b)
        if stage == "val" and batch_idx == 0 and self.hparams.plot_examples > 0:
            self._plot(batch, hyps)
        if span_utts is not None:
            self._score_attention(stage, batch, hyps, span_utts)

    def _find_span_utterances(self, stage: str) -> None:
        """Note the split's utterances when their word spans can score this model's attention (else None).

        Decided once per evaluation epoch from the datamodule's split (the same files on every rank, so every
        rank logs the same keys); `batch["indices"]` are positions in it.
        """
        utts = None
        if self._trainer is not None and has_attention_to_score(self):
            dm = getattr(self.trainer, "datamodule", None)
            split = (getattr(dm, "splits", None) or {}).get(stage)
            if split and any(getattr(u, "words", None) for u in split):
                utts = split
        self._span_utts[stage] = utts

    def on_validation_epoch_start(self) -> None:
        self._find_span_utterances("val")

    def on_test_epoch_start(self) -> None:
        self._find_span_utterances("test")

    def _score_attention(self, stage: str, batch: dict[str, Any], hyps: list[Hypothesis], utts: list[Any]) -> None:
        """Update and log `<stage>/char_in_span` and `<stage>/off_diagonal` with one batch's hypotheses."""
        frame_s, centre_s = encoder_frame_times(self)
        hits = scored = 0
        offs: list[float] = []
        for i, h in zip(batch["indices"], hyps):
            words = getattr(utts[int(i)], "words", None)
            if not words or h.attention is None:
                continue
            n_in, n = utterance_scores(h.text, h.attention, words, frame_s, centre_s)
            hits, scored = hits + n_in, scored + n
            off = off_diagonal(h.attention)
            if not math.isnan(off):
                offs.append(off)
        in_span, off_diag = (
            (self.val_in_span, self.val_off_diagonal) if stage == "val" else (self.test_in_span, self.test_off_diagonal)
        )
        # Weight 0 when nothing was scored (e.g. an untrained model's empty transcripts): the key is still
        # logged, so every rank holds it; an epoch with nothing scored at all gives NaN.
        in_span.update(hits / scored if scored else 0.0, float(scored))
        off_diag.update(sum(offs) / len(offs) if offs else 0.0, float(len(offs)))
        b = len(hyps)
        self.log(f"{stage}/char_in_span", in_span, batch_size=b)
        self.log(f"{stage}/off_diagonal", off_diag, batch_size=b)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[Prediction]:
        """One ``(position in the split, (utterance id, transcript))`` row per utterance."""
        if batch.get("empty"):
            return []
        hyps = self.decode_features(
            batch["feats"],
            batch["feat_lens"],
            beam=self.hparams.beam_size,
            wavs=batch.get("wavs"),
            wav_lens=batch.get("wav_lens"),
        )
        return [Prediction(int(i), (u, h[0].text)) for i, u, h in zip(batch["indices"], batch["ids"], hyps)]

    def _plot(self, batch: dict[str, Any], hyps: list[Hypothesis]) -> None:
        """Spectrogram + attention of the first validation utterances (rank zero only, via log_figure)."""
        if self._trainer is None or not self.trainer.is_global_zero or self.trainer.sanity_checking:
            return
        from core.train.callbacks import log_figure
        from core.viz import plot_spectrogram_alignment

        for i in range(min(self.hparams.plot_examples, len(hyps))):
            text, att = hyps[i].text, hyps[i].attention
            if att is None or att.shape[0] == 0:
                continue
            n = int(batch["feat_lens"][i])
            spec = batch["feats"][i, :n].T.cpu()  # (T, F) -> (F, T)
            fig = plot_spectrogram_alignment(spec, att, list(text), title=f"ref: {batch['texts'][i]}")
            log_figure(self, f"val/alignment_{i}", fig)

    def configure_optimizers(self) -> Any:
        return configure_optimizer(
            self, OptimizerOptions.from_hparams(self.hparams), optimizer_groups(self, self.hparams.encoder_lr_scale)
        )
