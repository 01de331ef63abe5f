"""Translation data: readers on tiny generated files, the data module, bucketing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.errors import DataError
from tasks.translation.batching import TokenBucketBatchSampler, collate
from tasks.translation.data import TranslationDataModule, split_by_source
from tasks.translation.sources import read_hf, read_parallel, read_table, read_tatoeba

PAIRS = [
    ("I love you.", "Te quiero."),
    ("The red car.", "El coche rojo."),
    ("She sees them.", "Ella los ve."),
    ("Go.", "Ve."),
    ("Go.", "Vete."),
    ("Thanks!", "¡Gracias!"),
]


def _write_tatoeba(path: Path, pairs: list[tuple[str, str]] = PAIRS, extra: str = "") -> Path:
    lines = [f"{en}\t{es}\tCC-BY 2.0 (France) Attribution: tatoeba.org #{i}" for i, (en, es) in enumerate(pairs)]
    path.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    return path


def test_tatoeba_reader_skips_and_reports_bad_lines(tmp_path: Path) -> None:
    path = _write_tatoeba(tmp_path / "spa.txt", extra="\nno tab here\n\tonly spanish\n")
    res = read_tatoeba(path)  # records problems; the data module emits them (rank zero only)
    assert res.pairs[:3] == PAIRS[:3] and len(res.pairs) == len(PAIRS)
    assert res.skipped == 3
    with pytest.warns(UserWarning) as rec:
        res.warn(str(path))
    messages = " ".join(str(w.message) for w in rec)
    assert f"{path}:{len(PAIRS) + 1}: empty line" in messages
    assert f"{path}:{len(PAIRS) + 2}: no tab" in messages
    assert f"{path}:{len(PAIRS) + 3}: empty sentence" in messages
    # The count is reported too (once; rank_zero_warn), even when every line was listed.
    assert [str(w.message) for w in rec].count(
        f"skipped 3 bad lines in {path} in total (first at {path}:{len(PAIRS) + 1})"
    ) == 1


def test_skip_report_is_rank_zero_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import warnings

    from lightning.pytorch.utilities import rank_zero_only

    from tasks.translation.sources import LoadResult

    res = LoadResult()
    for i in range(7):
        res.skip(f"f.txt:{i + 1}", "empty line")
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        res.warn("f.txt")
    assert not rec  # other ranks stay silent ...
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        res.warn("f.txt")
    assert [str(w.message) for w in rec][-1] == "skipped 7 bad lines in f.txt in total (first at f.txt:1)"


def test_bucket_sampler_bad_budget_is_a_config_error() -> None:
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--data.max_tokens \(token budget per batch\) must be >= 1, got 0"):
        TokenBucketBatchSampler([3, 4], max_tokens=0)


def test_tatoeba_reader_nfc_and_fatal_errors(tmp_path: Path) -> None:
    decomposed = tmp_path / "nfd.txt"
    decomposed.write_text("the song\tla cancio\u0301n\n", encoding="utf-8")
    assert read_tatoeba(decomposed).pairs == [("the song", "la canción")]  # NFC composed
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("ok\tbien\nthe song\tla canción\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.txt:2: not valid UTF-8"):
        read_tatoeba(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="no usable line"):
        read_tatoeba(empty)
    with pytest.raises(DataError, match="not found"):
        read_tatoeba(tmp_path / "missing.txt")


def test_table_reader_tsv_csv_and_wrong_columns(tmp_path: Path) -> None:
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("id\ten\tes\n1\tI love you\tte quiero\n2\tshort\n3\tthe red car\tel coche rojo\n", encoding="utf-8")
    res = read_table(tsv, "en", "es")
    assert res.pairs == [("I love you", "te quiero"), ("the red car", "el coche rojo")] and res.skipped == 1
    assert res.problems[0].startswith(f"{tsv}:3:")
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text('english,spanish\n"Hello, friend",Hola amigo\n', encoding="utf-8")
    assert read_table(csv_path, "english", "spanish").pairs == [("Hello, friend", "Hola amigo")]
    with pytest.raises(DataError, match=r"missing column\(s\) \['en', 'es'\]; the header has \['english', 'spanish'\]"):
        read_table(csv_path, "en", "es")


def test_tsv_stray_quote_is_text_csv_quotes_still_work(tmp_path: Path) -> None:
    # A lone `"` in a TSV used to open a CSV quoted field that silently swallowed the following lines.
    tsv = tmp_path / "quotes.tsv"
    tsv.write_text('en\tes\n"Hi there\t"Hola\nthe red car\tel coche rojo\nI love you\tte quiero\n', encoding="utf-8")
    res = read_table(tsv, "en", "es")
    assert (
        res.pairs == [('"Hi there', '"Hola'), ("the red car", "el coche rojo"), ("I love you", "te quiero")]
        and res.skipped == 0
    )
    # The tsv source (explicit tab delimiter, any suffix) reads the same way.
    txt = tmp_path / "quotes.data"
    txt.write_bytes(tsv.read_bytes())
    assert len(read_table(txt, "en", "es", delimiter="\t").pairs) == 3
    # CSV keeps its quoting: a quoted comma (and an escaped quote) stay inside the field.
    csv_path = tmp_path / "quotes.csv"
    csv_path.write_text('en,es\n"He said ""hi"", friend",Dijo hola\nthe red car,el coche rojo\n', encoding="utf-8")
    assert read_table(csv_path, "en", "es").pairs == [
        ('He said "hi", friend', "Dijo hola"),
        ("the red car", "el coche rojo"),
    ]


def test_parallel_reader(tmp_path: Path) -> None:
    (tmp_path / "train.en").write_text("I love you\n\nthe red car\n", encoding="utf-8")
    (tmp_path / "train.es").write_text("te quiero\nhola\nel coche rojo\n", encoding="utf-8")
    res = read_parallel(tmp_path / "train.en", tmp_path / "train.es")
    assert res.pairs == [("I love you", "te quiero"), ("the red car", "el coche rojo")] and res.skipped == 1
    (tmp_path / "short.es").write_text("te quiero\n", encoding="utf-8")
    with pytest.raises(DataError, match="differ in length"):
        read_parallel(tmp_path / "train.en", tmp_path / "short.es")


def test_hf_reader_plain_columns_and_translation_dicts(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    flat = tmp_path / "flat"
    datasets.Dataset.from_dict(
        {"en": ["I love you", "the red car"], "es": ["te quiero", "el coche rojo"]}
    ).save_to_disk(str(flat))
    assert read_hf(str(flat), "en", "es").pairs == [("I love you", "te quiero"), ("the red car", "el coche rojo")]
    nested = tmp_path / "nested"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(
                {"translation": [{"en": "I love you", "es": "te quiero"}, {"en": "", "es": "vacío"}]}
            )
        }
    ).save_to_disk(str(nested))
    res = read_hf(str(nested), "en", "es")
    assert res.pairs == [("I love you", "te quiero")] and res.skipped == 1
    with pytest.raises(DataError, match="no split 'validation'"):
        read_hf(str(nested), "en", "es", split="validation")
    with pytest.raises(DataError, match="columns"):
        read_hf(str(flat), "english", "spanish")
    # A folder of plain data files goes through load_dataset (works offline).
    files = tmp_path / "files"
    files.mkdir()
    (files / "train.jsonl").write_text(json.dumps({"en": "go", "es": "ve"}) + "\n", encoding="utf-8")
    assert read_hf(str(files), "en", "es").pairs == [("go", "ve")]


def test_split_by_source_keeps_groups_together() -> None:
    pairs = [(f"s{i // 2}", f"t{i}") for i in range(200)]  # every source has two translations
    train, val, test = split_by_source(pairs, 20, 20, seed=3)
    assert len(train) + len(val) + len(test) == 200
    assert not {s for s, _ in train} & {s for s, _ in test}
    assert not {s for s, _ in train} & {s for s, _ in val}
    assert (train, val, test) == split_by_source(pairs, 20, 20, seed=3)  # deterministic


def test_datamodule_tatoeba_direction_dedup_and_cache(tmp_path: Path) -> None:
    rows = [(f"sentence number {i}", f"frase número {i}") for i in range(120)] + [PAIRS[0], PAIRS[0]]
    path = _write_tatoeba(tmp_path / "spa.txt", rows)
    kw = dict(
        source="tatoeba",
        path=str(path),
        val_size=10,
        test_size=10,
        vocab_size=120,
        min_freq=1,
        cache_dir=str(tmp_path / "cache"),
        max_tokens=64,
    )
    dm = TranslationDataModule(**kw)  # type: ignore[arg-type]
    dm.prepare_data()
    caches = list((tmp_path / "cache").glob("tokenizers-*.json"))
    assert len(caches) == 1
    dm.setup("fit")
    assert dm.stats["duplicates"] == 1 and dm.stats["train"] + dm.stats["val"] + dm.stats["test"] == 121
    batches = list(dm.train_dataloader())
    assert sum(len(b["src_text"]) for b in batches) == dm.stats["train"]
    for b in batches:
        assert b["src"].shape[0] * max(b["src"].shape[1], b["tgt_in"].shape[1]) <= 64
        assert (b["tgt_in"][:, 0] == 1).all()
    rev = TranslationDataModule(**{**kw, "direction": "es-en"})  # type: ignore[arg-type]
    fwd_train = dm.load_splits()["train"]
    assert rev.load_splits()["train"] == [(b, a) for a, b in fwd_train]
    # A second module with the same settings reuses the cached tokenizers.
    again = TranslationDataModule(**kw)  # type: ignore[arg-type]
    again.setup("fit")
    assert again.src_tokenizer.to_dict() == dm.src_tokenizer.to_dict()  # type: ignore[union-attr]


def test_joint_vocab_and_unigram(tmp_path: Path) -> None:
    dm = TranslationDataModule(
        n_pairs=300,
        val_size=10,
        test_size=10,
        vocab_size=200,
        joint_vocab=True,
        tokenizer_model="unigram",
        cache_dir=str(tmp_path),
    )
    dm.setup("fit")
    assert dm.src_tokenizer is dm.tgt_tokenizer


def test_bucket_sampler_budget_determinism_and_sharding() -> None:
    lengths = [(i * 7) % 23 + 1 for i in range(500)]
    s = TokenBucketBatchSampler(lengths, max_tokens=100, shuffle=True, seed=1)
    batches = list(s)
    assert sorted(i for b in batches for i in b) == list(range(500))
    assert all(len(b) * max(lengths[i] for i in b) <= 100 for b in batches)
    assert batches == list(TokenBucketBatchSampler(lengths, max_tokens=100, shuffle=True, seed=1))
    s.set_epoch(1)
    assert list(s) != batches
    shards = [
        list(TokenBucketBatchSampler(lengths, 100, shuffle=True, seed=1, num_replicas=2, rank=r)) for r in range(2)
    ]
    assert len(shards[0]) == len(shards[1])  # equal step counts on every rank (no DDP hang)
    assert {i for sh in shards for b in sh for i in b} == set(range(500))


def test_collate_shapes() -> None:
    batch = collate(
        [
            {"index": 0, "src": [5, 6, 7], "tgt": [8], "src_text": "a", "tgt_text": "b"},
            {"index": 1, "src": [5], "tgt": [9, 10, 11], "src_text": "c", "tgt_text": "d"},
        ]
    )
    assert batch["src"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["tgt_in"].tolist() == [[1, 8, 0, 0], [1, 9, 10, 11]]
    assert batch["tgt_out"].tolist() == [[8, 2, 0, 0], [9, 10, 11, 2]]
    assert batch["src_lengths"].tolist() == [3, 1]


def test_resumable_loader_continues_mid_epoch() -> None:
    from tasks.translation.batching import PairDataset, ResumableDataLoader

    ds = PairDataset(
        [[5] * (i % 7 + 1) for i in range(60)],
        [[6] * (i % 5 + 1) for i in range(60)],
        [str(i) for i in range(60)],
        ["" for _ in range(60)],
    )

    def loader() -> ResumableDataLoader:
        return ResumableDataLoader(
            ds, batch_sampler=TokenBucketBatchSampler(ds.lengths(), 24, seed=2), collate_fn=collate
        )

    first = loader()
    first.batch_sampler.set_epoch(3)  # type: ignore[union-attr]
    full = [b["index"].tolist() for b in first]
    it = iter(first)
    seen = [next(it)["index"].tolist() for _ in range(4)]
    state = first.state_dict()
    assert state == {"epoch": 3, "batches": 4} and seen == full[:4]
    resumed = loader()
    resumed.load_state_dict(state)
    assert [b["index"].tolist() for b in resumed] == full[4:]
    assert [b["index"].tolist() for b in resumed] == full  # the next epoch starts from the top again


def test_bucket_sampler_more_ranks_than_batches_every_rank_gets_a_batch() -> None:
    lengths = [3, 4, 5]
    shards = [list(TokenBucketBatchSampler(lengths, 100, shuffle=False, num_replicas=4, rank=r)) for r in range(4)]
    assert all(len(sh) == 1 for sh in shards)  # one batch each (the single real batch, repeated)


@pytest.mark.parametrize("n", [1, 2, 5, 64, 65])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_predict_shards_cover_every_index_once_after_dedupe(n: int, world: int) -> None:
    from core.train.distributed import dedupe_by_index
    from tasks.translation.batching import shard_indices

    shards = [shard_indices(n, world, r) for r in range(world)]
    assert len({len(sh) for sh in shards}) == 1 and all(shards)  # equal, never empty (no hook skipped)
    gathered = [(i, f"line {i}") for r in reversed(range(world)) for i in shards[r]]  # any rank order
    assert dedupe_by_index(gathered) == [f"line {i}" for i in range(n)]  # input order, each once
    assert shard_indices(0, world, 0) == []


def test_eval_dedupe_drops_ddp_padding_repeats() -> None:
    """Padded eval batches repeat leading examples on some ranks; each example must be scored once."""
    from core.train.distributed import dedupe_by_index

    lengths = [(i * 5) % 11 + 1 for i in range(37)]
    world = 3
    per_rank = [
        [i for b in TokenBucketBatchSampler(lengths, 24, shuffle=False, num_replicas=world, rank=r) for i in b]
        for r in range(world)
    ]
    flat = [i for part in per_rank for i in part]
    assert len(flat) > len(lengths)  # the padding really repeats examples ...
    pairs = dedupe_by_index((i, (f"hyp {i}", f"ref {i}")) for i in flat)
    assert pairs == [(f"hyp {i}", f"ref {i}") for i in range(37)]  # ... and the dedupe removes them
