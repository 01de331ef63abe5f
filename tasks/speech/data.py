"""Speech datasets, frame-bucketed batching and the `SpeechDataModule`.

Batches are formed once per split by sorting utterances by length and filling each batch up to
`max_frames` padded frames; the dataset then *is* the list of batches (item i = collated batch i),
so Lightning's own sampler handling shuffles batch order each epoch and, under DDP, its
`DistributedSampler` gives each rank a disjoint share of whole batches (no custom distributed
batch sampler needed). The datasets and samplers themselves are in :mod:`tasks.speech.batching`.
"""

from __future__ import annotations

import random
import unicodedata
from typing import Any, cast

import lightning as L
import torch
from lightning.fabric.utilities.data import AttributeDict
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader

from core.errors import ConfigError, DataError
from tasks.speech.audio import audio_info
from tasks.speech.batching import BucketedSpeechDataset, SortaGradSampler
from tasks.speech.features import FeatureConfig
from tasks.speech.sources import Utterance, read_source
from tasks.speech.stored import CHARSET, make_char_tokenizer  # the character units (data.py named them first)
from tasks.speech.text import normalize_text

__all__ = [
    "CHARSET",
    "SpeechDataModule",
    "make_char_tokenizer",
    "validate_utterances",
]


def _has_dropped_chars(raw: str) -> bool:
    """True when normalisation had to drop letters that are outside the character units."""
    s = unicodedata.normalize("NFKD", raw)
    s = "".join(c for c in s if not unicodedata.combining(c))
    return any(c.isalpha() and not c.isascii() for c in s)


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

    @property
    def _options(self) -> AttributeDict:
        # what save_hyperparameters stored: an AttributeDict (Lightning types it as a plain mapping)
        return cast(AttributeDict, self.hparams)

    # -- synthesised corpus -------------------------------------------------------------------
    def _synth_kwargs(self) -> dict[str, Any]:
        h = self._options
        return {
            "root": h.cache_dir,
            "seed": h.synth_seed,
            "num_train": h.synth_train,
            "num_val": h.synth_val,
            "num_test": h.synth_test,
        }

    def prepare_data(self) -> None:
        """Generate the synthesised corpus once (Lightning calls this on local rank 0 only)."""
        if self._options.train is None:
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
        h = self._options
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
        h = self._options
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
        step = max(1, len(utts) // self._options.stats_utterances)
        feats = (it["feats"] for it in (ds.load_item(i) for i in range(0, len(utts), step)) if it is not None)
        st = FeatureStats(self.feature_cfg.n_mels).fit(feats)
        self.feature_stats = (st.mean.clone(), st.std.clone())

    def train_texts(self) -> list[str]:
        """Normalised training transcripts (e.g. to train subword units)."""
        return [normalize_text(u.text) for u in self.splits.get("train", [])]

    # -- loaders -------------------------------------------------------------------------------
    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        h = self._options
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
