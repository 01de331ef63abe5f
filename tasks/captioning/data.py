"""The `CaptionDataModule` (generated scenes or real caption corpora): splits, vocabulary, loaders and the
list of images to predict. The datasets and the collate are in :mod:`tasks.captioning.batching`, the
corpus readers in :mod:`tasks.captioning.sources`.

Rank safety: nothing here writes files. Generated scenes are a pure function of
(seed, split, index) and real corpora are only read, so every DDP rank builds identical
datasets in `setup` and Lightning's DistributedSampler shards them.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Literal, cast

import lightning as L
import torch
from lightning.fabric.utilities.data import AttributeDict
from torch.utils.data import DataLoader, Dataset

from core.errors import ConfigError, DataError
from core.text.tokenizers import SPECIAL_TOKENS, WordTokenizer
from tasks.captioning import scenes as scene_gen
from tasks.captioning.batching import (
    Batch,
    CaptionCollate,
    FileCaptionDataset,
    HFCaptionDataset,
    SceneDataset,
)
from tasks.captioning.images import IMAGENET_MEAN, IMAGENET_STD, eval_transform, train_transform
from tasks.captioning.sources import (
    IMAGE_SUFFIXES,
    CaptionRecord,
    read_coco,
    read_flickr_csv,
    read_flickr_token,
    read_karpathy,
)
from tasks.captioning.vocab import CaptionVocab

DatasetName = Literal["scenes", "flickr", "coco", "karpathy", "hf"]


def _random_split(
    n: int, val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[int], list[int], list[int]]:
    """Deterministic shuffled split of ``range(n)`` into train/val/test index lists."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_val = round(n * val_fraction)
    n_test = round(n * test_fraction)
    if n >= 3 and val_fraction > 0:
        n_val = max(n_val, 1)
    if n >= 3 and test_fraction > 0:
        n_test = max(n_test, 1)
    return order[n_val + n_test :], order[:n_val], order[n_val : n_val + n_test]


class CaptionDataModule(L.LightningDataModule):
    """Image-caption data: generated scenes (default, offline) or a real corpus.

    Args:
        dataset: ``scenes`` (generated), ``flickr`` (Kaggle ``captions.txt`` CSV or original
            ``Flickr8k.token.txt``, detected from the file), ``coco`` (``captions_*.json``),
            ``karpathy`` (``dataset_*.json`` split file) or ``hf`` (Hugging Face ``datasets``).
        data_dir: corpus root. flickr: holds ``captions.txt`` and ``Images/``; coco: holds
            ``annotations/`` and the image folders; karpathy: the image root.
        captions_file: captions file, absolute or relative to ``data_dir`` (flickr default
            ``captions.txt``; coco default ``annotations/captions_train2017.json``; karpathy required).
        val_captions_file: coco only: the validation annotations (default
            ``annotations/captions_val2017.json`` if present); split into val and test halves.
        image_dir: image folder when it is not the layout's default.
        hf_name: ``hf`` only: a local ``save_to_disk`` folder, a local data folder/files loadable by
            ``datasets.load_dataset``, or a hub name (needs network).
        hf_image_column: image column of the HF dataset.
        hf_caption_column: caption column (string or list of strings).
        image_size: side of the square network input in pixels.
        mean: normalisation mean (RGB).
        std: normalisation std (RGB).
        augment: random resized crop + colour jitter on training images (real data).
        hflip: also random horizontal flips (off by default: they contradict left/right words).
        batch_size: training batch size.
        eval_batch_size: validation/test batch size (default: ``batch_size``).
        num_workers: DataLoader worker processes (image decoding/generation happens there).
        min_freq: words seen fewer times in training captions map to ``<unk>``.
        max_vocab: optional cap on the vocabulary size.
        max_caption_len: training captions are cut to this many words.
        val_fraction: share of images for validation when the corpus has no split.
        test_fraction: share of images for test when the corpus has no split.
        seed: seed of the generated scenes and of random splits.
        train_size: scenes: number of training scenes.
        val_size: scenes: number of validation scenes.
        test_size: scenes: number of test scenes (seen colour-shape pairs).
        unseen_size: scenes: number of scenes with held-out colour-shape pairs (second test set).
        max_images: optional cap on the number of images read from a real corpus (smoke runs).
        predict_path: ``predict`` inputs: an image file, a folder (its image files, sorted by name)
            or a text file listing image paths one per line (relative paths are resolved against
            the list's folder; blank lines and ``#`` comments ignored). None = the test split.
    """

    def __init__(
        self,
        dataset: DatasetName = "scenes",
        data_dir: str | None = None,
        captions_file: str | None = None,
        val_captions_file: str | None = None,
        image_dir: str | None = None,
        hf_name: str | None = None,
        hf_image_column: str = "image",
        hf_caption_column: str = "caption",
        image_size: int = 96,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        augment: bool = False,
        hflip: bool = False,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        min_freq: int = 1,
        max_vocab: int | None = None,
        max_caption_len: int = 30,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        seed: int = 0,
        train_size: int = 8000,
        val_size: int = 200,
        test_size: int = 500,
        unseen_size: int = 500,
        max_images: int | None = None,
        predict_path: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if dataset == "scenes" and image_size < scene_gen.MIN_IMAGE_SIZE:
            # Checked here, not when the first scene is rendered inside a dataloader worker.
            raise ConfigError(
                f"data.image_size must be >= {scene_gen.MIN_IMAGE_SIZE} for generated scenes, got {image_size}"
            )
        if image_size < 1:
            raise ConfigError(f"data.image_size must be a positive number of pixels, got {image_size}")
        if dataset != "scenes" and dataset != "hf" and not (data_dir or captions_file):
            raise ConfigError(f"data.dataset={dataset!r} needs data.data_dir (or data.captions_file)")
        if dataset == "hf" and not hf_name:
            raise ConfigError("data.dataset='hf' needs data.hf_name (a local dataset path or a hub name)")
        for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"data.{name} must be in [0, 1), got {value}")
        if val_fraction + test_fraction >= 1.0:
            raise ConfigError(
                f"data.val_fraction + data.test_fraction must leave images for training, got "
                f"{val_fraction} + {test_fraction}"
            )
        self.dataset = dataset
        self.image_size = image_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self._records: dict[str, list[CaptionRecord]] | None = None
        self._hf: dict[str, tuple[Any, list[int] | None]] | None = None
        self._vocab: CaptionVocab | None = None
        self.datasets: dict[str, Dataset] = {}
        #: Names of the test dataloaders, in order (the module logs ``<name>/bleu4`` etc.).
        self.test_names: list[str] = ["test", "unseen"] if dataset == "scenes" else ["test"]

    @property
    def options(self) -> AttributeDict:
        """The ``data.*`` options (``hparams``, typed for attribute access)."""
        return cast(AttributeDict, self.hparams)

    # ------------------------------------------------------------------ corpus reading
    def _path(self, p: str | None, default: str | None = None) -> Path | None:
        """``p`` (or ``default``) resolved against ``data_dir``."""
        p = p or default
        if p is None:
            return None
        path = Path(p).expanduser()
        if not path.is_absolute() and self.options.data_dir:
            path = Path(self.options.data_dir).expanduser() / path
        return path

    def _read_records(self) -> dict[str, list[CaptionRecord]]:
        """Read the real corpus once and split it (records per split name)."""
        if self._records is not None:
            return self._records
        hp = self.options
        image_dir = self._path(hp.image_dir)
        splits: dict[str, list[CaptionRecord]] = {}
        if self.dataset == "flickr":
            cap = self._path(hp.captions_file, "captions.txt")
            assert cap is not None
            token_file = self._path("Flickr8k.token.txt")
            assert token_file is not None  # a name is given, so a path comes back
            if not cap.is_file() and hp.captions_file is None and token_file.is_file():
                cap = token_file
            is_token = cap.name.endswith(".token.txt") or cap.suffix == ".token"
            if cap.is_file() and not is_token:
                with open(cap, encoding="utf-8-sig", errors="replace") as f:
                    first = f.readline()
                is_token = "\t" in first and "#" in first.split("\t", 1)[0]
            records, _ = (read_flickr_token if is_token else read_flickr_csv)(cap, image_dir)
            records = records[: hp.max_images] if hp.max_images else records
            if any(r.split for r in records):  # official split lists were found
                for r in records:
                    splits.setdefault(r.split or "train", []).append(r)
            else:
                tr, va, te = _random_split(len(records), hp.val_fraction, hp.test_fraction, hp.seed)
                splits = {k: [records[i] for i in idx] for k, idx in (("train", tr), ("val", va), ("test", te))}
        elif self.dataset == "coco":
            train_ann = self._path(hp.captions_file, "annotations/captions_train2017.json")
            assert train_ann is not None
            val_ann = self._path(hp.val_captions_file, "annotations/captions_val2017.json")
            train, _ = read_coco(train_ann, image_dir)
            train = train[: hp.max_images] if hp.max_images else train
            if val_ann is not None and val_ann.is_file():
                val, _ = read_coco(val_ann, None)
                val = val[: hp.max_images] if hp.max_images else val
                half = len(val) // 2
                splits = {"train": train, "val": val[:half], "test": val[half:]}
            else:
                tr, va, te = _random_split(len(train), hp.val_fraction, hp.test_fraction, hp.seed)
                splits = {k: [train[i] for i in idx] for k, idx in (("train", tr), ("val", va), ("test", te))}
        elif self.dataset == "karpathy":
            if not hp.captions_file:
                raise ConfigError("data.dataset='karpathy' needs data.captions_file (e.g. dataset_flickr8k.json)")
            path = self._path(hp.captions_file)
            assert path is not None
            records, _ = read_karpathy(path, image_dir or (Path(hp.data_dir) if hp.data_dir else None))
            records = records[: hp.max_images] if hp.max_images else records
            for r in records:
                splits.setdefault(r.split or "train", []).append(r)
        else:  # pragma: no cover - guarded by the Literal type
            raise ConfigError(f"unknown data.dataset {self.dataset!r}")
        for name in ("train", "val", "test"):
            if not splits.get(name):
                raise DataError(
                    f"{self.dataset} corpus under {hp.data_dir or hp.captions_file}: the {name} split is empty"
                )
        self._records = splits
        return splits

    def _read_hf(self) -> dict[str, tuple[Any, list[int] | None]]:
        """Load the HF dataset and map it to train/val/test (dataset, row indices or None=all)."""
        if self._hf is not None:
            return self._hf
        try:
            import datasets
        except ImportError as err:  # pragma: no cover - datasets is a dependency
            raise ConfigError(f"data.dataset='hf' needs the 'datasets' package ({err})") from None
        hp = self.options
        path = Path(hp.hf_name).expanduser()
        try:
            if (path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file():
                ds = datasets.load_from_disk(str(path))
            else:
                ds = datasets.load_dataset(hp.hf_name)
        except Exception as err:  # datasets raises many types (FileNotFoundError, ConnectionError, ...)
            raise DataError(f"could not load HF dataset {hp.hf_name!r}: {err}") from None
        if isinstance(ds, datasets.Dataset):
            ds = datasets.DatasetDict({"train": ds})
        names = {
            "train": "train",
            "val": next((k for k in ("validation", "val", "dev") if k in ds), None),
            "test": "test" if "test" in ds else None,
        }
        train = ds[names["train"]] if names["train"] in ds else ds[next(iter(ds))]
        out: dict[str, tuple[Any, list[int] | None]] = {}
        if names["val"] and names["test"]:
            out = {"train": (train, None), "val": (ds[names["val"]], None), "test": (ds[names["test"]], None)}
        else:
            n = len(train) if not hp.max_images else min(len(train), hp.max_images)
            tr, va, te = _random_split(n, hp.val_fraction, hp.test_fraction, hp.seed)
            out = {"train": (train, tr), "val": (train, va), "test": (train, te)}
            if names["val"]:
                out["val"] = (ds[names["val"]], None)
        self._hf = out
        return out

    # ------------------------------------------------------------------ vocabulary
    @property
    def vocab(self) -> dict[str, Any]:
        """The word vocabulary as a checkpoint-safe dict (linked into ``model.vocab`` by the CLI)."""
        return self.caption_vocab.to_dict()

    @property
    def caption_vocab(self) -> CaptionVocab:
        """The vocabulary object, built from the training captions on first use."""
        if self._vocab is None:
            hp = self.options
            if self.dataset == "scenes":
                # The template grammar is closed: the vocabulary is known without generating anything.
                self._vocab = CaptionVocab(WordTokenizer(list(SPECIAL_TOKENS) + scene_gen.scene_vocabulary()))
            elif self.dataset == "hf":
                ds, idx = self._read_hf()["train"]
                tmp = HFCaptionDataset(ds, hp.hf_image_column, hp.hf_caption_column, lambda x: x, False, idx)
                self._vocab = CaptionVocab.build((c for refs in tmp.refs for c in refs), hp.min_freq, hp.max_vocab)
            else:
                train = self._read_records()["train"]
                self._vocab = CaptionVocab.build((c for r in train for c in r.captions), hp.min_freq, hp.max_vocab)
        return self._vocab

    def use_vocab(self, vocab: CaptionVocab) -> None:
        """Encode captions with an existing vocabulary (e.g. the one of a loaded checkpoint)."""
        self._vocab = vocab

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        """Build the datasets (every rank; reads only)."""
        module = getattr(self.trainer, "lightning_module", None) if self.trainer is not None else None
        model_vocab = getattr(module, "vocab", None) if module is not None else None
        if isinstance(model_vocab, CaptionVocab):
            # A model restored from a checkpoint brings its own vocabulary: encode targets with it.
            self._vocab = model_vocab
        if self.datasets or (stage == "predict" and self.options.predict_path):
            return  # already built / predict reads only data.predict_path (in predict_dataloader)
        hp = self.options
        tr_tf = (
            train_transform(self.image_size, self.mean, self.std, hp.hflip)
            if hp.augment
            else eval_transform(self.image_size, self.mean, self.std)
        )
        ev_tf = eval_transform(self.image_size, self.mean, self.std)
        if self.dataset == "scenes":
            self.datasets = {
                "train": SceneDataset("train", hp.train_size, hp.seed, self.image_size, tr_tf, True),
                "val": SceneDataset("val", hp.val_size, hp.seed, self.image_size, ev_tf, False),
                "test": SceneDataset("test", hp.test_size, hp.seed, self.image_size, ev_tf, False),
                "unseen": SceneDataset("unseen", hp.unseen_size, hp.seed, self.image_size, ev_tf, False),
            }
        elif self.dataset == "hf":
            parts = self._read_hf()
            self.datasets = {
                name: HFCaptionDataset(
                    ds,
                    hp.hf_image_column,
                    hp.hf_caption_column,
                    tr_tf if name == "train" else ev_tf,
                    name == "train",
                    idx,
                )
                for name, (ds, idx) in parts.items()
            }
        else:
            recs = self._read_records()
            self.datasets = {
                name: FileCaptionDataset(recs[name], tr_tf if name == "train" else ev_tf, name == "train")
                for name in ("train", "val", "test")
            }

    def _loader(self, name: str, train: bool) -> DataLoader:
        return DataLoader(
            self.datasets[name],
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            drop_last=False,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=CaptionCollate(self.caption_vocab, self.options.max_caption_len),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> list[DataLoader]:
        """One loader per test split, in the order of `test_names` (the task names their metrics after them)."""
        return [self._loader(name, False) for name in self.test_names]

    def predict_records(self) -> list[CaptionRecord]:
        """The ``data.predict_path`` images as records (no captions), in input order.

        Raises:
            DataError: the path, or a file the list names, does not exist; nothing to caption.
        """
        path = Path(self.options.predict_path).expanduser()
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise DataError(f"data.predict_path: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in {path}")
        elif not path.is_file():
            raise DataError(f"data.predict_path: {path} not found")
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            images = [path]
        else:  # a list of image paths
            images = []
            with open(path, encoding="utf-8", errors="replace") as f:
                for n, line in enumerate(f, 1):
                    line = line.strip()
                    if not line or line.startswith("#"):
                        continue
                    image = Path(line).expanduser()
                    image = image if image.is_absolute() else path.parent / image
                    if not image.exists():
                        raise DataError(f"{path}: line {n}: image file {image} not found")
                    images.append(image)
            if not images:
                raise DataError(f"{path}: data.predict_path lists no image")
        # No references: an empty caption keeps the collate and predict_step unchanged.
        return [CaptionRecord(p, [""]) for p in images]

    def predict_dataloader(self) -> DataLoader:
        """The ``data.predict_path`` images when set, else the test split.

        Items keep their dataset index, so `core.cli.predict.PredictionWriter` can write
        them back in input order (and name them) whatever the DDP sharding did.
        """
        if self.options.predict_path and "predict" not in self.datasets:
            self.datasets["predict"] = FileCaptionDataset(
                self.predict_records(), eval_transform(self.image_size, self.mean, self.std), train=False
            )
        return self._loader("predict" if self.options.predict_path else "test", False)

    @property
    def predict_dataset(self) -> Dataset:
        """What `predict_dataloader` serves (``name(i)`` names its items: a file path, a scene)."""
        return self.datasets["predict" if self.options.predict_path else "test"]

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        if isinstance(batch, Batch):
            return batch.to(device, non_blocking=device.type == "cuda")
        return super().transfer_batch_to_device(batch, device, dataloader_idx)
