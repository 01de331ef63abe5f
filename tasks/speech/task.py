"""The speech task as the core module runs it: joint CTC/attention training, CER/WER as corpus scores, where the
attention looks, alignment figures, predictions, and what a checkpoint stores beyond the weights.

Besides CER/WER, validation and test score where the attention looks when the data knows where each word is
(the synthesised corpus' word spans, `tasks.speech.alignment`): ``<stage>/char_in_span``, the share of emitted
characters whose attention peak lies inside their word's span, and ``<stage>/off_diagonal``, the attention's
expected distance from the diagonal. Both come from the decoding the CER needs anyway (nothing is decoded twice),
and are not logged for a model without attention to score (``attention="none"``, CTC alone) or data without
spans.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from core.cli.output import Prediction
from core.io.pretrained import is_hf_spec
from core.metrics.text import char_error_rate, word_error_rate
from core.text.tokenizers import BaseTokenizer
from core.train.finetune import FreezeSchedule, optimizer_groups
from core.train.task import EvalStage, Evaluation, Objective, Stage, Task
from core.viz import plot_spectrogram_alignment
from tasks.speech.alignment import SpanTally, encoder_frame_times, has_attention_to_score
from tasks.speech.batching import BucketedSpeechDataset, SpeechBatch
from tasks.speech.features import FeatureConfig, FeatureStats
from tasks.speech.inference import SearchOptions, decode_features
from tasks.speech.losses import LossOptions, speech_losses
from tasks.speech.network import SpeechNetwork, build_network
from tasks.speech.sources import Utterance
from tasks.speech.stored import check_stats, make_char_tokenizer, read_chunk_seconds, read_units, speech_artifacts

__all__ = ["MEANS", "SpeechOptions", "SpeechTask"]

#: the weighted means of where the attention looks, logged as ``<stage>/<name>`` (`SpanTally.means`)
MEANS = ("char_in_span", "off_diagonal")


@dataclass(frozen=True)
class SpeechOptions:
    """The task's options: ``SpeechModule``'s of the same names (documented there), the optimizer's aside."""

    encoder: str
    encoder_dim: int
    encoder_layers: int
    num_heads: int
    hidden_dim: int
    embed_dim: int
    attention: str
    attention_options: dict[str, Any] | None
    ctc_weight: float
    dropout: float
    label_smoothing: float
    spec_augment: bool
    beam_size: int
    length_penalty: float
    plot_examples: int
    cpu_threads: int | None
    trainable_blocks: int
    encoder_lr_scale: float
    unfreeze_after_steps: int | None
    guided_attention_weight: float
    guided_attention_sigma: float
    guided_attention_steps: int | None
    guided_attention_final_weight: float
    joint_ctc_decoding: bool
    encoder_conv_channels: int


class SpeechTask(Task[SpeechNetwork, SpeechBatch]):
    """Listen-attend-spell with joint CTC (see the module docstring), for :class:`tasks.speech.module.SpeechModule`.

    Args:
        options: the task's options.
        max_chunk_seconds: ``transcribe`` cuts longer audio into chunks; None: the longest training utterance.
        pretrained_config: an ``hf:`` encoder's stored config (rebuilt offline from it); None loads ``encoder``.

    Attributes:
        tokenizer: the character units.
        feature_cfg: the log-mel front end.
        stats: the feature statistics, taken from the training data (:meth:`setup`); every network this task
            builds normalises with this one module.
        max_chunk_seconds: the chunking range (stored with the model).
        pretrained_info: the ``hf:`` encoder's config as plain data once built (stored with the model), else None.
        step: the optimizer step, kept by a callback in training (the guided attention prior fades with it).
    """

    unit = "audio-s"  # seconds of audio per second of training

    def __init__(
        self, options: SpeechOptions, max_chunk_seconds: float | None, pretrained_config: dict[str, Any] | None
    ) -> None:
        self.options = options
        self.loss = LossOptions(
            ctc_weight=options.ctc_weight,
            label_smoothing=options.label_smoothing,
            attention=options.attention,
            guided_attention_weight=options.guided_attention_weight,
            guided_attention_sigma=options.guided_attention_sigma,
            guided_attention_steps=options.guided_attention_steps,
            guided_attention_final_weight=options.guided_attention_final_weight,
        )
        self.search = SearchOptions(
            ctc_weight=options.ctc_weight,
            joint_ctc_decoding=options.joint_ctc_decoding,
            length_penalty=options.length_penalty,
        )
        self.tokenizer: BaseTokenizer = make_char_tokenizer()
        self.feature_cfg = FeatureConfig()
        self.stats = FeatureStats(self.feature_cfg.n_mels)
        self.max_chunk_seconds = max_chunk_seconds
        self.pretrained_config = pretrained_config
        self.pretrained_info: dict[str, Any] | None = None
        self.step = 0
        # per evaluation stage, its split when the split's word spans can score the attention (from setup)
        self.span_utterances: dict[str, Sequence[Utterance]] = {}

    @property
    def reads_waveforms(self) -> bool:
        """Whether the encoder reads raw 16 kHz audio (an ``hf:`` encoder) instead of log-mel features."""
        return is_hf_spec(self.options.encoder)

    # ------------------------------------------------------------------ the network and what the data decides
    def build_network(self) -> SpeechNetwork:
        # the first build reads an hf: encoder (or its stored config); later ones its config: offline
        stored = self.pretrained_info if self.pretrained_info is not None else self.pretrained_config
        network, info = build_network(
            self.options,
            self.tokenizer.vocab_size,
            self.feature_cfg,
            self.stats,
            stored if self.reads_waveforms else None,
        )
        if self.reads_waveforms:
            self.pretrained_info = info
        return network

    def setup(self, stage: str, datamodule: Any | None) -> bool:
        """Take from the data module: waveforms in its batches for an ``hf:`` encoder, the feature statistics and
        the trained duration range (fresh runs), and the evaluation splits whose word spans score the attention.

        The statistics are set in place (:attr:`stats`): the network is never rebuilt for them.
        """
        self.span_utterances = {}
        if datamodule is None:  # plain dataloaders: nothing to take
            return False
        splits: Mapping[str, Sequence[Utterance]] = getattr(datamodule, "splits", None) or {}
        if self.reads_waveforms and hasattr(datamodule, "waveforms"):
            datamodule.waveforms = True  # before the loaders are made: batches carry the raw audio too
        if not bool(self.stats.initialized) and getattr(datamodule, "feature_stats", None) is not None:
            self.stats.set(*datamodule.feature_stats)
        durations = [u.duration or 0.0 for u in splits.get("train", [])]
        if self.max_chunk_seconds is None and durations:
            # within the bounds a checkpoint may hold (1-600 s): clips shorter than a second still make a loadable
            # checkpoint, and longer audio is cut where it must be anyway
            self.max_chunk_seconds = float(min(600.0, max(1.0, max(durations))))
        # Decided once from the split (the same files on every rank, so every rank logs the same keys);
        # batch["indices"] are positions in it.
        scored = has_attention_to_score(self.options.attention, self.options.ctc_weight)
        self.span_utterances = {
            name: split
            for name in ("val", "test")
            if scored and (split := splits.get(name)) and any(getattr(u, "words", None) for u in split)
        }
        return False

    def callbacks(self) -> list[pl.Callback]:
        """The step clock, one torch thread per process on CPU (``cpu_threads``) and, for an ``hf:`` encoder,
        `core.train.finetune.FreezeSchedule` (``unfreeze_after_steps``)."""
        out: list[pl.Callback] = [_StepClock(self)]
        if self.options.cpu_threads:
            out.append(_CpuThreads(self.options.cpu_threads))
        if self.reads_waveforms:
            out.append(FreezeSchedule())
        return out

    def param_groups(self, network: SpeechNetwork) -> list[tuple[list[nn.Parameter], float]] | None:
        """An ``hf:`` encoder at ``lr * encoder_lr_scale``, everything else at ``lr``."""
        return optimizer_groups(network, self.options.encoder_lr_scale)

    def batch_units(self, batch: SpeechBatch) -> float:
        """Seconds of audio in a host batch (10 ms frames)."""
        return float(batch["feat_lens"].sum()) * self._seconds_per_frame

    @property
    def _seconds_per_frame(self) -> float:
        return self.feature_cfg.hop_length / self.feature_cfg.sample_rate

    # ------------------------------------------------------------------ training and evaluation
    def losses(self, network: SpeechNetwork, batch: SpeechBatch) -> dict[str, Tensor]:
        """The terms of the objective of a non-empty batch (`tasks.speech.losses.speech_losses`)."""
        return speech_losses(network, batch, self.tokenizer, self.loss, self.step)

    def objective(self, network: SpeechNetwork, batch: SpeechBatch, stage: Stage) -> Objective:
        """The joint CTC/attention loss, its terms in training, and per-epoch counts of skipped utterances and
        batches and (training with CTC) of utterances too long for CTC.

        The counts are device tensors derived from the batch's ``skipped`` tensor (a Python number would be copied
        to the device, a sync every step), and the same keys for every batch, empty or not, on every rank.
        """
        skipped = batch.get("skipped", 0)
        if not isinstance(skipped, Tensor):  # a batch built by hand
            skipped = torch.tensor(int(skipped), device=network.device)
        zero = skipped.new_zeros((), dtype=torch.float32)
        empty = bool(batch.get("empty"))
        counts = {"skipped_utterances": skipped.float(), "skipped_batches": zero + 1.0 if empty else zero}
        counts_ctc = stage == "train" and self.loss.ctc_weight > 0
        if empty:  # every utterance of the batch was unusable (warned and counted)
            if counts_ctc:
                counts["ctc_infeasible"] = zero
            return Objective(None, 0, counts=counts)
        losses = self.losses(network, batch)
        if counts_ctc:
            counts["ctc_infeasible"] = losses["ctc_infeasible"]
        terms: dict[str, Tensor] = {}
        if stage == "train":
            terms = {name: losses[name] for name in ("ce", "ctc", "guided") if name in losses}
            # logged with the terms: per step, as the loss (no host sync: a device sum)
            terms["audio_seconds"] = batch["feat_lens"].sum().float() * self._seconds_per_frame
        return Objective(losses["loss"], len(batch["texts"]), terms, counts)

    def evaluate(self, network: SpeechNetwork, batch: SpeechBatch, stage: EvalStage) -> Evaluation:
        """Beam-search transcripts for CER/WER and, where the split has word spans, where the attention looks."""
        utts = self.span_utterances.get(stage)
        hyps = [
            nbest[0]
            for nbest in decode_features(
                network,
                self.tokenizer,
                self.search,
                batch["feats"],
                batch["feat_lens"],
                beam=self.options.beam_size,
                # the beam search keeps the attention anyway: returning it costs a slice
                with_attention=utts is not None,
                wavs=batch.get("wavs"),
                wav_lens=batch.get("wav_lens"),
            )
        ]
        means: dict[str, tuple[float, float]] = {}
        if utts is not None:
            tally = SpanTally()
            frame_s, centre_s = encoder_frame_times(network)
            for i, h in zip(batch["indices"], hyps):
                tally.add(h.text, h.attention, getattr(utts[int(i)], "words", None) or [], frame_s, centre_s)
            means = tally.means()
        return Evaluation(batch["indices"], [h.text for h in hyps], [[t] for t in batch["texts"]], means)

    def score(self, hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
        """Corpus CER and WER (edits over reference characters / words)."""
        refs = [r[0] for r in references]
        return {"cer": char_error_rate(hypotheses, refs), "wer": word_error_rate(hypotheses, refs)}

    def figures(self, network: SpeechNetwork, datamodule: Any | None) -> list[tuple[str, Figure]]:
        """Spectrogram and attention of the first ``plot_examples`` utterances of the first validation batch."""
        n = self.options.plot_examples
        if n <= 0 or self.search.ctc_weight >= 1.0:  # CTC alone: no attention to draw
            return []
        if datamodule is None or not (getattr(datamodule, "splits", None) or {}).get("val"):
            return []
        dataset = getattr(datamodule.val_dataloader(), "dataset", None)
        batch = dataset.head(n) if isinstance(dataset, BucketedSpeechDataset) else None
        if batch is None:
            return []
        dev = network.device
        wavs, wav_lens = batch.get("wavs"), batch.get("wav_lens")
        hyps = decode_features(
            network,
            self.tokenizer,
            self.search,
            batch["feats"].to(dev),
            batch["feat_lens"].to(dev),
            beam=self.options.beam_size,
            with_attention=True,
            wavs=None if wavs is None else wavs.to(dev),
            wav_lens=None if wav_lens is None else wav_lens.to(dev),
        )
        out = []
        for i, (best, *_) in enumerate(hyps):
            if best.attention is None or best.attention.shape[0] == 0:
                continue
            spec = batch["feats"][i, : int(batch["feat_lens"][i])].T  # (T, F) -> (F, T)
            fig = plot_spectrogram_alignment(spec, best.attention, list(best.text), title=f"ref: {batch['texts'][i]}")
            out.append((f"val/alignment_{i}", fig))
        return out

    def predict(
        self, network: SpeechNetwork, batch: SpeechBatch, datamodule: Any | None, dataloader_idx: int
    ) -> list[Prediction]:
        """One ``(position in the split, (utterance id, transcript))`` row per utterance."""
        if batch.get("empty"):
            return []
        hyps = decode_features(
            network,
            self.tokenizer,
            self.search,
            batch["feats"],
            batch["feat_lens"],
            beam=self.options.beam_size,
            wavs=batch.get("wavs"),
            wav_lens=batch.get("wav_lens"),
        )
        return [Prediction(int(i), (u, h[0].text)) for i, u, h in zip(batch["indices"], batch["ids"], hyps)]

    # ------------------------------------------------------------------ what a checkpoint stores (tasks.speech.stored)
    def artifacts(self) -> dict[str, Any]:
        return speech_artifacts(
            self.tokenizer, self.feature_cfg, self.stats, self.max_chunk_seconds, self.pretrained_info
        )

    def restore(self, artifacts: Mapping[str, Any], source: str) -> bool:
        """Units, front end and chunking range from the file (validated: it is untrusted); True (rebuild the
        network) for a front end other than this task's."""
        units = read_units(artifacts, source, self.tokenizer.vocab_size)
        if units is not None:
            self.tokenizer = units
        cfg = artifacts.get("feature_config")
        feature_cfg = self.feature_cfg if cfg is None else FeatureConfig.from_dict(cfg, source)
        chunk = read_chunk_seconds(artifacts, source)
        if chunk is not None:
            self.max_chunk_seconds = chunk
        if feature_cfg == self.feature_cfg:
            return False
        if feature_cfg.n_mels != self.feature_cfg.n_mels:
            self.stats = FeatureStats(feature_cfg.n_mels)  # the weights hold its values
        self.feature_cfg = feature_cfg
        return True

    def check_loaded(self, network: SpeechNetwork, source: str) -> None:
        check_stats(network.stats, source)


class _StepClock(pl.Callback):
    """Tells the task the optimizer step before each training batch (what ``LightningModule.global_step`` is)."""

    def __init__(self, task: SpeechTask) -> None:
        self.task = task

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        self.task.step = trainer.global_step


class _CpuThreads(pl.Callback):
    """torch intra-op threads when training/evaluating on CPU (``cpu_threads``: see ``SpeechModule``)."""

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.strategy.root_device.type == "cpu":
            torch.set_num_threads(self.threads)
