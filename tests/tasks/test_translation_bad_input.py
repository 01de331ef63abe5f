"""Bad-input table of ``tasks/translation/README.md``: one test (or more) per row.

Every fixture is generated in ``tmp_path``; CLI rows call ``tasks.translation.cli.main(argv)`` and check
the exit status and stderr (``error:`` prefix, the file named, no traceback).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

from tasks.translation.cli import main
from tasks.translation.data import TranslationDataModule

if TYPE_CHECKING:
    from conftest import BadCheckpoints

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "translation"


def _fit_args(tmp: Path, *extra: str) -> list[str]:
    return [
        "fit",
        "--config",
        str(CONFIGS / "default.yaml"),
        "--config",
        str(CONFIGS / "tiny.yaml"),
        "--data.cache_dir",
        str(tmp / "cache"),
        "--trainer.fast_dev_run",
        "true",
        *extra,
    ]


# ------------------------------------------------------------------------ spa.txt: bad lines skipped
def test_tatoeba_bad_lines_skipped_counted_first_five_then_total(tmp_path: Path) -> None:
    good = [f"sentence {i}\tfrase {i}" for i in range(6)]
    bad = ["", "no tab here", "\tsolo español", "only english\t", "   ", "another no tab", "\t"]  # 7 bad lines
    path = tmp_path / "spa.txt"
    path.write_text("\n".join(good[:3] + bad + good[3:]) + "\n", encoding="utf-8")
    dm = TranslationDataModule(source="tatoeba", path=str(path), val_size=1, test_size=1)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        dm.load_splits()
    msgs = [str(w.message) for w in rec if str(w.message).startswith("skipped ")]
    assert dm.stats["skipped_lines"] == 7 and dm.stats["read"] == 6
    # the first 5 bad lines one by one, with file:line ...
    assert msgs[:5] == [
        f"skipped {path}:4: empty line",
        f"skipped {path}:5: no tab (expected 'english<TAB>spanish[<TAB>attribution]')",
        f"skipped {path}:6: empty sentence",
        f"skipped {path}:7: empty sentence",
        f"skipped {path}:8: empty line",
    ]
    # ... then one total naming the first
    assert msgs[5:] == [f"skipped 7 bad lines in {path} in total (first at {path}:4)"]


# ------------------------------------------------------------------------ fatal data errors: exit 2
def test_cli_tsv_missing_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user_error: Callable[[], str]
) -> None:
    monkeypatch.chdir(tmp_path)
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("english\tspanish\nI love you\tte quiero\n", encoding="utf-8")
    assert main(_fit_args(tmp_path, "--data.source", "tsv", "--data.path", str(tsv))) == 2
    err = user_error()
    assert err.startswith(f"error: {tsv}:1: missing column(s) ['en', 'es']; the header has ['english', 'spanish']")


def test_cli_non_utf8_names_file_line_and_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user_error: Callable[[], str]
) -> None:
    monkeypatch.chdir(tmp_path)
    latin = tmp_path / "spa.txt"
    latin.write_bytes("I love you\tte quiero\nthe song\tla canción\n".encode("latin-1"))
    assert main(_fit_args(tmp_path, "--data.source", "tatoeba", "--data.path", str(latin))) == 2
    err = user_error()
    assert err.startswith(f"error: {latin}:2: not valid UTF-8 (byte 0xf3 at column 18)"), err


def test_cli_parallel_files_differ_in_length(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user_error: Callable[[], str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.en").write_text("I love you\nthe red car\n", encoding="utf-8")
    (tmp_path / "train.es").write_text("te quiero\n", encoding="utf-8")
    assert main(_fit_args(tmp_path, "--data.source", "parallel", "--data.path", str(tmp_path / "train"))) == 2
    err = user_error()
    assert err.startswith(
        f"error: parallel files differ in length: {tmp_path / 'train.en'} has 2 lines, {tmp_path / 'train.es'} has 1"
    ), err


def test_cli_missing_data_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user_error: Callable[[], str]) -> None:
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "nope.txt"
    assert main(_fit_args(tmp_path, "--data.source", "tatoeba", "--data.path", str(missing))) == 2
    assert user_error() == f"error: data file not found: {missing}"


# ------------------------------------------------------------------------ length limits, unknown chars
def _embedded_dm(tmp: Path, **kw: object) -> TranslationDataModule:
    args = dict(
        n_pairs=400, val_size=16, test_size=16, vocab_size=250, min_freq=1, max_tokens=512, cache_dir=str(tmp / "cache")
    )
    args.update(kw)
    return TranslationDataModule(**args)  # type: ignore[arg-type]


def test_long_training_pairs_dropped_eval_pairs_truncated(tmp_path: Path) -> None:
    limit = 6
    dm = _embedded_dm(tmp_path, max_tokens_per_sentence=limit)
    with pytest.warns(
        UserWarning,
        match=rf"train: dropped \d+ pairs longer than "
        rf"--data.max_tokens_per_sentence={limit} subword tokens",
    ):
        dm.setup("fit")
    splits = dm.load_splits()
    train, val = dm.datasets["train"], dm.datasets["val"]
    assert 0 < len(train) < len(splits["train"])  # some dropped, not all
    assert max(map(len, train.src_ids)) <= limit and max(map(len, train.tgt_ids)) + 1 <= limit
    assert len(val) == len(splits["val"])  # evaluation keeps every pair ...
    assert max(map(len, val.src_ids)) <= limit and max(map(len, val.tgt_ids)) <= limit - 1  # ... truncated
    long_val = [s for s, _ in splits["val"] if len(dm.src_tokenizer.encode(s)) > limit]  # type: ignore[union-attr]
    assert long_val, "the fixture should hold validation sentences over the limit"


def test_unseen_characters_map_to_unk(tmp_path: Path) -> None:
    from tasks.translation.module import TranslationModule

    dm = _embedded_dm(tmp_path)
    dm.setup("fit")
    tok = dm.src_tokenizer
    assert tok is not None
    ids = tok.encode("the ☃ car 你好")
    assert tok.unk_id in ids
    model = TranslationModule(embed_dim=16, hidden_dim=16, max_len=4)
    model.set_tokenizers(dm.src_tokenizer, dm.tgt_tokenizer)  # type: ignore[arg-type]
    out = model.translate(["☃☃☃", "你好 ☃ wörld"], beam=2)
    assert len(out) == 2 and all(isinstance(o, str) for o in out)


# ------------------------------------------------------------------------ checkpoints: exit 2
def test_cli_translate_bad_checkpoint(
    bad_checkpoint_kind: str, bad_checkpoints: BadCheckpoints, tmp_path: Path, user_error: Callable[[], str]
) -> None:
    kind = bad_checkpoint_kind
    path = bad_checkpoints(kind, "translation")
    assert main(["translate", "--ckpt", str(path), "hi"]) == 2
    err = user_error()
    assert str(path) in err and bad_checkpoints.expected(kind, "translation") in err, err


def test_cli_ckpt_path_bad_checkpoints(
    bad_checkpoints: BadCheckpoints, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user_error: Callable[[], str]
) -> None:
    """``fit/test --ckpt_path`` get the same checks as ``translate --ckpt``."""
    monkeypatch.chdir(tmp_path)
    base = [
        "--config",
        str(CONFIGS / "default.yaml"),
        "--config",
        str(CONFIGS / "tiny.yaml"),
        "--data.cache_dir",
        str(tmp_path / "cache"),
    ]
    for kind in bad_checkpoints.kinds:
        path = bad_checkpoints(kind, "translation")
        assert main(["test", *base, "--ckpt_path", str(path)]) == 2, kind
        err = user_error()
        assert str(path) in err and bad_checkpoints.expected(kind, "translation") in err, (kind, err)
    assert main(["fit", *base, "--ckpt_path", str(tmp_path / "missing.ckpt")]) == 2
    assert str(tmp_path / "missing.ckpt") in user_error()


# ------------------------------------------------------------------------ bad options: exit 2
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--beam", "2", "--nbest", "3"], "error: --nbest must be between 1 and --beam (2), got 3"),
        (["--beam", "0"], "error: --beam must be between 1 and 128, got 0"),
    ],
)
def test_cli_bad_beam_nbest(args: list[str], expected: str, tmp_path: Path, user_error: Callable[[], str]) -> None:
    # Options are checked before the checkpoint is opened: a missing file is not what gets reported.
    assert main(["translate", "--ckpt", str(tmp_path / "never-read.ckpt"), *args, "hi"]) == 2
    assert user_error() == expected


# ------------------------------------------------------------------------ tampered checkpoints: exit 2
def _real_checkpoint(tmp: Path) -> dict:
    """A checkpoint dict as ``fit`` writes it (hyper-parameters, weights, tokenizers), built in memory."""
    from core.text.tokenizers import CharTokenizer
    from tasks.translation.module import TranslationModule

    tok = CharTokenizer.train(["I love you", "te quiero", "the red car", "el coche rojo"])
    model = TranslationModule(embed_dim=8, hidden_dim=8, plot_examples=0)
    model.set_tokenizers(tok, tok)
    model.build_model()
    import lightning

    ckpt = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": lightning.__version__,
    }
    model.on_save_checkpoint(ckpt)
    return ckpt


def _tampered(tmp: Path, kind: str) -> Path:
    ckpt = _real_checkpoint(tmp)
    if kind == "wrong-shape":
        name = next(k for k, v in ckpt["state_dict"].items() if v.dim() == 2)
        ckpt["state_dict"][name] = torch.zeros(3, 5)
    elif kind == "no-tokenizers":
        del ckpt["attn_suite"]["tokenizers"]
    elif kind == "bad-tokenizer":
        ckpt["attn_suite"]["tokenizers"]["tgt"] = {"type": "nonsense"}
    elif kind == "no-state-dict":
        del ckpt["state_dict"]
    path = tmp / f"{kind}.ckpt"
    torch.save(ckpt, path)
    return path


TAMPERED = {
    "ok": None,
    "wrong-shape": "does not fit TranslationModule",
    "no-tokenizers": "has no tokenizers",
    "bad-tokenizer": "the stored 'tgt' tokenizer is malformed",
    "no-state-dict": "has no 'state_dict'",
}
# the CLI loads through the lean Translator (no Lightning), which names what it builds its own way
CLI_TAMPERED = {**TAMPERED, "wrong-shape": "does not fit the translation network of its own options"}


@pytest.mark.parametrize("kind", list(TAMPERED))
def test_tampered_checkpoint_is_a_checkpoint_error_naming_the_file(
    kind: str, tmp_path: Path, user_error: Callable[[], str]
) -> None:
    from core.errors import CheckpointError
    from tasks.translation.module import TranslationModule

    path = _tampered(tmp_path, kind)
    expected = TAMPERED[kind]
    if expected is None:  # the untampered fixture loads: the failures below come from the tampering
        assert len(TranslationModule.load_from_checkpoint(path).translate(["I love you"], beam=1)) == 1
        return
    with pytest.raises(CheckpointError, match="does not fit|no tokenizers|malformed|state_dict") as info:
        TranslationModule.load_from_checkpoint(path)
    assert str(path) in str(info.value) and expected in str(info.value)
    assert main(["translate", "--ckpt", str(path), "--beam", "1", "hi"]) == 2
    err = user_error()
    assert str(path) in err and CLI_TAMPERED[kind] in err, err


# ------------------------------------------------------------------------ bad data options: exit 2
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--data.max_tokens", "0"], "error: --data.max_tokens must be >= 1, got 0"),
        (["--data.eval_max_tokens", "-5"], "error: --data.eval_max_tokens must be >= 1, got -5"),
        (["--data.max_batch_size", "0"], "error: --data.max_batch_size must be >= 1, got 0"),
        (["--data.val_size", "-1"], "error: --data.val_size must be >= 0, got -1"),
        (
            ["--data.n_pairs", "300", "--data.val_size", "200", "--data.test_size", "200"],
            "error: --data.val_size + --data.test_size (200+200) must be smaller than the",
        ),
    ],
)
def test_cli_bad_data_options(
    args: list[str], expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user_error: Callable[[], str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(_fit_args(tmp_path, *args)) == 2
    err = user_error()
    assert err.startswith(expected), err


def test_grammar_too_many_pairs_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.errors import ConfigError
    from tasks.translation import grammar

    # A grammar that can only say one sentence: any n_pairs above the anchors is impossible.
    monkeypatch.setattr(grammar._Sampler, "sentence", lambda self: ("same", "igual"))
    n = len(grammar.anchor_pairs()) + 5
    with pytest.raises(ConfigError, match=rf"--data.n_pairs={n} is more than the embedded grammar produces"):
        grammar.generate_corpus(n, seed=0)


def test_cli_ckpt_path_weights_do_not_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user_error: Callable[[], str]
) -> None:
    """``test --ckpt_path`` with weights that do not fit the configured model: exit 2, file named."""
    monkeypatch.chdir(tmp_path)
    path = _tampered(tmp_path, "wrong-shape")
    base = [
        "--config",
        str(CONFIGS / "default.yaml"),
        "--config",
        str(CONFIGS / "tiny.yaml"),
        "--data.cache_dir",
        str(tmp_path / "cache"),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the checkpoint's tokenizers differ ..."
        assert main(["test", *base, "--ckpt_path", str(path)]) == 2
    err = user_error()
    assert str(path) in err and "does not fit the configured TranslationModule" in err, err


@pytest.fixture
def cli_ckpt(tmp_path: Path) -> Path:
    from tiny_models import save_checkpoint, tiny_translation

    return save_checkpoint(tiny_translation(), tmp_path / "tiny.ckpt")


def test_translate_bad_lines_keep_the_others_and_the_alignment(
    cli_ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Invalid UTF-8 or a NUL byte costs only its own line: error on stderr, an empty output line in its place,
    every other line translated, exit 1. A sentence with TeX-like dollars still gets its figure."""
    import io
    import sys

    raw = b"I love you\n\xff\xfe broken\nthe red car\nnul\x00here\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8"))
    code = main(["translate", "--ckpt", str(cli_ckpt), "--beam", "1"])
    out, err = capsys.readouterr()
    assert code == 1 and "Traceback" not in err
    lines = out.split("\n")[:-1]
    assert len(lines) == 4 and lines[1] == "" and lines[3] == "" and lines[0] and lines[2]
    assert "error: stdin line 2: not valid UTF-8" in err and "error: stdin line 4: contains a NUL byte" in err
    code = main(["translate", "--ckpt", str(cli_ckpt), "the car costs $5 and $\\frac{", "--plot", str(tmp_path / "p")])
    assert code == 0 and (tmp_path / "p").is_dir() and len(list((tmp_path / "p").iterdir())) == 1
    assert main(["translate", "--ckpt", str(cli_ckpt), "--beam", "100000", "x"]) == 2
    assert "--beam must be between 1 and 128" in capsys.readouterr().err
    (tmp_path / "plotfile").write_text("x")
    assert main(["translate", "--ckpt", str(cli_ckpt), "x", "--plot", str(tmp_path / "plotfile")]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
