"""Bad-input table of ``tasks/speech/README.md``: the rows ``tests/tasks/test_speech.py`` does not check fully.

No eSpeak NG needed: audio is sine tones written with soundfile, the checkpoint is a tiny untrained
model saved the way ``on_save_checkpoint`` does. CLI rows call ``tasks.speech.cli.main(argv)`` and check
the exit status and stderr (``error:`` prefix, the file named, no traceback).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import soundfile as sf
import torch

from tasks.speech.audio import SAMPLE_RATE, load_audio
from tasks.speech.batching import BucketedSpeechDataset
from tasks.speech.cli import main
from tasks.speech.data import make_char_tokenizer, validate_utterances
from tasks.speech.features import FeatureConfig
from tasks.speech.sources import Utterance

if TYPE_CHECKING:
    from conftest import BadCheckpoints

# main(argv) from pytest: LightningCLI warns that the host process has its own sys.argv, which is expected.
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI.s args parameter")


def tone(seconds: float, sr: int = SAMPLE_RATE, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tasks.speech.module import SpeechModule

    torch.manual_seed(0)
    m = SpeechModule(
        encoder_dim=8,
        encoder_layers=1,
        hidden_dim=8,
        embed_dim=8,
        beam_size=1,
        attention_options={"hidden_dim": 8, "conv_channels": 2, "kernel_size": 3},
    )
    ckpt = {"state_dict": m.state_dict(), "hyper_parameters": dict(m.hparams)}
    m.on_save_checkpoint(ckpt)
    path = tmp_path_factory.mktemp("asr_ckpt") / "tiny.ckpt"
    torch.save(ckpt, path)
    return path


def test_stereo_channels_are_averaged(tmp_path: Path) -> None:
    left = tone(0.5)
    sf.write(tmp_path / "st.wav", np.stack([left, np.zeros_like(left)], axis=1), SAMPLE_RATE)  # right silent
    x = load_audio(tmp_path / "st.wav").numpy()
    np.testing.assert_allclose(x, left / 2, atol=1e-4)  # the mean of the channels, not one of them


def test_transcribe_cli_bad_files_reported_others_transcribed(
    tiny_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.wav"
    sf.write(good, tone(0.5), SAMPLE_RATE)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(8000, np.float32), SAMPLE_RATE)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00garbage" * 10)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), SAMPLE_RATE)
    code = main(
        ["transcribe", "--ckpt", str(tiny_ckpt), str(good), str(corrupt), str(silent), str(empty), "--beam", "1"]
    )
    out, err = capsys.readouterr()
    assert code == 1
    assert [ln.split("\t")[0] for ln in out.splitlines()] == [str(good), str(silent)]  # silent: no crash
    assert "Traceback" not in err
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 2
    assert errors[0].startswith(f"error: {corrupt}: cannot read audio")
    assert errors[1] == f"error: {empty}: the audio is empty (zero samples)"


def test_silent_and_unreadable_audio_skipped_when_loaded(tmp_path: Path) -> None:
    sf.write(tmp_path / "ok.wav", tone(0.3), SAMPLE_RATE)
    sf.write(tmp_path / "silent.wav", np.zeros(4800, np.float32), SAMPLE_RATE)
    utts = [
        Utterance(str(tmp_path / "ok.wav"), "ok", duration=0.3),
        Utterance(str(tmp_path / "silent.wav"), "hush", duration=0.3),
        Utterance(str(tmp_path / "gone.wav"), "gone", duration=0.3),
    ]  # removed after validation
    ds = BucketedSpeechDataset(utts, make_char_tokenizer(), FeatureConfig())
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        batch = ds[0]
    msgs = " ".join(str(w.message) for w in rec)
    assert "silent.wav: the audio is digital silence" in msgs and "gone.wav" in msgs
    assert ds.num_failed == 2 and batch["texts"] == ["ok"]


def test_training_skips_utterances_over_max_seconds(tmp_path: Path) -> None:
    sf.write(tmp_path / "short.wav", tone(0.5), SAMPLE_RATE)
    sf.write(tmp_path / "long.wav", tone(2.0), SAMPLE_RATE)
    utts = [Utterance(str(tmp_path / "short.wav"), "short"), Utterance(str(tmp_path / "long.wav"), "long")]
    with pytest.warns(UserWarning, match=r"src: skipped 1 utterance\(s\): longer than max_seconds=1.0: .*long"):
        kept = validate_utterances(utts, "src", max_seconds=1.0)
    assert [u.text for u in kept] == ["short"]


def test_transcribe_cli_bad_checkpoint(
    bad_checkpoint_kind: str, bad_checkpoints: BadCheckpoints, tmp_path: Path, user_error: Callable[[], str]
) -> None:
    kind = bad_checkpoint_kind
    path = bad_checkpoints(kind, "speech")
    assert main(["transcribe", "--ckpt", str(path), str(tmp_path / "a.wav")]) == 2
    err = user_error()
    assert str(path) in err and bad_checkpoints.expected(kind, "speech") in err, err


def test_cli_ckpt_path_bad_checkpoints(
    bad_checkpoints: BadCheckpoints, tmp_path: Path, user_error: Callable[[], str]
) -> None:
    """``test/fit --ckpt_path`` get the same checks as ``transcribe --ckpt`` (before any data is made)."""
    base = [
        f"--trainer.default_root_dir={tmp_path / 'run'}",
        f"--data.cache_dir={tmp_path / 'cache'}",
        "--trainer.logger=false",
    ]
    for kind in bad_checkpoints.kinds:
        path = bad_checkpoints(kind, "speech")
        assert main(["test", *base, "--ckpt_path", str(path)]) == 2, kind
        err = user_error()
        assert str(path) in err and bad_checkpoints.expected(kind, "speech") in err, (kind, err)
    assert main(["fit", *base, "--ckpt_path", str(tmp_path / "missing.ckpt")]) == 2
    assert str(tmp_path / "missing.ckpt") in user_error()
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())  # nothing synthesised


# ---------------------------------------------------------------------------------------------
# review fixes: NaN audio, checkpoints that do not fit, skip counts, readers, empty splits, padding
# ---------------------------------------------------------------------------------------------
def _nan_wav(path: Path, seconds: float = 0.3) -> Path:
    x = tone(seconds)
    x[100] = np.nan
    sf.write(path, x, SAMPLE_RATE, subtype="FLOAT")
    return path


def test_nan_audio_rejected_naming_the_file(tmp_path: Path) -> None:
    from core.errors import DataError

    bad = _nan_wav(tmp_path / "nan.wav")
    with pytest.raises(DataError, match=r"nan\.wav: the audio contains 1 NaN or infinite sample"):
        load_audio(bad)
    inf = tone(0.2)
    inf[5] = np.inf
    with pytest.raises(DataError, match="NaN or infinite"):
        load_audio((inf, SAMPLE_RATE))


def test_transcribe_cli_nan_file_gets_an_error_line(
    tiny_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.wav"
    sf.write(good, tone(0.3), SAMPLE_RATE)
    bad = _nan_wav(tmp_path / "nan.wav")
    assert main(["transcribe", "--ckpt", str(tiny_ckpt), str(bad), str(good), "--beam", "1"]) == 1
    out, err = capsys.readouterr()
    assert [ln.split("\t")[0] for ln in out.splitlines()] == [str(good)]
    assert "Traceback" not in err and f"error: {bad}: the audio contains" in err


def test_feature_stats_must_be_finite() -> None:
    from core.errors import DataError
    from tasks.speech.features import FeatureStats

    feats = [torch.randn(20, 80), torch.randn(20, 80)]
    feats[1][3, 7] = float("nan")
    st = FeatureStats()
    with pytest.raises(DataError, match="not finite"):
        st.fit(feats)
    assert not bool(st.initialized)  # left untouched


def _tampered(tiny_ckpt: Path, tmp: Path, how: str) -> Path:
    ckpt = torch.load(tiny_ckpt, weights_only=True)
    if how == "shape":
        key = "model.ctc_head.weight"
        ckpt["state_dict"][key] = torch.zeros(ckpt["state_dict"][key].shape[0] + 1, ckpt["state_dict"][key].shape[1])
    elif how == "missing-key":
        del ckpt["state_dict"]["model.ctc_head.bias"]
    else:
        del ckpt["state_dict"]
    path = tmp / f"{how}.ckpt"
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize(
    "how,msg",
    [
        ("shape", r"model\.ctc_head\.weight: \(\d+, \d+\) in the file"),
        ("missing-key", "missing model.ctc_head.bias"),
        ("no-state-dict", "has no 'state_dict'"),
    ],
)
def test_tampered_checkpoint_is_a_checkpoint_error(
    how: str, msg: str, tiny_ckpt: Path, tmp_path: Path, user_error: Callable[[], str]
) -> None:
    from core.errors import CheckpointError
    from tasks.speech.module import SpeechModule

    path = _tampered(tiny_ckpt, tmp_path, how)
    with pytest.raises(CheckpointError, match=msg) as e:
        SpeechModule.load_from_checkpoint(path)
    assert str(path) in str(e.value)
    assert main(["transcribe", "--ckpt", str(path), str(tmp_path / "a.wav")]) == 2
    err = user_error()
    assert str(path) in err and re.search(msg, err), err


def test_load_from_checkpoint_moves_module_to_map_location(tiny_ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`transcribe --device X` must run on X: the module (not only the loaded tensors) goes to map_location.

    No GPU here, so the target is the "meta" device: tensors are read onto the CPU, then the module
    must end up on meta.
    """
    from tasks.speech import module as mod

    m = mod.SpeechModule.load_from_checkpoint(tiny_ckpt, map_location="meta")
    assert {p.device.type for p in m.parameters()} == {"meta"}
    assert m.device.type == "meta" and not m.training


def test_empty_batch_skips_the_step_alone_and_gives_a_zero_loss_under_ddp() -> None:
    """One process: None (no update at all). Under DDP a rank that skips backward deadlocks the gradient
    all-reduce: a zero loss reaching every parameter instead."""
    from types import SimpleNamespace

    from tasks.speech.module import SpeechModule

    m = SpeechModule(
        encoder_dim=8,
        encoder_layers=1,
        hidden_dim=8,
        embed_dim=8,
        attention_options={"hidden_dim": 8, "conv_channels": 2, "kernel_size": 3},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log without a trainer
        assert m.training_step({"empty": True, "skipped": 3}, 0) is None
        m._trainer = SimpleNamespace(world_size=2)  # type: ignore[assignment]
        m.log = lambda *a, **k: None  # type: ignore[method-assign]
        loss = m.training_step({"empty": True, "skipped": 3}, 0)
    assert isinstance(loss, torch.Tensor) and loss.requires_grad and float(loss.detach()) == 0.0
    loss.backward()
    params = [p for p in m.parameters() if p.requires_grad]
    assert all(p.grad is not None and not p.grad.any() for p in params)


def test_ctc_infeasible_count() -> None:
    from tasks.speech.losses import ctc_infeasible

    tokens = torch.tensor([[5, 6, 7, 0], [5, 5, 5, 5], [5, 5, 0, 0]])
    token_lens = torch.tensor([3, 4, 2])
    # needs 3, 4 + 3 repeats = 7, 2 + 1 = 3 frames
    enc_lens = torch.tensor([3, 6, 3])
    assert float(ctc_infeasible(tokens, token_lens, enc_lens)) == 1.0
    assert float(ctc_infeasible(tokens, token_lens, torch.tensor([2, 7, 2]))) == 2.0


def _jsonl(path: Path, rows: list[tuple[Path, str]]) -> Path:
    import json

    path.write_text("".join(json.dumps({"path": str(p), "text": t}) + "\n" for p, t in rows))
    return path


def test_fit_logs_skipped_utterances_batches_and_ctc_infeasible(tmp_path: Path) -> None:
    """A NaN file in training (readable header, so only found when loaded): skipped, counted through a
    DataLoader worker and logged; its batch (max_batch=1) is empty and still trains (zero loss); a
    transcript too long for its audio is counted as CTC-infeasible; the feature stats stay finite."""
    import lightning as L

    from tasks.speech.data import SpeechDataModule
    from tasks.speech.module import SpeechModule

    rows = []
    for i in range(3):
        sf.write(tmp_path / f"ok{i}.wav", tone(0.3, freq=300.0 + 100 * i), SAMPLE_RATE)
        rows.append((tmp_path / f"ok{i}.wav", "hi"))
    rows.append((_nan_wav(tmp_path / "nan.wav"), "hi"))
    rows.append((tmp_path / "ok0.wav", "a transcript far too long for a third of a second"))
    train = _jsonl(tmp_path / "train.jsonl", rows)
    val = _jsonl(tmp_path / "val.jsonl", [(tmp_path / "ok1.wav", "hi")])
    dm = SpeechDataModule(train=str(train), val=str(val), num_workers=1, max_batch=1, max_seconds=5.0)
    model = SpeechModule(
        encoder_dim=8,
        encoder_layers=1,
        hidden_dim=8,
        embed_dim=8,
        beam_size=1,
        plot_examples=0,
        attention_options={"hidden_dim": 8, "conv_channels": 2, "kernel_size": 3},
    )
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
        devices=1,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, dm)
    m = trainer.callback_metrics
    assert float(m["train/skipped_utterances"]) == 1.0
    assert float(m["train/skipped_batches"]) == 1.0
    assert float(m["train/ctc_infeasible"]) == 1.0
    assert float(m["val/skipped_utterances"]) == 0.0
    assert torch.isfinite(model.stats.mean).all() and torch.isfinite(model.stats.std).all()


def test_row_warnings_are_summarised(tmp_path: Path) -> None:
    from tasks.speech.batching import MAX_ROW_WARNINGS

    utts = [Utterance(str(tmp_path / f"gone{i}.wav"), "x", duration=0.3) for i in range(MAX_ROW_WARNINGS + 4)]
    ds = BucketedSpeechDataset(utts, make_char_tokenizer(), FeatureConfig())
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        batch = ds[0]
    assert batch["empty"] and int(batch["skipped"]) == len(utts)
    msgs = [str(w.message) for w in rec]
    assert len(msgs) == MAX_ROW_WARNINGS + 1 and "train/skipped_utterances" in msgs[-1], msgs


def test_hf_dataset_that_cannot_be_loaded_is_a_data_error(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    from core.errors import DataError
    from tasks.speech.sources import read_hf_dataset

    junk = tmp_path / "not_a_dataset"
    junk.mkdir()
    (junk / "x.txt").write_text("hello")
    with pytest.raises(DataError, match="could not load HF dataset .*not_a_dataset"):
        read_hf_dataset(str(junk))


@pytest.mark.parametrize("name", ["m.jsonl", "m.tsv", "m.csv", "LibriSpeech"])
def test_non_utf8_text_files_name_file_and_line(name: str, tmp_path: Path) -> None:
    from core.errors import DataError
    from tasks.speech.sources import read_source

    sf.write(tmp_path / "a.wav", tone(0.2), SAMPLE_RATE)
    if name == "LibriSpeech":
        d = tmp_path / "LibriSpeech" / "1" / "2"
        d.mkdir(parents=True)
        sf.write(d / "1-2-0000.flac", tone(0.2), SAMPLE_RATE)
        f = d / "1-2.trans.txt"
        f.write_bytes(b"1-2-0000 HELLO\n1-2-0001 CAF\xc9\n")  # Latin-1, not UTF-8
        src = tmp_path / "LibriSpeech"
    else:
        f = tmp_path / name
        sep = {"m.jsonl": None, "m.tsv": b"\t", "m.csv": b","}[name]
        if sep is None:
            f.write_bytes(b'{"path": "a.wav", "text": "ok"}\n{"path": "a.wav", "text": "caf\xe9"}\n')
        else:
            f.write_bytes(b"path" + sep + b"text\na.wav" + sep + b"ok\na.wav" + sep + b"caf\xe9\n")
        src = f
    line = 2 if name in ("m.jsonl", "LibriSpeech") else 3
    with pytest.raises(DataError, match=rf"{f.name}:{line}: not valid UTF-8"):
        read_source(src)


def test_non_finite_manifest_duration_read_from_header(tmp_path: Path) -> None:
    from tasks.speech.sources import read_manifest

    sf.write(tmp_path / "a.wav", tone(0.5), SAMPLE_RATE)
    (tmp_path / "m.csv").write_text("path,text,duration\na.wav,one,nan\na.wav,two,inf\na.wav,three,0.5\n")
    with pytest.warns(UserWarning, match=r"2 row\(s\) have a non-finite duration .*m.csv:2, .*m.csv:3"):
        utts = read_manifest(tmp_path / "m.csv")
    assert [u.duration for u in utts] == [None, None, 0.5]
    kept = validate_utterances(utts, "m", max_seconds=None)
    assert [u.duration for u in kept] == [0.5, 0.5, 0.5]
    ds = BucketedSpeechDataset(kept, make_char_tokenizer(), FeatureConfig())
    assert sum(len(b) for b in ds.batches) == 3


@pytest.mark.parametrize("stage", ["fit", "validate", "test"])
def test_empty_eval_split_is_a_data_error_at_setup(stage: str, tmp_path: Path) -> None:
    from core.errors import DataError
    from tasks.speech.data import SpeechDataModule

    sf.write(tmp_path / "ok.wav", tone(0.3), SAMPLE_RATE)
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)
    good = _jsonl(tmp_path / "good.jsonl", [(tmp_path / "ok.wav", "hi")] * 3)
    bad = _jsonl(tmp_path / "bad.jsonl", [(tmp_path / "bad.wav", "hi")])
    split = "test" if stage == "test" else "validation"
    kw = {"test": str(bad), "val": str(good)} if stage == "test" else {"val": str(bad)}
    dm = SpeechDataModule(train=str(good), num_workers=0, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match=rf"bad.jsonl: no usable {split} utterances"):
            dm.setup(stage)


@pytest.mark.parametrize("encoder", ["lstm", "pblstm", "transformer", "conformer"])
def test_encoder_output_does_not_depend_on_batch_padding(encoder: str) -> None:
    """Eval mode: an utterance encodes the same alone and batched with a longer one (padding never leaks
    into valid frames: conv subsampling, the conformer's depthwise conv, the pyramid's frame pairs)."""
    from tasks.speech.model import ASRModel

    torch.manual_seed(0)
    m = ASRModel(
        32,
        encoder=encoder,
        encoder_dim=16,
        encoder_layers=3 if encoder == "pblstm" else 2,
        num_heads=2,
        hidden_dim=16,
        embed_dim=8,
        attention_options={"hidden_dim": 8},
    ).eval()
    short, long = torch.randn(1, 37, 80), torch.randn(1, 90, 80)
    batch = torch.full((2, 90, 80), 3.0)  # normalised padding is not zero: use a value that would show
    batch[0, :37], batch[1] = short[0], long[0]
    with torch.no_grad():
        alone, mask1, ctc1 = m.encode(short, torch.tensor([37]))
        both, mask2, ctc2 = m.encode(batch, torch.tensor([37, 90]))
    n = int(mask1.sum())
    assert int(mask2[0].sum()) == n
    torch.testing.assert_close(both[0, :n], alone[0, :n], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ctc2[0, :n], ctc1[0, :n], atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_ddp_rank_with_an_empty_batch_does_not_hang(tmp_path: Path) -> None:
    """DDP on 2 CPU processes, one batch per step per rank (max_batch=1), one batch holding only a NaN
    file: that rank's step is empty and must still join the gradient all-reduce (zero loss); the
    skipped utterance is summed over the ranks in the logged metrics."""
    import csv
    import subprocess
    import sys

    rows = []
    for i in range(3):
        sf.write(tmp_path / f"ok{i}.wav", tone(0.3, freq=300.0 + 100 * i), SAMPLE_RATE)
        rows.append((tmp_path / f"ok{i}.wav", "hi"))
    rows.append((_nan_wav(tmp_path / "nan.wav"), "hi"))
    train = _jsonl(tmp_path / "train.jsonl", rows)
    val = _jsonl(tmp_path / "val.jsonl", [(tmp_path / "ok1.wav", "hi")] * 2)
    args = [
        "fit",
        f"--data.train={train}",
        f"--data.val={val}",
        "--data.max_batch=1",
        "--data.num_workers=0",
        "--model.encoder_dim=8",
        "--model.encoder_layers=1",
        "--model.hidden_dim=8",
        "--model.embed_dim=8",
        '--model.attention_options={"hidden_dim": 8, "conv_channels": 2, "kernel_size": 3}',
        "--model.beam_size=1",
        "--model.plot_examples=0",
        "--trainer.max_epochs=1",
        "--trainer.strategy=ddp",
        "--trainer.devices=2",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={tmp_path / 'logs'}",
    ]
    script = tmp_path / "ddp_fit.py"
    # Lightning's DDP launcher re-runs the script for rank 1, so it needs a real file with a main guard.
    script.write_text(
        f"import sys\nfrom tasks.speech.cli import main\nif __name__ == '__main__':\n    sys.exit(main({args!r}))\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (metrics,) = (tmp_path / "logs").rglob("metrics.csv")
    with open(metrics, newline="") as f:
        logged = [r for r in csv.DictReader(f) if r.get("train/skipped_utterances")]
    assert [float(r["train/skipped_utterances"]) for r in logged] == [1.0]
    assert [float(r["train/skipped_batches"]) for r in logged] == [1.0]


def test_transcribe_short_huge_and_silent_audio(
    tiny_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Too short: an error naming the file, the others still transcribed. Samples far beyond full scale are
    scaled down (no inf features). Digital silence is transcribed as nothing, not as an invented sentence."""
    good, short, huge, silent = (tmp_path / f"{n}.wav" for n in ("good", "short", "huge", "silent"))
    sf.write(good, tone(0.5), SAMPLE_RATE)
    sf.write(short, tone(0.005), SAMPLE_RATE)  # 80 samples
    sf.write(huge, tone(0.5) * 1e20, SAMPLE_RATE, subtype="FLOAT")
    sf.write(silent, np.zeros(48000, np.float32), SAMPLE_RATE)
    code = main(["transcribe", "--ckpt", str(tiny_ckpt), str(good), str(short), str(huge), str(silent)])
    out, err = capsys.readouterr()
    assert code == 1 and "Traceback" not in err
    rows = [ln.split("\t") for ln in out.splitlines()]
    assert [r[0] for r in rows] == [str(good), str(huge), str(silent)]
    assert rows[2] == [str(silent), ""]
    assert f"error: {short}: the audio is too short (80 samples at 16000 Hz; at least 400" in err


def test_transcribe_nbest_lines_and_unique_plots(
    tiny_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    sf.write(tmp_path / "a" / "x.wav", tone(0.5), SAMPLE_RATE)
    sf.write(tmp_path / "b" / "x.wav", tone(0.5, freq=500.0), SAMPLE_RATE)  # same base name
    code = main(
        [
            "transcribe",
            "--ckpt",
            str(tiny_ckpt),
            str(tmp_path / "a" / "x.wav"),
            str(tmp_path / "b" / "x.wav"),
            "--beam",
            "3",
            "--nbest",
            "2",
            "--plot",
            str(tmp_path / "plots"),
        ]
    )
    assert code == 0
    rows = [ln.split("\t") for ln in capsys.readouterr().out.splitlines()]
    assert all(len(r) == 3 for r in rows) and 2 <= len(rows) <= 4
    float(rows[0][1])  # a score
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["0000_x.png", "0001_x.png"]


def test_manifest_field_types_are_checked(tmp_path: Path) -> None:
    import json

    from core.errors import DataError
    from tasks.speech.sources import read_manifest

    sf.write(tmp_path / "a.wav", tone(0.3), SAMPLE_RATE)
    (tmp_path / "m.jsonl").write_text(json.dumps({"path": "a.wav", "text": ["hi", "there"]}) + "\n")
    with pytest.raises(DataError, match=r"m\.jsonl:1: field 'text' \(the transcript\) is a list, expected a string"):
        read_manifest(tmp_path / "m.jsonl")


@pytest.mark.parametrize(
    "kw", [{"val_fraction": -0.5}, {"val_fraction": 1.0}, {"max_frames": 0}, {"max_batch": 0}, {"max_seconds": 0.0}]
)
def test_bad_data_options_are_config_errors(kw: dict) -> None:
    from core.errors import ConfigError
    from tasks.speech.data import SpeechDataModule

    with pytest.raises(ConfigError, match="data."):
        SpeechDataModule(**kw)


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("units", {"type": "char", "vocab": 5}, "malformed speech units"),
        ("units", {"type": "char", "vocab": ["<pad>", "<s>", "</s>", "<unk>", "a"]}, "units number"),
        ("max_chunk_seconds", 0.001, r"max_chunk_seconds = 0\.001"),
        ("feature_config", {"n_mels": 100000}, r"feature_config\.n_mels"),
        ("feature_config", {"sample_rate": 16000, "f_max": 12000.0}, "inconsistent"),
    ],
)
def test_tampered_speech_metadata(field: str, value: object, match: str, tiny_ckpt: Path, tmp_path: Path) -> None:
    from core.errors import CheckpointError
    from tasks.speech.module import SpeechModule

    ckpt = torch.load(tiny_ckpt, weights_only=True)
    ckpt["attn_suite"][field] = value
    torch.save(ckpt, tmp_path / "t.ckpt")
    with pytest.raises(CheckpointError, match=match):
        SpeechModule.load_from_checkpoint(tmp_path / "t.ckpt")


def test_zero_feature_std_is_refused(tiny_ckpt: Path, tmp_path: Path) -> None:
    from core.errors import CheckpointError
    from tasks.speech.module import SpeechModule

    ckpt = torch.load(tiny_ckpt, weights_only=True)
    ckpt["state_dict"]["model.stats.std"] = torch.zeros_like(ckpt["state_dict"]["model.stats.std"])
    torch.save(ckpt, tmp_path / "t.ckpt")
    with pytest.raises(CheckpointError, match="zero/negative std"):
        SpeechModule.load_from_checkpoint(tmp_path / "t.ckpt")


def test_short_training_clips_still_give_a_loadable_checkpoint(tmp_path: Path) -> None:
    """Trained only on clips under a second, the stored chunk length is clamped into what loading accepts."""
    from types import SimpleNamespace

    from tiny_models import save_checkpoint, tiny_speech

    from tasks.speech.module import SpeechModule

    m = tiny_speech()
    m.max_chunk_seconds = None
    dm = SimpleNamespace(splits={"train": [Utterance("a.wav", "x", duration=0.4)]}, feature_stats=None)
    m._trainer = SimpleNamespace(datamodule=dm, strategy=SimpleNamespace(root_device=torch.device("cpu")))  # type: ignore[assignment]
    m.setup("fit")
    assert m.max_chunk_seconds == 1.0
    m._trainer = None
    again = SpeechModule.load_from_checkpoint(save_checkpoint(m, tmp_path / "s.ckpt"))
    assert again.max_chunk_seconds == 1.0
