"""Does the captioner look at what it names? Pointing accuracy on generated scenes.

Each generated scene knows where its objects are (:meth:`tasks.captioning.scenes.Scene.regions`), so the
attention map of every colour or shape word the model generates can be checked against the object the word
names: the share of such words whose attention peak lies on that object (`core.metrics.alignment.pointing_accuracy`).
The captions scored are the model's own (beam search), not the references: this measures where the model
looks when it says a word, whatever it says.

Which object a word names (`named_cells`):

1. The candidates are the scene's objects with that colour (a colour word) or shape (a shape word). None:
   the word names nothing in the scene, and it counts as a miss (its region is empty).
2. Several candidates: the rest of the word's noun phrase narrows them, as captions spell phrases
   ``"a <size> <colour> <shape>"``: first the shape after a colour word, or the colour before a shape word,
   then the size word. A narrowing step is only applied when some candidate is left, so "red square" in a
   scene with a red circle and a red triangle still names "a red object", either of them.
3. The region is the union of the cells of what is left (one object, or several identical ones: looking at
   any of them is right).

The baseline without attention (``model.attention=none``) gets no score: its "map" is the uniform average
it takes, and the peak of a uniform map points nowhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.metrics.alignment import pointing_accuracy
from tasks.captioning import scenes as scene_gen
from tasks.captioning.inference import Caption
from tasks.captioning.scenes import ObjectRegion, Scene

__all__ = ["POINTING_SCENES", "caption_pointing", "gold_scenes", "named_cells", "pointing_scores", "scored_words"]

#: Scenes of a split scored at each validation / test (a few dozen: seconds on a CPU).
POINTING_SCENES = 32
_KINDS = {"colour": frozenset(scene_gen.COLOURS), "shape": frozenset(scene_gen.SHAPES)}
_SIZES = frozenset(scene_gen.SIZES)


def _kind(word: str) -> str | None:
    """``"colour"``, ``"shape"`` or None (a word that is not scored)."""
    return next((k for k, words in _KINDS.items() if word in words), None)


def named_cells(words: Sequence[str], i: int, regions: Sequence[ObjectRegion]) -> frozenset[int]:
    """The grid cells of the object(s) that word ``i`` of a caption names (rule in the module docstring).

    Args:
        words: the caption's words.
        i: index of a colour or shape word in ``words``.
        regions: the scene's objects (`Scene.regions`).

    Returns:
        Flat cell indices; empty when no object of the scene has that colour or shape (a miss).
    """
    word, kind = words[i], _kind(words[i])
    if kind is None:
        raise ValueError(f"word {i} ({word!r}) is neither a colour nor a shape word")
    prev = words[i - 1] if i > 0 else None
    nxt = words[i + 1] if i + 1 < len(words) else None
    # The neighbours that belong to the same "a <size> <colour> <shape>" phrase, in narrowing order.
    narrowing: list[tuple[str, str | None]] = []
    if kind == "colour":
        narrowing.append(("shape", nxt if nxt in _KINDS["shape"] else None))
        narrowing.append(("size", prev if prev in _SIZES else None))
    else:
        colour = prev if prev in _KINDS["colour"] else None
        narrowing.append(("colour", colour))
        before = words[i - 2] if colour is not None and i > 1 else prev
        narrowing.append(("size", before if before in _SIZES else None))
    candidates = [r for r in regions if getattr(r, kind) == word]
    for attribute, value in narrowing:
        if len(candidates) <= 1 or value is None:
            continue
        narrowed = [r for r in candidates if getattr(r, attribute) == value]
        if narrowed:  # a neighbour naming no candidate does not make the word name nothing
            candidates = narrowed
    return frozenset().union(*(r.cells for r in candidates))


def scored_words(words: Sequence[str], regions: Sequence[ObjectRegion]) -> list[tuple[int, str, frozenset[int]]]:
    """``(word index, "colour" or "shape", cells it names)`` for every colour and shape word of a caption."""
    return [(i, kind, named_cells(words, i, regions)) for i, w in enumerate(words) if (kind := _kind(w)) is not None]


def pointing_scores(model: Any, scenes: Sequence[Scene], beam: int = 3, batch_size: int = 16) -> dict[str, float]:
    """Pointing accuracy of a captioning model's own captions on generated scenes.

    Args:
        model: a `tasks.captioning.module.CaptioningModule` (anything with ``caption_images`` and the
            ``decoder`` / ``attention`` hyper-parameters).
        scenes: generated scenes (their objects carry positions, as `scenes.make_scene` makes them).
        beam: beam width of the captions.
        batch_size: images per forward pass.

    Returns:
        :func:`caption_pointing` of the model's captions; empty for a model without attention maps
        (``attention=none``, whose uniform map points nowhere).
    """
    hp = model.hparams
    if (hp.decoder == "rnn" and hp.attention == "none") or not scenes:
        return {}
    return caption_pointing(model.caption_images([s.image for s in scenes], beam=beam, batch_size=batch_size), scenes)


def caption_pointing(captions: Sequence[Sequence[Caption]], scenes: Sequence[Scene]) -> dict[str, float]:
    """Pointing accuracy of the best caption of each scene (``captions[i][0]``, with its attention maps).

    Returns:
        ``{"pointing": share of scored words whose attention peak lies on the object they name,
        "pointing_colour": the share over colour words, "pointing_shape": over shape words,
        "pointing_words": number of words scored}``; a share is NaN when no such word was generated.
        Empty when a caption has no attention maps (a decoder that returns none).
    """
    maps, regions, kinds = [], [], []
    for scene, candidates in zip(scenes, captions):
        best = candidates[0]
        if best.attention is None:  # a decoder that returns no maps: nothing to score
            return {}
        gold = scene.regions(best.attention.shape[-1])  # (T, g, g) maps: the g x g grid
        for i, kind, cells in scored_words(best.words, gold):
            maps.append(best.attention[i])  # (g, g): flattened row-major, as the cells index it
            regions.append(cells)
            kinds.append(kind)
    out = {"pointing": pointing_accuracy(maps, regions)}
    for kind in _KINDS:
        picked = [j for j, k in enumerate(kinds) if k == kind]
        out[f"pointing_{kind}"] = pointing_accuracy([maps[j] for j in picked], [regions[j] for j in picked])
    out["pointing_words"] = float(len(maps))
    return out


def gold_scenes(datamodule: Any, split: str, limit: int = POINTING_SCENES) -> list[Scene]:
    """The first ``limit`` scenes of ``split`` of a generated-scenes data module (empty for any other data).

    Args:
        datamodule: a `tasks.captioning.data.CaptionDataModule` (or None).
        split: ``"val"``, ``"test"`` or ``"unseen"``.
        limit: at most this many scenes (fewer when the split is smaller).

    Returns:
        Scenes ``0 .. n-1`` of the split, exactly those its loader serves first; ``[]`` when the data is not
        the generated corpus (real corpora have no object positions).
    """
    held_out: dict[str, scene_gen.Split] = {"val": "val", "test": "test", "unseen": "unseen"}
    if getattr(datamodule, "dataset", None) != "scenes" or split not in held_out:
        return []
    hp = datamodule.hparams
    n = min(limit, int(getattr(hp, f"{split}_size")))
    return [scene_gen.make_scene(hp.seed, held_out[split], i, datamodule.image_size) for i in range(n)]
