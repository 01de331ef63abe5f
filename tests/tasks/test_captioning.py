"""Captioning task tests: scenes, metrics, loaders, bad input, model, CLI, checkpoints.

All fixtures are generated in ``tmp_path``; models are tiny so each test takes seconds on a CPU.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import ConfigError, DataError, UserError
from core.io.checks import FORMAT_VERSION
from core.metrics.corpus import CorpusOutputs
from tasks.captioning import scenes
from tasks.captioning.images import ImageError, load_rgb
from tasks.captioning.metrics import caption_scores, cider_d, corpus_bleu
from tasks.captioning.sources import read_coco, read_flickr_csv, read_flickr_token, read_karpathy
from tasks.captioning.text import normalize_caption, ptb_tokenize

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs" / "captioning"


# ---------------------------------------------------------------------------------------------
# generated scenes
# ---------------------------------------------------------------------------------------------
def test_scene_known_seed_gives_expected_captions() -> None:
    s = scenes.make_scene(0, "train", 0)
    assert s.captions == [
        "a large red diamond to the left of a large purple square",
        "a large purple square to the right of a large red diamond",
        "a large red diamond next to a large purple square",
    ]
    assert s.image.size == (96, 96) and s.image.mode == "RGB"
    again = scenes.make_scene(0, "train", 0)
    assert np.array_equal(np.asarray(s.image), np.asarray(again.image))  # deterministic
    assert scenes.make_scene(1, "train", 0).captions != s.captions or not np.array_equal(
        np.asarray(scenes.make_scene(1, "train", 0).image), np.asarray(s.image)
    )
    assert scenes.make_scene(0, "train", 0, image_size=128).image.size == (128, 128)


def test_scene_splits_hold_out_colour_shape_pairs() -> None:
    vocab = set(scenes.scene_vocabulary())
    for split in ("train", "val", "test"):
        for i in range(150):
            sc = scenes.make_scene(3, split, i)
            assert not {(o.colour, o.shape) for o in sc.objects} & scenes.HELD_OUT_PAIRS
            assert all(set(c.split()) <= vocab for c in sc.captions)
    for i in range(50):
        sc = scenes.make_scene(3, "unseen", i)
        assert {(o.colour, o.shape) for o in sc.objects} & scenes.HELD_OUT_PAIRS
    with pytest.raises(ValueError):
        scenes.make_scene(0, "nope", 0)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# text + metrics (hand-computed)
# ---------------------------------------------------------------------------------------------
def test_scene_dataset_renders_each_scene_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.captioning.data import SceneDataset
    from tasks.captioning.images import eval_transform

    calls: list[int] = []
    real = scenes.make_scene
    monkeypatch.setattr(
        scenes, "make_scene", lambda seed, split, i, size: calls.append(i) or real(seed, split, i, size)
    )
    tf = eval_transform(48, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    ds = SceneDataset("train", 4, 0, 48, tf, train=False)
    first = [ds[i] for i in range(4)]
    again = [ds[i] for i in range(4)]
    assert calls == [0, 1, 2, 3]  # second epoch served from the cache
    assert all(torch.equal(a["image"], b["image"]) and a["refs"] == b["refs"] for a, b in zip(first, again))
    assert torch.equal(SceneDataset("train", 4, 0, 48, tf, False, cache=False)[2]["image"], first[2]["image"])


def test_ptb_tokenize_matches_toolkit_conventions() -> None:
    assert ptb_tokenize("A man's dog, running.") == ["a", "man", "'s", "dog", "running"]
    assert ptb_tokenize("Don't stop (now)!") == ["do", "n't", "stop", "now"]
    assert normalize_caption("  ... ") == ""
    assert normalize_caption('Two DOGS play; "fetch"') == "two dogs play fetch"


def test_bleu_hand_computed() -> None:
    # Identical -> 100 at every order.
    assert corpus_bleu(["a b c d"], [["a b c d"]]) == pytest.approx([100.0] * 4)
    # Papineni's example: 7 x "the" vs a 6-word reference: clipped unigram precision 2/7, c > r so BP = 1.
    b = corpus_bleu(["the the the the the the the"], [["the cat is on the mat"]])
    assert b[0] == pytest.approx(100 * 2 / 7, rel=1e-6)
    assert b[1] < 1e-3  # no matching bigram: only the toolkit's epsilon remains
    # Brevity penalty with the *closest* reference: hyp 2 words, refs of 3 and 6 words -> r = 3.
    b = corpus_bleu(["a b"], [["a b c", "a b c d e f"]])
    assert b[0] == pytest.approx(100 * np.exp(1 - 3 / 2), rel=1e-6)
    # BLEU-2 = BP * sqrt(p1 * p2): hyp "a b x" vs "a b c": p1 = 2/3, p2 = 1/2, BP = 1.
    b = corpus_bleu(["a b x"], [["a b c"]])
    assert b[1] == pytest.approx(100 * np.sqrt(2 / 3 * 1 / 2), rel=1e-6)
    # Corpus-level (not sentence average): counts are pooled over images.
    b = corpus_bleu(["a b", "c d e f"], [["a b"], ["c d x y"]])
    assert b[0] == pytest.approx(100 * 4 / 6, rel=1e-6)


def test_cider_d_hand_computed() -> None:
    # Two images, hypothesis == single reference: unigram and bigram cosines are 1, there are no
    # 3/4-grams -> mean over n = (1 + 1 + 0 + 0) / 4 = 0.5, times 10 = 5.0.
    assert cider_d(["a b", "c d"], [["a b"], ["c d"]]) == pytest.approx(5.0)
    # A single image: every idf is log(1) - log(1) = 0 -> 0 (needs a corpus, as the toolkit).
    assert cider_d(["a b"], [["a b"]]) == 0.0
    # A wrong caption scores 0; scores dict has all keys.
    s = caption_scores(["x y", "c d"], [["a b"], ["c d"]])
    assert s["cider"] == pytest.approx(2.5)
    assert set(s) == {"bleu1", "bleu2", "bleu3", "bleu4", "cider"}


# ---------------------------------------------------------------------------------------------
# loaders on generated fixtures
# ---------------------------------------------------------------------------------------------
def _img(path: Path, mode: str = "RGB", size: tuple[int, int] = (40, 32), fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    arr = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr, "RGB").convert(mode).save(path, format=fmt)
    return path


def test_flickr_csv_loader_with_bad_rows(tmp_path: Path) -> None:
    root = tmp_path / "flickr"
    _img(root / "Images" / "a.jpg")
    _img(root / "Images" / "b.png")
    (root / "captions.txt").write_text(
        "image,caption\n"
        "a.jpg,A dog runs .\n"
        'a.jpg,"A dog, brown, runs."\n'
        "a.jpg,A dog, unquoted, runs\n"  # unquoted commas are rejoined
        "b.png, . \n"  # empty after normalisation -> dropped, b.png then has no caption
        "missing.jpg,Something absent\n",  # image named but absent -> skipped and counted
        encoding="utf-8",
    )
    with pytest.warns(UserWarning, match="missing.jpg"):
        records, report = read_flickr_csv(root / "captions.txt")
    assert [r.image.name for r in records] == ["a.jpg"]
    assert records[0].captions == ["a dog runs", "a dog brown runs", "a dog unquoted runs"]
    assert (report.missing_images, report.empty_captions, report.images_without_captions) == (1, 1, 1)
    (root / "bad.txt").write_text("img,text\n", encoding="utf-8")
    with pytest.raises(DataError, match="bad.txt.*header"):
        read_flickr_csv(root / "bad.txt")
    with pytest.raises(DataError, match="not found"):
        read_flickr_csv(root / "nope.txt")


def test_flickr_token_loader_with_split_lists(tmp_path: Path) -> None:
    _img(tmp_path / "Images" / "x.jpg")
    _img(tmp_path / "Images" / "y.jpg")
    (tmp_path / "Flickr8k.token.txt").write_text(
        "x.jpg#0\tA cat sits .\nx.jpg#1\tA cat .\ny.jpg#0\tTwo birds fly .\n", encoding="utf-8"
    )
    (tmp_path / "Flickr_8k.testImages.txt").write_text("y.jpg\n", encoding="utf-8")
    records, _ = read_flickr_token(tmp_path / "Flickr8k.token.txt")
    assert {r.image.name: (r.captions, r.split) for r in records} == {
        "x.jpg": (["a cat sits", "a cat"], None),
        "y.jpg": (["two birds fly"], "test"),
    }
    (tmp_path / "broken.token.txt").write_text("no tab here\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 1"):
        read_flickr_token(tmp_path / "broken.token.txt")


def test_coco_and_karpathy_loaders(tmp_path: Path) -> None:
    _img(tmp_path / "val2017" / "000001.jpg")
    _img(tmp_path / "val2017" / "000002.jpg")
    ann = {
        "images": [
            {"id": 1, "file_name": "000001.jpg"},
            {"id": 2, "file_name": "000002.jpg"},
            {"id": 3, "file_name": "gone.jpg"},
        ],
        "annotations": [
            {"image_id": 1, "id": 10, "caption": "A red bus."},
            {"image_id": 1, "id": 11, "caption": ""},
            {"image_id": 2, "id": 12, "caption": "A man's hat."},
            {"image_id": 3, "id": 13, "caption": "Not on disk."},
        ],
    }
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "captions_val2017.json").write_text(json.dumps(ann), encoding="utf-8")
    with pytest.warns(UserWarning, match="gone.jpg"):
        records, report = read_coco(tmp_path / "annotations" / "captions_val2017.json")
    assert [(r.image.name, r.captions) for r in records] == [
        ("000001.jpg", ["a red bus"]),
        ("000002.jpg", ["a man 's hat"]),
    ]
    assert report.empty_captions == 1 and report.missing_images == 1
    (tmp_path / "annotations" / "captions_bad.json").write_text('{"images": [{"x": 1}]}', encoding="utf-8")
    with pytest.raises(DataError, match="captions_bad.json"):
        read_coco(tmp_path / "annotations" / "captions_bad.json")

    karpathy = {
        "dataset": "coco",
        "images": [
            {
                "filepath": "val2017",
                "filename": "000001.jpg",
                "split": "restval",
                "sentences": [{"raw": "A bus.", "tokens": ["a", "bus"]}],
            },
            {"filepath": "val2017", "filename": "000002.jpg", "split": "test", "sentences": [{"tokens": ["a", "hat"]}]},
        ],
    }
    (tmp_path / "dataset_coco.json").write_text(json.dumps(karpathy), encoding="utf-8")
    records, _ = read_karpathy(tmp_path / "dataset_coco.json", tmp_path)
    assert [(r.image.name, r.split, r.captions) for r in records] == [
        ("000001.jpg", "train", ["a bus"]),
        ("000002.jpg", "test", ["a hat"]),
    ]


def test_datamodule_real_layouts_and_hf(tmp_path: Path) -> None:
    from tasks.captioning.data import CaptionDataModule

    root = tmp_path / "flickr"
    lines = ["image,caption"]
    for i in range(10):
        _img(root / "Images" / f"{i}.jpg")
        lines += [f"{i}.jpg,A photo number {i % 3} .", f"{i}.jpg,Another photo ."]
    (root / "captions.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    dm = CaptionDataModule(dataset="flickr", data_dir=str(root), image_size=32, batch_size=4, min_freq=2, augment=True)
    assert "photo" in dm.caption_vocab.tokenizer.stoi and "7" not in dm.caption_vocab.tokenizer.stoi  # min_freq
    dm.setup("fit")
    assert sum(len(dm.datasets[k]) for k in ("train", "val", "test")) == 10
    batch = next(iter(dm.train_dataloader()))
    assert batch.images.shape[1:] == (3, 32, 32) and batch.inputs[:, 0].eq(1).all()

    datasets = pytest.importorskip("datasets")
    imgs = [Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)) for i in range(6)]
    hf = datasets.Dataset.from_dict({"image": imgs, "caption": [["A box .", "A crate"]] * 5 + [[""]]})
    hf = hf.cast_column("image", datasets.Image())
    hf.save_to_disk(str(tmp_path / "hf"))
    with pytest.warns(UserWarning, match="without a non-empty caption"):
        dm = CaptionDataModule(
            dataset="hf", hf_name=str(tmp_path / "hf"), image_size=32, batch_size=2, val_fraction=0.2, test_fraction=0.2
        )
        dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch.images.shape == (2, 3, 32, 32) and batch.refs[0] == ["a box", "a crate"]
    with pytest.raises(ConfigError):
        CaptionDataModule(dataset="coco")


# ---------------------------------------------------------------------------------------------
# bad images
# ---------------------------------------------------------------------------------------------
def test_image_modes_are_converted_to_rgb(tmp_path: Path) -> None:
    _img(tmp_path / "gray.png", "L")
    _img(tmp_path / "rgba.png", "RGBA")
    _img(tmp_path / "pal.gif", "P")
    _img(tmp_path / "cmyk.jpg", "CMYK")
    Image.fromarray(np.arange(600, dtype=np.uint16).reshape(20, 30) * 100).save(tmp_path / "deep.png")
    pal = Image.new("P", (10, 10))
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pal_t.png", transparency=0)
    for name in ("gray.png", "rgba.png", "pal.gif", "cmyk.jpg", "deep.png", "pal_t.png"):
        img = load_rgb(tmp_path / name)
        assert img.mode == "RGB", name
    deep = np.asarray(load_rgb(tmp_path / "deep.png"))
    assert 0 < deep.max() <= 255 and deep.std() > 10  # 16-bit rescaled, not clipped to white
    # transparent palette pixels are composited on white
    assert np.asarray(load_rgb(tmp_path / "pal_t.png"))[0, 0].tolist() == [255, 255, 255]


def test_large_image_is_shrunk(tmp_path: Path) -> None:
    Image.new("RGB", (4000, 3000), (10, 200, 30)).save(tmp_path / "big.jpg", quality=50)
    img = load_rgb(tmp_path / "big.jpg")
    assert max(img.size) <= 1024 and img.mode == "RGB"


def test_bad_image_files_raise_clear_errors(tmp_path: Path) -> None:
    _img(tmp_path / "ok.jpg", size=(64, 64))
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.jpg").write_text("not an image", encoding="utf-8")
    (tmp_path / "empty.png").write_bytes(b"")
    for name, pattern in (
        ("trunc.jpg", "truncated"),
        ("text.jpg", "not an image"),
        ("empty.png", "empty"),
        ("missing.png", "no such"),
    ):
        with pytest.raises(ImageError, match=name.replace(".", r"\.") + ".*" + pattern):
            load_rgb(tmp_path / name)
    assert issubclass(ImageError, UserError)


def test_unreadable_image_is_skipped_in_training(tmp_path: Path) -> None:
    from tasks.captioning.data import CaptionCollate, FileCaptionDataset
    from tasks.captioning.images import eval_transform
    from tasks.captioning.sources import CaptionRecord
    from tasks.captioning.vocab import CaptionVocab

    _img(tmp_path / "good.jpg")
    (tmp_path / "bad.jpg").write_text("oops", encoding="utf-8")
    ds = FileCaptionDataset(
        [CaptionRecord(tmp_path / "good.jpg", ["a cat"]), CaptionRecord(tmp_path / "bad.jpg", ["a dog"])],
        eval_transform(32),
        train=True,
    )
    with pytest.warns(UserWarning, match="bad.jpg"):
        items = [ds[0], ds[1]]
    vocab = CaptionVocab.build(["a cat", "a dog"])
    batch = CaptionCollate(vocab, 10)(items)
    assert batch is not None and len(batch) == 1 and batch.refs == [["a cat"]]
    empty = CaptionCollate(vocab, 10)([None])  # every image failed: an empty batch that still counts it
    assert len(empty) == 0 and empty.skipped == 1


# ---------------------------------------------------------------------------------------------
# model pieces
# ---------------------------------------------------------------------------------------------
def _vocab() -> dict:
    from tasks.captioning.data import CaptionDataModule

    return CaptionDataModule().vocab  # the closed scene vocabulary, no data read


@pytest.mark.parametrize(
    ("decoder", "attention"),
    [("rnn", "additive"), ("rnn", "location"), ("rnn", "multihead"), ("transformer", "additive")],
)
def test_incremental_step_matches_teacher_forcing(decoder: str, attention: str) -> None:
    from tasks.captioning.module import CaptioningModule

    torch.manual_seed(0)
    m = CaptioningModule(
        vocab=_vocab(),
        decoder=decoder,
        attention=attention,
        encoder_dim=32,
        attention_options={"hidden_dim": 16} if attention != "multihead" else {"num_heads": 2},
        embed_dim=16,
        hidden_dim=32,
        num_heads=2,
        ffn_dim=64,
        dropout=0.0,
        image_size=48,
    ).eval()
    images = torch.randn(2, 3, 48, 48)
    inputs = torch.tensor([[1, 4, 21, 8, 0], [1, 4, 20, 9, 10]])  # shorter first: exercises the re-sorting
    with torch.no_grad():
        logits, alphas = m(images, inputs, need_weights=True)  # (B, T, V)
        feats = m.encoder(images)
        assert feats.shape == (2, 36, 32)  # 48 px / 16 -> 3x3 map, pooled to the 6x6 grid
        state = m.decoder.init_state(feats, None, summary=feats.mean(1))
        for t in range(inputs.shape[1]):
            logp, state, attn = m.decoder.step(inputs[:, t], state)
            real = inputs[:, t] != 0  # padded positions are not computed in teacher forcing
            assert torch.allclose(logp[real], logits[real, t].log_softmax(-1), atol=1e-4), t
            assert attn is not None and attn.shape == (2, 36)
            assert torch.allclose(attn.sum(-1), torch.ones(2), atol=1e-4)
    if decoder == "rnn":
        assert alphas is not None and alphas.shape == (2, 5, 36)


def test_torchvision_encoders_and_local_pretrained_file(tmp_path: Path) -> None:
    import torchvision

    from tasks.captioning.encoder import ImageEncoder

    torch.manual_seed(0)
    ref = torchvision.models.resnet18(weights=None)
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    enc = ImageEncoder("resnet18", dim=32, grid_size=7, pretrained=str(tmp_path / "r18.pth"), trainable_blocks=1)
    assert torch.equal(enc.backbone[1][0].conv1.weight, ref.layer1[0].conv1.weight)  # loaded, not re-initialised
    trainable = {n.split(".")[0] for n, p in enc.backbone.named_parameters() if p.requires_grad}
    assert trainable == {"4"}  # only layer4 (the last block) is fine-tuned
    enc.train()
    assert not enc.backbone[0][1].training  # frozen BatchNorm stays in eval mode
    assert enc(torch.randn(1, 3, 64, 64)).shape == (1, 49, 32)
    mob = ImageEncoder("mobilenet_v3_small", dim=16, grid_size=2, trainable_blocks=0)
    assert mob(torch.randn(1, 3, 64, 64)).shape == (1, 4, 16)
    assert not any(p.requires_grad for p in mob.backbone.parameters())
    with pytest.raises(ConfigError, match="not found"):
        ImageEncoder("resnet18", pretrained=str(tmp_path / "nope.pth"))
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(ConfigError, match="junk.pth"):
        ImageEncoder("resnet18", pretrained=str(tmp_path / "junk.pth"))
    with pytest.raises(ConfigError, match="encoder"):
        ImageEncoder("vgg99")


# ---------------------------------------------------------------------------------------------
# CLI, checkpoints, inference
# ---------------------------------------------------------------------------------------------
def _fit_args(root: Path) -> list[str]:
    return ["-c", str(CONFIGS / "default.yaml"), "-c", str(CONFIGS / "tiny.yaml"), f"--trainer.default_root_dir={root}"]


def test_cli_fast_dev_run(tmp_path: Path) -> None:
    from tasks.captioning.cli import main

    assert main(["fit", *_fit_args(tmp_path), "--trainer.fast_dev_run=true"]) == 0


def test_cli_bad_config_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tasks.captioning.cli import main

    code = main(
        [
            "fit",
            *_fit_args(tmp_path),
            "--data.dataset=coco",
            "--data.data_dir",
            str(tmp_path / "none"),
            "--trainer.fast_dev_run=true",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "none" in err


@pytest.fixture(scope="module")
def trained_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint written by ``fit`` through the CLI (tiny overlay: 2 steps)."""
    from tasks.captioning.cli import main

    root = tmp_path_factory.mktemp("cap_fit")
    assert main(["fit", *_fit_args(root)]) == 0
    ckpts = sorted(root.rglob("last.ckpt"))
    assert ckpts, list(root.rglob("*"))
    return ckpts[0]


def test_cli_checkpoint_loads_weights_only(trained_ckpt: Path) -> None:
    ckpt = torch.load(trained_ckpt, weights_only=True, map_location="cpu")
    meta = ckpt["attn_suite"]
    assert meta["task"] == "captioning" and meta["format"] == FORMAT_VERSION and meta["image_size"] == 96
    assert meta["vocab"]["vocab"][:4] == ["<pad>", "<s>", "</s>", "<unk>"]


def test_checkpoint_caption_round_trip_and_cli(
    trained_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tasks.captioning.cli import main
    from tasks.captioning.module import CaptioningModule

    model = CaptioningModule.load_from_checkpoint(trained_ckpt)
    sc = scenes.make_scene(0, "test", 1)
    sc.image.save(tmp_path / "scene.png")
    sc.image.convert("L").save(tmp_path / "gray.jpg")
    out = model.caption([tmp_path / "scene.png", sc.image], beam=2, return_attention=True)
    assert out[0][0] == out[1][0]  # path and PIL image give the same caption
    text, weights = out[0]
    assert weights.shape == (len(text.split()), 6, 6)
    assert isinstance(model.caption([sc.image], beam=1)[0], str)

    (tmp_path / "bad.png").write_text("nope", encoding="utf-8")
    code = main(
        [
            "caption",
            "--ckpt",
            str(trained_ckpt),
            str(tmp_path / "scene.png"),
            str(tmp_path / "bad.png"),
            str(tmp_path / "gray.jpg"),
            "--beam",
            "2",
            "--plot",
            str(tmp_path / "plots"),
        ]
    )
    captured = capsys.readouterr()
    assert code == 1  # one image failed, the others were captioned
    assert torch.is_grad_enabled()  # main() called in-process leaves the caller's autograd state alone
    lines = captured.out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(tmp_path / "scene.png") + "\t")
    assert "bad.png" in captured.err and "Traceback" not in captured.err
    assert (tmp_path / "plots" / "0000_scene.png").stat().st_size > 1000 or not lines[0].split("\t")[1]


def test_cli_predict_writes_one_caption_per_image_in_order(trained_ckpt: Path, tmp_path: Path) -> None:
    from tasks.captioning.cli import main

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, name in enumerate(["b.png", "a.jpg", "c.png"]):
        scenes.make_scene(0, "test", i, 96).image.save(folder / name)
    out = tmp_path / "captions.tsv"
    assert (
        main(
            [
                "predict",
                *_fit_args(tmp_path),
                "--ckpt_path",
                str(trained_ckpt),
                "--data.predict_path",
                str(folder),
                "--predict_output",
                str(out),
            ]
        )
        == 0
    )
    rows = [line.split("\t") for line in out.read_text(encoding="utf-8").splitlines()]
    assert [Path(r[0]).name for r in rows] == ["a.jpg", "b.png", "c.png"] and all(len(r) == 2 for r in rows)


def test_cli_test_subcommand_and_checkpoint_errors(
    trained_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tasks.captioning.cli import main

    assert main(["test", *_fit_args(tmp_path), "--ckpt_path", str(trained_ckpt)]) == 0
    ckpt = torch.load(trained_ckpt, weights_only=True)
    ckpt["attn_suite"]["task"] = "translation"
    torch.save(ckpt, tmp_path / "other.ckpt")
    (tmp_path / "trunc.ckpt").write_bytes(trained_ckpt.read_bytes()[:1000])
    capsys.readouterr()
    for name, pattern in (("other.ckpt", "translation"), ("trunc.ckpt", "trunc"), ("none.ckpt", "not found")):
        code = main(["caption", "--ckpt", str(tmp_path / name), str(tmp_path / "x.png")])
        err = capsys.readouterr().err
        assert code == 2 and pattern in err and "Traceback" not in err, (name, err)


def test_overlay_figure_saved(tmp_path: Path) -> None:
    from tasks.captioning.inference import save_attention_figure

    sc = scenes.make_scene(0, "val", 0)
    words = sc.captions[0]
    w = torch.rand(len(words.split()), 6, 6)
    path = save_attention_figure(sc.image, words, w, tmp_path / "f" / "overlay.png", 96)
    assert path.stat().st_size > 1000
    Image.open(path).verify()


@pytest.mark.slow
def test_overfit_handful_of_scenes_to_exact_captions() -> None:
    import lightning as L

    from tasks.captioning.data import CaptionDataModule
    from tasks.captioning.module import CaptioningModule

    L.seed_everything(0, verbose=False)
    dm = CaptionDataModule(batch_size=4, train_size=4, image_size=64)
    dm.setup("fit")
    dm.datasets["train"].train = False  # always the canonical caption, so "exact" is well defined
    model = CaptioningModule(
        vocab=dm.vocab,
        encoder_dim=64,
        attention_options={"hidden_dim": 32},
        embed_dim=32,
        hidden_dim=96,
        dropout=0.0,
        alpha_reg=0.0,
        lr=1e-2,
        warmup_steps=1,
        lr_schedule="constant",
        image_size=64,
    )
    trainer = L.Trainer(
        max_steps=70,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, train_dataloaders=dm.train_dataloader())
    got = model.caption([scenes.make_scene(0, "train", i, 64).image for i in range(4)], beam=1)
    assert got == [scenes.make_scene(0, "train", i, 64).captions[0] for i in range(4)]


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path: Path) -> None:
    """A few steps with strategy=ddp on 2 CPU processes (gloo); only rank 0 writes checkpoints."""
    import subprocess
    import sys

    # `python -m`: Lightning's DDP launcher re-executes the same command line for rank 1.
    args = ["fit", *_fit_args(tmp_path), "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu"]
    proc = subprocess.run(
        [sys.executable, "-m", "tasks.captioning.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


DDP_TEST = r"""
import json, sys, warnings
warnings.filterwarnings("ignore")
import lightning as L
import torch
from tasks.captioning.data import CaptionDataModule
from tasks.captioning.module import CaptioningModule

mode, folder = sys.argv[1], sys.argv[2]
torch.set_num_threads(1)
# 7 test and 4 unseen rows, one loader each: on 2 ranks the sampler pads the test loader's last shard with a
# repeat of its row 0
dm = CaptionDataModule(batch_size=4, train_size=16, val_size=3, test_size=7, unseen_size=4, image_size=48)
if mode == "make":
    torch.manual_seed(0)
    m = CaptioningModule(vocab=dm.vocab, encoder_dim=16, attention_options={"hidden_dim": 8}, embed_dim=8,
                         hidden_dim=16, max_len=6, image_size=48, beam_size=2, plot_examples=0)
    t = L.Trainer(max_steps=30, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False, limit_val_batches=0)
    t.fit(m, datamodule=dm)
    t.save_checkpoint(folder + "/m.ckpt", weights_only=True)
else:
    kw = {"strategy": "ddp", "devices": 2} if mode == "ddp" else {"devices": 1}
    t = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", **kw)
    t.test(CaptioningModule.load_from_checkpoint(folder + "/m.ckpt"), datamodule=dm, verbose=False)
    if t.is_global_zero:
        with open(f"{folder}/{mode}.json", "w") as f:
            json.dump({k: float(v) for k, v in t.callback_metrics.items()}, f)
"""


@pytest.mark.slow
def test_ddp_test_scores_each_split_as_one_process(tmp_path: Path) -> None:
    """``test`` on 2 CPU processes: the corpus and pointing scores of both test splits (``test/``, ``unseen/``),
    gathered over the ranks with the padding repeat dropped, are those of one process."""
    import subprocess
    import sys

    script = tmp_path / "ddp_test.py"  # a file: Lightning's DDP launcher re-executes the command line for rank 1
    script.write_text(DDP_TEST, encoding="utf-8")
    for mode in ("make", "one", "ddp"):
        proc = subprocess.run(
            [sys.executable, str(script), mode, str(tmp_path)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    one, ddp = (json.loads((tmp_path / f"{mode}.json").read_text()) for mode in ("one", "ddp"))
    # the losses are means over batches (the padding repeat counts), not corpus scores
    scores = {k: v for k, v in one.items() if not k.endswith("/loss")}
    assert {k.split("/")[0] for k in scores} == {"test", "unseen"} and "unseen/bleu4" in scores
    assert "unseen/pointing" in scores and not [k for k in ddp if "dataloader_idx" in k]
    assert {k: ddp[k] for k in scores} == pytest.approx(scores, nan_ok=True)


# ---------------------------------------------------------------------------------------------
# review fixes: skipped images, DDP-safe skip step, eval de-duplication, prediction writer
# ---------------------------------------------------------------------------------------------
def _tiny_module(**kw: object):
    from tasks.captioning.module import CaptioningModule

    torch.manual_seed(0)
    args = dict(
        vocab=_vocab(),
        encoder_dim=16,
        attention_options={"hidden_dim": 8},
        embed_dim=8,
        hidden_dim=16,
        max_len=4,
        image_size=48,
        beam_size=1,
        plot_examples=0,
    )
    args.update(kw)
    return CaptioningModule(**args)


def test_collate_counts_skipped_images() -> None:
    from tasks.captioning.data import Batch, CaptionCollate
    from tasks.captioning.vocab import CaptionVocab

    vocab = CaptionVocab.build(["a cat"])
    sample = {"image": torch.zeros(3, 8, 8), "caption": "a cat", "refs": ["a cat"], "index": 4}
    batch = CaptionCollate(vocab, 10)([None, sample, None])
    assert len(batch) == 1 and batch.skipped == 2 and batch.index.tolist() == [4]
    assert batch.to("cpu").skipped == 2
    empty = CaptionCollate(vocab, 10)([None, None])
    assert isinstance(empty, Batch) and len(empty) == 0 and empty.skipped == 2
    assert CaptionCollate(vocab, 10)([sample]).skipped == 0


class _FakeTrainer:
    """Just what `training_step` reads (``world_size``) and `LightningModule.log` needs."""

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size


def test_all_skipped_batch_gives_zero_loss_reaching_every_parameter(monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.captioning.data import Batch

    m = _tiny_module()
    logged: dict[str, tuple[float, str]] = {}
    monkeypatch.setattr(
        m, "log", lambda name, value, **kw: logged.__setitem__(name, (float(value), kw.get("reduce_fx")))
    )
    m._trainer = _FakeTrainer(world_size=2)  # type: ignore[assignment]
    loss = m.training_step(Batch.empty(skipped=3), 0)
    assert loss is not None and float(loss.detach()) == 0.0 and loss.requires_grad
    loss.backward()
    trainable = [p for p in m.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None and not p.grad.any() for p in trainable)
    assert logged["train/skipped_images"] == (3.0, "sum") and logged["train/skipped_batches"] == (1.0, "sum")
    m._trainer = _FakeTrainer(world_size=1)  # type: ignore[assignment]
    assert m.training_step(Batch.empty(skipped=1), 1) is None  # one process: Lightning skips the step


def test_skipped_images_logged_as_epoch_sum(tmp_path: Path) -> None:
    import lightning as L
    from torch.utils.data import DataLoader

    from tasks.captioning.data import CaptionCollate
    from tasks.captioning.vocab import CaptionVocab

    m = _tiny_module()
    vocab = CaptionVocab.from_dict(m.hparams.vocab)
    good = {"image": torch.zeros(3, 48, 48), "caption": "a red circle", "refs": ["a red circle"], "index": 0}
    items = [good, None, None, good, None, None]  # batches of 2: [1 skipped], [1 skipped], [all 2 skipped]
    loader = DataLoader(items, batch_size=2, collate_fn=CaptionCollate(vocab, 10))
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(m, train_dataloaders=loader)
    assert float(trainer.callback_metrics["train/skipped_images"]) == 4.0
    assert float(trainer.callback_metrics["train/skipped_batches"]) == 1.0


def _corpus(rows: list[tuple[int, tuple[str, list[str]]]]) -> CorpusOutputs:
    """The validation corpus of a tiny module holding gathered ``(index, (hypothesis, references))`` rows."""
    corpus = _tiny_module().corpus["val"]
    assert isinstance(corpus, CorpusOutputs)
    if rows:
        corpus.update([i for i, _ in rows], [h for _, (h, _) in rows], [r for _, (_, r) in rows])
    return corpus


def test_dedupe_by_index_drops_ddp_padding_repeats() -> None:
    # 5 images on 2 ranks: DistributedSampler gives rank 0 [0, 2, 4] and rank 1 [1, 3, 0] (padding repeat)
    gathered = [(i, (f"h{i}", [f"r{i}"])) for i in (0, 2, 4, 1, 3, 0)]
    hyps, refs = _corpus(gathered).examples()
    assert hyps == ["h0", "h1", "h2", "h3", "h4"] and refs == [["r0"], ["r1"], ["r2"], ["r3"], ["r4"]]
    assert _corpus([]).examples() == ([], [])


def test_validation_scores_count_each_image_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """What `on_validation_epoch_end` scores when the gathered rows hold a padding repeat."""
    import tasks.captioning.task as mod  # the module whose task scores the validation corpus

    m = _tiny_module()
    rows = [(0, ("a b", ["a b"])), (1, ("c", ["c d"]))]
    rows.append(rows[0])  # rank 1 re-evaluated image 0: what the gathered corpus holds
    m.corpus["val"].update([i for i, _ in rows], [h for _, (h, _) in rows], [r for _, (_, r) in rows])
    seen: list[tuple[list[str], list[list[str]]]] = []
    monkeypatch.setattr(mod, "caption_scores", lambda h, r: seen.append((h, r)) or {"bleu4": 0.0})
    monkeypatch.setattr(m, "log", lambda *a, **k: None)
    m._trainer = type("T", (), {"is_global_zero": False, "sanity_checking": False, "world_size": 1})()  # type: ignore[assignment]
    m.on_validation_epoch_end()
    assert seen == [(["a b", "c"], [["a b"], ["c d"]])]


def test_predict_path_with_prediction_writer(tmp_path: Path) -> None:
    """``data.predict_path`` images, predicted through a Trainer with the writer: input order, file names."""
    import lightning as L

    from core.cli.predict import PredictionWriter
    from tasks.captioning.data import CaptionDataModule

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in (2, 0, 1):
        scenes.make_scene(0, "test", i).image.save(folder / f"s{i}.png")
    (folder / "notes.txt").write_text("not an image", encoding="utf-8")
    (tmp_path / "list.txt").write_text("# my images\nimgs/s1.png\n\nimgs/s0.png\n", encoding="utf-8")
    m = _tiny_module(image_size=96)
    for path, expected in (
        (folder, ["s0.png", "s1.png", "s2.png"]),
        (tmp_path / "list.txt", ["s1.png", "s0.png"]),
        (folder / "s2.png", ["s2.png"]),
    ):
        dm = CaptionDataModule(predict_path=str(path), eval_batch_size=2)
        out = tmp_path / "out.tsv"
        trainer = L.Trainer(
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[PredictionWriter(str(out))],
            default_root_dir=tmp_path,
        )
        trainer.predict(m, datamodule=dm, return_predictions=False)
        lines = out.read_text(encoding="utf-8").splitlines()
        assert [Path(ln.split("\t")[0]).name for ln in lines] == expected, (path, lines)
        assert all(len(ln.split("\t")) == 2 for ln in lines)
    with pytest.raises(DataError, match="nope"):
        CaptionDataModule(predict_path=str(tmp_path / "nope")).predict_records()
    (tmp_path / "bad_list.txt").write_text("imgs/s0.png\nimgs/gone.png\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad_list\.txt: line 2: .*gone\.png"):
        CaptionDataModule(predict_path=str(tmp_path / "bad_list.txt")).predict_records()


def test_pretrained_download_failure_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import urllib.error

    import torchvision.models as tvm

    from tasks.captioning.encoder import ImageEncoder

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tvm, "get_model", offline)
    with pytest.raises(ConfigError, match="could not get the torchvision weights for resnet18.*local weights file"):
        ImageEncoder("resnet18", 32, 2, pretrained="imagenet")


def test_transformer_caption_decoder_reorders_its_cache_itself() -> None:
    """Beam search over the Transformer caption decoder: its KV caches follow the beams through
    ``DecoderState.reorder``; the same search with ordinary per-step reordering gives the same captions."""
    from core.decoding.beam import DecoderState, beam_search
    from tasks.captioning.decoder import TransformerCaptionDecoder

    torch.manual_seed(0)
    dec = TransformerCaptionDecoder(
        vocab_size=20, feat_dim=12, d_model=16, num_layers=2, num_heads=2, ffn_dim=32, max_len=12
    ).eval()
    feats = torch.randn(3, 9, 12)  # (B, S, D) image grid
    kw = dict(batch_size=3, bos_id=1, eos_id=2, max_len=7, beam_size=4, nbest=4, pad_id=0)
    with torch.no_grad():
        cached = dec.init_state(feats)
        assert cached.cache is not None
        fused = beam_search(dec.step, cached, **kw)
        eager = DecoderState(beams=cached.cache, shared=cached.shared)  # beam search reorders them itself

        def ordinary(t: torch.Tensor, s: DecoderState) -> tuple:
            lp, new, w = dec.step(t, DecoderState(shared=s.shared, cache=s.beams))
            return lp, DecoderState(beams=new.cache, shared=new.shared), w

        plain = beam_search(ordinary, eager, **kw)
    assert fused.tokens == plain.tokens
    assert fused.scores == plain.scores
