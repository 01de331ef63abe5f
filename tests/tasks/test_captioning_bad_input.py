"""Bad-input table of ``tasks/captioning/README.md``: one test (or more) per row.

Every fixture is generated in ``tmp_path`` (PIL images written on the fly, a tiny hand-made checkpoint);
CLI rows call ``tasks.captioning.cli.main(argv)`` and check the exit status and stderr (``error:`` prefix,
the file named, no traceback).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import ConfigError, DataError
from tasks.captioning.cli import main
from tasks.captioning.images import ImageError, load_rgb
from tasks.captioning.sources import read_flickr_csv

if TYPE_CHECKING:
    from conftest import BadCheckpoints

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "captioning"

# main(argv) from pytest: LightningCLI warns that the host process has its own sys.argv, which is expected.
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI.s args parameter")


def _img(path: Path, size: tuple[int, int] = (40, 30), fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(0).integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr, "RGB").save(path, format=fmt)
    return path


def _fit_args(tmp: Path, *extra: str) -> list[str]:
    return [
        "fit",
        "-c",
        str(CONFIGS / "default.yaml"),
        "-c",
        str(CONFIGS / "tiny.yaml"),
        f"--trainer.default_root_dir={tmp / 'run'}",
        "--trainer.fast_dev_run=true",
        *extra,
    ]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (tiny, untrained) captioning checkpoint, written the way ``on_save_checkpoint`` does."""
    from tasks.captioning.data import CaptionDataModule
    from tasks.captioning.module import CaptioningModule

    torch.manual_seed(0)
    m = CaptioningModule(
        vocab=CaptionDataModule().vocab,
        encoder_dim=16,
        attention_options={"hidden_dim": 8},
        embed_dim=8,
        hidden_dim=16,
        max_len=4,
        image_size=32,
    )
    ckpt = {"state_dict": m.state_dict(), "hyper_parameters": dict(m.hparams)}
    m.on_save_checkpoint(ckpt)
    path = tmp_path_factory.mktemp("cap_ckpt") / "tiny.ckpt"
    torch.save(ckpt, path)
    return path


# ----------------------------------------------------------------- `caption`: bad image files, exit 1
def test_caption_cli_bad_images_reported_others_captioned(
    tiny_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _img(tmp_path / "good.png")
    jpg = _img(tmp_path / "ok.jpg", size=(64, 64))
    data = jpg.read_bytes()
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(data[: len(data) // 2])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "text.png"
    text.write_text("not an image", encoding="utf-8")
    missing = tmp_path / "missing.png"
    bad = {
        missing: "no such image file",
        empty: "empty file",
        trunc: "corrupt or truncated image",
        text: "not an image file",
    }
    code = main(["caption", "--ckpt", str(tiny_ckpt), str(good), *map(str, bad), str(jpg), "--beam", "1"])
    out, err = capsys.readouterr()
    assert code == 1
    assert [ln.split("\t")[0] for ln in out.splitlines()] == [str(good), str(jpg)]  # the others are captioned
    assert "Traceback" not in err
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(errors) == len(bad)
    for path, why in bad.items():
        assert any(ln.startswith(f"error: {path}: {why}") for ln in errors), (path, err)


def test_caption_cli_bad_beam_is_exit_2(tiny_ckpt: Path, tmp_path: Path, user_error: Callable[[], str]) -> None:
    assert main(["caption", "--ckpt", str(tiny_ckpt), str(_img(tmp_path / "a.png")), "--beam", "0"]) == 2
    assert user_error() == "error: --beam must be between 1 and 128, got 0"


# ----------------------------------------------------------------- image modes, large images
def test_more_image_modes_converted_to_rgb(tmp_path: Path) -> None:
    la = Image.new("LA", (8, 8), (0, 0))  # fully transparent black -> white
    la.save(tmp_path / "la.png")
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent red -> white
    rgba.putpixel((0, 0), (255, 0, 0, 255))  # one opaque red pixel stays red
    rgba.save(tmp_path / "rgba.png")
    Image.fromarray(np.linspace(-3.0, 5.0, 64, dtype=np.float32).reshape(8, 8), "F").save(tmp_path / "float.tif")
    Image.fromarray(np.arange(64, dtype=np.int32).reshape(8, 8) * 1000, "I").save(tmp_path / "int32.tif")
    Image.new("1", (8, 8), 1).save(tmp_path / "bw.png")
    for name in ("la.png", "rgba.png", "float.tif", "int32.tif", "bw.png"):
        img = load_rgb(tmp_path / name)
        assert img.mode == "RGB" and img.size == (8, 8), name
    assert np.asarray(load_rgb(tmp_path / "la.png")).min() == 255  # alpha composited on white
    rgba_out = np.asarray(load_rgb(tmp_path / "rgba.png"))
    assert rgba_out[0, 0].tolist() == [255, 0, 0] and rgba_out[1, 1].tolist() == [255, 255, 255]
    flt = np.asarray(load_rgb(tmp_path / "float.tif"))[..., 0]
    assert flt.min() == 0 and flt.max() == 255  # float range rescaled to 8 bits
    i32 = np.asarray(load_rgb(tmp_path / "int32.tif"))[..., 0]
    assert i32.min() == 0 and i32.max() == 255  # 32-bit range rescaled too (not clipped to white)


def test_decompression_bomb_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _img(tmp_path / "huge.png", size=(300, 200))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 60k pixels: over 2x the limit
    with pytest.raises(ImageError, match=r"huge\.png: image too large to decode safely"):
        load_rgb(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40_000)  # between 1x and 2x: PIL only warns; still an error
    with pytest.raises(ImageError, match=r"huge\.png: image too large"):
        load_rgb(path)


def test_large_png_shrunk_to_1024(tmp_path: Path) -> None:
    Image.new("RGB", (2500, 400), (1, 2, 3)).save(tmp_path / "wide.png")  # not a JPEG: no draft mode
    img = load_rgb(tmp_path / "wide.png")
    assert img.size == (1024, 164)


# ----------------------------------------------------------------- captions file vs images on disk
def test_missing_images_one_warning_naming_first_files(tmp_path: Path) -> None:
    _img(tmp_path / "Images" / "here.jpg")
    rows = ["image,caption", "here.jpg,A dog ."] + [f"gone{i}.jpg,A cat ." for i in range(7)]
    (tmp_path / "captions.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        records, report = read_flickr_csv(tmp_path / "captions.txt")
    assert [r.image.name for r in records] == ["here.jpg"] and report.missing_images == 7
    assert len(rec) == 1
    msg = str(rec[0].message)
    assert "skipped 7 missing image(s)" in msg and "gone0.jpg" in msg and "gone4.jpg" in msg
    assert "gone5.jpg" not in msg  # only the first few are named


def test_images_without_captions_are_ignored(tmp_path: Path) -> None:
    _img(tmp_path / "Images" / "a.jpg")
    _img(tmp_path / "Images" / "stray.jpg")  # on disk, not in captions.txt
    (tmp_path / "Images" / "notes.txt").write_text("not an image", encoding="utf-8")
    (tmp_path / "captions.txt").write_text("image,caption\na.jpg,A dog .\n", encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about
        records, report = read_flickr_csv(tmp_path / "captions.txt")
    assert [r.image.name for r in records] == ["a.jpg"]
    assert (report.missing_images, report.empty_captions, report.images_without_captions) == (0, 0, 0)


# ----------------------------------------------------------------- malformed captions files: exit 2
def _coco_root(tmp: Path, text: str) -> Path:
    (tmp / "annotations").mkdir(parents=True)
    (tmp / "annotations" / "captions_train2017.json").write_text(text, encoding="utf-8")
    return tmp / "annotations" / "captions_train2017.json"


@pytest.mark.parametrize(
    "kind", ["csv-header", "csv-row", "token-no-tab", "non-utf8", "json-invalid", "json-missing-keys"]
)
def test_cli_malformed_captions_file(kind: str, tmp_path: Path, user_error: Callable[[], str]) -> None:
    root = tmp_path / "data"
    root.mkdir()
    if kind == "csv-header":
        bad = root / "captions.txt"
        bad.write_text("img,text\na.jpg,A dog\n", encoding="utf-8")
        args, expected = ["--data.dataset=flickr"], f"error: {bad}: line 1: expected the header 'image,caption'"
    elif kind == "csv-row":
        bad = root / "captions.txt"
        bad.write_text("image,caption\na.jpg,A dog\nthis line has no image\n", encoding="utf-8")
        args, expected = ["--data.dataset=flickr"], f"error: {bad}: line 3: expected '<image file>,<caption>'"
    elif kind == "token-no-tab":
        bad = root / "Flickr8k.token.txt"
        bad.write_text("a.jpg#0\tA dog .\na.jpg#1 no tab here\n", encoding="utf-8")
        args, expected = ["--data.dataset=flickr"], f"error: {bad}: line 2: expected '<image>#<n><TAB><caption>'"
    elif kind == "non-utf8":
        bad = root / "captions.txt"
        bad.write_bytes("image,caption\na.jpg,A dog\nb.jpg,un caf\xe9\n".encode("latin-1"))
        args, expected = ["--data.dataset=flickr"], f"error: {bad}: line 3: expected UTF-8 text, got byte 0xe9"
    elif kind == "json-invalid":
        bad = _coco_root(root, '{"images": [')
        args, expected = ["--data.dataset=coco"], f"error: {bad}: not valid JSON"
    else:
        bad = _coco_root(root, json.dumps({"images": [{"id": 1}], "annotations": []}))
        args, expected = (
            ["--data.dataset=coco"],
            f"error: {bad}: expected COCO captions JSON with images[*].id/file_name",
        )
    assert main(_fit_args(tmp_path, *args, f"--data.data_dir={root}")) == 2
    err = user_error()
    assert err.startswith(expected), err


# ----------------------------------------------------------------- no usable pair / empty split: exit 2
def test_cli_corpus_without_usable_pair(tmp_path: Path, user_error: Callable[[], str]) -> None:
    root = tmp_path / "data"
    _img(root / "Images" / "a.jpg")
    cap = root / "captions.txt"
    cap.write_text("image,caption\na.jpg, . \nb.jpg,A cat .\n", encoding="utf-8")  # empty caption / absent image
    with pytest.warns(UserWarning, match="b.jpg"):
        assert main(_fit_args(tmp_path, "--data.dataset=flickr", f"--data.data_dir={root}")) == 2
    assert user_error().startswith(f"error: {cap}: no usable image-caption pairs")


def test_cli_empty_split(tmp_path: Path, user_error: Callable[[], str]) -> None:
    root = tmp_path / "data"
    _img(root / "a.jpg")
    _img(root / "b.jpg")
    split = {
        "images": [{"filename": f, "split": "train", "sentences": [{"raw": "A dog ."}]} for f in ("a.jpg", "b.jpg")]
    }
    (root / "dataset_x.json").write_text(json.dumps(split), encoding="utf-8")
    assert (
        main(
            _fit_args(
                tmp_path, "--data.dataset=karpathy", f"--data.data_dir={root}", "--data.captions_file=dataset_x.json"
            )
        )
        == 2
    )
    assert user_error() == f"error: karpathy corpus under {root}: the val split is empty"


# ----------------------------------------------------------------- bad checkpoints: exit 2
def test_cli_caption_bad_checkpoint(
    bad_checkpoint_kind: str, bad_checkpoints: BadCheckpoints, tmp_path: Path, user_error: Callable[[], str]
) -> None:
    kind = bad_checkpoint_kind
    path = bad_checkpoints(kind, "captioning")
    assert main(["caption", "--ckpt", str(path), str(_img(tmp_path / "a.png"))]) == 2
    err = user_error()
    assert str(path) in err and bad_checkpoints.expected(kind, "captioning") in err, err


def test_cli_ckpt_path_bad_checkpoints(
    bad_checkpoints: BadCheckpoints, tmp_path: Path, user_error: Callable[[], str]
) -> None:
    """``test/fit --ckpt_path`` get the same checks as ``caption --ckpt``."""
    base = [
        "-c",
        str(CONFIGS / "default.yaml"),
        "-c",
        str(CONFIGS / "tiny.yaml"),
        f"--trainer.default_root_dir={tmp_path / 'run'}",
    ]
    for kind in bad_checkpoints.kinds:
        path = bad_checkpoints(kind, "captioning")
        assert main(["test", *base, "--ckpt_path", str(path)]) == 2, kind
        err = user_error()
        assert str(path) in err and bad_checkpoints.expected(kind, "captioning") in err, (kind, err)
    assert main(["fit", *base, "--ckpt_path", str(tmp_path / "missing.ckpt")]) == 2
    assert str(tmp_path / "missing.ckpt") in user_error()


# ----------------------------------------------------------------- local pretrained weights: exit 2
def test_pretrained_wrong_architecture(tmp_path: Path) -> None:
    import torchvision

    from tasks.captioning.encoder import ImageEncoder

    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), tmp_path / "mobilenet.pth")
    with pytest.raises(ConfigError, match=r"model\.pretrained: .*mobilenet\.pth does not match resnet18"):
        ImageEncoder("resnet18", pretrained=str(tmp_path / "mobilenet.pth"))


@pytest.mark.parametrize("kind", ["missing", "unreadable", "wrong-architecture"])
def test_cli_bad_pretrained_file(kind: str, tmp_path: Path, user_error: Callable[[], str]) -> None:
    path = tmp_path / f"{kind}.pth"
    if kind == "unreadable":
        path.write_bytes(b"junk")
    elif kind == "wrong-architecture":
        torch.save({"conv.weight": torch.zeros(2, 3, 3, 3)}, path)
    expected = {
        "missing": f"error: model.pretrained: weights file not found: {path}",
        "unreadable": f"error: model.pretrained: cannot read weights file {path}",
        "wrong-architecture": f"error: model.pretrained: {path} does not match resnet18",
    }[kind]
    assert main(_fit_args(tmp_path, "--model.encoder=resnet18", f"--model.pretrained={path}")) == 2
    assert user_error().startswith(expected)


def test_datamodule_errors_are_data_errors(tmp_path: Path) -> None:
    """The same failures from Python: ``DataError`` (a ``UserError``) naming the file."""
    from tasks.captioning.data import CaptionDataModule

    (tmp_path / "captions.txt").write_bytes(b"image,caption\n\xff\n")
    dm = CaptionDataModule(dataset="flickr", data_dir=str(tmp_path))
    with pytest.raises(DataError, match=r"captions\.txt: line 2: expected UTF-8"):
        dm.setup("fit")


# ----------------------------------------------------------------- tampered checkpoints, config mistakes: exit 2
def _tampered(tiny_ckpt: Path, tmp: Path, kind: str) -> Path:
    ckpt = torch.load(tiny_ckpt, weights_only=True)
    if kind == "shape":
        ckpt["state_dict"]["decoder.out.weight"] = torch.zeros(3, 3)
    elif kind == "vocab-type":
        ckpt["attn_suite"]["vocab"] = {"type": "char", "vocab": ["<pad>", "<s>", "</s>", "<unk>", "a"]}
    elif kind == "vocab-junk":
        ckpt["attn_suite"]["vocab"] = {"type": "word", "vocab": 5}
    elif kind == "hparams":
        ckpt["hyper_parameters"]["decoder"] = "gru"
    path = tmp / f"{kind}.ckpt"
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize(
    ("kind", "pattern"),
    [
        ("shape", r"decoder\.out\.weight: \(3, 3\) in the file, \(\d+, \d+\) in the model"),
        ("vocab-type", "word vocabulary"),
        ("vocab-junk", "list of words"),
        ("hparams", "hyper-parameter 'decoder' = 'gru': expected Literal"),
    ],
)
def test_tampered_checkpoint_is_a_checkpoint_error(
    kind: str, pattern: str, tiny_ckpt: Path, tmp_path: Path, user_error: Callable[[], str]
) -> None:
    from core.errors import CheckpointError
    from tasks.captioning.module import CaptioningModule

    path = _tampered(tiny_ckpt, tmp_path, kind)
    with pytest.raises(CheckpointError, match=pattern) as info:
        CaptioningModule.load_from_checkpoint(path)
    assert str(path) in str(info.value)
    assert main(["caption", "--ckpt", str(path), str(_img(tmp_path / "a.png"))]) == 2
    err = user_error()
    assert str(path) in err, err


def test_ckpt_path_that_does_not_fit_is_a_checkpoint_error(tmp_path: Path, user_error: Callable[[], str]) -> None:
    """``test --ckpt_path``: weights of another model size -> ``error:`` naming the file, not a traceback."""
    from tasks.captioning.data import CaptionDataModule
    from tasks.captioning.module import CaptioningModule

    # LightningCLI rebuilds the model from the checkpoint's hyper-parameters, so only weights that do not
    # match their own hyper-parameters (a tampered or hand-edited file) can fail to fit.
    m = CaptioningModule(
        vocab=CaptionDataModule().vocab, encoder_dim=16, attention_options={"hidden_dim": 8}, embed_dim=8, hidden_dim=16
    )
    ckpt = {"state_dict": m.state_dict(), "hyper_parameters": dict(m.hparams), "pytorch-lightning_version": "2.4.0"}
    m.on_save_checkpoint(ckpt)
    ckpt["state_dict"]["decoder.out.weight"] = torch.zeros(3, 3)
    path = tmp_path / "small.ckpt"
    torch.save(ckpt, path)
    base = [
        "-c",
        str(CONFIGS / "default.yaml"),
        "-c",
        str(CONFIGS / "tiny.yaml"),
        f"--trainer.default_root_dir={tmp_path / 'run'}",
    ]
    assert main(["test", *base, "--ckpt_path", str(path)]) == 2
    err = user_error()
    assert str(path) in err and "does not fit" in err and "in the model" in err, err


def test_bad_vocab_argument_is_a_config_error() -> None:
    from tasks.captioning.module import CaptioningModule

    with pytest.raises(ConfigError, match=r"model\.vocab: .*word vocabulary"):
        CaptioningModule(vocab={"type": "char", "vocab": ["<pad>", "<s>", "</s>", "<unk>"]})


def test_cli_scene_image_size_too_small(tmp_path: Path, user_error: Callable[[], str]) -> None:
    from tasks.captioning import scenes

    assert main(_fit_args(tmp_path, "--data.image_size=32")) == 2
    assert user_error() == "error: data.image_size must be >= 48 for generated scenes, got 32"
    with pytest.raises(ConfigError, match=r"data\.image_size must be >= 48"):
        scenes.make_scene(0, "train", 0, image_size=40)


def test_cli_caption_too_long_for_transformer_positions(tmp_path: Path, user_error: Callable[[], str]) -> None:
    assert (
        main(
            _fit_args(
                tmp_path,
                "--model.decoder=transformer",
                "--model.hidden_dim=32",
                "--model.num_heads=2",
                "--model.ffn_dim=32",
                "--model.decoder_layers=1",
                "--data.max_caption_len=200",
            )
        )
        == 2
    )
    err = user_error()
    assert err.startswith(
        "error: data.max_caption_len=200 does not fit the transformer decoder's 128 learned positions"
    ), err


def test_transformer_forward_too_long_is_a_config_error() -> None:
    from tasks.captioning.decoder import TransformerCaptionDecoder

    dec = TransformerCaptionDecoder(10, 8, 8, 1, 2, 16, 0.0, 4)
    with pytest.raises(ConfigError, match=r"data\.max_caption_len"):
        dec(torch.zeros(1, 4, 8), None, torch.ones(1, 5, dtype=torch.long))


def test_setup_warnings_only_on_rank_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Corpus-reading warnings come from ``setup`` on every DDP rank: only rank 0 emits them."""
    from lightning.pytorch.utilities import rank_zero_only

    (tmp_path / "captions.txt").write_text(
        "image,caption\nmissing.jpg,a dog\n" + "".join(f"i{i}.jpg,a cat\n" for i in range(3)), encoding="utf-8"
    )
    for i in range(3):
        _img(tmp_path / "Images" / f"i{i}.jpg")
    with pytest.warns(UserWarning, match="missing"):
        read_flickr_csv(tmp_path / "captions.txt", tmp_path / "Images")
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        records, _ = read_flickr_csv(tmp_path / "captions.txt", tmp_path / "Images")
    assert len(records) == 3


@pytest.mark.parametrize(
    "kw", [{"val_fraction": -0.1}, {"test_fraction": 1.0}, {"val_fraction": 0.6, "test_fraction": 0.5}]
)
def test_bad_split_fractions_are_config_errors(kw: dict) -> None:
    from tasks.captioning.data import CaptionDataModule

    with pytest.raises(ConfigError, match="fraction"):
        CaptionDataModule(**kw)
