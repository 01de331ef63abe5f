"""Robust image decoding (any PIL mode -> RGB), the inference transform and the training augmentation.

`load_rgb` is the single entry point for image files, used by the datasets (inside DataLoader
workers) and by inference. Bad files raise `ImageError` (a `core.errors.UserError`) whose
message names the file and says what is wrong, so the CLI can print one line per file.

The deterministic inference transform (:class:`EvalTransform`) and the image as the network sees it
(:func:`shown_image`) are plain torch and PIL: importing torchvision imports ``torch._dynamo`` (about 1 s of a
lean start-up, ``Captioner.from_pretrained``). They give exactly torchvision v2's results (pinned by
``tests/tasks/test_captioning_lean.py``); the training augmentation stays on torchvision v2.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from core.errors import UserError

if TYPE_CHECKING:
    from torchvision.transforms import v2

#: ImageNet statistics: right for torchvision encoders, harmless for the small CNN.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: Longest side kept after decoding. Huge photos are shrunk right away (JPEG draft mode decodes
#: them at 1/2..1/8 scale), so a 20k-pixel image costs neither minutes nor gigabytes.
MAX_DECODE_SIDE = 1024


class ImageError(UserError):
    """An image file that cannot be used (missing, truncated, not an image, too large)."""


#: Modes wider than 8 bits per channel (16-bit greyscale PNG/TIFF, 32-bit integer and float TIFF).
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
#: Modes with transparency, composited over white by `_to_rgb`.
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def _shrink_native(img: Image.Image, max_side: int) -> Image.Image:
    """Shrink a wide or transparent image to ``max_side`` in its own mode, before any conversion.

    A 16-bit 9,400 x 9,400 PNG (172 KB on disk) costs 177 MB decoded; converting it at full size (float64 for the
    rescale, or RGBA for compositing) would cost gigabytes. PIL's ``resize`` works in these modes (``I;16*``
    natively, ``I``/``F`` in 32 bits, alpha premultiplied), with antialiasing, and its intermediate is one
    ``new_width x height`` strip.
    Shrinking first then compositing over white equals compositing first then shrinking (both are linear in
    premultiplied colour), up to rounding.
    """
    if not max_side or max(img.size) <= max_side or img.mode not in WIDE_MODES + ALPHA_MODES:
        return img
    if img.mode == "PA":  # palette + alpha: resizing palette indices would mix unrelated colours
        img = img.convert("RGBA")
    # In place (the full-size buffer is freed); reducing_gap=None: a plain antialiased resize, since the
    # default first step (`reduce`) refuses I;16.
    img.thumbnail((max_side, max_side), Image.Resampling.BILINEAR, reducing_gap=None)
    return img


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB.

    * palette/LA/RGBA (transparency): composited over white, as a viewer would show it;
    * 16/32-bit integer and float greyscale: rescaled by the mode's range to 8 bits
      (a plain ``convert("L")`` would clip 16-bit data to white); non-finite float values count as 0;
    * CMYK, YCbCr, LAB, HSV, 1-bit, L: PIL's own conversion.

    Wide and transparent images should be shrunk first (`_shrink_native`): this works at full size.
    """
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ALPHA_MODES:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode in WIDE_MODES:
        arr = np.asarray(img, dtype=np.float64)  # (H, W): small here (shrunk by load_rgb first)
        if img.mode.startswith("I;16"):
            arr = arr / 65535.0
        else:
            arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
            lo, hi = float(arr.min()), float(arr.max())
            arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        return Image.fromarray((arr * 255.0 + 0.5).clip(0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode != "RGB":
        return img.convert("RGB")
    return img


def load_rgb(path: str | Path, max_side: int = MAX_DECODE_SIDE) -> Image.Image:
    """Decode an image file to an RGB PIL image.

    Args:
        path: image file (any format PIL reads).
        max_side: the result's longest side is at most this (aspect kept); 0 = no limit.

    Returns:
        A fully loaded ``RGB`` image.

    Raises:
        ImageError: missing file, directory, empty/truncated file, not an image, or an image
            over PIL's decompression-bomb limit; the message names the file.
    """
    p = Path(path)
    if not p.exists():
        raise ImageError(f"{p}: no such image file")
    if p.is_dir():
        raise ImageError(f"{p}: is a directory, expected an image file")
    if p.stat().st_size == 0:
        raise ImageError(f"{p}: empty file, expected an image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as img:
                if max_side and max(img.size) > max_side:
                    # JPEG only: decode at a reduced scale (no-op for other formats).
                    img.draft("RGB", (max_side, max_side))
                img.load()
                decoded: Image.Image = img
                if img.mode == "P" and "transparency" in img.info and max_side and max(img.size) > max_side:
                    decoded = img.convert("RGBA")  # so that it is shrunk (below) before compositing
                # 16/32-bit and transparent images: shrink in their own mode first (bounded memory), then
                # convert; 8-bit ones (and JPEGs decoded in draft mode) convert, then shrink below.
                out = _to_rgb(_shrink_native(decoded, max_side))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"{p}: image too large to decode safely ({err})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{p}: not an image file (PIL cannot identify it)") from None
    except (OSError, SyntaxError, ValueError) as err:
        # Truncated/corrupt data surfaces as OSError ("image file is truncated", "broken data stream").
        raise ImageError(f"{p}: corrupt or truncated image ({err})") from None
    if max_side and max(out.size) > max_side:
        out.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return out


def resized_side(height: int, width: int, size: int) -> tuple[int, int]:
    """``(height, width)`` once the shorter side is ``size`` (the longer one rounded down, as torchvision's)."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)
    return (new_long, size) if width <= height else (size, new_long)


@dataclass(frozen=True)
class EvalTransform:
    """Deterministic preprocessing: shorter side -> ``image_size`` (bilinear, antialiased), centre crop, scale to
    [0, 1], normalise; torchvision v2's ``PILToTensor, Resize, CenterCrop, ToDtype, Normalize``, bit for bit.

    Attributes:
        image_size: side of the square the network sees.
        mean: normalisation mean per channel.
        std: normalisation std per channel.
    """

    image_size: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __call__(self, image: Image.Image) -> Tensor:
        """RGB PIL image -> ``(3, image_size, image_size)`` float32 tensor."""
        size = self.image_size
        x = torch.as_tensor(np.array(image, copy=True)).view(image.size[1], image.size[0], 3)  # (H, W, 3) uint8
        x = x.permute(2, 0, 1)  # (3, H, W), channels-last in memory
        height, width = x.shape[-2:]
        new = resized_side(height, width, size)
        if new != (height, width):
            batch = x.unsqueeze(0)  # (1, 3, H, W)
            strides = list(batch.stride())
            if batch.is_contiguous(memory_format=torch.channels_last) and batch.numel() != strides[0]:
                # torchvision's restriding, so interpolate keeps channels-last and rounds as it does there
                strides[0] = batch.numel()
                batch = batch.as_strided(batch.shape, strides)
            # uint8 is resized natively where the CPU has AVX2 (torchvision's rule); elsewhere in float32, rounded
            native = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
            out = F.interpolate(
                batch if native else batch.float(), size=list(new), mode="bilinear", align_corners=False, antialias=True
            )
            x = (out if native else out.round_().to(torch.uint8)).reshape(3, *new)
        height, width = x.shape[-2:]
        top, left = round((height - size) / 2.0), round((width - size) / 2.0)
        x = x[..., top : top + size, left : left + size]  # (3, size, size)
        mean = torch.as_tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=torch.float32).view(-1, 1, 1)
        return x.to(torch.float32).mul_(1.0 / 255).sub(mean).div_(std)


def eval_transform(
    image_size: int, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD
) -> EvalTransform:
    """Deterministic preprocessing: shorter side -> ``image_size``, centre crop, normalise.

    Returns:
        A transform mapping an RGB PIL image to a float tensor ``(3, image_size, image_size)``.
    """
    return EvalTransform(image_size, tuple(mean), tuple(std))


def shown_image(image: Image.Image, image_size: int) -> Image.Image:
    """The image as the network saw it, for attention figures: shorter side -> ``image_size`` (PIL bilinear), centre
    crop (torchvision v2's ``CenterCrop(Resize(image))`` on a PIL image)."""
    height, width = resized_side(image.height, image.width, image_size)
    if (height, width) != (image.height, image.width):
        image = image.resize((width, height), resample=Image.Resampling.BILINEAR)
    top, left = round((height - image_size) / 2.0), round((width - image_size) / 2.0)
    return image.crop((left, top, left + image_size, top + image_size))


def train_transform(
    image_size: int,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    hflip: bool = False,
) -> v2.Compose:
    """Training augmentation: mild random resized crop and colour jitter, optional flip.

    Horizontal flips are off by default because they contradict "left"/"right" in captions.

    Returns:
        A transform mapping an RGB PIL image to a float tensor ``(3, image_size, image_size)``.
    """
    from torchvision.transforms import v2  # training only: inference needs no torchvision (module docstring)

    ops: list[v2.Transform] = [
        v2.PILToTensor(),
        v2.RandomResizedCrop(image_size, scale=(0.7, 1.0), ratio=(0.85, 1.18), antialias=True),
        v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
    ]
    if hflip:
        ops.append(v2.RandomHorizontalFlip())
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(ops)


def denormalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """Undo `Normalize` for plotting.

    Args:
        images: ``(B, 3, H, W)`` or ``(3, H, W)`` normalised float tensor.

    Returns:
        uint8 array ``(B, H, W, 3)`` or ``(H, W, 3)``.
    """
    m = torch.tensor(mean, dtype=images.dtype, device=images.device).view(-1, 1, 1)  # (3, 1, 1)
    s = torch.tensor(std, dtype=images.dtype, device=images.device).view(-1, 1, 1)
    x = (images * s + m).clamp(0, 1) * 255.0
    x = x.movedim(-3, -1)  # channels last: (..., H, W, 3)
    return x.round().to(torch.uint8).cpu().numpy()
