"""Captioning: gold object cells of generated scenes, pointing accuracy, the ``none`` baseline, and the
pointing scores logged at validation and test. Tiny models: seconds each on a CPU."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from tasks.captioning import scenes
from tasks.captioning.alignment import gold_scenes, named_cells, pointing_scores
from tasks.captioning.inference import Caption
from tasks.captioning.scenes import ObjectRegion, Scene, SceneObject


def _tiny_module(**kw: object):
    from tasks.captioning.data import CaptionDataModule
    from tasks.captioning.module import CaptioningModule

    torch.manual_seed(0)
    args = dict(
        vocab=CaptionDataModule().vocab,  # the closed scene vocabulary, nothing generated
        grid_size=3,
        encoder_dim=16,
        attention_options={"hidden_dim": 8},
        embed_dim=8,
        hidden_dim=16,
        max_len=6,
        image_size=48,
        beam_size=1,
        plot_examples=0,
    )
    args.update(kw)
    return CaptioningModule(**args)


def _trainer(tmp_path: Path, **kw: object) -> L.Trainer:
    opts = dict(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    opts.update(kw)
    return L.Trainer(**opts)  # type: ignore[arg-type]


def _hand_made_scene() -> Scene:
    """96 px: a large red square at the top left, a small blue circle in the middle, a small red circle at the
    bottom right."""
    objs = [
        SceneObject("red", "square", "large", 0, 0, cx=16.0, cy=16.0, radius=12.0),  # half side 10.2 px
        SceneObject("blue", "circle", "small", 1, 1, cx=48.0, cy=48.0, radius=6.0),
        SceneObject("red", "circle", "small", 2, 2, cx=88.0, cy=88.0, radius=6.0),
    ]
    return Scene(Image.new("RGB", (96, 96)), ["a large red square ..."], objs)


# ---------------------------------------------------------------------------------------------
# gold: the cells each object covers
# ---------------------------------------------------------------------------------------------
def test_object_cells_of_hand_made_scene() -> None:
    scene = _hand_made_scene()
    # 3x3 (32 px cells): each object lies inside one cell.
    assert [r.cells for r in scene.regions(3)] == [{0}, {4}, {8}]
    # 6x6 (16 px cells): the square spans pixels 6..26 and the middle circle 42..54, across cell borders
    # (16 and 48); the bottom-right circle (82..94) stays inside cell (5, 5).
    square, middle, corner = scene.regions(6)
    assert square.cells == {0, 1, 6, 7} and (square.colour, square.shape, square.size) == ("red", "square", "large")
    assert middle.cells == {14, 15, 20, 21}
    assert corner.cells == {35}
    # 1x1: everything is the one cell.
    assert all(r.cells == {0} for r in scene.regions(1))
    # Positions are pixels of the scene image: in a 192 px image the same object is half as big, inside cell (1, 1).
    assert scenes.object_cells(scene.objects[1], 192, 6) == {7}
    with pytest.raises(ValueError, match="no position"):
        scenes.object_cells(SceneObject("red", "circle", "small", 0, 0), 96, 3)


def test_generated_scene_objects_sit_in_their_layout_cell() -> None:
    """make_scene keeps each object inside its 3x3 layout cell, so at grid 3 its cell is ``row * 3 + col``;
    recording the positions did not change the scenes (the captions of a known seed are unchanged)."""
    assert scenes.make_scene(0, "train", 0).captions[0] == "a large red diamond to the left of a large purple square"
    for i in range(40):
        scene = scenes.make_scene(0, "val", i, 64)
        for obj, region in zip(scene.objects, scene.regions(3)):
            assert region.cells == {obj.row * 3 + obj.col}
            mask = scenes.object_mask(obj, 64)
            # The mask is where the scene was painted: its pixels are far from the background's grey.
            colour = np.asarray(scene.image, dtype=float)[mask].mean(0)
            assert np.abs(colour - scenes.COLOURS[obj.colour]).max() < 40


# ---------------------------------------------------------------------------------------------
# which object a word names
# ---------------------------------------------------------------------------------------------
def test_named_cells_rules() -> None:
    regions = [
        ObjectRegion("red", "square", "large", frozenset({0})),
        ObjectRegion("blue", "circle", "small", frozenset({4})),
        ObjectRegion("red", "circle", "small", frozenset({8})),
    ]
    words = "a small red circle next to a blue circle".split()
    assert named_cells(words, 2, regions) == {8}  # "red": two red objects, the next word "circle" picks one
    assert named_cells(words, 3, regions) == {8}  # "circle": two circles, "red" before it picks one
    assert named_cells(words, 7, regions) == {4}  # "blue": the only blue object
    # "red triangle": no red triangle, so the neighbour does not narrow: either red object is right.
    assert named_cells("a red triangle".split(), 1, regions) == {0, 8}
    # A word naming no object of the scene: empty region, a miss.
    assert named_cells("a green circle".split(), 1, regions) == frozenset()
    assert named_cells("a green diamond".split(), 2, regions) == frozenset()
    # The size decides between two objects of the same colour and shape.
    two = [
        ObjectRegion("red", "circle", "small", frozenset({1})),
        ObjectRegion("red", "circle", "large", frozenset({2})),
    ]
    assert named_cells("a large red circle".split(), 2, two) == {2}
    assert named_cells("a large red circle".split(), 3, two) == {2}
    with pytest.raises(ValueError, match="neither"):
        named_cells(words, 0, regions)


# ---------------------------------------------------------------------------------------------
# pointing accuracy on forced attention
# ---------------------------------------------------------------------------------------------
def _forced(monkeypatch: pytest.MonkeyPatch, model, text: str, peaks: list[int]) -> None:
    """Make ``model`` caption every image ``text`` with word t's attention peaked on flat cell ``peaks[t]``."""
    g = model.hparams.grid_size
    attention = torch.full((len(peaks), g * g), 0.01)
    attention[torch.arange(len(peaks)), torch.tensor(peaks)] = 1.0

    def caption_images(images, beam=5, nbest=1, batch_size=16):
        return [[Caption(text, 0.0, text.split(), attention.view(-1, g, g))] for _ in images]

    monkeypatch.setattr(model, "caption_images", caption_images)


def test_pointing_on_forced_attention(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _tiny_module(grid_size=3)
    scene = _hand_made_scene()  # red square cell 0, blue circle cell 4, red circle cell 8
    text = "a small red circle next to a blue circle"
    # Peaks on the named objects: "red" and the first "circle" on cell 8, "blue" and "circle" on cell 4.
    _forced(monkeypatch, model, text, [0, 0, 8, 8, 0, 0, 0, 4, 4])
    right = pointing_scores(model, [scene, scene])
    assert right == {"pointing": 1.0, "pointing_colour": 1.0, "pointing_shape": 1.0, "pointing_words": 8.0}
    # Every peak on the red square: no word names it.
    _forced(monkeypatch, model, text, [0] * 9)
    assert pointing_scores(model, [scene])["pointing"] == 0.0
    # The colours right, the shapes on the wrong object.
    _forced(monkeypatch, model, text, [0, 0, 8, 4, 0, 0, 0, 4, 8])
    mixed = pointing_scores(model, [scene])
    assert (mixed["pointing_colour"], mixed["pointing_shape"], mixed["pointing"]) == (1.0, 0.0, 0.5)
    # A caption without colour or shape words scores nothing: NaN shares, zero words.
    _forced(monkeypatch, model, "a small", [0, 0])
    empty = pointing_scores(model, [scene])
    assert empty["pointing_words"] == 0.0 and math.isnan(empty["pointing"])


def test_pointing_cells_match_the_models_grid(monkeypatch: pytest.MonkeyPatch) -> None:
    """At grid 6 the cells are those of a 6x6 map: a peak on a corner of the square is a hit, one cell off
    is a miss."""
    model = _tiny_module(grid_size=6)
    scene = _hand_made_scene()
    _forced(monkeypatch, model, "a red square", [0, 7, 7])
    assert pointing_scores(model, [scene])["pointing"] == 1.0
    _forced(monkeypatch, model, "a red square", [0, 2, 12])  # right of and below the square's cells
    assert pointing_scores(model, [scene])["pointing"] == 0.0


# ---------------------------------------------------------------------------------------------
# the baseline without attention
# ---------------------------------------------------------------------------------------------
def test_none_attention_fits_decodes_and_has_no_pointing(tmp_path: Path) -> None:
    from tasks.captioning.data import CaptionDataModule

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = _tiny_module(attention="none")  # the hidden_dim option is the additive one's: dropped
    assert any("attention 'none' takes no options: {'hidden_dim': 8} ignored" in str(w.message) for w in caught)
    assert model.hparams.attention_options is None  # so a reloaded checkpoint does not warn again
    additive = _tiny_module(attention="additive")
    n_none, n_additive = (sum(p.numel() for p in m.parameters()) for m in (model, additive))
    attention_params = sum(p.numel() for p in additive.decoder.attention.parameters())
    assert attention_params > 0 and n_none == n_additive - attention_params

    dm = CaptionDataModule(batch_size=4, train_size=8, val_size=2, test_size=2, unseen_size=2, image_size=48)
    before = [p.detach().clone() for p in model.parameters()]
    _trainer(tmp_path, max_steps=3, limit_val_batches=0).fit(model, datamodule=dm)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # it trained
    images = [s.image for s in gold_scenes(dm, "val")]
    (text, weights), _ = model.caption(images, beam=2, return_attention=True)
    assert isinstance(text, str) and weights.shape == (len(text.split()), 3, 3)
    if len(text.split()):  # the "map" is the uniform mean over the grid
        assert torch.allclose(weights, torch.full_like(weights, 1 / 9))
    assert pointing_scores(model, gold_scenes(dm, "val")) == {}


# ---------------------------------------------------------------------------------------------
# logged at validation and test
# ---------------------------------------------------------------------------------------------
def test_pointing_logged_at_validation_and_test(tmp_path: Path) -> None:
    from tasks.captioning.data import CaptionDataModule

    dm = CaptionDataModule(batch_size=4, train_size=8, val_size=3, test_size=2, unseen_size=2, image_size=48)
    model = _tiny_module()
    trainer = _trainer(tmp_path, max_steps=2, limit_val_batches=1)
    trainer.fit(model, datamodule=dm)
    metrics = trainer.callback_metrics
    assert {"val/pointing", "val/pointing_colour", "val/pointing_shape", "val/pointing_words"} <= set(metrics)
    # The same few validation scenes, captioned again by the trained model, give the logged numbers.
    assert [s.captions for s in gold_scenes(dm, "val")] == [
        scenes.make_scene(0, "val", i, 48).captions for i in range(3)
    ]
    again = pointing_scores(model, gold_scenes(dm, "val"), beam=model.hparams.beam_size)
    for name, value in again.items():
        logged = float(metrics[f"val/{name}"])
        assert logged == pytest.approx(value, nan_ok=True), name
    trainer.test(model, datamodule=dm, verbose=False)
    assert {"test/pointing_words", "unseen/pointing_words"} <= set(trainer.callback_metrics)
    # Real corpora have no object positions: nothing to score.
    assert gold_scenes(type("Flickr", (), {"dataset": "flickr"})(), "val") == []
