"""Readers for caption corpora: each returns image paths with their reference captions.

Supported layouts (all local; nothing is downloaded here):

* **Flickr8k/30k, Kaggle**: ``<root>/Images/*.jpg`` + ``<root>/captions.txt`` (CSV, header
  ``image,caption``) -> `read_flickr_csv`.
* **Flickr8k original**: ``Flickr8k.token.txt`` (``<image>#<n>\\t<caption>``) + an image folder,
  optional ``Flickr_8k.{train,dev,test}Images.txt`` split lists -> `read_flickr_token`.
* **COCO captions**: ``annotations/captions_<split>.json`` + ``<split>/`` image folder -> `read_coco`.
* **Karpathy splits**: ``dataset_flickr8k.json`` / ``dataset_coco.json`` (``images[*].filename``,
  ``filepath``, ``split``, ``sentences[*].raw``) -> `read_karpathy`.
* **Hugging Face datasets** image-text: see `tasks.captioning.data.HFCaptionDataset`.

Bad input policy (issue section 6): an empty caption is dropped; an image named in the captions
but absent from disk is dropped with its captions; an image with no caption left is dropped;
images on disk without captions are ignored. Every drop is counted in `ReadReport` and warned
about (naming the first files); a file that cannot be parsed at all, or a corpus left with no
usable image, raises `core.errors.DataError` naming the file.
"""

from __future__ import annotations

import csv
import io
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_warn

from core.errors import DataError
from tasks.captioning.text import normalize_caption

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


@dataclass
class CaptionRecord:
    """One image and its reference captions.

    Attributes:
        image: path of the image file.
        captions: normalised reference captions (non-empty strings).
        split: ``"train"``/``"val"``/``"test"`` when the corpus defines it, else None.
    """

    image: Path
    captions: list[str]
    split: str | None = None


@dataclass
class ReadReport:
    """What was dropped while reading a corpus (for warnings, tests and the bad-input table).

    Attributes:
        source: the captions file that was read.
        empty_captions: captions dropped because nothing was left after normalisation.
        missing_images: image files named in the captions but absent (first few kept in `examples`).
        images_without_captions: images whose every caption was empty.
        examples: a few offending file names / lines, for the warning message.
    """

    source: str
    empty_captions: int = 0
    missing_images: int = 0
    images_without_captions: int = 0
    examples: list[str] = field(default_factory=list)

    def note(self, what: str) -> None:
        """Remember an offending file/line (only the first few, to keep warnings short)."""
        if len(self.examples) < 5:
            self.examples.append(what)

    def warn(self) -> None:
        """Emit one `UserWarning` summarising the drops (nothing when nothing was dropped)."""
        if self.empty_captions or self.missing_images or self.images_without_captions:
            # Corpora are read in `setup`, on every DDP rank: warn once (rank zero), not once per rank.
            rank_zero_warn(
                f"{self.source}: skipped {self.missing_images} missing image(s), "
                f"{self.empty_captions} empty caption(s), {self.images_without_captions} image(s) "
                f"without any caption; e.g. {', '.join(self.examples)}",
                category=UserWarning,
                stacklevel=6,  # the read_* function (rank_zero_warn adds two frames)
            )


def _finish(
    grouped: OrderedDict[str, tuple[Path, list[str], str | None]], report: ReadReport, check_files: bool
) -> list[CaptionRecord]:
    """Drop empty captions / missing images, warn, and fail clearly if nothing is left."""
    records: list[CaptionRecord] = []
    for name, (path, raw_caps, split) in grouped.items():
        caps = []
        for raw in raw_caps:
            norm = normalize_caption(raw)
            if norm:
                caps.append(norm)
            else:
                report.empty_captions += 1
                report.note(f"empty caption for {name}")
        if check_files and not path.is_file():
            report.missing_images += 1
            report.note(f"missing image {path}")
            continue
        if not caps:
            report.images_without_captions += 1
            report.note(f"no caption for {name}")
            continue
        records.append(CaptionRecord(path, caps, split))
    report.warn()
    if not records:
        raise DataError(f"{report.source}: no usable image-caption pairs (see the warning above for why)")
    return records


def _check_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")


def _read_text(path: Path) -> str:
    """The file's text (UTF-8, BOM dropped); non-UTF-8 bytes raise a DataError naming file and line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        lineno = data[: err.start].count(b"\n") + 1
        raise DataError(
            f"{path}: line {lineno}: expected UTF-8 text, got byte 0x{data[err.start]:02x}; "
            f"re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`"
        ) from None


def read_flickr_csv(
    captions_file: str | Path, image_dir: str | Path | None = None, check_files: bool = True
) -> tuple[list[CaptionRecord], ReadReport]:
    """Kaggle Flickr8k/30k layout: ``captions.txt`` CSV with an ``image,caption`` header.

    Captions containing unquoted commas are rejoined (the Kaggle file is not strictly quoted).

    Args:
        captions_file: the CSV file.
        image_dir: image folder; default ``<captions_file's folder>/Images``.
        check_files: drop records whose image file does not exist.

    Returns:
        Records in file order (no split) and the drop report.
    """
    cap_path = Path(captions_file)
    _check_file(cap_path, "captions file")
    img_dir = Path(image_dir) if image_dir else cap_path.parent / "Images"
    report = ReadReport(str(cap_path))
    grouped: OrderedDict[str, tuple[Path, list[str], str | None]] = OrderedDict()
    with io.StringIO(_read_text(cap_path), newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip().lower() for h in header[:2]] != ["image", "caption"]:
            raise DataError(f"{cap_path}: line 1: expected the header 'image,caption', got {header!r}")
        for lineno, row in enumerate(reader, start=2):
            if not row or not any(cell.strip() for cell in row):
                continue
            name = row[0].strip()
            if not name or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                raise DataError(f"{cap_path}: line {lineno}: expected '<image file>,<caption>', got {row!r}")
            caption = ",".join(row[1:])
            grouped.setdefault(name, (img_dir / name, [], None))[1].append(caption)
    return _finish(grouped, report, check_files), report


def read_flickr_token(
    token_file: str | Path, image_dir: str | Path | None = None, check_files: bool = True
) -> tuple[list[CaptionRecord], ReadReport]:
    """Original Flickr8k layout: ``<image>#<n><TAB><caption>`` lines.

    Split lists ``Flickr_8k.trainImages.txt`` / ``devImages`` / ``testImages`` next to the token
    file, when present, set each record's split (dev -> val).

    Args:
        token_file: ``Flickr8k.token.txt`` (or the 30k ``results_20130124.token``).
        image_dir: image folder; default ``<token file's folder>/Flicker8k_Dataset`` if it exists,
            else ``<folder>/Images``, else the token file's folder.
        check_files: drop records whose image file does not exist.
    """
    tok_path = Path(token_file)
    _check_file(tok_path, "token file")
    if image_dir is None:
        base = tok_path.parent
        image_dir = next((d for d in (base / "Flicker8k_Dataset", base / "Images") if d.is_dir()), base)
    img_dir = Path(image_dir)
    splits: dict[str, str] = {}
    for split, key in (("train", "train"), ("val", "dev"), ("test", "test")):
        lst = tok_path.parent / f"Flickr_8k.{key}Images.txt"
        if lst.is_file():
            for line in lst.read_text(encoding="utf-8").split():
                splits[line.strip()] = split
    report = ReadReport(str(tok_path))
    grouped: OrderedDict[str, tuple[Path, list[str], str | None]] = OrderedDict()
    with io.StringIO(_read_text(tok_path), newline=None) as f:  # universal newlines, as open() did
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            key, sep, caption = line.rstrip("\n").partition("\t")
            name = key.split("#", 1)[0].strip()
            if not sep or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                raise DataError(
                    f"{tok_path}: line {lineno}: expected '<image>#<n><TAB><caption>', got {line.strip()!r}"
                )
            grouped.setdefault(name, (img_dir / name, [], splits.get(name)))[1].append(caption)
    return _finish(grouped, report, check_files), report


def read_coco(
    annotations_file: str | Path, image_dir: str | Path | None = None, check_files: bool = True
) -> tuple[list[CaptionRecord], ReadReport]:
    """COCO captions JSON (``images`` + ``annotations`` with ``image_id``/``caption``).

    Args:
        annotations_file: e.g. ``annotations/captions_train2017.json``.
        image_dir: image folder; default ``<root>/<split>`` where ``<split>`` comes from the file
            name (``captions_val2017.json`` -> ``<root>/val2017``, root = the annotations' parent).
        check_files: drop records whose image file does not exist.
    """
    ann_path = Path(annotations_file)
    _check_file(ann_path, "annotations file")
    if image_dir is None:
        split_name = ann_path.stem.removeprefix("captions_")
        image_dir = ann_path.parent.parent / split_name
    img_dir = Path(image_dir)
    try:
        data = json.loads(ann_path.read_text(encoding="utf-8"))
        images = {int(im["id"]): str(im["file_name"]) for im in data["images"]}
        anns = [(int(a["image_id"]), str(a.get("caption") or "")) for a in data["annotations"]]
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{ann_path}: not valid JSON ({err})") from None
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(
            f"{ann_path}: expected COCO captions JSON with images[*].id/file_name and "
            f"annotations[*].image_id/caption (problem: {err!r})"
        ) from None
    report = ReadReport(str(ann_path))
    grouped: OrderedDict[str, tuple[Path, list[str], str | None]] = OrderedDict()
    for file_name in images.values():
        grouped[file_name] = (img_dir / file_name, [], None)
    orphans = 0
    for image_id, caption in anns:
        name = images.get(image_id)
        if name is None:  # caption of an image the file does not list
            orphans += 1
            continue
        grouped[name][1].append(caption)
    if orphans:
        report.note(f"{orphans} caption(s) with an unknown image_id")
    return _finish(grouped, report, check_files), report


def read_karpathy(
    split_file: str | Path, image_root: str | Path | None = None, check_files: bool = True
) -> tuple[list[CaptionRecord], ReadReport]:
    """Karpathy split JSON (``dataset_flickr8k.json``, ``dataset_coco.json``, ``dataset_flickr30k.json``).

    ``restval`` images count as train, as in the usual setup.

    Args:
        split_file: the JSON file.
        image_root: image folder; an image is ``<image_root>/<filepath>/<filename>`` (``filepath``
            exists for COCO) -- default: the JSON's folder, or its ``Images`` subfolder if present.
        check_files: drop records whose image file does not exist.
    """
    path = Path(split_file)
    _check_file(path, "Karpathy split file")
    if image_root is None:
        image_root = path.parent / "Images" if (path.parent / "Images").is_dir() else path.parent
    root = Path(image_root)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = [
            (
                str(im.get("filepath", "")),
                str(im["filename"]),
                {"restval": "train"}.get(str(im.get("split", "train")), str(im.get("split", "train"))),
                [str(s.get("raw") or " ".join(s.get("tokens", []))) for s in im["sentences"]],
            )
            for im in data["images"]
        ]
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    except (KeyError, TypeError, AttributeError) as err:
        raise DataError(
            f"{path}: expected Karpathy split JSON with images[*].filename/split/sentences[*].raw (problem: {err!r})"
        ) from None
    report = ReadReport(str(path))
    grouped: OrderedDict[str, tuple[Path, list[str], str | None]] = OrderedDict()
    for filepath, filename, split, sentences in entries:
        key = f"{filepath}/{filename}" if filepath else filename
        grouped[key] = (root / filepath / filename if filepath else root / filename, sentences, split)
    return _finish(grouped, report, check_files), report
