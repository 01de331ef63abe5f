"""`SpeechModule`: joint CTC/attention ASR as a LightningModule, plus `transcribe` for inference."""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.text import CharErrorRate, WordErrorRate

from core.checkpoint import META_KEY, load_checkpoint, make_metadata
from core.decoding import beam_search
from core.errors import CheckpointError, ConfigError
from core.tokenizers import tokenizer_from_dict
from tasks.speech.audio import SAMPLE_RATE, AudioInput, load_audio, split_on_silence
from tasks.speech.data import make_char_tokenizer
from tasks.speech.features import FeatureConfig, FeatureStats, LogMel, SpecAugment
from tasks.speech.guided import guided_attention_loss, guided_weight
from tasks.speech.model import ASRModel

__all__ = ["SpeechModule", "Transcription", "ChunkAlignment"]

TASK = "speech"


@dataclass
class ChunkAlignment:
    """Attention of one decoded chunk (for plots).

    Attributes:
        spec: log-mel `(n_mels, frames)` of the chunk (unnormalised).
        weights: `(T, S_enc)` attention of each output unit over encoder frames.
        tokens: the `T` output units (characters).
        start: chunk start in seconds within the input.
    """

    spec: Tensor
    weights: Tensor
    tokens: list[str]
    start: float


@dataclass
class Transcription:
    """`transcribe(..., return_attention=True)` result for one input."""

    text: str
    chunks: list[ChunkAlignment] = field(default_factory=list)


class SpeechModule(L.LightningModule):
    """Listen-attend-spell style ASR with joint CTC.

    Args:
        encoder: "lstm" (conv x4 + BiLSTM), "pblstm" (pyramidal BiLSTM), "transformer" or "conformer".
        encoder_hidden: encoder size (per direction for LSTMs, d_model otherwise).
        encoder_layers: encoder layers.
        encoder_heads: attention heads of transformer/conformer encoders.
        decoder_hidden: decoder LSTM size.
        embed_dim: character embedding size.
        attention: `core.attention` mechanism of the decoder ("location", "additive", "dot",
            "general", "scaled_dot", "multihead").
        attention_options: extra options of that mechanism (e.g. `{"hidden_dim": 128, "kernel_size": 31}`).
        ctc_weight: weight of the CTC loss (0 = attention only; also the weight of CTC when
            rescoring the beam's n-best).
        dropout: dropout.
        label_smoothing: label smoothing of the attention cross-entropy.
        lr: peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warmup steps before inverse-sqrt decay.
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
        guided_attention_weight: weight of the guided attention loss (`tasks.speech.guided`), a
            diagonal prior that makes the decoder find the monotonic alignment early (0 = off).
        guided_attention_sigma: width of that prior's diagonal band, as a fraction of the utterance.
        guided_attention_steps: the guided weight fades linearly to `guided_attention_final_weight` over this
            many optimizer steps (a prior to find the alignment, not a constraint on it later); None = constant.
        guided_attention_final_weight: the weight it fades to.
        encoder_conv_channels: channels of the encoder's conv2d subsampling (half of 32 halves its cost;
            measured 0.163 -> 0.082 CPU-s per encoder forward+backward of a demo batch).
        joint_ctc_decoding: beam search scores every step with `(1 - w)` attention + `w` CTC prefix
            log-probability (`tasks.speech.ctc_prefix`, `w = ctc_weight`) instead of rescoring the
            attention beam's n-best with CTC at the end.
    """

    def __init__(
        self,
        encoder: str = "lstm",
        encoder_hidden: int = 160,
        encoder_layers: int = 2,
        encoder_heads: int = 4,
        decoder_hidden: int = 192,
        embed_dim: int = 48,
        attention: str = "location",
        attention_options: dict[str, Any] | None = None,
        ctc_weight: float = 0.3,
        dropout: float = 0.1,
        label_smoothing: float = 0.1,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        warmup_steps: int = 200,
        spec_augment: bool = True,
        beam_size: int = 5,
        length_penalty: float = 1.0,
        plot_examples: int = 2,
        max_chunk_seconds: float | None = None,
        cpu_threads: int | None = 1,
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
        self.save_hyperparameters()
        self.tokenizer = make_char_tokenizer()
        self.feature_cfg = FeatureConfig()
        self.logmel = LogMel(self.feature_cfg)
        self.stats = FeatureStats(self.feature_cfg.n_mels)
        self.specaug = SpecAugment() if spec_augment else None
        self.model = ASRModel(self.tokenizer.vocab_size, self.feature_cfg.n_mels, encoder, encoder_hidden,
                              encoder_layers, encoder_heads, decoder_hidden, embed_dim, attention,
                              attention_options, dropout, encoder_conv_channels)
        self.max_chunk_seconds = max_chunk_seconds
        self.val_cer, self.val_wer = CharErrorRate(), WordErrorRate()
        self.test_cer, self.test_wer = CharErrorRate(), WordErrorRate()

    # ------------------------------------------------------------------------------------------
    # setup / checkpoint
    # ------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Take feature statistics and the trained duration range from the datamodule (fresh runs)."""
        if self._trainer is not None and self.hparams.cpu_threads and self.trainer.strategy.root_device.type == "cpu":
            torch.set_num_threads(self.hparams.cpu_threads)
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None:
            return
        if not bool(self.stats.initialized) and getattr(dm, "feature_stats", None) is not None:
            self.stats.set(*dm.feature_stats)
        if self.max_chunk_seconds is None and getattr(dm, "splits", None):
            durs = [u.duration or 0.0 for u in dm.splits.get("train", [])]
            if durs:
                self.max_chunk_seconds = float(max(durs))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Make the checkpoint self-contained: units, feature config and statistics (plain types only)."""
        checkpoint[META_KEY] = make_metadata(
            TASK,
            units=self.tokenizer.to_dict(),
            feature_config=self.feature_cfg.to_dict(),
            feature_stats={"mean": self.stats.mean.tolist(), "std": self.stats.std.tolist()},
            max_chunk_seconds=self.max_chunk_seconds,
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore units and the chunking range from the metadata (weights come via the state dict)."""
        meta = checkpoint.get(META_KEY) or {}
        if "units" in meta:
            self.tokenizer = tokenizer_from_dict(meta["units"])
        if meta.get("max_chunk_seconds"):
            self.max_chunk_seconds = float(meta["max_chunk_seconds"])

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls, checkpoint_path: str | Path, map_location: Any = "cpu", strict: bool = True, **overrides: Any
    ) -> "SpeechModule":
        """Load a speech checkpoint safely (`weights_only=True`, task check) through `core.checkpoint`.

        Args:
            checkpoint_path: file path or http(s) URL.
            map_location: device for the tensors.
            strict: require an exact state-dict match.
            **overrides: constructor arguments replacing the saved ones (e.g. `beam_size=10`).

        Returns:
            The module in eval mode, on `map_location` (a device string or `torch.device`).

        Raises:
            core.errors.CheckpointError: missing/truncated/unsafe/other-task file, no state dict,
                or weights that do not fit the model its hyper-parameters describe (the message
                names the file).
        """
        # Same steps as core.checkpoint.module_from_checkpoint, but the module is built directly from
        # the constructor arguments (like the other tasks) instead of through the "_instantiator"
        # LightningCLI records, which would re-parse the hyper-parameters with jsonargparse.
        ckpt = load_checkpoint(checkpoint_path, expected_task=TASK, map_location=map_location)
        state = ckpt.get("state_dict")
        if not isinstance(state, dict):
            raise CheckpointError(f"checkpoint {checkpoint_path} has no 'state_dict' (not a Lightning checkpoint)")
        allowed = set(inspect.signature(cls.__init__).parameters) - {"self"}
        # LightningCLI adds bookkeeping keys such as "_instantiator": keep constructor arguments only.
        hp = {k: v for k, v in dict(ckpt.get("hyper_parameters") or {}).items() if k in allowed}
        hp.update(overrides)
        try:
            module = cls(**hp)
        except (ValueError, TypeError) as err:  # e.g. an encoder kind this version does not know
            raise CheckpointError(f"checkpoint {checkpoint_path}: its hyper-parameters (with overrides "
                                  f"{sorted(overrides)}) do not build a {cls.__name__}: {err}") from None
        module.on_load_checkpoint(ckpt)
        try:
            module.load_state_dict(state, strict=strict)
        except RuntimeError as err:  # missing/unexpected keys or a size mismatch
            first = str(err).splitlines()[0]
            detail = next((ln.strip() for ln in str(err).splitlines()[1:] if ln.strip()), "")
            raise CheckpointError(f"checkpoint {checkpoint_path} does not fit {cls.__name__}: {first} "
                                  f"{detail}".rstrip()) from None
        if map_location is not None and not callable(map_location) and not isinstance(map_location, dict):
            module = module.to(map_location)  # torch.load's map_location only moved the checkpoint tensors
        return module.eval()

    # ------------------------------------------------------------------------------------------
    # training
    # ------------------------------------------------------------------------------------------
    def _targets(self, tokens: Tensor, lens: Tensor) -> tuple[Tensor, Tensor]:
        """Decoder inputs `[BOS, y]` and targets `[y, EOS]`, both `(B, L + 1)`, pad elsewhere."""
        tk = self.tokenizer
        b = tokens.shape[0]
        bos = tokens.new_full((b, 1), tk.bos_id)
        inputs = torch.cat([bos, tokens], dim=1)  # (B, L+1)
        targets = torch.cat([tokens, tokens.new_full((b, 1), tk.pad_id)], dim=1)  # (B, L+1)
        targets = targets.scatter(1, lens[:, None], tk.eos_id)  # EOS right after the last real token
        return inputs, targets

    def _losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Attention cross-entropy, CTC and their weighted sum (all per target unit).

        With CTC, also `ctc_infeasible`: how many utterances have a transcript too long for their
        encoder frames (CTC needs one frame per unit plus one per repeated unit). `zero_infinity`
        zeroes their CTC loss, so they only train the attention decoder; they are counted, not
        filtered out, because the attention loss is still valid for them.
        """
        feats = self.stats(batch["feats"])  # (B, T, F)
        if self.specaug is not None and self.training:
            feats = self.specaug(feats)
        enc, mask, ctc_lp = self.model.encode(feats, batch["feat_lens"])  # (B, S, D), (B, S), (B, S, V)
        inputs, targets = self._targets(batch["tokens"], batch["token_lens"])
        logits, att = self.model.decoder(enc, mask, inputs)  # (B, L+1, V), (B, L+1, S)
        ce = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=self.tokenizer.pad_id,
                             label_smoothing=self.hparams.label_smoothing)
        w = self.hparams.ctc_weight
        out = {"ce": ce}
        if w > 0:
            enc_lens = mask.sum(-1)
            ctc = F.ctc_loss(ctc_lp.transpose(0, 1).float(), batch["tokens"], enc_lens, batch["token_lens"],
                             blank=self.tokenizer.pad_id, reduction="sum", zero_infinity=True)
            out["ctc"] = ctc / batch["token_lens"].sum().clamp_min(1)  # per unit, like the CE
            out["ctc_infeasible"] = self._ctc_infeasible(batch["tokens"], batch["token_lens"], enc_lens)
            out["loss"] = (1 - w) * ce + w * out["ctc"]
        else:
            out["loss"] = ce
        hp = self.hparams
        ga = guided_weight(hp.get("guided_attention_weight", 0.0), hp.get("guided_attention_steps"),  # .get: older
                           self.global_step if self._trainer else 0, hp.get("guided_attention_final_weight", 0.0))
        if ga > 0 and self.training:  # a training prior: validation losses stay comparable across settings
            out["guided"] = guided_attention_loss(att, batch["token_lens"] + 1, mask.sum(-1),
                                                  self.hparams.guided_attention_sigma)
            out["loss"] = out["loss"] + ga * out["guided"]
        return out

    @staticmethod
    def _ctc_infeasible(tokens: Tensor, token_lens: Tensor, enc_lens: Tensor) -> Tensor:
        """Number of utterances whose CTC loss is infinite, as a device tensor (no host sync).

        Args:
            tokens: `(B, L)` targets; token_lens: `(B,)`; enc_lens: `(B,)` encoder frames.

        Returns:
            Scalar float tensor: count of `enc_len < token_len + repeats` (a repeated unit needs a
            blank between its copies).
        """
        valid = torch.arange(tokens.shape[1], device=tokens.device)[None, :] < token_lens[:, None]  # (B, L)
        repeats = ((tokens[:, 1:] == tokens[:, :-1]) & valid[:, 1:]).sum(1)  # (B,)
        return (enc_lens.to(token_lens.device) < token_lens + repeats).sum().float()

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
        kw: dict[str, Any] = {"reduce_fx": "sum", "on_step": False, "on_epoch": True, "sync_dist": True,
                              "batch_size": 1}
        zero = skipped.new_zeros((), dtype=torch.float32)
        self.log(f"{stage}/skipped_utterances", skipped.float(), **kw)
        self.log(f"{stage}/skipped_batches", zero + 1.0 if batch.get("empty") else zero, **kw)
        return zero

    def _log_ctc_infeasible(self, stage: str, count: Tensor) -> None:
        """Per-epoch sum of utterances whose CTC loss was infinite (zeroed by `zero_infinity`)."""
        self.log(f"{stage}/ctc_infeasible", count, reduce_fx="sum", on_step=False, on_epoch=True, sync_dist=True,
                 batch_size=1)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        zero = self._log_counts("train", batch)
        if batch.get("empty"):
            # Every utterance of this batch was unusable (warned and counted). Under DDP every rank
            # must run backward (the gradient all-reduce waits for all of them): return a zero loss
            # that touches every parameter, so this rank contributes zero gradients.
            if self.hparams.ctc_weight > 0:
                self._log_ctc_infeasible("train", zero)  # same keys on every rank, every step
            return sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
        losses = self._losses(batch)
        if "ctc_infeasible" in losses:
            self._log_ctc_infeasible("train", losses["ctc_infeasible"])
        b = len(batch["texts"])
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=b)
        self.log("train/ce", losses["ce"], batch_size=b)
        if "ctc" in losses:
            self.log("train/ctc", losses["ctc"], batch_size=b)
        if "guided" in losses:
            self.log("train/guided", losses["guided"], batch_size=b)
        # audio seconds in this batch: feature frames are 10 ms
        self.log("train/audio_seconds", batch["feat_lens"].sum().float() * self.feature_cfg.hop_length
                 / self.feature_cfg.sample_rate, reduce_fx="sum", batch_size=b)
        return losses["loss"]

    def _eval_step(self, batch: dict[str, Any], batch_idx: int, stage: str) -> None:
        self._log_counts(stage, batch)
        if batch.get("empty"):
            return
        b = len(batch["texts"])
        losses = self._losses(batch)
        self.log(f"{stage}/loss", losses["loss"], prog_bar=True, batch_size=b, sync_dist=True)
        hyps = self.decode_features(batch["feats"], batch["feat_lens"], beam=self.hparams.beam_size,
                                    with_attention=(stage == "val" and batch_idx == 0))
        texts = [h[0] for h in hyps]
        cer, wer = (self.val_cer, self.val_wer) if stage == "val" else (self.test_cer, self.test_wer)
        cer.update(texts, batch["texts"])
        wer.update(texts, batch["texts"])
        self.log(f"{stage}/cer", cer, prog_bar=True, batch_size=b)
        self.log(f"{stage}/wer", wer, batch_size=b)
        if stage == "val" and batch_idx == 0 and self.hparams.plot_examples > 0:
            self._plot(batch, hyps)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, str]]:
        """Returns `{"id", "hyp", "ref"}` per utterance."""
        if batch.get("empty"):
            return []
        hyps = self.decode_features(batch["feats"], batch["feat_lens"], beam=self.hparams.beam_size)
        return [{"id": i, "hyp": h[0], "ref": r} for i, h, r in zip(batch["ids"], hyps, batch["texts"])]

    def _plot(self, batch: dict[str, Any], hyps: list[tuple[str, Tensor | None]]) -> None:
        """Spectrogram + attention of the first validation utterances (rank zero only, via log_figure)."""
        if self._trainer is None or not self.trainer.is_global_zero or self.trainer.sanity_checking:
            return
        from core.training import log_figure
        from core.viz import plot_spectrogram_alignment

        for i in range(min(self.hparams.plot_examples, len(hyps))):
            text, att = hyps[i]
            if att is None or att.shape[0] == 0:
                continue
            n = int(batch["feat_lens"][i])
            spec = batch["feats"][i, :n].T.cpu()  # (T, F) -> (F, T)
            fig = plot_spectrogram_alignment(spec, att, list(text), title=f"ref: {batch['texts'][i]}")
            log_figure(self, f"val/alignment_{i}", fig)

    def configure_optimizers(self) -> Any:
        from core.training import build_scheduler

        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay,
                                fused=self.device.type == "cuda")  # one kernel launch for all parameters on GPU
        return {"optimizer": opt, "lr_scheduler": build_scheduler(opt, self.hparams.warmup_steps, "inverse_sqrt")}

    # ------------------------------------------------------------------------------------------
    # decoding
    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def decode_features(self, feats: Tensor, lens: Tensor, beam: int = 5,
                        with_attention: bool = False) -> list[tuple[str, Tensor | None]]:
        """Beam search with CTC rescoring of the n-best (or joint CTC/attention scores, `joint_ctc_decoding`).

        Args:
            feats: unnormalised log-mel `(B, T, F)`.
            lens: valid frames `(B,)`.
            beam: beam width (1 = greedy).
            with_attention: return the best hypothesis' attention `(T_out, S_enc)`.

        Returns:
            Per utterance: (normalised transcript, attention or None).
        """
        was_training = self.training
        self.eval()
        try:
            enc, mask, ctc_lp = self.model.encode(self.stats(feats), lens)
            dec = self.model.decoder
            state = dec.init_state(enc, mask)
            s_max = enc.shape[1]

            def step_fn(tokens: Tensor, st: Any) -> tuple[Tensor, Any, Tensor]:
                logits, new, w = dec.step(tokens, st)
                return logits.float().log_softmax(-1), new, w

            tk = self.tokenizer
            nbest = beam if self.hparams.ctc_weight > 0 else 1
            if self.hparams.get("joint_ctc_decoding") and self.hparams.ctc_weight > 0:
                from tasks.speech.ctc_prefix import CTCPrefixScorer, joint_search_inputs

                scorer = CTCPrefixScorer(ctc_lp, mask.sum(-1), blank=tk.pad_id, eos=tk.eos_id, never=(tk.bos_id,))
                step_fn, state = joint_search_inputs(step_fn, state, scorer, self.hparams.ctc_weight)
                nbest = 1  # CTC is already in every score
            # 40 ms encoder frames; even fast speech stays under ~1 character per frame.
            res = beam_search(step_fn, state, batch_size=enc.shape[0], bos_id=tk.bos_id, eos_id=tk.eos_id,
                              max_len=s_max + 5, beam_size=beam, nbest=nbest,
                              length_penalty=self.hparams.length_penalty, pad_id=tk.pad_id)
            out = []
            for b in range(enc.shape[0]):
                k = self._rescore(res.tokens[b], res.scores[b], ctc_lp[b, : int(mask[b].sum())]) if nbest > 1 else 0
                att = res.attention[b][k]
                text = tk.decode(res.tokens[b][k])
                out.append((text, att[:, : int(mask[b].sum())] if (with_attention and att is not None) else None))
            return out
        finally:
            self.train(was_training)

    def _rescore(self, hyps: list[list[int]], scores: list[float], ctc_lp: Tensor) -> int:
        """Index of the best hypothesis under `(1 - w) * attention + w * CTC` (length-normalised).

        Args:
            hyps: n-best token lists; scores: their length-normalised attention log-probs;
            ctc_lp: CTC log-probs of the utterance `(S, V)`.
        """
        if len(hyps) <= 1:
            return 0
        w, lp = self.hparams.ctc_weight, self.hparams.length_penalty
        n = len(hyps)
        targets = torch.tensor([t for h in hyps for t in h], dtype=torch.long)  # concatenated (sum L_i,)
        tlens = torch.tensor([len(h) for h in hyps], dtype=torch.long)
        lp_in = ctc_lp.float().cpu().unsqueeze(1).expand(-1, n, -1)  # (S, N, V): one utterance, N hypotheses
        in_lens = torch.full((n,), ctc_lp.shape[0], dtype=torch.long)
        ctc = -F.ctc_loss(lp_in, targets, in_lens, tlens, blank=self.tokenizer.pad_id, reduction="none")  # (N,)
        norm = torch.tensor([(len(h) + 1) ** lp for h in hyps], dtype=torch.float32)
        total = (1 - w) * torch.tensor(scores, dtype=torch.float32) + w * ctc / norm
        total = torch.nan_to_num(total, nan=-math.inf)
        return int(total.argmax())

    # ------------------------------------------------------------------------------------------
    # inference API
    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def transcribe(self, inputs: Sequence[AudioInput], beam: int = 5, return_attention: bool = False,
                   batch_size: int = 16) -> list[str] | list[Transcription]:
        """Transcribe audio files or waveforms.

        Audio longer than the trained range (`max_chunk_seconds`) is cut into chunks at the
        quietest points (energy-based) and the chunk transcripts are joined with a space.

        Args:
            inputs: paths, or `(waveform, sample_rate)` with the waveform `(N,)` or `(channels, N)`;
                any sample rate and channel count (resampled to 16 kHz, downmixed).
            beam: beam width.
            return_attention: return `Transcription` objects with per-chunk spectrogram/attention.
            batch_size: chunks decoded together.

        Returns:
            One normalised transcript per input (or `Transcription` with `return_attention`).

        Raises:
            core.errors.DataError: an input is missing, unreadable, corrupt or empty (the message
                names it); use one call per file to keep going over bad files.
        """
        self.eval()
        max_s = self.max_chunk_seconds or 15.0
        chunks: list[tuple[int, float, Tensor]] = []  # (input index, start seconds, features (T, F))
        dev = self.device
        for i, src in enumerate(inputs):
            wav = load_audio(src)
            for a, b in split_on_silence(wav, max_s):
                # the front end's filterbank lives on the module's device (e.g. after map_location="cuda")
                chunks.append((i, a / SAMPLE_RATE, self.logmel(wav[a:b].to(dev))))
        # Decode chunks sorted by length so batches carry little padding.
        order = sorted(range(len(chunks)), key=lambda j: chunks[j][2].shape[0])
        decoded: dict[int, tuple[str, Tensor | None]] = {}
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            feats = [chunks[j][2] for j in idx]
            lens = torch.tensor([f.shape[0] for f in feats], device=dev)
            batch = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True).to(dev)  # (B, T, F)
            for j, r in zip(idx, self.decode_features(batch, lens, beam=beam, with_attention=return_attention)):
                decoded[j] = r
        texts: list[list[str]] = [[] for _ in inputs]
        aligns: list[list[ChunkAlignment]] = [[] for _ in inputs]
        for j, (i, start, feats) in enumerate(chunks):
            text, att = decoded[j]
            if text:
                texts[i].append(text)
            if return_attention and att is not None:
                aligns[i].append(ChunkAlignment(feats.T.cpu(), att.cpu(), list(text), start))
        joined = [" ".join(t) for t in texts]
        if return_attention:
            return [Transcription(t, a) for t, a in zip(joined, aligns)]
        return joined
