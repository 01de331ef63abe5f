"""LightningDataModule for English↔Spanish translation: embedded grammar corpus or real data.

Pipeline (identical on every rank, so all ranks see the same splits):

1. read pairs from the source (:mod:`tasks.translation.sources`) or generate the embedded corpus
   (:mod:`tasks.translation.grammar`, in memory, deterministic — nothing is written, so no rank races);
2. NFC-normalise, drop pairs outside the length limits, drop exact duplicates;
3. split deterministically by *source sentence* (all translations of one English sentence land in the
   same split, so no test sentence is seen in training);
4. apply the direction (``en-es`` or ``es-en``);
5. train subword tokenizer(s) on the training split — in ``prepare_data`` (rank 0 of each node), cached
   as JSON keyed by a hash of the training data and tokenizer settings; ``setup`` on every rank reads it.

The embedded corpus also knows its gold word alignments (:meth:`TranslationDataModule.gold_alignments`, scored by
validation and test as ``val/aer``/``test/aer``) and can make long sentences: ``max_clauses`` for training,
:meth:`TranslationDataModule.long_sentence_set` for a held-out set bucketed by source length.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset, Subset

from core.errors import ConfigError, DataError
from core.text.known_words import KnownWords
from core.text.tokenizers import BaseTokenizer
from tasks.translation import grammar
from tasks.translation.batching import (
    PairDataset,
    ResumableDataLoader,
    TokenBucketBatchSampler,
    collate,
    shard_indices,
)
from tasks.translation.sources import (
    LoadResult,
    normalize,
    read_hf,
    read_lines,
    read_parallel,
    read_table,
    read_tatoeba,
)
from tasks.translation.splits import split_by_source
from tasks.translation.tokenization import encode_all
from tasks.translation.tokenizer_cache import TokenizerCache, default_cache_dir

if TYPE_CHECKING:
    from tasks.translation.alignment import GoldPair

Pair = tuple[str, str]
Source = Literal["embedded", "tatoeba", "tsv", "csv", "parallel", "hf"]


class TranslationDataModule(pl.LightningDataModule):
    """Data for :class:`tasks.translation.module.TranslationModule`.

    Args:
        source: ``embedded`` (grammar corpus, no files), ``tatoeba`` (``spa.txt``), ``tsv``/``csv`` (header
            with named columns), ``parallel`` (``<path>.<src_lang>`` + ``<path>.<tgt_lang>``), ``hf``
            (``datasets``: a ``save_to_disk`` folder, a local data folder, or a hub name when online).
        path: file / prefix / folder / hub name for the non-embedded sources.
        direction: ``"en-es"`` (default) or ``"es-en"``; files are read English-first.
        src_column: TSV/CSV/HF column (or ``translation`` key) holding English.
        tgt_column: TSV/CSV/HF column (or ``translation`` key) holding Spanish.
        hf_split: split read from an HF dataset (``train``); our own val/test are carved out of it.
        n_pairs: size of the embedded corpus (distinct pairs).
        val_size: validation pairs (at least; whole source groups).
        test_size: test pairs.
        seed: seed for corpus generation and splits.
        max_words: drop pairs with a side longer than this many whitespace words.
        max_tokens_per_sentence: drop training pairs with a side longer than this many subword tokens
            (the model's length limit; longer inputs at inference are truncated with a warning).
        vocab_size: subword vocabulary size (per language, or total when ``joint_vocab``).
        tokenizer_model: ``bpe`` or ``unigram``.
        joint_vocab: one shared vocabulary for both languages (needed for weight tying across them).
        split_punctuation: split punctuation off words before subword training (see
            :func:`tasks.translation.tokenization.train_subword`).
        min_freq: minimum pair frequency for BPE merges.
        max_tokens: token budget per batch (padded tokens), the batch size knob.
        max_batch_size: optional cap on sentences per batch.
        eval_max_tokens: token budget for val/test batches (default ``max_tokens``; beam search holds
            ``beam`` copies).
        num_workers: DataLoader workers (0 is fastest for this in-memory data).
        cache_dir: tokenizer cache folder (default :func:`default_cache_dir`).
        limit_train_pairs: keep only the first N training pairs (smoke tests).
        predict_path: text file with one source sentence per line for ``predict`` (default: the test
            split's sources); empty lines give empty translations so output lines stay aligned.
        max_clauses: embedded corpus: 1 (default) gives today's single sentences; k > 1 joins 1..k coordinated
            statements per pair ("A and B and C", :func:`tasks.translation.grammar.coordinate`) for long
            sentences (pairs over ``max_words`` words are still dropped).
        aer_pairs: embedded corpus: validation and test score the attention against the grammar's gold
            alignments on the first this many pairs of their split (``val/aer``, ``test/aer``; 0 = never).
    """

    def __init__(
        self,
        source: Source = "embedded",
        path: str | None = None,
        direction: Literal["en-es", "es-en"] = "en-es",
        src_column: str = "en",
        tgt_column: str = "es",
        hf_split: str = "train",
        n_pairs: int = 30_000,
        val_size: int = 1000,
        test_size: int = 1000,
        seed: int = 0,
        max_words: int = 50,
        max_tokens_per_sentence: int = 100,
        vocab_size: int = 2000,
        tokenizer_model: Literal["bpe", "unigram"] = "bpe",
        joint_vocab: bool = False,
        split_punctuation: bool = True,
        min_freq: int = 2,
        max_tokens: int = 4096,
        max_batch_size: int | None = None,
        eval_max_tokens: int | None = None,
        num_workers: int = 0,
        cache_dir: str | None = None,
        limit_train_pairs: int | None = None,
        predict_path: str | None = None,
        max_clauses: int = 1,
        aer_pairs: int = 200,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if source != "embedded" and not path:
            raise ConfigError(f"--data.source={source} needs --data.path (a file, prefix, folder or name)")
        # Checked here (at CLI parse time) so a bad value is one `error:` line, not a traceback later.
        for name, value in (
            ("max_tokens", max_tokens),
            ("eval_max_tokens", eval_max_tokens),
            ("max_batch_size", max_batch_size),
            ("max_tokens_per_sentence", max_tokens_per_sentence),
            ("n_pairs", n_pairs),
            ("max_words", max_words),
            ("max_clauses", max_clauses),
        ):
            if value is not None and value < 1:
                raise ConfigError(f"--data.{name} must be >= 1, got {value}")
        if max_clauses != 1 and source != "embedded":
            raise ConfigError(f"--data.max_clauses is for --data.source embedded (the grammar), not {source}")
        for name, value in (("val_size", val_size), ("test_size", test_size), ("aer_pairs", aer_pairs)):
            if value < 0:
                raise ConfigError(f"--data.{name} must be >= 0, got {value}")
        self.source = source
        self.path = path
        self.direction = direction
        self.src_column = src_column
        self.tgt_column = tgt_column
        self.hf_split = hf_split
        self.n_pairs = n_pairs
        self.val_size = val_size
        self.test_size = test_size
        self.seed = seed
        self.max_words = max_words
        self.max_tokens_per_sentence = max_tokens_per_sentence
        self.vocab_size = vocab_size
        self.tokenizer_model = tokenizer_model
        self.joint_vocab = joint_vocab
        self.split_punctuation = split_punctuation
        self.min_freq = min_freq
        self.max_tokens = max_tokens
        self.max_batch_size = max_batch_size
        self.eval_max_tokens = eval_max_tokens if eval_max_tokens is not None else max_tokens
        self.num_workers = num_workers
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.limit_train_pairs = limit_train_pairs
        self.predict_path = predict_path
        self.max_clauses = max_clauses
        self.aer_pairs = aer_pairs

        self.splits: dict[str, list[Pair]] | None = None
        self.src_tokenizer: BaseTokenizer | None = None
        self.tgt_tokenizer: BaseTokenizer | None = None
        self.datasets: dict[str, PairDataset] = {}
        self.stats: dict[str, int] = {}
        self._gold: dict[Pair, grammar.AlignedPair] = {}  # (en, es) -> gold links: embedded corpus only

    # ------------------------------------------------------------------ reading / splitting
    def _read(self) -> LoadResult:
        if self.source == "embedded":
            aligned = grammar.generate_aligned_corpus(self.n_pairs, seed=self.seed, max_clauses=self.max_clauses)
            self._gold = {p.pair: p for p in aligned}
            return LoadResult([p.pair for p in aligned])
        assert self.path is not None
        if self.source == "tatoeba":
            return read_tatoeba(self.path)
        if self.source in ("tsv", "csv"):
            return read_table(
                self.path, self.src_column, self.tgt_column, delimiter="\t" if self.source == "tsv" else ","
            )
        if self.source == "parallel":
            return read_parallel(f"{self.path}.{self.src_column}", f"{self.path}.{self.tgt_column}")
        if self.source == "hf":
            return read_hf(self.path, self.src_column, self.tgt_column, split=self.hf_split)
        raise ConfigError(
            f"unknown --data.source {self.source!r}; expected embedded, tatoeba, tsv, csv, parallel or hf"
        )

    def load_splits(self) -> dict[str, list[Pair]]:
        """Read, clean, split and orient the data (cached on the instance).

        Returns:
            ``{"train"|"val"|"test": [(src, tgt), ...]}`` in the configured direction.
        """
        if self.splits is not None:
            return self.splits
        res = self._read()
        res.warn(self.path or "embedded corpus")
        seen: set[Pair] = set()
        pairs: list[Pair] = []
        too_long = dup = 0
        for p in res.pairs:
            if len(p[0].split()) > self.max_words or len(p[1].split()) > self.max_words:
                too_long += 1
            elif p in seen:
                dup += 1
            else:
                seen.add(p)
                pairs.append(p)
        if self.source == "embedded":
            n_anchor = len(grammar.anchor_pairs())
            train, val, test = grammar.split_corpus(
                pairs, self.val_size, self.test_size, self.seed, keep_first=n_anchor
            )
        else:
            train, val, test = split_by_source(pairs, self.val_size, self.test_size, self.seed)
        if self.limit_train_pairs is not None:
            train = train[: self.limit_train_pairs]
        if self.direction == "es-en":
            train, val, test = ([(b, a) for a, b in s] for s in (train, val, test))
        self.stats = {
            "read": len(res.pairs),
            "skipped_lines": res.skipped,
            "too_long": too_long,
            "duplicates": dup,
            "train": len(train),
            "val": len(val),
            "test": len(test),
        }
        if too_long:
            rank_zero_warn(f"dropped {too_long} pairs longer than --data.max_words={self.max_words}")
        self.splits = {"train": train, "val": val, "test": test}
        return self.splits

    # ------------------------------------------------------------------ gold alignments (embedded corpus)
    def _oriented(self, p: grammar.AlignedPair) -> GoldPair:
        """``(source, target, sure, possible)`` in the configured direction (links are (source, target) words)."""
        if self.direction == "es-en":
            return p.es, p.en, [(j, i) for i, j in p.sure], [(j, i) for i, j in p.possible]
        return p.en, p.es, list(p.sure), list(p.possible)

    def gold_alignments(self, split: str, n: int | None = None) -> list[GoldPair] | None:
        """Gold word alignments of the first pairs of a split, for the alignment score.

        Args:
            split: ``"train"``, ``"val"`` or ``"test"``.
            n: how many pairs (default ``aer_pairs``).

        Returns:
            ``(source, target, sure links, possible links)`` per pair, in the configured direction (what
            :func:`tasks.translation.alignment.alignment_scores` takes), or None when the data has no gold
            alignments (every source but the embedded grammar corpus).
        """
        if self.source != "embedded":
            return None
        pairs = self.load_splits()[split][: self.aer_pairs if n is None else n]
        flip = self.direction == "es-en"
        return [self._oriented(self._gold[(tgt, src) if flip else (src, tgt)]) for src, tgt in pairs]

    def long_sentence_set(
        self,
        n_per_bucket: int = 50,
        buckets: Sequence[tuple[int, int | None]] = grammar.LENGTH_BUCKETS,
        max_clauses: int = 12,
    ) -> dict[str, list[GoldPair]]:
        """Held-out pairs bucketed by source length, with gold alignments (the long-sentence study).

        Sentences of up to ``max_clauses`` coordinated statements (``grammar.long_sentence_buckets``), none sharing
        a side with any pair of this corpus (training, validation or test), in the configured direction.

        Args:
            n_per_bucket: pairs per bucket.
            buckets: ``(shortest, longest)`` source word counts (longest None = no limit); default 1-9, 10-19,
                20-29, 30-39 and 40+ words.
            max_clauses: most statements per sentence.

        Returns:
            ``{"1-9": [(source, target, sure, possible), ...], ...}`` in the order of ``buckets``.

        Raises:
            ConfigError: the data is not the embedded corpus.
        """
        if self.source != "embedded":
            raise ConfigError(f"the long-sentence set comes from the embedded grammar, not --data.source {self.source}")
        self.load_splits()  # fills self._gold: every generated pair, kept or not
        found = grammar.long_sentence_buckets(
            n_per_bucket,
            seed=self.seed,
            exclude=self._gold,
            buckets=buckets,
            max_clauses=max_clauses,
            by="es" if self.direction == "es-en" else "en",
        )
        return {label: [self._oriented(p) for p in pairs] for label, pairs in found.items()}

    # ------------------------------------------------------------------ tokenizers (cache: tokenizer_cache.py)
    def _tokenizer_cache(self) -> TokenizerCache:
        return TokenizerCache(
            cache_dir=self.cache_dir,
            vocab_size=self.vocab_size,
            tokenizer_model=self.tokenizer_model,
            joint_vocab=self.joint_vocab,
            min_freq=self.min_freq,
            split_punctuation=self.split_punctuation,
        )

    def prepare_data(self) -> None:
        """Rank 0 of each node: train the tokenizers on the training split and cache them."""
        self._tokenizer_cache().prepare(self.load_splits()["train"])

    def _load_tokenizers(self) -> None:
        """The cached tokenizers (or ones trained in memory), unless the module already has tokenizers."""
        if self.src_tokenizer is not None:
            return
        self.src_tokenizer, self.tgt_tokenizer = self._tokenizer_cache().load_or_train(self.load_splits()["train"])

    def set_tokenizers(self, src: BaseTokenizer, tgt: BaseTokenizer) -> None:
        """Use given tokenizers (e.g. from a checkpoint) instead of training/caching new ones."""
        self.src_tokenizer, self.tgt_tokenizer = src, tgt

    def known_source_words(self) -> KnownWords:
        """The words of the training sources: stored with the model, so that it can name the words of an
        input it never saw (``TranslationModule.unknown_words``)."""
        return KnownWords.from_texts(s for s, _ in self.load_splits()["train"])

    # ------------------------------------------------------------------ datasets
    def _dataset(self, split: str, drop_long: bool) -> PairDataset:
        pairs = self.load_splits()[split]
        assert self.src_tokenizer is not None and self.tgt_tokenizer is not None
        src_ids = encode_all(self.src_tokenizer, [s for s, _ in pairs])
        tgt_ids = encode_all(self.tgt_tokenizer, [t for _, t in pairs])
        keep = list(range(len(pairs)))
        if drop_long:
            limit = self.max_tokens_per_sentence
            keep = [i for i in keep if len(src_ids[i]) <= limit and len(tgt_ids[i]) + 1 <= limit]
            if len(keep) < len(pairs):
                rank_zero_warn(
                    f"{split}: dropped {len(pairs) - len(keep)} pairs longer than "
                    f"--data.max_tokens_per_sentence={limit} subword tokens"
                )
        else:
            # Evaluation keeps every sentence (truncated to the model limit) so scores stay comparable.
            limit = self.max_tokens_per_sentence
            src_ids = [s[:limit] for s in src_ids]
            tgt_ids = [t[: limit - 1] for t in tgt_ids]
        return PairDataset(
            [src_ids[i] for i in keep],
            [tgt_ids[i] for i in keep],
            [pairs[i][0] for i in keep],
            [pairs[i][1] for i in keep],
        )

    def setup(self, stage: str | None = None) -> None:
        """Every rank: read the cached tokenizers and encode the splits the stage needs."""
        self._load_tokenizers()
        if stage == "predict" and self.predict_path and "predict" not in self.datasets:
            self.datasets["predict"] = self._predict_dataset(self.predict_path)
            return
        wanted = {"fit": ["train", "val"], "validate": ["val"], "test": ["test"], "predict": ["test"]}
        for split in wanted.get(stage or "fit", ["train", "val", "test"]):
            if split not in self.datasets:
                self.datasets[split] = self._dataset(split, drop_long=(split == "train"))

    def _predict_dataset(self, path: str) -> PairDataset:
        assert self.src_tokenizer is not None
        texts = [normalize(t) for _, t in read_lines(path)]
        if not texts:
            raise DataError(f"{path}: empty file; expected one source sentence per line")
        ids = [s[: self.max_tokens_per_sentence] for s in encode_all(self.src_tokenizer, texts)]
        return PairDataset(ids, [[] for _ in texts], texts, ["" for _ in texts])

    # ------------------------------------------------------------------ loaders
    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    def _loader(self, split: str, shuffle: bool, max_tokens: int) -> DataLoader:
        ds = self.datasets[split]
        world, rank = self._world()
        sampler = TokenBucketBatchSampler(
            ds.lengths(),
            max_tokens=max_tokens,
            shuffle=shuffle,
            seed=self.seed,
            max_batch_size=self.max_batch_size,
            num_replicas=world,
            rank=rank,
        )
        cls = ResumableDataLoader if shuffle else DataLoader  # only training needs mid-epoch resume
        return cls(
            ds,
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True, self.max_tokens)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False, self.eval_max_tokens)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False, self.eval_max_tokens)

    def predict_dataloader(self) -> DataLoader:
        # Plain batching: Lightning wraps predict batch samplers to track indices, which only works
        # for torch's BatchSampler; outputs are in dataset order.
        pairs = self.datasets["predict" if "predict" in self.datasets else "test"]
        ds: Dataset = pairs  # the whole split, or this rank's shard of it
        world, rank = self._world()
        # (If Lightning injects its own distributed sampler, it shards this loader already.)
        injected = bool(
            getattr(getattr(self.trainer, "_accelerator_connector", None), "use_distributed_sampler", False)
        )
        if world > 1 and not injected:
            # The CLI turns Lightning's sampler injection off, so without this every rank would translate
            # everything. Each rank takes a strided shard; items keep their dataset "index", so the
            # core.cli.predict.PredictionWriter gathers the shards and writes one output in input order.
            ds = Subset(pairs, shard_indices(len(pairs), world, rank))
        return DataLoader(ds, batch_size=64, shuffle=False, collate_fn=collate, num_workers=self.num_workers)

    def fixed_examples(self, n: int) -> list[Pair]:
        """The first ``n`` validation pairs (the same every epoch) for attention heatmaps."""
        return self.load_splits()["val"][:n]
