"""ONNX Runtime export of speech networks (``tasks.speech.onnx_graphs``) and ``attn-asr export --format onnx`` end to
end: the graphs, driven by the same beam search and the same CTC scoring in PyTorch (n-best rescoring, joint CTC
prefix scores, CTC alone), transcribe as the PyTorch network does; int8 graphs run; bad graphs, a missing runtime
and an export handed to the Lightning module are refused."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

pytest.importorskip("onnxruntime")

from core.engines.folder import EngineFolder
from core.errors import CheckpointError, ConfigError
from tasks.speech.cli import main
from tasks.speech.features import FeatureConfig, FeatureStats
from tasks.speech.inference import Hypothesis, SearchOptions, Transcriber
from tasks.speech.network import build_network
from tasks.speech.onnx_graphs import load_onnx, write_onnx
from tasks.speech.stored import StoredOptions, make_char_tokenizer

SR = 16000
#: score tolerance of n-best lists: float32 sums in another order (ONNX Runtime's kernels) move a log-prob by
#: ~1e-6 per step (measured: at most 4e-6 on these networks); a difference this small can only swap hypotheses
#: whose scores tie to that precision
SCORE_TOL = 1e-4
BASE: dict[str, Any] = {
    "encoder_dim": 8,
    "encoder_layers": 1,
    "hidden_dim": 8,
    "embed_dim": 8,
    "dropout": 0.0,
    "attention_options": {"hidden_dim": 8, "conv_channels": 2, "kernel_size": 3},
}
NETWORKS: dict[str, dict[str, Any]] = {
    "lstm-location": {},
    "pblstm-location": {"encoder": "pblstm", "encoder_layers": 3},
    "transformer-location": {"encoder": "transformer", "encoder_dim": 16, "num_heads": 2},
    "conformer-location": {"encoder": "conformer", "encoder_dim": 16, "num_heads": 2},
    "lstm-additive": {"attention": "additive", "attention_options": {"hidden_dim": 16}, "hidden_dim": 16},
    "lstm-multihead": {"attention": "multihead", "attention_options": {"num_heads": 2}},
}
#: the other attentions: exported and checked greedily with joint CTC decoding
MORE_ATTENTIONS = ("dot", "scaled_dot", "general", "none", "pooling")
#: how the beam is scored: n-best rescored with CTC, joint CTC prefix scores, attention alone, CTC alone
SEARCHES = {
    "rescore": SearchOptions(0.3, False),
    "joint": SearchOptions(0.3, True),
    "attention": SearchOptions(0.0, False),
    "ctc-alone": SearchOptions(1.0, False),
}


def _features() -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch of log-mel-like features ``(4, 61, 80)`` of different lengths (odd and even counts)."""
    g = torch.Generator().manual_seed(1)
    feats = 3.0 * torch.randn(4, 61, 80, generator=g)  # (B, T, F)
    lens = torch.tensor([61, 45, 30, 17])
    for i, n in enumerate(lens):
        feats[i, n:] = 0.0
    return feats, lens


def _transcriber(options: dict[str, Any]) -> tuple[Transcriber, StoredOptions]:
    """A tiny random network (weights scaled up so that outputs depend on the input) with the character units."""
    torch.manual_seed(0)
    units = make_char_tokenizer()
    so = StoredOptions(**{**BASE, **options})
    cfg = FeatureConfig()
    network, _ = build_network(so, units.vocab_size, cfg, FeatureStats(cfg.n_mels), None)
    with torch.no_grad():
        for p in network.parameters():
            p.mul_(3.0)
    return Transcriber(network.eval(), units, max_chunk_seconds=1.0), so


def _folder(path: Path, info: dict[str, Any], quantize: str = "float32") -> EngineFolder:
    return EngineFolder(path, "onnxruntime", quantize, {}, {}, info, f"model folder {path}")


def _export(eager: Transcriber, options: StoredOptions, path: Path, quantize: str = "float32") -> Transcriber:
    info = write_onnx(eager.network, options, path / "onnx", quantize)  # type: ignore[arg-type]
    json.dumps(info)  # plain data: goes into config.json as it is
    network = load_onnx(_folder(path, info, quantize), options, eager.feature_cfg, threads=1)
    return Transcriber(network, eager.tokenizer, max_chunk_seconds=1.0)


def _same_nbest(eager: list[list[Hypothesis]], graphs: list[list[Hypothesis]]) -> None:
    """The same hypotheses with scores within :data:`SCORE_TOL`; a swap only between hypotheses that tie."""
    assert len(eager) == len(graphs)
    for e, g in zip(eager, graphs):
        assert len(e) == len(g)
        for k, (a, b) in enumerate(zip(e, g)):
            assert b.score == pytest.approx(a.score, abs=SCORE_TOL)
            if a.text != b.text:
                neighbours = [e[j].score for j in (k - 1, k + 1) if 0 <= j < len(e)]
                assert any(abs(s - a.score) < SCORE_TOL for s in neighbours), (k, a.text, b.text)


@pytest.mark.parametrize("name", list(NETWORKS))
def test_graphs_transcribe_as_the_network(name: str, tmp_path: Path) -> None:
    eager, options = _transcriber(NETWORKS[name])
    graphs = _export(eager, options, tmp_path)
    assert graphs.device == torch.device("cpu") and graphs.engine == "onnxruntime" and eager.engine == "pytorch"
    assert not list(graphs.network.parameters())
    torch.testing.assert_close(graphs.stats.mean, eager.stats.mean)
    feats, lens = _features()
    for search in SEARCHES.values():
        eager.search = graphs.search = search
        # greedy: identical transcripts, scores and attention close
        want = eager.decode_features(feats, lens, beam=1, with_attention=True)
        got = graphs.decode_features(feats, lens, beam=1, with_attention=True)
        assert [h[0].text for h in got] == [h[0].text for h in want]
        assert len({h[0].text for h in want}) > 1  # the inputs give different outputs: equality says something
        for a, b in zip(want, got):
            assert b[0].score == pytest.approx(a[0].score, abs=SCORE_TOL)
            assert (a[0].attention is None) == (b[0].attention is None) == (search.ctc_weight >= 1.0)
            if a[0].attention is not None and b[0].attention is not None:
                # float32 rounding of other kernels carried through up to 20 steps (translation's tolerance)
                torch.testing.assert_close(b[0].attention, a[0].attention, atol=2e-4, rtol=1e-3)
        # beam 4, 3-best
        _same_nbest(eager.decode_features(feats, lens, beam=4, nbest=3), graphs.decode_features(feats, lens, 4, 3))


@pytest.mark.parametrize("attention", MORE_ATTENTIONS)
def test_other_attentions_export(attention: str, tmp_path: Path) -> None:
    eager, options = _transcriber({"attention": attention, "attention_options": None})
    graphs = _export(eager, options, tmp_path)
    feats, lens = _features()
    eager.search = graphs.search = SEARCHES["joint"]
    want = eager.decode_features(feats, lens, beam=1)
    assert [h[0].text for h in graphs.decode_features(feats, lens, beam=1)] == [h[0].text for h in want]


def test_int8_graphs_run(tmp_path: Path) -> None:
    eager, options = _transcriber(NETWORKS["lstm-location"])
    info = write_onnx(eager.network, options, tmp_path / "onnx", "int8")  # type: ignore[arg-type]
    # the encoder's LSTMs and projections, the decoder's matrix products and embedding
    assert info["quantized_nodes"].get("encoder.onnx:DynamicQuantizeLSTM", 0) == 2  # forward and backward
    assert info["quantized_nodes"].get("step.onnx:MatMulInteger", 0) > 0
    assert info["quantized_nodes"].get("step.onnx:Gather", 0) == 1
    network = load_onnx(_folder(tmp_path, info, "int8"), options, eager.feature_cfg)
    graphs = Transcriber(network, eager.tokenizer, SEARCHES["joint"])
    feats, lens = _features()
    out = graphs.decode_features(feats, lens, beam=3, nbest=2, with_attention=True)
    units = set(eager.tokenizer.decode([i]) for i in range(4, eager.tokenizer.vocab_size))
    for hyps, n in zip(out, lens):  # outputs may differ from float32: valid transcripts of the right shape
        assert len(hyps) == 2
        for h in hyps:
            assert set(h.text) <= units | {" "} and h.score <= 0.0
            assert h.attention is not None and h.attention.shape[1] == (int(n) + 3) // 4
            assert torch.isfinite(h.attention).all()


def test_tampered_and_foreign_graphs_are_refused(tmp_path: Path) -> None:
    eager, options = _transcriber(NETWORKS["lstm-location"])
    info = write_onnx(eager.network, options, tmp_path / "a" / "onnx", "float32")  # type: ignore[arg-type]
    cfg = eager.feature_cfg
    load_onnx(_folder(tmp_path / "a", info), options, cfg)  # as written: loads
    other, other_options = _transcriber(NETWORKS["transformer-location"])
    write_onnx(other.network, other_options, tmp_path / "b" / "onnx", "float32")  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match="graphs of a 'lstm' encoder, but its options say 'transformer'"):
        load_onnx(_folder(tmp_path / "a", info), other_options, cfg)
    # another model's encoder graph of the same inputs and outputs (16-wide states either way): its digest refuses it
    shutil.copy(tmp_path / "b" / "onnx" / "encoder.onnx", tmp_path / "a" / "onnx" / "encoder.onnx")
    with pytest.raises(CheckpointError, match=r"encoder\.onnx: the graph was changed after export"):
        load_onnx(_folder(tmp_path / "a", info), options, cfg)
    with pytest.raises(CheckpointError, match="feature_stats"):
        load_onnx(_folder(tmp_path / "a", {**info, "feature_stats": {"mean": [0.0], "std": [1.0]}}), options, cfg)
    bad = json.loads(json.dumps(info))
    bad["graphs"]["encoder"] = "../x.onnx"  # config.json must not point outside the folder
    with pytest.raises(CheckpointError, match="'encoder' graph file"):
        load_onnx(_folder(tmp_path / "a", bad), options, cfg)
    (tmp_path / "a" / "onnx" / "encoder.onnx").write_bytes(b"not a graph")
    with pytest.raises(CheckpointError, match=r"encoder\.onnx: not a loadable ONNX graph"):
        load_onnx(_folder(tmp_path / "a", info), options, cfg)


# ----------------------------------------------------------------------------------------------
# end to end: attn-asr export --format onnx, transcribe --ckpt, Transcriber.from_pretrained
# ----------------------------------------------------------------------------------------------
def _tone(seconds: float, freq: float, pause: float = 0.0) -> np.ndarray:
    """A tone at 16 kHz, with ``pause`` seconds of silence in its middle (where a chunk may be cut)."""
    t = np.arange(int(seconds * SR)) / SR
    wav = 0.3 * np.sin(2 * np.pi * freq * t) * (1.0 + 0.5 * np.sin(2 * np.pi * 3.0 * t))
    if pause:
        mid = len(wav) // 2
        wav[mid : mid + int(pause * SR)] = 0.0
    return wav.astype(np.float32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    """A PyTorch model folder (joint CTC decoding), its ONNX export written by the CLI, and audio files (one cut
    into chunks)."""
    from tasks.speech.module import SpeechModule

    tmp = tmp_path_factory.mktemp("asr-onnx")
    torch.manual_seed(0)
    model = SpeechModule(plot_examples=0, max_chunk_seconds=1.0, joint_ctc_decoding=True, **BASE).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    folder = Path(model.save_pretrained(tmp / "model"))
    assert main(["export", "--ckpt", str(folder), "--out", str(tmp / "onnx"), "--format", "onnx"]) == 0
    paths = []
    for i, (seconds, freq, pause) in enumerate([(0.6, 300.0, 0.0), (0.9, 700.0, 0.0), (2.2, 500.0, 0.3)]):
        paths.append(str(tmp / f"a{i}.wav"))
        sf.write(paths[-1], _tone(seconds, freq, pause), SR)
    return folder, tmp / "onnx", paths


def test_onnx_export_transcribes_as_pytorch_from_the_cli(
    exported: tuple[Path, Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, out, audio = exported
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert (config["engine"], config["quantize"], config["task"]) == ("onnxruntime", "float32", "speech")
    assert (out / "units.json").is_file() and not (out / "model.safetensors").exists()
    assert Transcriber.from_pretrained(out).engine == "onnxruntime"
    for beam in ("1", "3"):
        assert main(["transcribe", "--ckpt", str(folder), "--beam", beam, *audio]) == 0
        want = capsys.readouterr().out
        assert main(["transcribe", "--ckpt", str(out), "--beam", beam, *audio]) == 0
        assert capsys.readouterr().out == want
        assert len(set(line.split("\t")[1] for line in want.splitlines())) > 1
    assert main(["transcribe", "--ckpt", str(folder), "--beam", "3", "--nbest", "2", *audio]) == 0
    want_rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert main(["transcribe", "--ckpt", str(out), "--beam", "3", "--nbest", "2", *audio]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [(r[0], r[2]) for r in rows] == [(r[0], r[2]) for r in want_rows]
    assert all(abs(float(a[1]) - float(b[1])) <= 1e-4 + 1e-12 for a, b in zip(rows, want_rows))
    assert main(["transcribe", "--ckpt", str(out), "--plot", str(tmp_path / "p"), audio[0]]) == 0
    assert len(list((tmp_path / "p").glob("*.png"))) == 1
    # an override of the scoring reads the same graphs: rescoring instead of joint decoding
    eager = Transcriber.from_pretrained(folder, joint_ctc_decoding=False).transcribe(audio, beam=3)
    assert Transcriber.from_pretrained(out, joint_ctc_decoding=False).transcribe(audio, beam=3) == eager


def test_onnx_int8_export_from_the_cli(exported: tuple[Path, Path, list[str]], tmp_path: Path) -> None:
    folder, _, audio = exported
    out = tmp_path / "int8"
    assert main(["export", "--ckpt", str(folder), "--out", str(out), "--format", "onnx", "--quantize", "int8"]) == 0
    got = Transcriber.from_pretrained(out, threads=1).transcribe(audio, beam=3, nbest=2)
    assert isinstance(got, list) and len(got) == len(audio) and all(len(t.nbest) == 2 for t in got)  # type: ignore[union-attr]


def test_export_and_engine_folder_errors(
    exported: tuple[Path, Path, list[str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder, out, audio = exported
    assert main(["export", "--ckpt", str(folder), "--out", str(tmp_path / "x"), "--format", "onnx", "--push", "a/b"])
    assert "--push applies to the PyTorch model folder" in capsys.readouterr().err
    assert main(["export", "--ckpt", str(out), "--out", str(tmp_path / "y"), "--format", "onnx"]) == 2
    assert "cannot be trained, evaluated or exported again" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    from tasks.speech.module import SpeechModule

    with pytest.raises(CheckpointError, match="is an export for the onnxruntime inference engine"):
        SpeechModule.from_pretrained(out)
    with pytest.raises(ConfigError, match="runs on the CPU"):
        Transcriber.from_pretrained(out, map_location="cuda")
    tampered = tmp_path / "tampered"
    shutil.copytree(out, tampered)
    with open(tampered / "onnx" / "encoder.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(CheckpointError, match=r"encoder\.onnx: .*changed after export|encoder\.onnx: not a loadable"):
        Transcriber.from_pretrained(tampered)
    assert main(["transcribe", "--ckpt", str(tampered), audio[0]]) == 2
    assert "encoder.onnx" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    with pytest.raises(ConfigError, match=r"attn-suite\[onnx\]"):
        Transcriber.from_pretrained(out)
    assert main(["export", "--ckpt", str(folder), "--out", str(tmp_path / "z"), "--format", "onnx"]) == 2
    assert "attn-suite[onnx]" in capsys.readouterr().err


def test_onnx_transcribe_path_imports_no_lightning(exported: tuple[Path, Path, list[str]]) -> None:
    _, out, audio = exported
    code = (
        "import sys\n"
        "from tasks.speech.cli import main\n"
        f"assert main(['transcribe', '--ckpt', {str(out)!r}, {audio[0]!r}]) == 0\n"
        "bad = [m for m in ('lightning', 'torchmetrics', 'lightning_fabric', 'transformers', 'torch._dynamo')"
        " if m in sys.modules]\n"
        "assert not bad, bad\n"
        "assert 'onnxruntime' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)


def test_lean_import_does_not_load_onnx() -> None:
    """Importing the lean loader (and the export module) imports neither onnx nor onnxruntime."""
    code = (
        "import sys, tasks.speech.inference, tasks.speech.export; "
        "print(sorted(m for m in ('onnx', 'onnxruntime', 'lightning') if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
