"""The lean inference path of speech: :meth:`Transcriber.from_pretrained` loads a model folder or ``.ckpt`` without
Lightning, through the same checks as ``SpeechModule.from_pretrained``, and transcribes exactly as the module does
(greedy, beam, joint CTC, n-best, chunk alignments, ``decode_features``); ``attn-asr transcribe`` runs on it."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from core.errors import CheckpointError, ConfigError
from tasks.speech.inference import Hypothesis, Transcriber, Transcription

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "compat_v2" / "speech"
EXPECTED: dict[str, Any] = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))
HEAVY = ("lightning", "torchmetrics", "lightning_fabric", "transformers", "torch._dynamo")
SR = 16000


def _tone(seconds: float, freq: float, pause: float = 0.0) -> torch.Tensor:
    """A tone ``(N,)`` at 16 kHz, with ``pause`` seconds of silence in its middle (where a chunk may be cut)."""
    t = np.arange(int(seconds * SR)) / SR
    wav = 0.3 * np.sin(2 * np.pi * freq * t) * (1.0 + 0.5 * np.sin(2 * np.pi * 3.0 * t))
    if pause:
        mid = len(wav) // 2
        wav[mid : mid + int(pause * SR)] = 0.0
    return torch.from_numpy(wav.astype(np.float32))


def _audio() -> list[tuple[torch.Tensor, int]]:
    """Three inputs: two short tones and a longer one with a pause (cut into chunks at ``max_chunk_seconds=1``)."""
    return [(_tone(0.6, 300.0), SR), (_tone(0.9, 700.0), SR), (_tone(2.2, 500.0, pause=0.3), SR)]


def _tiny(tmp: Path, **options: Any) -> tuple[Any, Path, Path]:
    """A random tiny SpeechModule, written as a model folder and as a ``.ckpt`` (as ``fit`` writes it)."""
    from tasks.speech.module import SpeechModule

    torch.manual_seed(0)
    settings: dict[str, Any] = {
        "encoder_dim": 8,
        "encoder_layers": 1,
        "hidden_dim": 8,
        "embed_dim": 8,
        "dropout": 0.0,
        "plot_examples": 0,
        "max_chunk_seconds": 1.0,
        "attention_options": {"hidden_dim": 8, "conv_channels": 2, "kernel_size": 3},
        **options,
    }
    model = SpeechModule(**settings).eval()
    with torch.no_grad():  # larger weights than the init: transcripts that depend on the audio
        for p in model.parameters():
            p.mul_(3.0)
    folder = Path(model.save_pretrained(tmp / "model"))
    ckpt: dict[str, Any] = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    model.on_save_checkpoint(ckpt)
    path = tmp / "model.ckpt"
    torch.save(ckpt, path)
    return model, folder, path


def _same(a: Any, b: Any) -> None:
    """Equal transcripts, scores, alignments."""
    if isinstance(a, (list, tuple)):
        assert isinstance(b, type(a)) and len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
        return
    if isinstance(a, Transcription):
        assert isinstance(b, Transcription) and a.text == b.text
        assert [t for t, _ in a.nbest] == [t for t, _ in b.nbest]
        assert [s for _, s in a.nbest] == pytest.approx([s for _, s in b.nbest], rel=1e-6, abs=1e-6)
        assert len(a.chunks) == len(b.chunks)
        for x, y in zip(a.chunks, b.chunks):
            assert (x.tokens, x.start) == (y.tokens, y.start)
            torch.testing.assert_close(x.spec, y.spec)
            torch.testing.assert_close(x.weights, y.weights)
        return
    if isinstance(a, Hypothesis):
        assert isinstance(b, Hypothesis) and a.text == b.text
        assert a.score == pytest.approx(b.score, rel=1e-6, abs=1e-6)
        assert (a.attention is None) == (b.attention is None)
        if a.attention is not None:
            torch.testing.assert_close(a.attention, b.attention)
        return
    assert a == b


OPTIONS = {
    "lstm-location": {},
    "conformer-joint-ctc": {
        "encoder": "conformer",
        "num_heads": 2,
        "ctc_weight": 0.5,
        "joint_ctc_decoding": True,
        "attention": "multihead",
        "attention_options": {"num_heads": 2},
    },
    "ctc-alone": {"ctc_weight": 1.0},
    "none": {"attention": "none", "attention_options": None},
}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_lean_transcriber_matches_the_module(name: str, tmp_path: Path) -> None:
    from tasks.speech.module import SpeechModule

    model, folder, ckpt = _tiny(tmp_path, **OPTIONS[name])
    audio = _audio()
    for path in (folder, ckpt):
        library = SpeechModule.from_pretrained(path)
        lean = Transcriber.from_pretrained(path)
        assert lean.device == torch.device("cpu") and not lean.network.training
        assert lean.search == library.transcriber.search and lean.max_chunk_seconds == library.max_chunk_seconds == 1.0
        assert lean.tokenizer.to_dict() == library.tokenizer.to_dict() and lean.feature_cfg == library.feature_cfg
        _same(lean.transcribe(audio, beam=1), model.transcribe(audio, beam=1))
        for beam, nbest in ((1, 1), (3, 1), (3, 3)):
            want = library.transcribe(audio, beam=beam, nbest=nbest, return_attention=True)
            _same(lean.transcribe(audio, beam=beam, nbest=nbest, return_attention=True), want)
            _same(lean.transcribe(audio, beam=beam, nbest=nbest), library.transcribe(audio, beam=beam, nbest=nbest))
        assert lean.transcribe(audio[0]) == library.transcribe(audio[0])
        feats = [lean.logmel(w) for w, _ in audio]
        lens = torch.tensor([f.shape[0] for f in feats])
        batch = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)  # (B, T, F)
        _same(
            lean.decode_features(batch, lens, beam=3, nbest=2, with_attention=True),
            library.decode_features(batch, lens, beam=3, nbest=2, with_attention=True),
        )


def _maker() -> Any:
    """The fixture's script: its ``outputs`` makes the very calls whose results ``expected.json`` holds."""
    spec = importlib.util.spec_from_file_location("speech_compat_fixture_lean", FIXTURES / "make_fixture.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Named(Transcriber):
    """``make_fixture.outputs`` reads the network under the module's attribute name (``model``)."""

    @property
    def model(self) -> Any:
        return self.network


@pytest.mark.parametrize("name", [*sorted(EXPECTED["models"]), "lstm_location/"])
def test_lean_transcriber_reads_old_files_as_before(name: str) -> None:
    """The committed files of commit bedf076 (``test_speech_compat.py``; the front end's weights under the module's
    own names): the lean path decodes what that code did (greedy, n-best, chunks, joint CTC, decode_features)."""
    model = name.rstrip("/")
    path = FIXTURES / model if name.endswith("/") else FIXTURES / f"{model}.ckpt"
    if name.endswith("/"):
        assert EXPECTED["models"][model]["folder"]
    lean = Transcriber.from_pretrained(path)
    named = _Named(lean.network, lean.tokenizer, lean.search, lean.max_chunk_seconds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = json.loads(json.dumps(_maker().outputs(named)))  # tuples as lists, as in the JSON
    assert got == EXPECTED["models"][model]["outputs"]


def test_lean_transcriber_overrides(tmp_path: Path) -> None:
    _, folder, _ = _tiny(tmp_path)
    lean = Transcriber.from_pretrained(folder, ctc_weight=0.5, joint_ctc_decoding=True, max_chunk_seconds=5.0)
    assert (lean.search.ctc_weight, lean.search.joint_ctc_decoding) == (0.5, True)
    assert lean.max_chunk_seconds == 1.0  # the stored chunking range decides, as in the module
    with pytest.raises(ConfigError, match="no option lr"):
        Transcriber.from_pretrained(folder, lr=0.1)


def _tamper(path: Path, kind: str) -> None:
    ckpt = torch.load(path, weights_only=True)
    if kind == "too-large":
        ckpt["hyper_parameters"]["hidden_dim"] = 99_999
    elif kind == "wrong-type":
        ckpt["hyper_parameters"]["encoder_layers"] = "two"
    elif kind == "wrong-shape":
        name = next(k for k, v in ckpt["state_dict"].items() if v.dim() == 2 and k.startswith("model.decoder"))
        ckpt["state_dict"][name] = torch.zeros(3, 5)
    elif kind == "nan":
        name = next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point() and "decoder" in k)
        ckpt["state_dict"][name] = torch.full_like(ckpt["state_dict"][name], float("nan"))
    elif kind == "bad-encoder":
        ckpt["hyper_parameters"]["encoder"] = "wavenet"
    elif kind == "bad-units":
        ckpt["attn_suite"]["units"] = {"kind": "char", "chars": 7}
    elif kind == "bad-stats":
        ckpt["state_dict"]["model.stats.std"] = torch.zeros_like(ckpt["state_dict"]["model.stats.std"])
    elif kind == "bad-chunk":
        ckpt["attn_suite"]["max_chunk_seconds"] = 9000.0
    elif kind == "instantiation":
        ckpt["hyper_parameters"]["attention_options"] = {"class_path": "os.system"}
    torch.save(ckpt, path)


TAMPERED = {
    "too-large": "hyper-parameter 'hidden_dim' = 99999: expected a value in",
    "wrong-type": "hyper-parameter 'encoder_layers' = 'two': expected int",
    "wrong-shape": "does not fit",
    "nan": "NaN or infinite",
    "bad-encoder": "model.encoder='wavenet': expected one of lstm, pblstm, transformer, conformer",
    "bad-units": "malformed speech units",
    "bad-stats": "feature statistics are not finite or have a zero/negative std",
    "bad-chunk": "max_chunk_seconds = 9000.0, expected seconds in [1, 600]",
    "instantiation": "would name Python code to import",
}


@pytest.mark.parametrize("kind", list(TAMPERED))
def test_lean_transcriber_refuses_tampered_files_naming_them(kind: str, tmp_path: Path) -> None:
    from tasks.speech.module import SpeechModule

    _, _, path = _tiny(tmp_path)
    _tamper(path, kind)
    with pytest.raises(CheckpointError) as lean:
        Transcriber.from_pretrained(path)
    assert str(path) in str(lean.value) and TAMPERED[kind] in str(lean.value), lean.value
    with pytest.raises(CheckpointError) as library:  # the module refuses it with the same words
        SpeechModule.from_pretrained(path)
    assert str(path) in str(library.value) and TAMPERED[kind] in str(library.value), library.value


def test_lean_transcriber_bad_files(bad_checkpoints: Any, bad_checkpoint_kind: str) -> None:
    path = bad_checkpoints(bad_checkpoint_kind, "speech")
    with pytest.raises(CheckpointError) as info:
        Transcriber.from_pretrained(path)
    assert bad_checkpoints.expected(bad_checkpoint_kind, "speech") in str(info.value)
    assert str(path.name) in str(info.value)


def test_lean_transcriber_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a folder|not found"):
        Transcriber.from_pretrained(tmp_path / "nowhere")
    _, folder, _ = _tiny(tmp_path)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    (folder / "config.json").write_text(json.dumps({**config, "task": "captioning"}), encoding="utf-8")
    with pytest.raises(CheckpointError, match=f"model folder {folder} holds a 'captioning' model"):
        Transcriber.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({**config, "architecture": "Other"}), encoding="utf-8")
    with pytest.raises(CheckpointError, match="holds a 'Other', expected a SpeechModule"):
        Transcriber.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "preprocessor_config.json").write_text(json.dumps({"n_mels": 0}), encoding="utf-8")
    with pytest.raises(CheckpointError, match="n_mels"):
        Transcriber.from_pretrained(folder)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_lean_transcriber_imports_no_lightning() -> None:
    """Loading a model folder and a ``.ckpt`` and transcribing imports none of Lightning, torchmetrics, transformers
    and torch._dynamo (an ``hf:`` encoder would need transformers: rebuilt from its stored config)."""
    code = (
        "import sys, torch\n"
        "from tasks.speech.inference import Transcriber\n"
        f"t = Transcriber.from_pretrained({str(FIXTURES / 'lstm_location')!r})\n"
        "assert isinstance(t.transcribe((torch.zeros(8000), 16000)), str)\n"
        f"t = Transcriber.from_pretrained({str(FIXTURES / 'conformer_joint.ckpt')!r})\n"
        "t.transcribe((torch.sin(torch.arange(12000) / 5.0), 16000), beam=2, nbest=2)\n"
        f"bad = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
        "assert not bad, bad\n"
    )
    out = _run(code)
    assert out.returncode == 0, out.stderr


def test_transcribe_subcommand_imports_no_lightning(tmp_path: Path) -> None:
    """``attn-asr transcribe`` loads through the lean Transcriber: none of the heavy modules, and the lines the
    library call gives (n-best rows with scores too)."""
    from tasks.speech.module import SpeechModule

    wav = tmp_path / "tone.wav"
    sf.write(wav, _tone(0.9, 700.0).numpy(), SR)
    folder = FIXTURES / "lstm_location"
    code = (
        "import sys\n"
        "from tasks.speech.cli import main\n"
        f"assert main(['transcribe', '--ckpt', {str(folder)!r}, {str(wav)!r}, '--beam', '3', '--nbest', '2']) == 0\n"
        f"bad = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
        "assert not bad, bad\n"
    )
    out = _run(code)
    assert out.returncode == 0, out.stderr
    res = SpeechModule.from_pretrained(folder).transcribe(str(wav), beam=3, nbest=2)
    assert isinstance(res, Transcription)
    rows = [f"{wav}\t{s:.4f}\t{t}" for t, s in res.nbest] if res.nbest else [f"{wav}\t\t"]  # as cli._decode prints
    assert out.stdout.splitlines() == rows
