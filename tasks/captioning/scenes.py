"""Generated scenes: the embedded, offline captioning corpus.

Each image (``image_size`` px square, 96 by default) shows 1-3 coloured shapes on a noisy,
textured background, laid out on a 3x3 grid of cells with jitter so that spatial relations
are unambiguous:

* 1 object: any cell; captions ``"a small red circle"`` (+ 2 paraphrases).
* 2 objects: same row or same column; ``"a small red circle above a large blue square"``
  and the converse ``"a large blue square below a small red circle"`` (+ ``next to`` for rows).
* 3 objects: a full row or column; ``"a small red circle a large blue square and a small green
  triangle from left to right"`` and the reverse order ``"... from right to left"``.

The first caption of an image is its canonical one (objects named in reading order); the
others are paraphrases, so BLEU against all references rewards any correct description.
Captions are templated on purpose: the mapping image -> caption is learnable in minutes on a
CPU, yet still needs the attention to find colour, shape, size and relative position.

Everything is a pure function of ``(seed, split, index)`` — no files, no caches — so every
DDP rank and DataLoader worker produces the same scene without coordination (rank-safe by
construction).

The ``"unseen"`` split only contains images with at least one colour-shape pair from
`HELD_OUT_PAIRS`, which never occur in train/val/test: it measures compositional
generalisation (known words, new combinations).

Each scene also knows where its objects are (`SceneObject.cx` / ``cy`` / ``radius``), so it is gold for
"does the attention point at the right thing": `Scene.regions` gives, for each object, its colour and shape
words and the cells of a ``g x g`` attention grid it covers (`object_cells`; used by
:mod:`tasks.captioning.alignment`).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

from core.errors import ConfigError

#: Smallest scene side in pixels (smaller shapes would vanish).
MIN_IMAGE_SIZE = 48

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 205, 35),
    "purple": (145, 50, 185),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
SIZES: tuple[str, ...] = ("small", "large")
#: Colour-shape pairs that never appear in train/val/test; the "unseen" split is made of them.
HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {("red", "triangle"), ("green", "circle"), ("blue", "diamond"), ("yellow", "square")}
)
Split = Literal["train", "val", "test", "unseen"]
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2, "unseen": 3}
_ALL_PAIRS = [(c, s) for c in COLOURS for s in SHAPES]
_SEEN_PAIRS = [p for p in _ALL_PAIRS if p not in HELD_OUT_PAIRS]
_UNSEEN_PAIRS = sorted(HELD_OUT_PAIRS)


@dataclass(frozen=True)
class SceneObject:
    """One drawn object.

    Attributes:
        colour: colour word (key of `COLOURS`).
        shape: shape word (one of `SHAPES`).
        size: ``"small"`` or ``"large"``.
        row: grid row 0..2 (0 = top).
        col: grid column 0..2 (0 = left).
        cx: horizontal centre in pixels of the scene image (None: position unknown, e.g. a hand-made object).
        cy: vertical centre in pixels (0 = top).
        radius: the "radius" `_draw` drew the shape with, in pixels (a circle's radius; a square's half side
            is ``0.85 * radius``).
    """

    colour: str
    shape: str
    size: str
    row: int
    col: int
    cx: float | None = None
    cy: float | None = None
    radius: float | None = None

    @property
    def phrase(self) -> str:
        """Noun phrase, e.g. ``"a small red circle"``."""
        return f"a {self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """A generated image with its reference captions.

    Attributes:
        image: RGB PIL image, ``image_size`` x ``image_size``.
        captions: reference captions; ``captions[0]`` is the canonical one.
        objects: the drawn objects in caption order.
    """

    image: Image.Image
    captions: list[str]
    objects: list[SceneObject]

    def regions(self, grid_size: int) -> list[ObjectRegion]:
        """Gold of each object (in `objects` order) on a ``grid_size x grid_size`` attention grid.

        Args:
            grid_size: side ``g`` of the attention map (the model's ``grid_size``).

        Returns:
            One `ObjectRegion` per object: its words and the flat cells it covers (`object_cells`).
        """
        side = self.image.size[0]
        return [ObjectRegion(o.colour, o.shape, o.size, object_cells(o, side, grid_size)) for o in self.objects]


@dataclass(frozen=True)
class ObjectRegion:
    """Where one object lies on an attention grid, with the words that name it.

    Attributes:
        colour: colour word, exactly as captions spell it.
        shape: shape word, exactly as captions spell it.
        size: size word (``"small"`` / ``"large"``).
        cells: flat row-major indices ``row * g + col`` of the ``g x g`` grid cells the object covers.
    """

    colour: str
    shape: str
    size: str
    cells: frozenset[int]


def object_mask(obj: SceneObject, image_size: int) -> np.ndarray:
    """The pixels ``obj`` covers as drawn: ``(image_size, image_size)`` bool, True on the object.

    Drawn again with the same `_draw` call as the scene (no noise, nothing on top), so the mask is exact.

    Raises:
        ValueError: ``obj`` has no position (``cx`` / ``cy`` / ``radius`` unset).
    """
    if obj.cx is None or obj.cy is None or obj.radius is None:
        raise ValueError(f"object {obj.phrase!r} has no position (cx, cy, radius): cannot locate it")
    mask = Image.new("L", (image_size, image_size), 0)
    _draw(ImageDraw.Draw(mask), obj.shape, obj.cx, obj.cy, obj.radius, 255)
    return np.asarray(mask) > 0


def object_cells(obj: SceneObject, image_size: int, grid_size: int) -> frozenset[int]:
    """The cells of a ``grid_size x grid_size`` grid over the image that ``obj`` overlaps.

    Rule: a cell belongs to the object when at least one pixel of the drawn object (`object_mask`) has its
    centre inside the cell. The grid splits the whole image into equal squares, cell ``(r, c)`` spanning
    ``[c, c + 1) * image_size / g`` horizontally and ``[r, r + 1) * image_size / g`` vertically, which is
    what the network's grid sees: a scene is square, so the evaluation transform (shorter side resized to
    ``image_size``, then centre-cropped to a square) only rescales it, and the encoder pools its feature
    map to ``g x g`` with adaptive average pooling (exactly these squares when ``g`` divides the map's
    side, e.g. the tiny CNN's 6 x 6 at 96 px with ``g`` = 3 or 6), cell ``r * g + c`` row-major as in the
    ``(n_words, g, g)`` maps of ``CaptioningModule.caption``. Any overlap counts, however small: a cell's
    feature sees the part of the object it holds, and a small object may cover no cell of a fine grid by
    much.

    Args:
        obj: an object with a position (as `make_scene` makes them).
        image_size: side of the scene image in pixels (the pixels ``obj.cx`` etc. are counted in).
        grid_size: side ``g`` of the grid.

    Returns:
        Flat row-major cell indices ``r * g + c``; never empty for a drawn object.
    """
    if grid_size < 1:
        raise ValueError(f"grid_size must be >= 1, got {grid_size}")
    ys, xs = np.nonzero(object_mask(obj, image_size))  # pixel coordinates of the object
    # Pixel centres (x + 0.5) scaled to grid units; min() keeps the last pixel in the last cell.
    rows = np.minimum(((ys + 0.5) * grid_size / image_size).astype(int), grid_size - 1)
    cols = np.minimum(((xs + 0.5) * grid_size / image_size).astype(int), grid_size - 1)
    return frozenset(int(i) for i in np.unique(rows * grid_size + cols))


def scene_vocabulary() -> list[str]:
    """Every word any scene caption can contain (sorted), e.g. to check a tokenizer covers them."""
    words = {"a", "above", "below", "to", "the", "left", "right", "of", "next", "and", "from", "top", "bottom"}
    words |= {"there", "is", "in", "picture"}
    words |= set(COLOURS) | set(SHAPES) | set(SIZES)
    return sorted(words)


def _captions(objs: list[SceneObject], layout: str) -> list[str]:
    """Reference captions for objects already sorted in reading order (top-to-bottom / left-to-right)."""
    if len(objs) == 1:
        p = objs[0].phrase
        return [p, f"there is {p}", f"{p} in the picture"]
    if len(objs) == 2:
        a, b = objs[0].phrase, objs[1].phrase
        if layout == "row":
            return [f"{a} to the left of {b}", f"{b} to the right of {a}", f"{a} next to {b}"]
        return [f"{a} above {b}", f"{b} below {a}"]
    a, b, c = (o.phrase for o in objs)
    if layout == "row":
        return [f"{a} {b} and {c} from left to right", f"{c} {b} and {a} from right to left"]
    return [f"{a} {b} and {c} from top to bottom", f"{c} {b} and {a} from bottom to top"]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Greyish, low-saturation textured background ``(size, size, 3)`` float32 in 0..255.

    Four texture families (plain noise, stripes, checkerboard, blotches) with random
    parameters, so the encoder cannot rely on a flat background to find objects.
    """
    base = rng.uniform(95, 165) + rng.uniform(-18, 18, size=3)  # (3,) tint kept low-saturation
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)  # (size, size) each
    kind = int(rng.integers(4))
    if kind == 1:  # stripes of random orientation and period
        theta = rng.uniform(0, np.pi)
        period = rng.uniform(6, 20)
        tex = 14 * np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period)
    elif kind == 2:  # checkerboard
        cell = int(rng.integers(6, 16))
        tex = 12 * (((xx // cell + yy // cell) % 2) * 2 - 1)
    elif kind == 3:  # smooth blotches: upsampled coarse noise
        coarse = rng.normal(0, 16, size=(6, 6)).astype(np.float32)
        tex = np.kron(coarse, np.ones((size // 6 + 1, size // 6 + 1), np.float32))[:size, :size]
    else:
        tex = np.zeros((size, size), np.float32)
    img = base[None, None, :] + tex[..., None]  # (size, size, 3)
    img += rng.normal(0, 10, size=img.shape)
    return img.astype(np.float32)


def _draw(
    draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill: tuple[int, int, int] | int
) -> None:
    """Draw one filled shape of "radius" ``r`` centred at ``(cx, cy)``."""
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        s = r * 0.85  # same visual area class as the circle
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    else:  # pragma: no cover - guarded by SHAPES
        raise ValueError(f"unknown shape {shape!r}")


def make_scene(seed: int, split: Split, index: int, image_size: int = 96) -> Scene:
    """Generate scene ``index`` of ``split`` deterministically.

    Args:
        seed: corpus seed; the same (seed, split, index, image_size) always gives the same scene.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"unseen"`` (held-out colour-shape pairs).
        index: scene number within the split (any non-negative int).
        image_size: side of the square image in pixels (>= 48; 96-128 intended).

    Returns:
        The `Scene` (image, captions, objects).

    Raises:
        ValueError: unknown split.
        core.errors.ConfigError: ``image_size`` below `MIN_IMAGE_SIZE` (it is ``data.image_size``).
    """
    if split not in _SPLIT_CODE:
        raise ValueError(f"unknown scene split {split!r}; expected one of {sorted(_SPLIT_CODE)}")
    if image_size < MIN_IMAGE_SIZE:
        # Below 48 px the small shapes vanish; this is the user's data.image_size, so a ConfigError.
        raise ConfigError(f"data.image_size must be >= {MIN_IMAGE_SIZE} for generated scenes, got {image_size}")
    # SeedSequence mixes the tuple into independent streams per (seed, split, index).
    rng = np.random.default_rng([seed & 0xFFFFFFFF, _SPLIT_CODE[split], index])
    n_obj = int(rng.choice([1, 2, 3], p=[0.25, 0.45, 0.30]))
    layout = "row" if rng.random() < 0.5 else "col"
    if n_obj == 1:
        cells = [(int(rng.integers(3)), int(rng.integers(3)))]
    else:
        line = int(rng.integers(3))
        slots = sorted(rng.choice(3, size=n_obj, replace=False).tolist())
        cells = [(line, s) if layout == "row" else (s, line) for s in slots]
    pairs: list[tuple[str, str]] = []
    for _ in range(n_obj):
        pool = _SEEN_PAIRS
        pairs.append(pool[int(rng.integers(len(pool)))])
    if split == "unseen":
        # At least one held-out pair, in a random position among the objects.
        pairs[int(rng.integers(n_obj))] = _UNSEEN_PAIRS[int(rng.integers(len(_UNSEEN_PAIRS)))]
    objs = [
        SceneObject(colour=c, shape=s, size=SIZES[int(rng.integers(2))], row=r, col=k)
        for (c, s), (r, k) in zip(pairs, cells)
    ]
    # Reading order: sort by row then column (cells are on one line, so this is the line order).
    objs.sort(key=lambda o: (o.row, o.col))

    canvas = Image.fromarray(np.clip(_background(rng, image_size), 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(canvas)
    cell = image_size / 3
    placed: list[SceneObject] = []
    for o in objs:
        r = cell * (rng.uniform(0.17, 0.22) if o.size == "small" else rng.uniform(0.34, 0.40))
        slack = max(cell / 2 - r - 1, 0.0)  # keep the object inside its cell
        cx = (o.col + 0.5) * cell + rng.uniform(-slack, slack)
        cy = (o.row + 0.5) * cell + rng.uniform(-slack, slack)
        jitter = rng.integers(-20, 21, size=3)
        red, green, blue = (int(np.clip(v + j, 0, 255)) for v, j in zip(COLOURS[o.colour], jitter))
        _draw(draw, o.shape, cx, cy, r, (red, green, blue))
        # Kept as gold for alignment scores; recorded after drawing so the random stream is unchanged.
        placed.append(replace(o, cx=float(cx), cy=float(cy), radius=float(r)))
    objs = placed
    # Mild noise over the objects too, so colours are never perfectly flat.
    arr = np.asarray(canvas, dtype=np.float32) + rng.normal(0, 5, size=(image_size, image_size, 3))
    image = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    return Scene(image=image, captions=_captions(objs, layout), objects=objs)


def split_seed(seed: int, name: str) -> int:
    """A stable 31-bit seed derived from ``seed`` and a name (for per-split shuffles)."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) & 0x7FFFFFFF
