"""ONNX Runtime export of captioning networks (``tasks.captioning.onnx_graphs``) and ``attn-caption export --format
onnx`` end to end: the graphs, driven by the same beam search, caption as the PyTorch network does; int8 graphs run;
bad graphs, a missing runtime and an export handed to the Lightning module are refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnxruntime")

from core.engines.folder import EngineFolder
from core.errors import CheckpointError, ConfigError
from tasks.captioning.cli import main
from tasks.captioning.inference import Caption, Captioner
from tasks.captioning.network import CaptionNetwork, NetworkOptions, build_network
from tasks.captioning.onnx_graphs import load_onnx, write_onnx
from tasks.captioning.stored import StoredOptions
from tasks.captioning.vocab import CaptionVocab

#: score tolerance of n-best lists: float32 sums in another order (ONNX Runtime's kernels) move a log-prob by
#: ~1e-6 per step (measured: at most 6e-7 on these networks); a difference this small can only swap hypotheses
#: whose scores tie to that precision
SCORE_TOL = 1e-4
BASE: dict[str, Any] = {
    "encoder_dim": 16,
    "embed_dim": 8,
    "hidden_dim": 16,
    "max_len": 6,
    "image_size": 32,
    "grid_size": 2,
    "dropout": 0.0,
}
NETWORKS: dict[str, dict[str, Any]] = {
    "rnn-additive-lstm": {},
    "rnn-location-gru-2": {"attention": "location", "rnn_type": "gru", "decoder_layers": 2},
    "rnn-multihead": {"attention": "multihead", "attention_options": {"num_heads": 2}},
    "rnn-dot": {"attention": "dot"},
    "rnn-scaled_dot-3x3": {"attention": "scaled_dot", "grid_size": 3},
    "rnn-general": {"attention": "general", "gate": False},
    "transformer": {"decoder": "transformer", "num_heads": 2, "ffn_dim": 32, "decoder_layers": 2},
}


def _images(n: int = 6) -> list[Image.Image]:
    """RGB images of different sizes and aspect ratios (the transform resizes and crops each differently): 3x3
    blocks of random colours, with noise (pixel noise alone averages out over a grid cell)."""
    rng = np.random.default_rng(0)
    sizes = [(40, 40), (30, 52), (70, 33), (32, 32), (50, 45), (36, 60)]
    out = []
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        blocks = rng.integers(0, 256, (3, 3, 3))  # (3, 3, RGB)
        rows, cols = np.arange(h) * 3 // h, np.arange(w) * 3 // w
        pixels = blocks[rows[:, None], cols[None, :]] + rng.integers(-20, 21, (h, w, 3))  # (H, W, 3)
        out.append(Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB"))
    return out


def _scale(network: CaptionNetwork) -> None:
    """Weights scaled up, so that captions depend on the image: the decoder's by 3, the encoder's by 2 (the random
    CNN's features barely differ between images; scaled by 3 like the decoder, its seven convolutions, whose
    BatchNorm keeps the initial statistics, give features of ~1e4, whose float32 rounding alone moves the scores,
    and a trained encoder's features are normalised)."""
    with torch.no_grad():
        for p in network.decoder.parameters():
            p.mul_(3.0)
        for p in network.encoder.parameters():
            p.mul_(2.0)


def _captioner(options: dict[str, Any]) -> tuple[Captioner, StoredOptions]:
    """A tiny random network with the default vocabulary of the data module's scenes."""
    from tasks.captioning.data import CaptionDataModule

    torch.manual_seed(0)
    vocab = CaptionVocab.from_dict(CaptionDataModule().vocab)
    so = StoredOptions(vocab=vocab.to_dict(), **{**BASE, **options})
    no = NetworkOptions(**{f: getattr(so, f) for f in NetworkOptions.__dataclass_fields__})
    network, _ = build_network(no, len(vocab), so.image_size, so.mean, so.std, None)
    _scale(network)
    return Captioner.for_options(network.eval(), so, vocab), so


def _folder(path: Path, info: dict[str, Any], quantize: str = "float32") -> EngineFolder:
    return EngineFolder(path, "onnxruntime", quantize, {}, {}, info, f"model folder {path}")


def _export(eager: Captioner, options: StoredOptions, path: Path, quantize: str = "float32") -> Captioner:
    assert not isinstance(eager.network, torch.nn.Identity)
    info = write_onnx(eager.network, options, path / "onnx", quantize)  # type: ignore[arg-type]
    json.dumps(info)  # plain data: goes into config.json as it is
    return Captioner.for_options(load_onnx(_folder(path, info, quantize), options, threads=1), options, eager.vocab)


def _same_nbest(eager: list[list[Caption]], graphs: list[list[Caption]]) -> None:
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
def test_graphs_caption_as_the_network(name: str, tmp_path: Path) -> None:
    eager, options = _captioner(NETWORKS[name])
    graphs = _export(eager, options, tmp_path)
    assert graphs.device == torch.device("cpu") and graphs.engine == "onnxruntime" and eager.engine == "pytorch"
    assert not list(graphs.network.parameters())
    images = _images()
    # greedy: identical captions on every image, scores and attention maps close
    greedy = eager.caption_images(images, beam=1, batch_size=4)
    got = graphs.caption_images(images, beam=1, batch_size=4)
    assert [h[0].text for h in got] == [h[0].text for h in greedy]
    assert len({h[0].text for h in greedy}) > 1  # the images give different captions: equality says something
    for a, b in zip(greedy, got):
        assert a[0].words == b[0].words and b[0].score == pytest.approx(a[0].score, abs=SCORE_TOL)
        assert a[0].attention is not None and b[0].attention is not None
        g = options.grid_size
        assert b[0].attention.shape == a[0].attention.shape == (len(a[0].words), g, g)
        # float32 rounding of other kernels over features of ~50, carried through up to 7 steps (translation's
        # tolerance; the largest difference measured: 2.4e-4 on weights of 0.3, multi-head, the others under 1e-5)
        torch.testing.assert_close(b[0].attention, a[0].attention, atol=2e-4, rtol=1e-3)
    # beam 3, 3-best: the same hypotheses, scores within float32 rounding
    _same_nbest(eager.caption_images(images, beam=3, nbest=3), graphs.caption_images(images, beam=3, nbest=3))


def test_int8_graphs_run(tmp_path: Path) -> None:
    eager, options = _captioner(NETWORKS["rnn-location-gru-2"])
    info = write_onnx(eager.network, options, tmp_path / "onnx", "int8")  # type: ignore[arg-type]
    # the matrix products of both graphs and the word embedding (the encoder's convolutions stay float32)
    assert info["quantized_nodes"].get("step.onnx:MatMulInteger", 0) > 0
    assert info["quantized_nodes"].get("init.onnx:MatMulInteger", 0) > 0
    assert info["quantized_nodes"].get("step.onnx:Gather", 0) == 1
    graphs = Captioner.for_options(load_onnx(_folder(tmp_path, info, "int8"), options), options, eager.vocab)
    out = graphs.caption_images(_images(), beam=3, nbest=2)
    words = set(eager.vocab.words(list(range(len(eager.vocab)))))
    for hyps in out:  # outputs may differ from float32: valid captions of the right shape
        assert len(hyps) == 2
        for h in hyps:
            assert set(h.words) <= words and h.score <= 0.0
            assert h.attention is not None and h.attention.shape == (len(h.words), 2, 2)
            assert torch.isfinite(h.attention).all()


def test_unsupported_networks_are_refused(tmp_path: Path) -> None:
    eager, options = _captioner({})
    with pytest.raises(ConfigError, match="quantize"):
        write_onnx(eager.network, options, tmp_path, "int4")  # type: ignore[arg-type]
    for attention in ("none", "pooling"):
        o = StoredOptions(**{**BASE, "attention": attention})
        with pytest.raises(ConfigError, match=f"attention '{attention}' is not supported"):
            write_onnx(eager.network, o, tmp_path, "float32")  # type: ignore[arg-type]


def test_tampered_and_foreign_graphs_are_refused(tmp_path: Path) -> None:
    eager, options = _captioner(NETWORKS["rnn-additive-lstm"])
    info = write_onnx(eager.network, options, tmp_path / "a" / "onnx", "float32")  # type: ignore[arg-type]
    load_onnx(_folder(tmp_path / "a", info), options)  # as written: loads
    other, other_options = _captioner(NETWORKS["transformer"])
    write_onnx(other.network, other_options, tmp_path / "b" / "onnx", "float32")  # type: ignore[arg-type]
    (tmp_path / "a" / "onnx" / "step.onnx").rename(tmp_path / "step.onnx")
    (tmp_path / "b" / "onnx" / "step.onnx").rename(tmp_path / "a" / "onnx" / "step.onnx")
    with pytest.raises(CheckpointError, match=r"step\.onnx.*another model or version"):
        load_onnx(_folder(tmp_path / "a", info), options)
    (tmp_path / "step.onnx").replace(tmp_path / "a" / "onnx" / "step.onnx")
    with pytest.raises(CheckpointError, match="graphs of a 'rnn' decoder, but its options say 'transformer'"):
        load_onnx(_folder(tmp_path / "a", info), other_options)
    with pytest.raises(CheckpointError, match="grid_size"):
        load_onnx(_folder(tmp_path / "a", {**info, "grid_size": "2"}), options)
    (tmp_path / "a" / "onnx" / "init.onnx").write_bytes(b"not a graph")
    with pytest.raises(CheckpointError, match=r"init\.onnx: not a loadable ONNX graph"):
        load_onnx(_folder(tmp_path / "a", info), options)


# ----------------------------------------------------------------------------------------------
# end to end: attn-caption export --format onnx, caption --ckpt, Captioner.from_pretrained
# ----------------------------------------------------------------------------------------------
def _module_folder(tmp: Path, **options: Any) -> Path:
    """A tiny CaptioningModule written as a model folder (decoder weights scaled up, see :func:`_scale`)."""
    from tasks.captioning.data import CaptionDataModule
    from tasks.captioning.module import CaptioningModule

    torch.manual_seed(0)
    model = CaptioningModule(vocab=CaptionDataModule().vocab, plot_examples=0, **{**BASE, **options}).eval()
    assert model.model is not None
    _scale(model.model)
    return Path(model.save_pretrained(tmp / "model"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    """A PyTorch model folder, its ONNX export written by the CLI, and image files."""
    tmp = tmp_path_factory.mktemp("caption-onnx")
    folder = _module_folder(tmp, attention="location")
    assert main(["export", "--ckpt", str(folder), "--out", str(tmp / "onnx"), "--format", "onnx"]) == 0
    paths = []
    for i, image in enumerate(_images()):
        paths.append(str(tmp / f"im{i}.png"))
        image.save(paths[-1])
    return folder, tmp / "onnx", paths


def test_onnx_export_captions_as_pytorch_from_the_cli(
    exported: tuple[Path, Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, out, images = exported
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert (config["engine"], config["quantize"], config["task"]) == ("onnxruntime", "float32", "captioning")
    assert (out / "vocab.json").is_file() and not (out / "model.safetensors").exists()
    assert Captioner.from_pretrained(out).engine == "onnxruntime"
    for beam in ("1", "3"):
        assert main(["caption", "--ckpt", str(folder), "--beam", beam, *images]) == 0
        want = capsys.readouterr().out
        assert main(["caption", "--ckpt", str(out), "--beam", beam, *images]) == 0
        assert capsys.readouterr().out == want
        assert len(set(line.split("\t")[1] for line in want.splitlines())) > 1
    # n-best: the same captions; scores printed to 4 decimals (within SCORE_TOL of each other)
    assert main(["caption", "--ckpt", str(folder), "--beam", "3", "--nbest", "2", *images[:3]]) == 0
    want_rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert main(["caption", "--ckpt", str(out), "--beam", "3", "--nbest", "2", *images[:3]]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [(r[0], r[2]) for r in rows] == [(r[0], r[2]) for r in want_rows]
    assert all(abs(float(a[1]) - float(b[1])) <= 1e-4 + 1e-12 for a, b in zip(rows, want_rows))
    assert main(["caption", "--ckpt", str(out), "--plot", str(tmp_path / "p"), images[0]]) == 0
    assert len(list((tmp_path / "p").glob("*.png"))) == 1


def test_onnx_int8_export_from_the_cli(exported: tuple[Path, Path, list[str]], tmp_path: Path) -> None:
    folder, _, images = exported
    out = tmp_path / "int8"
    assert main(["export", "--ckpt", str(folder), "--out", str(out), "--format", "onnx", "--quantize", "int8"]) == 0
    captioner = Captioner.from_pretrained(out, threads=1)
    got = captioner.caption(images, beam=3, nbest=2)
    assert len(got) == len(images) and all(len(h) == 2 and all(isinstance(c.text, str) for c in h) for h in got)


def test_export_and_engine_folder_errors(
    exported: tuple[Path, Path, list[str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder, out, images = exported
    assert main(["export", "--ckpt", str(folder), "--out", str(tmp_path / "x"), "--format", "onnx", "--quantize", "x"])
    assert "invalid choice" in capsys.readouterr().err
    assert main(["export", "--ckpt", str(folder), "--out", str(tmp_path / "x"), "--format", "onnx", "--push", "a/b"])
    assert "--push applies to the PyTorch model folder" in capsys.readouterr().err
    # an export is for inference: exporting it again, or training from it, needs the PyTorch folder
    assert main(["export", "--ckpt", str(out), "--out", str(tmp_path / "y"), "--format", "onnx"]) == 2
    assert "cannot be trained, evaluated or exported again" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    from tasks.captioning.module import CaptioningModule

    with pytest.raises(CheckpointError, match="is an export for the onnxruntime inference engine"):
        CaptioningModule.from_pretrained(out)
    with pytest.raises(ConfigError, match="runs on the CPU"):
        Captioner.from_pretrained(out, map_location="cuda")
    with pytest.raises(ConfigError, match="sha256 pins"):
        Captioner.from_pretrained(out, sha256="abc")
    # a graph changed after export: refused, naming the file
    tampered = tmp_path / "tampered"
    import shutil

    shutil.copytree(out, tampered)
    with open(tampered / "onnx" / "step.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(CheckpointError, match=r"step\.onnx: .*changed after export|step\.onnx: not a loadable"):
        Captioner.from_pretrained(tampered)
    assert main(["caption", "--ckpt", str(tampered), images[0]]) == 2
    assert "step.onnx" in capsys.readouterr().err
    # no onnxruntime: the extra that installs it is named
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    with pytest.raises(ConfigError, match=r"attn-suite\[onnx\]"):
        Captioner.from_pretrained(out)
    assert main(["export", "--ckpt", str(folder), "--out", str(tmp_path / "z"), "--format", "onnx"]) == 2
    assert "attn-suite[onnx]" in capsys.readouterr().err


def test_onnx_caption_path_imports_no_lightning(exported: tuple[Path, Path, list[str]]) -> None:
    _, out, images = exported
    code = (
        "import sys\n"
        "from tasks.captioning.cli import main\n"
        f"assert main(['caption', '--ckpt', {str(out)!r}, {images[0]!r}]) == 0\n"
        "bad = [m for m in ('lightning', 'torchmetrics', 'lightning_fabric', 'transformers', 'torch._dynamo')"
        " if m in sys.modules]\n"
        "assert not bad, bad\n"
        "assert 'onnxruntime' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)


def test_lean_import_does_not_load_onnx() -> None:
    """Importing the lean loader (and the export module) imports neither onnx nor onnxruntime."""
    code = (
        "import sys, tasks.captioning.inference, tasks.captioning.export; "
        "print(sorted(m for m in ('onnx', 'onnxruntime', 'lightning') if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
