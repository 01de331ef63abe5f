"""Bad-input table of ``tasks/speech/README.md``: the rows ``tests/tasks/test_speech.py`` does not check fully.

No eSpeak NG needed: audio is sine tones written with soundfile, the checkpoint is a tiny untrained
model saved the way ``on_save_checkpoint`` does. CLI rows call ``tasks.speech.cli.main(argv)`` and check
the exit status and stderr (``error:`` prefix, the file named, no traceback).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from core.checkpoint import make_metadata
from tasks.speech.audio import SAMPLE_RATE, load_audio
from tasks.speech.cli import main
from tasks.speech.data import BucketedSpeechDataset, make_char_tokenizer, validate_utterances
from tasks.speech.features import FeatureConfig
from tasks.speech.sources import Utterance

# main(argv) from pytest: LightningCLI warns that the host process has its own sys.argv, which is expected.
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI.s args parameter")


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def tone(seconds: float, sr: int = SAMPLE_RATE, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _user_error(capsys: pytest.CaptureFixture[str]) -> str:
    """stderr of a CLI call that failed with a user error: one ``error:`` line, no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tasks.speech.module import SpeechModule

    torch.manual_seed(0)
    m = SpeechModule(encoder_hidden=8, encoder_layers=1, decoder_hidden=8, embed_dim=8, beam_size=1,
                     attention_options={"hidden_dim": 8, "conv_channels": 2, "kernel_size": 3})
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


def test_transcribe_cli_bad_files_reported_others_transcribed(tiny_ckpt: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.wav"
    sf.write(good, tone(0.5), SAMPLE_RATE)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(8000, np.float32), SAMPLE_RATE)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00garbage" * 10)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), SAMPLE_RATE)
    code = main(["transcribe", "--ckpt", str(tiny_ckpt), str(good), str(corrupt), str(silent), str(empty),
                 "--beam", "1"])
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
    utts = [Utterance(str(tmp_path / "ok.wav"), "ok", duration=0.3),
            Utterance(str(tmp_path / "silent.wav"), "hush", duration=0.3),
            Utterance(str(tmp_path / "gone.wav"), "gone", duration=0.3)]  # removed after validation
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


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return (os.makedirs, (str(self.marker),))


CKPT_KINDS = {"missing": "checkpoint file not found", "truncated": "truncated, corrupt or not a PyTorch checkpoint",
              "not-a-checkpoint": "truncated, corrupt or not a PyTorch checkpoint", "unsafe": "could run code",
              "other-task": "is a 'translation' checkpoint, expected a 'speech' checkpoint"}


def _bad_checkpoint(tmp: Path, kind: str) -> Path:
    path = tmp / f"{kind}.ckpt"
    if kind == "truncated":
        torch.save({"state_dict": {"w": torch.ones(64)}, "attn_suite": make_metadata("speech")}, path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "not-a-checkpoint":
        path.write_bytes(b"junk")
    elif kind == "unsafe":
        torch.save({"state_dict": {}, "attn_suite": make_metadata("speech"), "x": _Evil(tmp / "pwned")}, path)
    elif kind == "other-task":
        torch.save({"state_dict": {}, "attn_suite": make_metadata("translation")}, path)
    return path  # "missing": never written


@pytest.mark.parametrize("kind", list(CKPT_KINDS))
def test_transcribe_cli_bad_checkpoint(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _bad_checkpoint(tmp_path, kind)
    assert main(["transcribe", "--ckpt", str(path), str(tmp_path / "a.wav")]) == 2
    err = _user_error(capsys)
    assert str(path) in err and CKPT_KINDS[kind] in err, err
    assert not (tmp_path / "pwned").exists()


def test_cli_ckpt_path_bad_checkpoints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``test/fit --ckpt_path`` get the same checks as ``transcribe --ckpt`` (before any data is made)."""
    base = [f"--trainer.default_root_dir={tmp_path / 'run'}", f"--data.cache_dir={tmp_path / 'cache'}",
            "--trainer.logger=false"]
    for kind in CKPT_KINDS:
        path = _bad_checkpoint(tmp_path, kind)
        assert main(["test", *base, "--ckpt_path", str(path)]) == 2, kind
        err = _user_error(capsys)
        assert str(path) in err and CKPT_KINDS[kind] in err, err
    assert main(["fit", *base, "--ckpt_path", str(tmp_path / "missing.ckpt")]) == 2
    assert str(tmp_path / "missing.ckpt") in _user_error(capsys)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())  # nothing synthesised
    assert not (tmp_path / "pwned").exists()
