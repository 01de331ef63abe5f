"""Frame-bucketed batching of speech: utterances sorted by length and grouped into batches of at most
`max_frames` padded frames (`BucketedSpeechDataset`, whose item i is collated batch i), the padding of examples
into a batch (`collate_items`), and the SortaGrad batch order (`SortaGradSampler`). Utterances that fail when
their batch is loaded are dropped from it and counted."""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Iterator
from typing import Any, TypedDict

import torch
from torch import Tensor
from torch.utils.data import Dataset

from core.errors import DataError
from core.text.tokenizers import BaseTokenizer
from tasks.speech.audio import load_audio
from tasks.speech.features import FeatureConfig, LogMel
from tasks.speech.sources import Utterance
from tasks.speech.text import normalize_text

__all__ = ["MAX_ROW_WARNINGS", "BucketedSpeechDataset", "SortaGradSampler", "SpeechBatch", "collate_items"]

# Utterances skipped when a batch is loaded (unreadable, NaN, silent) get an individual warning up to
# this many times per dataset copy (each DataLoader worker has one); the rest are only counted, in the
# batch's "skipped" field, which the module logs as `<split>/skipped_utterances` (summed over
# workers, batches and ranks).
MAX_ROW_WARNINGS = 3


class SpeechBatch(TypedDict, total=False):
    """One batch of utterances (`collate_items`), or ``{"empty": True, "skipped": n}`` when none of them loaded.

    Attributes:
        feats: ``(B, T, F)`` unnormalised log-mel features, zero-padded.
        feat_lens: ``(B,)`` valid frames.
        tokens: ``(B, L)`` unit ids, padded with the pad id.
        token_lens: ``(B,)`` valid units.
        texts: the normalised transcripts.
        ids: the utterance names.
        indices: positions in the split (input order for predict; one example once under DDP).
        skipped: utterances dropped when the batch was loaded (a 0-d tensor; an int in a batch built by hand).
        empty: True when every utterance of the batch was dropped (then only ``skipped`` is set).
        wavs: ``(B, N)`` 16 kHz waveforms, zero-padded (for an encoder that reads them).
        wav_lens: ``(B,)`` valid samples.
    """

    feats: Tensor
    feat_lens: Tensor
    tokens: Tensor
    token_lens: Tensor
    texts: list[str]
    ids: list[str]
    indices: list[int]
    skipped: Tensor | int
    empty: bool
    wavs: Tensor
    wav_lens: Tensor


def collate_items(items: list[dict[str, Any]], pad_id: int = 0) -> SpeechBatch:
    """Pad a list of examples into a batch.

    Args:
        items: dicts with `feats (T_i, F)`, `tokens (L_i,)`, `text`, `id`.
        pad_id: token padding id.

    Returns:
        `feats (B, T, F)` zero-padded, `feat_lens (B,)`, `tokens (B, L)` pad-padded, `token_lens (B,)`,
        `texts` list[str], `ids` list[str], `indices` (positions in the split: input order for predict),
        `skipped` = tensor(0) (the dataset sets it); with waveforms in the items (`wav (N_i,)`) also
        `wavs (B, N)` zero-padded and `wav_lens (B,)`.
    """
    b = len(items)
    t_max = max(it["feats"].shape[0] for it in items)
    l_max = max(max(it["tokens"].numel() for it in items), 1)
    n_mels = items[0]["feats"].shape[1]
    feats = torch.zeros(b, t_max, n_mels)
    tokens = torch.full((b, l_max), pad_id, dtype=torch.long)
    for i, it in enumerate(items):
        feats[i, : it["feats"].shape[0]] = it["feats"]
        tokens[i, : it["tokens"].numel()] = it["tokens"]
    batch: SpeechBatch = {
        "feats": feats,
        "feat_lens": torch.tensor([it["feats"].shape[0] for it in items]),
        "tokens": tokens,
        "token_lens": torch.tensor([it["tokens"].numel() for it in items]),
        "texts": [it["text"] for it in items],
        "ids": [it["id"] for it in items],
        "indices": [it.get("index", i) for i, it in enumerate(items)],
        "skipped": torch.tensor(0),
    }
    if "wav" in items[0]:  # raw audio for encoders that read waveforms (tasks.speech.hf_encoder)
        batch["wavs"] = torch.nn.utils.rnn.pad_sequence([it["wav"] for it in items], batch_first=True)  # (B, N)
        batch["wav_lens"] = torch.tensor([it["wav"].numel() for it in items])
    return batch


class BucketedSpeechDataset(Dataset):
    """Map-style dataset whose item `i` is the i-th length-bucketed, collated batch.

    Utterances that fail when loaded (unreadable, NaN/Inf samples, digital silence) are dropped
    from their batch; the batch's `skipped` field carries how many, so the count survives
    DataLoader worker processes (where `num_failed` stays local) and can be summed across ranks.
    A batch whose utterances all failed is `{"empty": True, "skipped": tensor(n)}`. The count is a
    0-d tensor so it travels to the device with the batch and is logged without a host sync.

    Args:
        utts: utterances (already validated; durations known).
        tokenizer: unit tokenizer.
        feature_cfg: log-mel settings.
        max_frames: budget of padded frames per batch (`batch size * longest utterance`).
        max_batch: cap on utterances per batch.
        seed: seed for tie-breaking between equal lengths (batch composition is deterministic).
        split: split name used in warnings.
        waveforms: also carry each utterance's 16 kHz waveform (`wavs`, `wav_lens` in the batch).
        cache_features: keep each utterance's features after its first load (in the process that loads
            it: with persistent DataLoader workers every epoch after the first costs no decoding or FFTs).
            Features are ~32 KB per second of audio; SpecAugment runs later, in the model, so a cached
            utterance is still augmented differently every epoch.
    """

    def __init__(
        self,
        utts: list[Utterance],
        tokenizer: BaseTokenizer,
        feature_cfg: FeatureConfig,
        max_frames: int = 20000,
        max_batch: int = 64,
        seed: int = 0,
        split: str = "train",
        waveforms: bool = False,
        cache_features: bool = False,
    ) -> None:
        self.utts, self.tokenizer = utts, tokenizer
        self.waveforms = waveforms
        self.logmel = LogMel(feature_cfg)
        hop = feature_cfg.hop_length / feature_cfg.sample_rate
        rng = random.Random(seed)
        # A non-finite duration (never from our readers, but Utterance is public) counts as unknown.
        frames = [int(u.duration / hop) + 1 if u.duration and math.isfinite(u.duration) else 1 for u in utts]
        order = sorted(range(len(utts)), key=lambda i: (frames[i], rng.random()))
        self.batches: list[list[int]] = []
        cur: list[int] = []
        for i in order:
            # Sorted ascending, so the newest item is the longest: padded size = len(cur+1) * frames[i].
            if cur and ((len(cur) + 1) * frames[i] > max_frames or len(cur) >= max_batch):
                self.batches.append(cur)
                cur = []
            cur.append(i)
        if cur:
            self.batches.append(cur)
        self.split = split
        self.num_failed = 0  # in this process only (workers have their own copies): see "skipped"
        self._cache: dict[int, dict[str, Any]] | None = {} if cache_features else None

    def __len__(self) -> int:
        return len(self.batches)

    def load_item(self, i: int) -> dict[str, Any] | None:
        """Features and tokens of utterance `i`, or None when its audio is unreadable or silent."""
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        item = self._load_item(i)
        if self._cache is not None and item is not None:
            self._cache[i] = item
        return item

    def _load_item(self, i: int) -> dict[str, Any] | None:
        u = self.utts[i]
        try:
            wav = load_audio(u.audio)
        except DataError as e:
            self._skip(str(e))
            return None
        if float(wav.abs().max()) == 0.0:
            self._skip(f"{u.name}: the audio is digital silence")
            return None
        text = normalize_text(u.text)
        item = {
            "feats": self.logmel(wav),
            "tokens": torch.tensor(self.tokenizer.encode(text), dtype=torch.long),
            "text": text,
            "id": u.name,
            "index": i,
        }
        if self.waveforms:
            item["wav"] = wav
        return item

    def _skip(self, why: str) -> None:
        """Count a skipped utterance; warn for the first few only (a bad corpus must not flood the log)."""
        self.num_failed += 1
        if self.num_failed <= MAX_ROW_WARNINGS:
            warnings.warn(f"{self.split}: skipping utterance: {why}", stacklevel=2)
        if self.num_failed == MAX_ROW_WARNINGS:
            warnings.warn(
                f"{self.split}: further unusable utterances are skipped without a warning; their "
                f"number is logged as {self.split}/skipped_utterances",
                stacklevel=2,
            )

    def __getitem__(self, idx: int) -> SpeechBatch:
        loaded = [self.load_item(i) for i in self.batches[idx]]
        items = [it for it in loaded if it is not None]
        skipped = len(loaded) - len(items)
        if not items:
            return {"empty": True, "skipped": torch.tensor(skipped)}
        batch = collate_items(items, self.tokenizer.pad_id)
        batch["skipped"] = torch.tensor(skipped)
        return batch

    def head(self, n: int) -> SpeechBatch | None:
        """The first ``n`` utterances of batch 0 that load (how the first validation batch starts), collated;
        None when none does."""
        first = self.batches[0][:n] if self.batches else []
        items = [it for it in (self.load_item(i) for i in first) if it is not None]
        return collate_items(items, self.tokenizer.pad_id) if items else None


class SortaGradSampler(torch.utils.data.Sampler[int]):
    """Batch order for `BucketedSpeechDataset`: shortest batches first in the first epoch, shuffled after.

    SortaGrad (Amodei et al. 2016, Deep Speech 2): short utterances are easier to align, so the first
    pass over the data in length order lets the attention find the monotonic alignment on them before
    it meets long ones. The dataset's batches are already built in ascending length order, so the first
    epoch is simply `0 .. n-1`. Under DDP Lightning replaces this sampler with its distributed one.

    Args:
        num_batches: batches in the dataset.
        seed: seed of the later epochs' shuffles.
    """

    def __init__(self, num_batches: int, seed: int = 0) -> None:
        self.num_batches, self.seed = num_batches, seed
        self.epoch = 0

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[int]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        if epoch == 0:
            return iter(range(self.num_batches))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return iter(torch.randperm(self.num_batches, generator=g).tolist())
