"""The lean inference path of captioning: :meth:`Captioner.from_pretrained` loads a model folder or ``.ckpt`` without
Lightning, through the same checks as ``CaptioningModule.from_pretrained``, and captions exactly as the module does
(greedy, beam, n-best, attention maps); ``attn-caption caption`` runs on it."""

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

from core.errors import CheckpointError, ConfigError
from tasks.captioning.inference import Caption, Captioner

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "compat_v2" / "captioning"
EXPECTED: dict[str, Any] = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))
HEAVY = ("lightning", "torchmetrics", "lightning_fabric", "transformers", "torch._dynamo")


def _images() -> list[Image.Image]:
    """Three RGB images of different sizes and aspect ratios (the transform resizes and crops each differently)."""
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
        for h, w in ((40, 40), (30, 52), (70, 33))
    ]


def _tiny(tmp: Path, **options: Any) -> tuple[Any, Path, Path]:
    """A random tiny CaptioningModule (the tiny CNN encoder), written as a model folder and as a ``.ckpt``."""
    from tasks.captioning.data import CaptionDataModule
    from tasks.captioning.module import CaptioningModule

    torch.manual_seed(0)
    settings: dict[str, Any] = {
        "encoder_dim": 16,
        "embed_dim": 8,
        "hidden_dim": 16,
        "max_len": 5,
        "image_size": 32,
        "grid_size": 2,
        "dropout": 0.0,
        "plot_examples": 0,
        **options,
    }
    model = CaptioningModule(vocab=CaptionDataModule().vocab, **settings).eval()
    with torch.no_grad():  # larger weights than the init: captions that depend on the image
        for p in model.parameters():
            p.mul_(3.0)
    folder = Path(model.save_pretrained(tmp / "model"))
    ckpt: dict[str, Any] = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    model.on_save_checkpoint(ckpt)
    path = tmp / "model.ckpt"
    torch.save(ckpt, path)
    return model, folder, path


def _same(a: Any, b: Any) -> None:
    """Equal captions, scores and attention maps."""
    if isinstance(a, (list, tuple)):
        assert isinstance(b, type(a)) and len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
        return
    if isinstance(a, Caption):
        assert isinstance(b, Caption)
        assert (a.text, a.words) == (b.text, b.words)
        assert a.score == pytest.approx(b.score, rel=1e-6, abs=1e-6)
        assert (a.attention is None) == (b.attention is None)
        if a.attention is not None:
            torch.testing.assert_close(a.attention, b.attention)
        return
    if isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b)
        return
    assert a == b


OPTIONS = {
    "rnn-additive": {"attention_options": {"hidden_dim": 8}},
    "rnn-none-gru": {"attention": "none", "rnn_type": "gru"},
    "transformer": {"decoder": "transformer", "num_heads": 2, "ffn_dim": 32, "decoder_layers": 2},
}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_lean_captioner_matches_the_module(name: str, tmp_path: Path) -> None:
    from tasks.captioning.module import CaptioningModule

    model, folder, ckpt = _tiny(tmp_path, **OPTIONS[name])
    images = _images()
    for path in (folder, ckpt):
        library = CaptioningModule.from_pretrained(path)
        lean = Captioner.from_pretrained(path)
        assert lean.device == torch.device("cpu") and not lean.network.training
        assert (lean.max_len, lean.image_size) == (
            library.task.network_options.max_len,
            library.task.options.image_size,
        )
        assert lean.vocab.to_dict() == library.vocab.to_dict()
        _same(lean.caption_images(images, beam=1), model.caption_images(images, beam=1))
        for beam, nbest in ((1, 1), (3, 1), (3, 3)):
            _same(lean.caption_images(images, beam=beam, nbest=nbest), library.caption_images(images, beam, nbest))
            _same(lean.caption(images, beam=beam, nbest=nbest), library.caption(images, beam=beam, nbest=nbest))
        _same(
            lean.caption(images, beam=2, return_attention=True), library.caption(images, beam=2, return_attention=True)
        )
        assert lean.caption(images[0]) == library.caption(images[0])
        torch.testing.assert_close(lean.preprocess(images[1]), library.preprocess(images[1]))
        batch = torch.stack([lean.preprocess(im) for im in images])
        _same(lean.generate(batch, beam_size=2, nbest=2), library.generate(batch, beam_size=2, nbest=2))


@pytest.mark.parametrize("name", ["rnn", "rnn.ckpt", "transformer.ckpt"])
def test_lean_captioner_reads_old_files_as_before(name: str) -> None:
    """The committed files of commit bedf076 (``test_captioning_compat.py``; ViT encoders): the lean path decodes
    what that code did, scores and attention included."""
    lean = Captioner.from_pretrained(FIXTURES / name)
    want = EXPECTED["rnn.ckpt" if name == "rnn" else name]  # the folder holds the rnn checkpoint's model
    images = [str(FIXTURES / "inputs" / n) for n in EXPECTED["inputs"]]
    assert lean.caption(images, beam=1) == want["greedy"]
    assert lean.caption(images, beam=3) == want["beam3"]
    nbest = lean.caption(images, beam=3, nbest=2)
    assert [[c.text for c in hyps] for hyps in nbest] == [[t for t, _ in hyps] for hyps in want["nbest"]]
    for hyps, old in zip(nbest, want["nbest"]):
        assert [c.score for c in hyps] == pytest.approx([s for _, s in old], abs=1e-6)
    attended = lean.caption(images, beam=2, return_attention=True)
    assert [t for t, _ in attended] == [t for t, _ in want["attention"]]
    for (_, maps), (_, old) in zip(attended, want["attention"]):
        torch.testing.assert_close(maps.flatten(1), torch.tensor(old), atol=1e-6, rtol=0)  # stored rounded to 7 places


def test_inference_transform_is_torchvision_v2_bit_for_bit() -> None:
    """The torchvision-free transform and figure image give exactly what torchvision v2 gave (the models were trained
    and scored on it): down- and up-scaling, both orientations, odd sizes."""
    from torchvision.transforms import v2

    from tasks.captioning.images import eval_transform, shown_image

    rng = np.random.default_rng(1)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    for w, h in ((96, 96), (100, 80), (80, 100), (640, 480), (33, 200), (17, 17), (300, 97), (97, 96)):
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
        for size in (32, 96, 224):
            reference = v2.Compose(
                [
                    v2.PILToTensor(),
                    v2.Resize(size, antialias=True),
                    v2.CenterCrop(size),
                    v2.ToDtype(torch.float32, scale=True),
                    v2.Normalize(list(mean), list(std)),
                ]
            )(image)
            assert torch.equal(eval_transform(size, mean, std)(image), reference), (w, h, size)
            shown = v2.CenterCrop(size)(v2.Resize(size)(image))
            assert np.array_equal(np.asarray(shown_image(image, size)), np.asarray(shown)), (w, h, size)


def test_lean_captioner_overrides(tmp_path: Path) -> None:
    _, folder, _ = _tiny(tmp_path, **OPTIONS["rnn-additive"])
    assert Captioner.from_pretrained(folder, max_len=3).max_len == 3
    with pytest.raises(ConfigError, match="no option lr"):
        Captioner.from_pretrained(folder, lr=0.1)


def _tamper(path: Path, kind: str) -> None:
    ckpt = torch.load(path, weights_only=True)
    if kind == "too-large":
        ckpt["hyper_parameters"]["hidden_dim"] = 99_999
    elif kind == "wrong-type":
        ckpt["hyper_parameters"]["decoder_layers"] = "two"
    elif kind == "wrong-shape":
        name = next(k for k, v in ckpt["state_dict"].items() if v.dim() == 2)
        ckpt["state_dict"][name] = torch.zeros(3, 5)
    elif kind == "nan":
        name = next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point())
        ckpt["state_dict"][name] = torch.full_like(ckpt["state_dict"][name], float("nan"))
    elif kind == "bad-vocab":
        ckpt["attn_suite"]["vocab"] = {"kind": "word", "words": 3}
    elif kind == "instantiation":
        ckpt["hyper_parameters"]["attention_options"] = {"class_path": "os.system"}
    elif kind == "bad-decoder":
        ckpt["hyper_parameters"]["decoder"] = "lstm2"
    torch.save(ckpt, path)


TAMPERED = {
    "too-large": "hyper-parameter 'hidden_dim' = 99999: expected a value in",
    "wrong-type": "hyper-parameter 'decoder_layers' = 'two': expected int",
    "wrong-shape": "does not fit",
    "nan": "NaN or infinite",
    "bad-vocab": "not a captioning word vocabulary",
    "instantiation": "would name Python code to import",
    "bad-decoder": "hyper-parameter 'decoder' = 'lstm2'",
}


@pytest.mark.parametrize("kind", list(TAMPERED))
def test_lean_captioner_refuses_tampered_files_naming_them(kind: str, tmp_path: Path) -> None:
    """Each tampered file is refused by both loaders with the same message (the lean one names its network where the
    module names itself, for weights that do not fit)."""
    from tasks.captioning.module import CaptioningModule

    _, _, path = _tiny(tmp_path, **OPTIONS["rnn-additive"])
    _tamper(path, kind)
    with pytest.raises(CheckpointError) as lean:
        Captioner.from_pretrained(path)
    assert str(path) in str(lean.value) and TAMPERED[kind] in str(lean.value), lean.value
    with pytest.raises(CheckpointError) as library:
        CaptioningModule.from_pretrained(path)
    assert str(path) in str(library.value) and TAMPERED[kind] in str(library.value), library.value


def test_lean_captioner_bad_files(bad_checkpoints: Any, bad_checkpoint_kind: str) -> None:
    path = bad_checkpoints(bad_checkpoint_kind, "captioning")
    with pytest.raises(CheckpointError) as info:
        Captioner.from_pretrained(path)
    assert bad_checkpoints.expected(bad_checkpoint_kind, "captioning") in str(info.value)
    assert str(path.name) in str(info.value)


def test_lean_captioner_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a folder|not found"):
        Captioner.from_pretrained(tmp_path / "nowhere")
    _, folder, _ = _tiny(tmp_path, **OPTIONS["rnn-additive"])
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    (folder / "config.json").write_text(json.dumps({**config, "task": "speech"}), encoding="utf-8")
    with pytest.raises(CheckpointError, match=f"model folder {folder} holds a 'speech' model"):
        Captioner.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({**config, "architecture": "Other"}), encoding="utf-8")
    with pytest.raises(CheckpointError, match="holds a 'Other', expected a CaptioningModule"):
        Captioner.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "vocab.json").write_text("[1, 2", encoding="utf-8")
    with pytest.raises(CheckpointError, match="vocab.json"):
        Captioner.from_pretrained(folder)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_lean_captioner_imports_no_lightning(tmp_path: Path) -> None:
    """A model with the CNN encoder loads and captions importing neither Lightning, torchmetrics, transformers nor
    torch._dynamo (which torchvision would import: the inference transform needs none). A ViT encoder (the compat
    fixtures) is rebuilt by ``transformers``, which imports torch._dynamo itself: there only Lightning is pinned."""
    _, folder, ckpt = _tiny(tmp_path, **OPTIONS["rnn-additive"])
    image = tmp_path / "scene.png"
    _images()[1].save(image)
    code = (
        "import sys\n"
        "from tasks.captioning.inference import Captioner\n"
        f"c = Captioner.from_pretrained({str(folder)!r})\n"
        f"assert isinstance(c.caption({str(image)!r}, beam=2), str)\n"
        f"Captioner.from_pretrained({str(ckpt)!r}).caption({str(image)!r}, beam=1, return_attention=True)\n"
        f"bad = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
        "assert not bad, bad\n"
        f"Captioner.from_pretrained({str(FIXTURES / 'rnn')!r}).caption({str(image)!r})\n"
        "assert 'transformers' in sys.modules  # the ViT needs it\n"
        "bad = sorted(m for m in ('lightning', 'torchmetrics', 'lightning_fabric') if m in sys.modules)\n"
        "assert not bad, bad\n"
    )
    out = _run(code)
    assert out.returncode == 0, out.stderr


def test_caption_subcommand_imports_no_lightning(tmp_path: Path) -> None:
    """``attn-caption caption`` loads through the lean Captioner: it imports none of the heavy modules and prints what
    the library call gives (n-best rows with scores too)."""
    from tasks.captioning.module import CaptioningModule

    _, folder, _ = _tiny(tmp_path, **OPTIONS["rnn-additive"])
    image = tmp_path / "scene.png"
    _images()[2].save(image)
    code = (
        "import sys\n"
        "from tasks.captioning.cli import main\n"
        f"assert main(['caption', '--ckpt', {str(folder)!r}, {str(image)!r}, '--beam', '3', '--nbest', '2']) == 0\n"
        f"bad = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
        "assert not bad, bad\n"
    )
    out = _run(code)
    assert out.returncode == 0, out.stderr
    hyps = CaptioningModule.from_pretrained(folder).caption([str(image)], beam=3, nbest=2)[0]
    assert out.stdout.splitlines() == [f"{image}\t{h.score:.4f}\t{h.text}" for h in hyps]
