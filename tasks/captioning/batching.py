"""Caption datasets and batching: generated scenes, caption files, Hugging Face datasets, the collate.

Images are decoded inside the datasets' ``__getitem__``, i.e. in DataLoader worker processes. A file that
fails to decode at training time is skipped with a warning naming it (the batch shrinks by one) instead
of killing a multi-hour run; at inference the same error is reported per file by the CLI.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import Dataset

from core.errors import DataError
from tasks.captioning import scenes as scene_gen
from tasks.captioning.images import ImageError, load_rgb
from tasks.captioning.sources import CaptionRecord
from tasks.captioning.text import normalize_caption
from tasks.captioning.vocab import CaptionVocab

__all__ = ["Batch", "CaptionCollate", "FileCaptionDataset", "HFCaptionDataset", "SceneDataset"]


@dataclass
class Batch:
    """A collated batch.

    Attributes:
        images: ``(B, 3, H, W)`` normalised float images.
        inputs: ``(B, T)`` decoder inputs ``[BOS, w1 .. wn, PAD..]``.
        targets: ``(B, T)`` next-token targets ``[w1 .. wn, EOS, PAD..]`` (PAD = ignored).
        refs: per image, all normalised reference captions (for BLEU/CIDEr).
        index: ``(B,)`` dataset indices (to find images again, e.g. for plots, and to drop the
            repeats DistributedSampler pads the last shard with).
        skipped: samples of this batch dropped because their image could not be read. A batch
            where every image failed is empty (``len(batch) == 0``) and only carries this count.
    """

    images: Tensor
    inputs: Tensor
    targets: Tensor
    refs: list[list[str]]
    index: Tensor
    skipped: int = 0

    @classmethod
    def empty(cls, skipped: int) -> Batch:
        """A batch without samples (every image failed to load); ``skipped`` says how many."""
        none = torch.zeros(0, dtype=torch.long)
        return cls(torch.zeros(0, 3, 0, 0), none.view(0, 0), none.view(0, 0), [], none, skipped)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """Move the tensors (Lightning calls this through `transfer_batch_to_device`)."""
        return Batch(
            self.images.to(device, non_blocking=non_blocking),
            self.inputs.to(device, non_blocking=non_blocking),
            self.targets.to(device, non_blocking=non_blocking),
            self.refs,
            self.index,
            self.skipped,
        )

    def __len__(self) -> int:
        return self.images.shape[0]


class _CaptionDataset(Dataset):
    """Shared ``__getitem__``: image -> tensor, pick the training caption, keep all references.

    Subclasses implement ``__len__``, `_image(i)` and `_refs(i)`.
    """

    def __init__(self, transform: Callable[[Any], Tensor], train: bool) -> None:
        self.transform = transform
        self.train = train

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _image(self, i: int) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _refs(self, i: int) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def name(self, i: int) -> str:
        """Human-readable name of item ``i`` (file path, or scene id) for messages."""
        return f"item {i}"

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        try:
            image = self._image(i)
        except ImageError as err:
            # Skip-and-warn: one bad photo must not end a long training run. The warning names the file.
            warnings.warn(f"skipping unreadable image: {err}", UserWarning, stacklevel=2)
            return None
        refs = self._refs(i)
        # Training sees a random reference each time (all captions get used over epochs); evaluation
        # uses the first one for the teacher-forced loss and all of them for BLEU/CIDEr.
        caption = refs[random.randrange(len(refs))] if self.train else refs[0]
        return {"image": self.transform(image), "caption": caption, "refs": refs, "index": i}


class SceneDataset(_CaptionDataset):
    """Generated scenes of one split, made on the fly (no files).

    Args:
        split: ``train``/``val``/``test``/``unseen``.
        size: number of scenes.
        seed: corpus seed.
        image_size: pixels per side.
        transform: PIL -> tensor.
        train: random reference per access.
    """

    def __init__(
        self,
        split: scene_gen.Split,
        size: int,
        seed: int,
        image_size: int,
        transform: Callable[[Any], Tensor],
        train: bool,
        cache: bool = True,
    ) -> None:
        super().__init__(transform, train)
        self.split, self.size, self.seed, self.image_size = split, size, seed, image_size
        # Rendering a scene (~1.2 ms) costs ~40 % of a CPU training step at 96 px; scenes are a pure
        # function of (seed, split, i), so each one is rendered once per process and kept (96 px RGB:
        # 27 KB per scene, ~220 MB for the default 8,000). Random augmentation still runs per access.
        self._cache: dict[int, scene_gen.Scene] | None = {} if cache else None

    def __len__(self) -> int:
        return self.size

    def _scene(self, i: int) -> scene_gen.Scene:
        if self._cache is None:
            return scene_gen.make_scene(self.seed, self.split, i, self.image_size)
        scene = self._cache.get(i)
        if scene is None:
            scene = self._cache[i] = scene_gen.make_scene(self.seed, self.split, i, self.image_size)
        return scene

    def _image(self, i: int) -> Any:
        return self._scene(i).image

    def _refs(self, i: int) -> list[str]:
        return self._scene(i).captions

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        scene = self._scene(i)
        refs = scene.captions
        caption = refs[random.randrange(len(refs))] if self.train else refs[0]
        return {"image": self.transform(scene.image), "caption": caption, "refs": refs, "index": i}

    def name(self, i: int) -> str:
        return f"scene {self.split}/{i} (seed {self.seed})"


class FileCaptionDataset(_CaptionDataset):
    """Image files + captions (records from `tasks.captioning.sources`)."""

    def __init__(self, records: Sequence[CaptionRecord], transform: Callable[[Any], Tensor], train: bool) -> None:
        super().__init__(transform, train)
        self.records = list(records)

    def __len__(self) -> int:
        return len(self.records)

    def _image(self, i: int) -> Any:
        return load_rgb(self.records[i].image)

    def _refs(self, i: int) -> list[str]:
        return self.records[i].captions

    def name(self, i: int) -> str:
        return str(self.records[i].image)


class HFCaptionDataset(_CaptionDataset):
    """A Hugging Face ``datasets`` split with an image column and a caption column.

    The caption column may hold a string or a list of strings. Images may be PIL images (the
    ``Image`` feature), dicts with ``bytes``/``path``, or file paths; all go through the same
    RGB conversion as files. Rows whose captions are all empty are dropped at construction.
    """

    def __init__(
        self,
        hf_dataset: Any,
        image_column: str,
        caption_column: str,
        transform: Callable[[Any], Tensor],
        train: bool,
        indices: Sequence[int] | None = None,
    ) -> None:
        super().__init__(transform, train)
        for col in (image_column, caption_column):
            if col not in hf_dataset.column_names:
                raise DataError(f"HF dataset has no column {col!r}; columns are {hf_dataset.column_names}")
        self.ds, self.image_column = hf_dataset, image_column
        caps = hf_dataset[caption_column]  # whole column at once: fast, no image decoding
        self.rows: list[int] = []
        self.refs: list[list[str]] = []
        empty = 0
        for i in indices if indices is not None else range(len(caps)):
            raw = caps[i]
            norm = [n for n in (normalize_caption(str(c)) for c in (raw if isinstance(raw, list) else [raw])) if n]
            if norm:
                self.rows.append(i)
                self.refs.append(norm)
            else:
                empty += 1
        if empty:
            # Built in `setup` on every DDP rank: warn once, not once per rank.
            rank_zero_warn(f"HF dataset: skipped {empty} row(s) without a non-empty caption", category=UserWarning)

    def __len__(self) -> int:
        return len(self.rows)

    def _image(self, i: int) -> Any:
        from tasks.captioning.images import _to_rgb

        value = self.ds[self.rows[i]][self.image_column]
        if isinstance(value, (str, Path)):
            return load_rgb(value)
        if isinstance(value, dict):  # undecoded Image feature
            if value.get("bytes"):
                import io

                from PIL import Image

                try:
                    with Image.open(io.BytesIO(value["bytes"])) as img:
                        img.load()
                        return _to_rgb(img)
                except OSError as err:
                    raise ImageError(f"HF row {self.rows[i]}: corrupt image bytes ({err})") from None
            return load_rgb(value["path"])
        return _to_rgb(value)

    def _refs(self, i: int) -> list[str]:
        return self.refs[i]

    def name(self, i: int) -> str:
        return f"HF row {self.rows[i]}"


class CaptionCollate:
    """Collate samples into a `Batch`; drops samples that failed to load (``None``) and counts them.

    A batch whose every image failed becomes `Batch.empty` (not ``None``): under DDP every rank must
    still run a training step (the module returns a zero loss for it), and the skip count survives.

    Args:
        vocab: word vocabulary.
        max_len: captions are cut to this many words (EOS not counted).
    """

    def __init__(self, vocab: CaptionVocab, max_len: int) -> None:
        self.vocab, self.max_len = vocab, max_len

    def __call__(self, samples: list[dict[str, Any] | None]) -> Batch:
        kept = [s for s in samples if s is not None]
        skipped = len(samples) - len(kept)
        if not kept:
            return Batch.empty(skipped)  # every image of the batch was unreadable
        ids = [self.vocab.encode(s["caption"])[: self.max_len] for s in kept]
        t = max(len(x) for x in ids) + 1  # +1 for BOS (inputs) / EOS (targets)
        inputs = torch.full((len(ids), t), self.vocab.pad_id, dtype=torch.long)  # (B, T)
        targets = torch.full((len(ids), t), self.vocab.pad_id, dtype=torch.long)  # (B, T)
        for b, x in enumerate(ids):
            inputs[b, : len(x) + 1] = torch.tensor([self.vocab.bos_id, *x])
            targets[b, : len(x) + 1] = torch.tensor([*x, self.vocab.eos_id])
        return Batch(
            images=torch.stack([s["image"] for s in kept]),  # (B, 3, H, W)
            inputs=inputs,
            targets=targets,
            refs=[s["refs"] for s in kept],
            index=torch.tensor([s["index"] for s in kept]),
            skipped=skipped,
        )
