"""Speech datasets, frame-bucketed batching and the `SpeechDataModule`.

Batches are formed once per split by sorting utterances by length and filling each batch up to
`max_frames` padded frames; the dataset then *is* the list of batches (item i = collated batch i),
so Lightning's own sampler handling shuffles batch order each epoch and, under DDP, its
`DistributedSampler` gives each rank a disjoint share of whole batches (no custom distributed
batch sampler needed).
"""

from __future__ import annotations

import math
import random
import unicodedata
import warnings
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from core.errors import ConfigError, DataError
from core.tokenizers import BaseTokenizer, CharTokenizer
from tasks.speech.audio import audio_info, load_audio
from tasks.speech.features import FeatureConfig, LogMel
from tasks.speech.sources import Utterance, read_source
from tasks.speech.text import normalize_text

__all__ = [
    "CHARSET",
    "BucketedSpeechDataset",
    "SortaGradSampler",
    "SpeechDataModule",
    "collate_items",
    "make_char_tokenizer",
    "validate_utterances",
]

# Utterances skipped when a batch is loaded (unreadable, NaN, silent) get an individual warning up to
# this many times per dataset copy (each DataLoader worker has one); the rest are only counted, in the
# batch's "skipped" field, which the module logs as `<split>/skipped_utterances` (summed over
# workers, batches and ranks).
MAX_ROW_WARNINGS = 3

# Every character `normalize_text` can output: the fixed character inventory (known before any data
# is read, so the model can be built by LightningCLI before `setup`).
CHARSET = "abcdefghijklmnopqrstuvwxyz' "


def make_char_tokenizer() -> CharTokenizer:
    """Character units over `CHARSET` (plus pad/bos/eos/unk), identical for every corpus."""
    return CharTokenizer.train([CHARSET])


def _has_dropped_chars(raw: str) -> bool:
    """True when normalisation had to drop letters that are outside the character units."""
    s = unicodedata.normalize("NFKD", raw)
    s = "".join(c for c in s if not unicodedata.combining(c))
    return any(c.isalpha() and not c.isascii() for c in s)


def collate_items(items: list[dict[str, Any]], pad_id: int = 0) -> dict[str, Any]:
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
    extra: dict[str, Any] = {}
    if "wav" in items[0]:  # raw audio for encoders that read waveforms (tasks.speech.hf_encoder)
        extra["wavs"] = torch.nn.utils.rnn.pad_sequence([it["wav"] for it in items], batch_first=True)  # (B, N)
        extra["wav_lens"] = torch.tensor([it["wav"].numel() for it in items])
    return {
        **extra,
        "feats": feats,
        "feat_lens": torch.tensor([it["feats"].shape[0] for it in items]),
        "tokens": tokens,
        "token_lens": torch.tensor([it["tokens"].numel() for it in items]),
        "texts": [it["text"] for it in items],
        "ids": [it["id"] for it in items],
        "indices": [it.get("index", i) for i, it in enumerate(items)],
        "skipped": torch.tensor(0),
    }


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

    def __getitem__(self, idx: int) -> dict[str, Any]:
        loaded = [self.load_item(i) for i in self.batches[idx]]
        items = [it for it in loaded if it is not None]
        skipped = len(loaded) - len(items)
        if not items:
            return {"empty": True, "skipped": torch.tensor(skipped)}
        batch = collate_items(items, self.tokenizer.pad_id)
        batch["skipped"] = torch.tensor(skipped)
        return batch


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


def validate_utterances(utts: list[Utterance], source: str, max_seconds: float | None) -> list[Utterance]:
    """Drop unusable utterances (counted, with one warning per reason naming examples).

    Reads only audio headers (durations), so corrupt files are caught here; silent audio is
    caught when the batch is loaded.

    Args:
        utts: candidate utterances.
        source: source name for the warnings.
        max_seconds: drop longer utterances (None = keep all).

    Returns:
        The kept utterances, each with `duration` set.
    """
    import io

    import soundfile as sf

    kept: list[Utterance] = []
    skipped: dict[str, list[str]] = {}
    dropped_chars: list[str] = []
    for u in utts:
        if u.duration is None:
            try:
                if isinstance(u.audio, bytes):
                    info = sf.info(io.BytesIO(u.audio))
                    u.duration = info.frames / info.samplerate
                else:
                    u.duration = audio_info(u.audio)
            except Exception as e:  # DataError or libsndfile error on bytes
                skipped.setdefault("unreadable or corrupt audio", []).append(f"{u.name} ({e})")
                continue
        if u.duration <= 0.0:
            skipped.setdefault("zero-length audio", []).append(u.name)
            continue
        if max_seconds is not None and u.duration > max_seconds:
            skipped.setdefault(f"longer than max_seconds={max_seconds}", []).append(u.name)
            continue
        if not normalize_text(u.text):
            skipped.setdefault("empty transcript after normalisation", []).append(u.name)
            continue
        if _has_dropped_chars(u.text):
            dropped_chars.append(u.name)
        kept.append(u)
    # rank_zero_warn: setup runs on every rank over the same files, one warning is enough.
    for why, names in skipped.items():
        shown = ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")
        rank_zero_warn(f"{source}: skipped {len(names)} utterance(s): {why}: {shown}")
    if dropped_chars:
        rank_zero_warn(
            f"{source}: {len(dropped_chars)} transcript(s) had characters outside the units "
            f"(a-z, apostrophe, space) that were dropped, e.g. {dropped_chars[0]}"
        )
    return kept


class SpeechDataModule(L.LightningDataModule):
    """Speech data: the synthesised eSpeak NG corpus by default, or real corpora.

    Args:
        train: training source (manifest `.jsonl/.csv/.tsv`, LibriSpeech folder, FSDD folder,
            Common Voice TSV, or `hf:NAME`); None = the synthesised corpus.
        val: validation source; None = `val_fraction` of `train` (or the synthesised val split).
        test: test source; None = the synthesised unseen-voice test split (or the val data).
        val_fraction: share of `train` held out for validation when `val` is None.
        synth_train: synthesised training utterances.
        synth_val: synthesised validation utterances (voices unseen in training).
        synth_test: synthesised test utterances (voices unseen in training and validation).
        synth_seed: seed of the synthesised corpus (same seed = same audio).
        cache_dir: where the synthesised corpus is cached (default `~/.cache/attn-suite/speech`).
        max_frames: padded feature frames per batch (10 ms each).
        max_batch: cap on utterances per batch.
        max_seconds: training/validation utterances longer than this are skipped (counted).
        num_workers: DataLoader workers.
        stats_utterances: training utterances used for the mean/variance statistics.
        limit_train: keep only the first N training utterances (overfitting tests, smoke runs).
        seed: seed for the held-out split and batch composition.
        sortagrad: first training epoch in ascending length order, shuffled after (`SortaGradSampler`).
        cache_features: keep training features in memory after their first epoch (small corpora; see
            `BucketedSpeechDataset`).
    """

    def __init__(
        self,
        train: str | None = None,
        val: str | None = None,
        test: str | None = None,
        val_fraction: float = 0.05,
        synth_train: int = 3000,
        synth_val: int = 200,
        synth_test: int = 300,
        synth_seed: int = 0,
        cache_dir: str | None = None,
        max_frames: int = 24000,
        max_batch: int = 64,
        max_seconds: float = 20.0,
        num_workers: int = 2,
        stats_utterances: int = 400,
        limit_train: int | None = None,
        seed: int = 0,
        sortagrad: bool = False,
        cache_features: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 <= val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
        for name, value in (("max_frames", max_frames), ("max_batch", max_batch), ("synth_train", synth_train)):
            if value < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {value}")
        if not max_seconds > 0:
            raise ConfigError(f"data.max_seconds must be > 0, got {max_seconds}")
        self.save_hyperparameters()
        self.tokenizer = make_char_tokenizer()
        self.feature_cfg = FeatureConfig()
        self.splits: dict[str, list[Utterance]] = {}
        self.feature_stats: tuple[Tensor, Tensor] | None = None
        # Set by a model that reads raw audio (an hf: encoder) before the loaders are made: batches then also
        # carry the padded waveforms.
        self.waveforms = False

    # -- synthesised corpus -------------------------------------------------------------------
    def _synth_kwargs(self) -> dict[str, Any]:
        h = self.hparams
        return {
            "root": h.cache_dir,
            "seed": h.synth_seed,
            "num_train": h.synth_train,
            "num_val": h.synth_val,
            "num_test": h.synth_test,
        }

    def prepare_data(self) -> None:
        """Generate the synthesised corpus once (Lightning calls this on local rank 0 only)."""
        if self.hparams.train is None:
            from tasks.speech.synth import generate_corpus

            generate_corpus(**self._synth_kwargs())

    def _synth_split(self, split: str) -> list[Utterance]:
        from tasks.speech.synth import generate_corpus

        # Returns immediately when prepare_data already generated it (the cache key is deterministic).
        d = generate_corpus(**self._synth_kwargs(), progress=False)
        return read_source(d / f"{split}.jsonl")

    # -- setup ---------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Read sources, validate utterances, hold out validation data, estimate feature stats."""
        if self.splits:
            self._check_eval_splits(stage)  # e.g. `test` after `fit` in one process
            return
        h = self.hparams
        if h.train is None:
            train = self._synth_split("train")
            val = read_source(h.val) if h.val else self._synth_split("val")
            test = read_source(h.test) if h.test else self._synth_split("test")
        else:
            train = read_source(h.train)
            if h.val:
                val = read_source(h.val)
            else:
                rng = random.Random(h.seed)
                idx = list(range(len(train)))
                rng.shuffle(idx)
                n_val = max(1, round(len(train) * h.val_fraction)) if len(train) > 1 else 0
                held = set(idx[:n_val])
                val = [u for i, u in enumerate(train) if i in held]
                train = [u for i, u in enumerate(train) if i not in held]
            test = read_source(h.test) if h.test else val
        if h.limit_train:
            train = train[: h.limit_train]
        self.splits = {
            "train": validate_utterances(train, "train", h.max_seconds),
            "val": validate_utterances(val, "val", h.max_seconds),
            # Test/predict keep long utterances: the model's transcribe path would chunk them, but
            # the batched path simply decodes them whole.
            "test": validate_utterances(test, "test", None),
        }
        if not self.splits["train"] and stage in (None, "fit"):
            raise DataError(f"{h.train or 'synthesised corpus'}: no usable training utterances")
        self._check_eval_splits(stage)
        self._estimate_stats()

    def _check_eval_splits(self, stage: str | None) -> None:
        """Fail at setup, naming the source, when a split the stage evaluates on is empty.

        Without this an empty validation split crashes mid-run (the `val/cer` checkpoint monitor
        finds no metric), after the training epoch has been spent.
        """
        h = self.hparams
        trainer = getattr(self, "trainer", None)
        val_off = trainer is not None and trainer.limit_val_batches == 0  # validation disabled: nothing to check
        if stage in (None, "fit", "validate") and not self.splits["val"] and not (stage == "fit" and val_off):
            if h.val:
                src = str(h.val)
            elif h.train is None:
                src = "synthesised corpus (val split)"
            else:
                src = f"{h.train} (held-out share val_fraction={h.val_fraction})"
            raise DataError(
                f"{src}: no usable validation utterances (every row was skipped, see the warnings "
                f"above, or the held-out share is empty); pass data.val or fix the data"
            )
        if stage in ("test", "predict") and not self.splits["test"]:
            src = (
                str(h.test)
                if h.test
                else (
                    "synthesised corpus (test split)"
                    if h.train is None
                    else f"{h.val or h.train} (validation data used as test)"
                )
            )
            raise DataError(f"{src}: no usable test utterances (every row was skipped, see the warnings above)")

    def _estimate_stats(self) -> None:
        """Mean/std of log-mel over (a deterministic subset of) the training split."""
        from tasks.speech.features import FeatureStats

        utts = self.splits["train"] or self.splits["val"]
        if not utts:
            return
        ds = BucketedSpeechDataset(utts, self.tokenizer, self.feature_cfg)
        step = max(1, len(utts) // self.hparams.stats_utterances)
        feats = (it["feats"] for it in (ds.load_item(i) for i in range(0, len(utts), step)) if it is not None)
        st = FeatureStats(self.feature_cfg.n_mels).fit(feats)
        self.feature_stats = (st.mean.clone(), st.std.clone())

    def train_texts(self) -> list[str]:
        """Normalised training transcripts (e.g. to train subword units)."""
        return [normalize_text(u.text) for u in self.splits.get("train", [])]

    # -- loaders -------------------------------------------------------------------------------
    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        h = self.hparams
        ds = BucketedSpeechDataset(
            self.splits[split],
            self.tokenizer,
            self.feature_cfg,
            h.max_frames,
            h.max_batch,
            h.seed,
            split=split,
            waveforms=self.waveforms,
            cache_features=bool(h.cache_features) and split == "train",
        )
        sampler = None
        if shuffle and h.sortagrad:
            # The sampler's own seed: torch's global RNG (seeded per run) picks it, as it would the shuffle.
            sampler, shuffle = SortaGradSampler(len(ds), int(torch.randint(0, 2**31 - 1, ()).item())), False
        return DataLoader(
            ds,
            batch_size=None,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=h.num_workers,
            persistent_workers=h.num_workers > 0 and split == "train",
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
