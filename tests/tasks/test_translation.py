"""Translation task: grammar corpus, models, training, checkpoints, CLI and bad input.

Data-loader tests live in ``test_translation_data.py``. Everything runs on CPU with tiny models.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest
import torch

from core.io.checks import FORMAT_VERSION
from core.text.known_words import words_of
from tasks.translation import grammar
from tasks.translation.cli import main
from tasks.translation.data import TranslationDataModule
from tasks.translation.inference import Translation
from tasks.translation.models import RNNSeq2Seq, TransformerSeq2Seq
from tasks.translation.module import TranslationModule

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "translation"


# ----------------------------------------------------------------------------------------- grammar
def test_grammar_anchor_pairs() -> None:
    g = grammar
    assert g.clause(g.subject_pronoun(0), g.verb_by_en("love"), clitic=1) == ("I love you", "te quiero")
    red_car = g.noun_phrase(g.noun_by_en("car"), adj=g.adjective_by_en("red"))
    assert (red_car.en, red_car.es) == ("the red car", "el coche rojo")
    assert g.clause(g.subject_pronoun(3), g.verb_by_en("see"), clitic=5) == ("she sees them", "ella los ve")
    corpus = g.generate_corpus(2000, seed=1)
    for pair in [("I love you", "te quiero"), ("the red car", "el coche rojo"), ("she sees them", "ella los ve")]:
        assert pair in corpus


def test_grammar_agreement_tense_negation_questions() -> None:
    g = grammar
    houses = g.noun_phrase(g.noun_by_en("house"), plural=True, adj=g.adjective_by_en("red"))
    assert (houses.en, houses.es) == ("the red houses", "las casas rojas")
    trees = g.noun_phrase(g.noun_by_en("tree"), det=1, plural=True, adj=g.adjective_by_en("big"))
    assert (trees.en, trees.es) == ("some big trees", "unos árboles grandes")
    apple = g.noun_phrase(g.noun_by_en("apple"), det=1)
    assert apple.en == "an apple" and apple.es == "una manzana"
    see = g.verb_by_en("see")
    assert g.clause(g.subject_pronoun(0), see, clitic=1, tense="past") == ("I saw you", "te vi")
    assert g.clause(g.subject_pronoun(3), see, clitic=5, tense="past", negative=True) == (
        "she didn't see them",
        "ella no los vio",
    )
    assert g.clause(g.subject_pronoun(1), g.verb_by_en("love"), clitic=0, question=True) == (
        "do you love me?",
        "¿me quieres?",
    )
    boy = g.noun_phrase(g.noun_by_en("boy"))
    assert g.clause(g.subject_pronoun(0), see, obj=boy) == ("I see the boy", "veo al niño")
    assert g.clause(g.subject_pronoun(4), g.verb_by_en("look"), obj=boy, tense="past") == (
        "we looked for the boy",
        "buscamos al niño",
    )
    assert g.copula(g.subject_pronoun(3), g.adjective_by_en("tall")) == ("she is tall", "ella es alta")
    assert g.what_question(g.subject_pronoun(3), g.verb_by_en("buy"), tense="past") == (
        "what did she buy?",
        "¿qué compró ella?",
    )
    # Every person has distinct present and preterite forms from the tables.
    buy = g.verb_by_en("buy")
    assert buy.present == ("compro", "compras", "compra", "compramos", "compran")
    assert buy.preterite == ("compré", "compraste", "compró", "compramos", "compraron")
    assert g.verb_by_en("look").preterite[0] == "busqué"


def test_grammar_size_determinism_and_disjoint_splits() -> None:
    pairs = grammar.generate_corpus(20_000, seed=0)
    assert len(pairs) == 20_000 == len({p[0] for p in pairs}) == len({p[1] for p in pairs})
    assert pairs == grammar.generate_corpus(20_000, seed=0)
    assert pairs != grammar.generate_corpus(20_000, seed=1)
    assert grammar.lexicon_size() >= 200
    train, val, test = grammar.split_corpus(pairs, 500, 500, seed=0, keep_first=3)
    assert pairs[0] in train
    for a, b in [(train, val), (train, test), (val, test)]:
        assert not {p[0] for p in a} & {p[0] for p in b}
        assert not {p[1] for p in a} & {p[1] for p in b}


# ------------------------------------------------------------------------------------------ models
@pytest.mark.parametrize("kind", ["rnn-gru-additive", "rnn-lstm-location", "rnn-gru-multihead", "transformer"])
def test_incremental_decoding_matches_teacher_forcing(kind: str) -> None:
    torch.manual_seed(0)
    if kind == "transformer":
        model: torch.nn.Module = TransformerSeq2Seq(
            30, 40, d_model=16, num_heads=2, ffn_dim=32, encoder_layers=1, decoder_layers=2
        )
    else:
        _, rnn, attn = kind.split("-")
        model = RNNSeq2Seq(30, 40, 16, 16, rnn_type=rnn, attention=attn, decoder_layers=2, tie_embeddings=True)
    model.eval()
    torch.set_grad_enabled(False)
    src = torch.randint(4, 30, (3, 6))
    lengths = torch.tensor([6, 4, 1])
    tgt = torch.randint(4, 40, (3, 5))
    logits, attn_w = model(src, lengths, tgt, need_weights=True)  # (B, T, V), (B, T, S)
    state = model.init_state(src, lengths)
    steps = []
    for t in range(tgt.shape[1]):
        lp, state, w = model.step(tgt[:, t], state, True)
        steps.append((lp, w))
    torch.testing.assert_close(torch.stack([s[0] for s in steps], 1), logits.log_softmax(-1), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.stack([s[1] for s in steps], 1), attn_w, atol=1e-5, rtol=1e-4)
    assert float(attn_w[2, :, 1:].abs().max()) == 0.0  # padding gets no attention
    torch.set_grad_enabled(True)


# ---------------------------------------------------------------------------- training/checkpoints
def _tiny_dm(tmp: Path, **kw: object) -> TranslationDataModule:
    args = dict(
        n_pairs=400, val_size=16, test_size=16, vocab_size=250, min_freq=1, max_tokens=512, cache_dir=str(tmp / "cache")
    )
    args.update(kw)
    return TranslationDataModule(**args)  # type: ignore[arg-type]


@pytest.mark.slow
def test_overfit_16_pairs_and_checkpoint_roundtrip(tmp_path: Path) -> None:
    import lightning.pytorch as pl

    pl.seed_everything(0)
    dm = _tiny_dm(tmp_path, limit_train_pairs=16)
    model = TranslationModule(
        embed_dim=64,
        hidden_dim=128,
        dropout=0.0,
        label_smoothing=0.0,
        lr=5e-3,
        warmup_steps=10,
        lr_schedule="constant",
        plot_examples=0,
    )
    trainer = pl.Trainer(
        max_steps=150,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        use_distributed_sampler=False,
    )
    trainer.fit(model, dm)
    train = dm.load_splits()["train"]
    assert len(train) == 16
    sources, targets = [s for s, _ in train], [t for _, t in train]
    assert model.translate(sources, beam=1) == targets  # greedy reproduces all 16 exactly
    # the model knows the words it was trained on, and names the others
    assert model.known_words is not None and model.known_words.words == {w for s in sources for w in words_of(s)}
    assert all(model.unknown_words(s) == [] for s in sources)
    assert model.unknown_words("the xylophone sings") == [
        w for w in ["the", "xylophone", "sings"] if w not in model.known_words.words
    ]

    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    raw = torch.load(ckpt, weights_only=True)
    assert raw["attn_suite"]["task"] == "translation" and raw["attn_suite"]["format"] == FORMAT_VERSION
    loaded = TranslationModule.load_from_checkpoint(ckpt)
    assert loaded.translate(sources, beam=5) == model.translate(sources, beam=5)
    assert loaded.known_words is not None and loaded.known_words.words == model.known_words.words
    a = model.translate(sources[:2], beam=3, nbest=2, return_attention=True)
    b = loaded.translate(sources[:2], beam=3, nbest=2, return_attention=True)
    assert isinstance(a[0][0], Translation) and len(a[0]) == 2
    for ha, hb in zip(a, b):
        for x, y in zip(ha, hb):
            assert x.text == y.text and x.attention is not None
            torch.testing.assert_close(x.attention, y.attention)
            assert x.attention.shape == (len(x.tgt_tokens), len(x.src_tokens))


def test_unknown_characters_and_overlong_input(tmp_path: Path) -> None:
    dm = _tiny_dm(tmp_path)
    dm.setup("fit")
    model = TranslationModule(embed_dim=16, hidden_dim=16, max_source_tokens=8, max_len=5)
    model.set_tokenizers(dm.src_tokenizer, dm.tgt_tokenizer)  # type: ignore[arg-type]
    out = model.translate(["你好 ☃ wörld", ""], beam=2)
    assert len(out) == 2 and all(isinstance(o, str) for o in out)
    with pytest.warns(UserWarning, match="truncated to max_source_tokens=8"):
        model.translate(["the red car " * 10], beam=1)


# ------------------------------------------------------------------------------------------- CLI
def _cli_base(tmp: Path) -> list[str]:
    return [
        "--config",
        str(CONFIGS / "default.yaml"),
        "--config",
        str(CONFIGS / "tiny.yaml"),
        "--data.cache_dir",
        str(tmp / "cache"),
    ]


def _tiny_ckpt(tmp: Path, name: str = "last.ckpt") -> Path:
    """Checkpoint ``name`` of a ``default.yaml + tiny.yaml`` run started in ``tmp``.

    tiny.yaml has its own root (``runs/translation/tiny``), so its checkpoints land in
    ``runs/translation/tiny/checkpoints``; while a config still pins the callbacks' ``dirpath`` to the
    default run's folder they land there instead (the existing one of the two is returned).
    """
    runs = tmp / "runs" / "translation"
    own = runs / "tiny" / "checkpoints" / name
    pinned = runs / "default" / "checkpoints" / name
    return pinned if pinned.exists() and not own.exists() else own


def test_tiny_overlay_has_its_own_run_folder() -> None:
    import yaml

    tiny = yaml.safe_load((CONFIGS / "tiny.yaml").read_text(encoding="utf-8"))["trainer"]
    assert tiny["default_root_dir"] == "runs/translation/tiny"
    for name in ("default.yaml", "transformer.yaml", "tatoeba.yaml"):
        other = yaml.safe_load((CONFIGS / name).read_text(encoding="utf-8"))["trainer"]
        assert other["default_root_dir"] != tiny["default_root_dir"]
        # Lightning's default logger writes under default_root_dir: moving the run moves its logs too
        assert "logger" not in other
    # No checkpoint dirpath pinned in the overlay: checkpoints follow its default_root_dir.
    assert "runs/translation/default" not in (CONFIGS / "tiny.yaml").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def cli_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint written by ``fit`` through the CLI entry point (tiny overlay)."""
    tmp = tmp_path_factory.mktemp("cli")
    old = os.getcwd()
    os.chdir(tmp)  # the configs write runs/translation/... relative to the working directory
    try:
        torch.set_num_threads(1)
        assert main(["fit", *_cli_base(tmp)]) == 0
    finally:
        os.chdir(old)
    ckpt = _tiny_ckpt(tmp)
    assert ckpt.is_file()
    return ckpt


def test_cli_fast_dev_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["fit", *_cli_base(tmp_path), "--trainer.fast_dev_run", "true"]) == 0


def test_cli_checkpoint_is_weights_only_and_self_contained(cli_ckpt: Path) -> None:
    raw = torch.load(cli_ckpt, weights_only=True)
    meta = raw["attn_suite"]
    assert meta["task"] == "translation" and set(meta["tokenizers"]) == {"src", "tgt"}
    model = TranslationModule.load_from_checkpoint(cli_ckpt)
    assert len(model.translate(["I love you", "the red car"], beam=2)) == 2


def test_cli_translate_args_stdin_nbest_plot(
    cli_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (
        main(
            [
                "translate",
                "--ckpt",
                str(cli_ckpt),
                "--beam",
                "2",
                "I love you",
                "the red car",
                "--plot",
                str(tmp_path / "plots"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "0000_argument_1.png",
        "0001_argument_2.png",
    ]  # input order, unique
    monkeypatch.setattr(sys, "stdin", io.StringIO("I love you\n\nshe sees them\n"))
    assert main(["translate", "--ckpt", str(cli_ckpt), "--beam", "1", "--batch-size", "2"]) == 0
    out = capsys.readouterr().out.split("\n")
    assert len(out) == 4 and out[1] == "" and out[3] == ""  # 3 lines + trailing newline, empty kept
    assert main(["translate", "--ckpt", str(cli_ckpt), "--beam", "3", "--nbest", "2", "I love you"]) == 0
    rows = [r.split("\t") for r in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2 and all(r[0] == "0" and len(r) == 3 for r in rows)


def test_cli_predict_and_test(cli_ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "in.en"
    src.write_text("I love you\n\nthe red car\n", encoding="utf-8")
    out = tmp_path / "out.es"
    assert (
        main(
            [
                "predict",
                *_cli_base(tmp_path),
                "--ckpt_path",
                str(cli_ckpt),
                "--data.predict_path",
                str(src),
                "--predict_output",
                str(out),
            ]
        )
        == 0
    )
    lines = out.read_text(encoding="utf-8").split("\n")
    assert len(lines) == 4 and lines[1] == ""
    assert main(["test", *_cli_base(tmp_path), "--ckpt_path", str(cli_ckpt)]) == 0
    # Data settings that would train a different tokenizer: the checkpoint's tokenizers win.
    with pytest.warns(UserWarning, match="tokenizers differ"):
        assert main(["test", *_cli_base(tmp_path), "--data.vocab_size", "250", "--ckpt_path", str(cli_ckpt)]) == 0


# ------------------------------------------------------------------------------ DDP bookkeeping (no DDP)
def test_finish_eval_scores_each_example_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from core.metrics.text import corpus_bleu

    model = TranslationModule(embed_dim=8, hidden_dim=8)
    model._trainer = SimpleNamespace(world_size=1, sanity_checking=False)  # type: ignore[assignment]
    logged: dict[str, float] = {}
    monkeypatch.setattr(model, "log", lambda name, value, **kw: logged.__setitem__(name, value))
    good, bad = ("the red car", "the red car"), ("a b c d", "w x y z")
    # Example 1 (a bad hypothesis) was repeated by the DDP padding; it must count once.
    rows = [(1, bad), (0, good), (1, bad), (1, bad)]
    model.corpus["test"].update([i for i, _ in rows], [h for _, (h, _) in rows], [[r] for _, (_, r) in rows])
    model._finish_eval("test")
    assert logged["test/bleu"] == pytest.approx(corpus_bleu([good[0], bad[0]], [good[1], bad[1]]))


def test_predict_rows_keep_input_order_and_empty_lines(tmp_path: Path) -> None:
    """predict_step rows carry the dataset index, so the shared writer restores input order after
    length-bucketed (and under DDP, sharded) batches; an empty input line gets an empty output line."""
    from tasks.translation.batching import PairDataset, collate

    dm = _tiny_dm(tmp_path)
    dm.setup("fit")
    model = TranslationModule(embed_dim=16, hidden_dim=16, beam_size=1)
    model.set_tokenizers(dm.src_tokenizer, dm.tgt_tokenizer)
    model.build_model()
    texts = ["the red car", "", "I love you"]
    ids = [dm.src_tokenizer.encode(t) for t in texts]
    ds = PairDataset(ids, [[]] * 3, texts, [""] * 3)
    batch = collate([ds[2], ds[1], ds[0]])  # reordered, as a length-bucketed loader would
    rows = model.predict_step(batch, 0)
    assert [r.index for r in rows] == [2, 1, 0]
    assert rows[1].fields == ("",) and all(len(r.fields) == 1 for r in rows)


# ------------------------------------------------------------------------------------------- bad input
def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_cli_bad_checkpoints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["translate", "--ckpt", str(tmp_path / "missing.ckpt"), "hi"]) == 2
    err = _error(capsys)
    assert err.startswith("error:") and "missing.ckpt" in err
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip" * 10)
    assert main(["translate", "--ckpt", str(corrupt), "hi"]) == 2
    assert "corrupt.ckpt" in _error(capsys)
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "attn_suite": {"task": "captioning", "format": 1}}, other)
    assert main(["translate", "--ckpt", str(other), "hi"]) == 2
    err = _error(capsys)
    assert "captioning" in err and "translation" in err
    # The LightningCLI subcommands check --ckpt_path the same way.
    assert main(["test", *_cli_base(tmp_path), "--ckpt_path", str(other)]) == 2
    assert "captioning" in _error(capsys)


def test_cli_bad_options(cli_ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["translate", "--ckpt", str(cli_ckpt), "--beam", "2", "--nbest", "3", "hi"]) == 2
    assert "--nbest" in _error(capsys)


def test_cli_bad_data_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("I love you\tte quiero\nthe song\tla canción\n".encode("latin-1"))
    args = ["fit", *_cli_base(tmp_path), "--trainer.fast_dev_run", "true", "--data.source", "tatoeba"]
    assert main([*args, "--data.path", str(latin)]) == 2
    err = _error(capsys)
    assert f"{latin}:2" in err and "UTF-8" in err
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("english\tspanish\nI love you\tte quiero\n", encoding="utf-8")
    assert main([*args[:-1], "tsv", "--data.path", str(tsv)]) == 2
    err = _error(capsys)
    assert "missing column" in err and "english" in err
    assert main([*args, "--data.path", str(tmp_path / "nope.txt")]) == 2
    assert "not found" in _error(capsys)


@pytest.mark.shared_data
@pytest.mark.skipif(
    not (Path(__file__).resolve().parents[3] / "shared/data/spa-eng/spa.txt").exists(),
    reason="../shared/data/spa-eng/spa.txt is absent",
)
def test_shared_tatoeba_splits(tmp_path: Path) -> None:
    path = Path(__file__).resolve().parents[3] / "shared/data/spa-eng/spa.txt"
    dm = TranslationDataModule(source="tatoeba", path=str(path), val_size=2000, test_size=2000, cache_dir=str(tmp_path))
    splits = dm.load_splits()
    assert dm.stats["read"] > 100_000
    assert len(splits["test"]) >= 2000 and len(splits["val"]) >= 2000
    train_src = {s for s, _ in splits["train"]}
    assert not train_src & {s for s, _ in splits["test"]}


# ------------------------------------------------------------------------------ resume / determinism
def test_cli_resume_from_last_continues_step_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    base = [
        *_cli_base(tmp_path),
        "--trainer.limit_train_batches",
        "null",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.max_epochs",
        "null",
    ]
    assert main(["fit", *base, "--trainer.max_steps", "3"]) == 0
    last = _tiny_ckpt(tmp_path)
    assert torch.load(last, weights_only=True)["global_step"] == 3
    assert main(["fit", *base, "--trainer.max_steps", "6", "--ckpt_path", "last"]) == 0
    state = torch.load(last, weights_only=True)
    assert state["global_step"] == 6
    assert state["lr_schedulers"][0]["last_epoch"] == 6  # scheduler state resumed too


def test_same_seed_same_losses(tmp_path: Path) -> None:
    import lightning.pytorch as pl

    losses = []
    for _ in range(2):
        pl.seed_everything(0)
        dm = _tiny_dm(tmp_path)
        model = TranslationModule(embed_dim=16, hidden_dim=16, plot_examples=0)
        trainer = pl.Trainer(
            max_steps=4,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            use_distributed_sampler=False,
        )
        trainer.fit(model, dm)
        losses.append(float(trainer.callback_metrics["train/loss"]))
        losses.append(model.translate(["I love you"], beam=2)[0])
    assert losses[0] == losses[2] and losses[1] == losses[3]


@pytest.mark.slow
def test_cli_ddp_two_cpu_processes(tmp_path: Path) -> None:
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tasks.translation.cli",
            "fit",
            *_cli_base(tmp_path),
            "--trainer.strategy",
            "ddp",
            "--trainer.devices",
            "2",
            "--trainer.accelerator",
            "cpu",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "GLOBAL_RANK: 1" in proc.stdout + proc.stderr
    assert len(list((tmp_path / "cache").glob("tokenizers-*.json"))) == 1  # written once (rank 0)
    ckpt = _tiny_ckpt(tmp_path)
    assert torch.load(ckpt, weights_only=True)["attn_suite"]["task"] == "translation"


@pytest.mark.slow
def test_cli_ddp_predict_prints_one_output_in_input_order(
    cli_ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2 CPU processes: each rank translates a shard, rank 0 prints every line once, in input order."""
    import subprocess

    monkeypatch.chdir(tmp_path)
    src = tmp_path / "in.en"
    src.write_text("I love you\n\nthe red car\nshe sees them\nwe walk\nthe dog eats\nthey are here\n", encoding="utf-8")
    args = ["predict", *_cli_base(tmp_path), "--ckpt_path", str(cli_ckpt), "--data.predict_path", str(src)]
    single = tmp_path / "single.es"
    assert main([*args, "--predict_output", str(single)]) == 0
    expected = single.read_text(encoding="utf-8")
    assert len(expected.split("\n")) == 8  # 7 lines + trailing newline
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tasks.translation.cli",
            *args,
            "--trainer.strategy",
            "ddp",
            "--trainer.devices",
            "2",
            "--trainer.accelerator",
            "cpu",
        ],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "GLOBAL_RANK: 1" in proc.stdout + proc.stderr
    # One output in input order, not one copy per rank. (Not byte-equal to the 1-process run: this barely
    # trained model's near-tied beams can flip with the other batch composition of a 2-way shard.)
    lines = [ln for ln in proc.stdout.splitlines() if "INFO" not in ln and "GLOBAL_RANK" not in ln]
    assert len(lines) == 7 and lines[1] == "", proc.stdout  # the empty input line keeps its place
    assert not list(tmp_path.glob("*.rank*"))


@pytest.mark.slow
def test_demo_writes_checkpoint_translations_and_plots(tmp_path: Path) -> None:
    from tasks.translation.demo import DEMO_SENTENCES, QUICK_DATA, run_demo

    report = run_demo(tmp_path / "demo", max_minutes=0.2, n_held_out=5, data=QUICK_DATA)
    assert all(p.is_file() for p in report.files)
    assert report.n_examples == {"test": 5} and set(report.metrics) == {"bleu", "chrf"} and report.train_steps > 0
    assert sum(p.suffix == ".png" for p in report.files) == len(report.examples) == 5  # one alignment per example
    lines = (tmp_path / "demo" / "translations.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1 + 5 + len(DEMO_SENTENCES)  # header, held-out sentences, hand-picked ones
    assert [ln.split("\t")[0] for ln in lines[-len(DEMO_SENTENCES) :]] == DEMO_SENTENCES


@pytest.mark.slow
def test_sigkill_mid_training_then_resume_from_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import time

    long_run = [
        *_cli_base(tmp_path),
        "--trainer.limit_train_batches",
        "null",
        "--trainer.max_epochs",
        "null",
        "--trainer.limit_val_batches",
        "0",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tasks.translation.cli", "fit", *long_run, "--trainer.max_steps", "100000"],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        while not _tiny_ckpt(tmp_path).exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)  # the config writes a rolling last.ckpt every 100 steps
    finally:
        proc.kill()  # SIGKILL: no chance to clean up
        proc.wait()
    last = _tiny_ckpt(tmp_path)
    assert last.exists(), "no checkpoint was written before the kill"
    saved = torch.load(last, weights_only=True)  # atomic save: never a truncated file
    step = saved["global_step"]
    assert step >= 100
    monkeypatch.chdir(tmp_path)
    assert main(["fit", *long_run, "--trainer.max_steps", str(step + 100), "--ckpt_path", "last"]) == 0
    resumed = torch.load(last, weights_only=True)
    assert resumed["global_step"] == step + 100  # continued from the saved step, not from 0
    assert resumed["lr_schedulers"][0]["last_epoch"] == step + 100


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
def test_encoder_skips_packing_without_padding(rnn_type: str) -> None:
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from tasks.translation.models.rnn import RNNEncoder

    torch.manual_seed(0)
    enc = RNNEncoder(30, 8, 6, num_layers=2, rnn_type=rnn_type, dropout=0.0)
    src, lengths = torch.randint(4, 30, (3, 5)), torch.full((3,), 5)
    out, final = enc(src, lengths)
    packed = pack_padded_sequence(enc.embedding(src), lengths, batch_first=True, enforce_sorted=False)
    ref, h = enc.rnn(packed)
    ref, _ = pad_packed_sequence(ref, batch_first=True, total_length=5)
    h = h[0] if isinstance(h, tuple) else h
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(final, torch.cat([h[-2], h[-1]], dim=-1))


def test_rnn_training_step_packs_from_host_lengths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The module hands the encoder CPU lengths taken before the batch moves (no GPU->CPU copy in the
    step); padded batches give the same loss either way."""
    from tasks.translation.models.rnn import RNNEncoder

    dm = _tiny_dm(tmp_path, limit_train_pairs=16)
    dm.setup("fit")
    model = TranslationModule(embed_dim=16, hidden_dim=32, dropout=0.0, plot_examples=0)
    model.set_tokenizers(dm.src_tokenizer, dm.tgt_tokenizer)  # type: ignore[arg-type]
    model.build_model()
    batch = next(iter(dm.train_dataloader()))
    assert batch["src_lengths_host"] == tuple(batch["src_lengths"].tolist())  # the collate keeps them on the host
    batch["src_lengths"][0] = 2  # force padding: the packed path
    moved = {**batch, "src_lengths_host": tuple(batch["src_lengths"].tolist())}
    batch.pop("src_lengths_host")
    seen: list[object] = []
    original = RNNEncoder.forward

    def spy(
        self: RNNEncoder,
        src: torch.Tensor,
        lengths: torch.Tensor,
        host_lengths: torch.Tensor | None = None,
        unpadded: bool = False,
    ):
        seen.append(host_lengths)
        assert not unpadded  # this batch is padded: the module says so
        return original(self, src, lengths, host_lengths, unpadded)

    monkeypatch.setattr(RNNEncoder, "forward", spy)
    with_host = model.task.objective(model.network, moved, "train").loss
    without = model.task.objective(model.network, batch, "train").loss
    assert isinstance(seen[0], torch.Tensor) and seen[0].tolist() == batch["src_lengths"].tolist()
    assert seen[1] is None
    torch.testing.assert_close(with_host, without)


def test_transformer_beam_search_reorders_its_cache_itself() -> None:
    """The Transformer's KV caches follow the beams through ``DecoderState.reorder`` (one copy per step);
    kept as ordinary ``beams`` state, beam search reorders them itself: same hypotheses."""
    from core.decoding.beam import DecoderState, beam_search

    torch.manual_seed(0)
    model = TransformerSeq2Seq(30, 40, d_model=16, num_heads=2, ffn_dim=32, encoder_layers=1, decoder_layers=2).eval()
    src, lengths = torch.randint(4, 30, (3, 6)), torch.tensor([6, 4, 2])
    kw = dict(batch_size=3, bos_id=1, eos_id=2, max_len=8, beam_size=4, nbest=4)
    with torch.no_grad():
        cached = model.init_state(src, lengths)
        assert cached.cache is not None and cached.shared is not None
        orders: list[torch.Tensor] = []

        def step(t: torch.Tensor, s: DecoderState) -> tuple:
            if s.reorder is not None:
                orders.append(s.reorder)
            return model.step(t, s, True)

        fused = beam_search(step, cached, **kw)
        # The same caches as ordinary `beams` state, reordered by beam search itself.
        eager_state = DecoderState(beams=cached.cache, shared=cached.shared)

        def ordinary(t: torch.Tensor, s: DecoderState) -> tuple:
            lp, new, w = model.step(t, DecoderState(shared=s.shared, cache=s.beams), True)
            return lp, DecoderState(beams=new.cache, shared=new.shared), w

        eager = beam_search(ordinary, eager_state, **kw)
    assert fused.tokens == eager.tokens
    assert fused.scores == eager.scores  # the same values copied in one step or two
    for a, b in zip(fused.attention, eager.attention):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y)
    # the caches really were reordered (beams changed parents), not only appended to
    assert any(not torch.equal(o, torch.arange(o.numel())) for o in orders)


def test_transformer_unpadded_batch_runs_without_mask() -> None:
    """Unpadded batches skip the mask (unmasked SDPA) with the same logits; the module decides from its
    host lengths, so a padded batch keeps its mask."""
    torch.manual_seed(0)
    model = TransformerSeq2Seq(30, 40, d_model=16, num_heads=2, ffn_dim=32, encoder_layers=2, decoder_layers=2).eval()
    src, tgt = torch.randint(4, 30, (3, 6)), torch.randint(4, 40, (3, 5))
    full = torch.full((3,), 6)
    with torch.no_grad():
        assert model.encode(src, full, unpadded=True)[1] is None
        assert model.encode(src, full)[1] is not None
        torch.testing.assert_close(model(src, full, tgt, unpadded=True)[0], model(src, full, tgt)[0])
    module = TranslationModule(
        arch="transformer",
        hidden_dim=16,
        num_heads=2,
        ffn_dim=32,
        encoder_layers=1,
        decoder_layers=1,
        dropout=0.0,
        plot_examples=0,
    )
    module.model = model
    seen: list[bool] = []
    original = TransformerSeq2Seq.forward

    def spy(self: TransformerSeq2Seq, *args: object, unpadded: bool = False, **kw: object) -> object:
        seen.append(unpadded)
        return original(self, *args, unpadded=unpadded, **kw)

    import unittest.mock

    def batch(lengths: torch.Tensor, host: tuple[int, ...] | None) -> dict[str, object]:
        out = {"src": src, "src_lengths": lengths, "tgt_in": tgt, "tgt_out": tgt}
        return out if host is None else {**out, "src_lengths_host": host}

    with unittest.mock.patch.object(TransformerSeq2Seq, "forward", spy), torch.no_grad():
        module.task.objective(model, batch(full, (6, 6, 6)), "val")
        module.task.objective(model, batch(torch.tensor([6, 3, 1]), (6, 3, 1)), "val")
        module.task.objective(model, batch(full, None), "val")  # no host lengths: the mask stays
    assert seen == [True, False, False]
