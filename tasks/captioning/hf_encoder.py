"""Vision backbones from ``transformers`` as the captioning encoder: their patch or grid features are what
the decoder's attention looks at.

``--model.encoder hf:<hub-id-or-folder>`` loads ViT, DINOv2, ConvNeXt, ResNet, or the vision tower of a
CLIP / SigLIP model (``core.io.pretrained``), with its image processor's input size and normalisation. A
Transformer backbone gives one feature per ``patch_size`` patch (its CLS token dropped), a CNN one per cell
of its last feature map; either way a row-major ``g x g`` grid that covers the whole (centre-cropped) image,
so ``core.viz.plot_image_attention`` maps each word's attention back onto the image. Every grid feature is
projected to ``encoder_dim`` (a new layer, trained at the full learning rate).

Checkpoints store the backbone's config and the processor settings as plain data
(``CaptioningModule.task_metadata()["pretrained"]``); loading rebuilds the backbone from them offline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from core.errors import ConfigError
from core.io.pretrained import (
    build_from_config,
    hf_name,
    load_pretrained,
    read_json_file,
    read_model_type,
    resolve_pretrained,
)
from core.train.freeze import FreezePolicy, find_blocks

__all__ = ["HFImageEncoder", "hf_image_encoder", "image_settings", "vision_settings"]

_TRANSFORMERS = ("vit", "dinov2", "clip_vision_model", "siglip_vision_model")
# Parameters our features never reach (pooling heads): never trained, so DDP finds no unused parameter.
# (transformers versions differ in whether the vision towers nest their modules under `vision_model`.)
_NEVER = {
    "vit": ("pooler.", "embeddings.mask_token"),
    "dinov2": ("embeddings.mask_token",),
    "clip_vision_model": ("post_layernorm.", "vision_model.post_layernorm."),
    "siglip_vision_model": ("head.", "vision_model.head."),
    "convnext": ("layernorm.",),
}
OPTION = "--model.encoder"


def _side(value: Any) -> int | None:
    """A processor ``size`` / ``crop_size`` entry (an int or ``{"height", "width"}`` / ``{"shortest_edge"}``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, dict):
        for key in ("height", "shortest_edge", "width"):
            if isinstance(value.get(key), int):
                return int(value[key])
    return None


def image_settings(processor: Mapping[str, Any], what: str) -> dict[str, Any]:
    """Input side, mean and std from an image processor's ``preprocessor_config.json``.

    Our transforms resize the short side and centre-crop a square: the side is the processor's crop size
    when it crops, else its resize size.

    Raises:
        ConfigError: no usable size, or a mean/std that is not 3 numbers (std > 0); names ``what``.
    """
    crop = _side(processor.get("crop_size")) if processor.get("do_center_crop") else None
    side = crop or _side(processor.get("size"))
    if side is None or not 16 <= side <= 1024:
        raise ConfigError(
            f"{what}: preprocessor_config.json has no usable image size (size / crop_size "
            f"{processor.get('size')!r}); expected 16..1024 pixels"
        )
    mean, std = processor.get("image_mean", [0.5] * 3), processor.get("image_std", [0.5] * 3)
    if processor.get("do_normalize") is False:
        mean, std = [0.0] * 3, [1.0] * 3
    for name, v in (("image_mean", mean), ("image_std", std)):
        if not (isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v)):
            raise ConfigError(f"{what}: preprocessor_config.json {name} = {v!r}, expected 3 numbers")
    if min(std) <= 0:
        raise ConfigError(f"{what}: preprocessor_config.json image_std = {std!r}, expected positive numbers")
    return {"image_size": int(side), "mean": [float(x) for x in mean], "std": [float(x) for x in std]}


def vision_settings(spec: str) -> dict[str, Any]:
    """The processor settings of ``hf:<id-or-folder>`` (the CLI gives them to the data module)."""
    folder = resolve_pretrained(spec, OPTION)
    read_model_type(folder, "vision", OPTION)
    what = f"{OPTION}={folder}"
    processor = read_json_file(
        folder / "preprocessor_config.json",
        what,
        "the image processor's size and normalisation; copy it from the model's hub repository",
    )
    return image_settings(processor, what)


def grid_side(model_type: str, config: Mapping[str, Any], image_size: int) -> int:
    """Side ``g`` of the feature grid a ``image_size`` square input gives."""
    if model_type in _TRANSFORMERS:
        return image_size // int(config.get("patch_size", 16))
    if model_type == "convnext":
        side = image_size // int(config.get("patch_size", 4))  # stem: patchify
        for _ in range(int(config.get("num_stages", len(config.get("hidden_sizes", [0] * 4)))) - 1):
            side //= 2  # a 2x2 stride-2 downsampling before every later stage
        return side
    side = (image_size - 1) // 2 + 1  # resnet: 7x7 stride-2 conv, then 3x3 stride-2 max pool
    side = (side - 1) // 2 + 1
    stages = len(config.get("depths", [0] * 4))
    for i in range(stages):
        if i > 0 or config.get("downsample_in_first_stage", False):
            side = (side - 1) // 2 + 1
    return side


class HFImageEncoder(nn.Module):
    """A ``transformers`` vision backbone -> ``(B, g*g, dim)`` grid features for attention.

    Args:
        backbone: the pretrained network (``last_hidden_state`` ``(B, 1+N, C)`` or ``(B, C, g, g)``).
        model_type: its ``model_type`` (``core.io.pretrained.MODEL_TYPES["vision"]``).
        config: its config as plain data.
        image_size: side of the square input.
        dim: size of each grid feature after the projection.
        trainable_blocks: -1 fine-tune all, 0 frozen, k the last k blocks (``core.train.freeze.FreezePolicy``).
        unfreeze_after_steps: keep the backbone frozen for this many optimizer steps first.
        dropout: dropout on the projected features.
    """

    def __init__(
        self,
        backbone: nn.Module,
        model_type: str,
        config: Mapping[str, Any],
        image_size: int,
        dim: int,
        trainable_blocks: int = -1,
        unfreeze_after_steps: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.model_type = model_type
        self.grid_size = grid_side(model_type, config, image_size)
        if self.grid_size < 1:
            raise ConfigError(f"image size {image_size} gives no {model_type} feature grid (too small)")
        # Patch-position tables are interpolated when the input is not the size the model was trained at.
        self._kwargs = (
            {"interpolate_pos_encoding": True}
            if model_type in ("vit", "clip_vision_model", "siglip_vision_model")
            and image_size != config.get("image_size")
            else {}
        )
        cnn = model_type in ("convnext", "resnet")
        channels = int(config["hidden_sizes"][-1] if cnn else config["hidden_size"])
        self.proj = nn.Sequential(nn.Linear(channels, dim), nn.ReLU(), nn.Dropout(dropout))
        self.dim = dim
        self.freeze_policy = FreezePolicy(
            backbone, find_blocks(backbone), trainable_blocks, unfreeze_after_steps, never=_NEVER.get(model_type, ())
        )

    def train(self, mode: bool = True) -> HFImageEncoder:
        super().train(mode)
        if mode:
            self.freeze_policy.fix_modes()
        return self

    def forward(self, images: Tensor) -> Tensor:
        """Encode images.

        Args:
            images: ``(B, 3, H, W)`` normalised with the processor's mean/std.

        Returns:
            ``(B, g*g, dim)`` features in row-major grid order (cell ``r * g + c``).
        """
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_policy.fully_frozen):
            hidden = self.backbone(pixel_values=images, **self._kwargs).last_hidden_state
        g = self.grid_size
        if hidden.dim() == 4:  # CNN: (B, C, g, g) -> (B, g*g, C)
            feats = hidden.flatten(2).transpose(1, 2)
        else:  # Transformer: (B, prefix + g*g, C); the prefix (CLS, registers) is not a place in the image
            feats = hidden[:, hidden.shape[1] - g * g :]
        if feats.shape[1] != g * g or (hidden.dim() == 4 and hidden.shape[-1] != g):
            raise ConfigError(
                f"the {self.model_type} backbone gave {tuple(hidden.shape)} features for "
                f"{tuple(images.shape)} images, expected a {g}x{g} grid (is the image size right?)"
            )
        return self.proj(feats)  # (B, g*g, dim)


def hf_image_encoder(
    spec: str,
    stored: Mapping[str, Any] | None,
    dim: int,
    image_size: int,
    trainable_blocks: int,
    unfreeze_after_steps: int | None,
    mean: Sequence[float] = (0.5,) * 3,
    std: Sequence[float] = (0.5,) * 3,
) -> tuple[HFImageEncoder, dict[str, Any]]:
    """Build the encoder of ``--model.encoder hf:...``.

    Args:
        spec: ``hf:<hub-id-or-folder>``.
        stored: the ``pretrained_config`` a checkpoint holds (then nothing is read but it: offline), or None
            to load the pretrained weights from ``spec``.
        dim, image_size, trainable_blocks, unfreeze_after_steps: see :class:`HFImageEncoder`.
        mean, std: the normalisation the module was given (a warning when it is not the processor's).

    Returns:
        ``(encoder, pretrained_config)``: ``{"source", "model_type", "config", "processor"}`` as plain data.
    """
    if stored is not None:
        config = stored.get("config")
        if not isinstance(config, dict):
            raise ConfigError("--model.pretrained_config: its 'config' is missing or not a mapping")
        backbone = build_from_config(config, "vision", "--model.pretrained_config")
        info = dict(stored)
    else:
        folder = resolve_pretrained(spec, OPTION)
        settings = vision_settings(str(folder))
        backbone, config = load_pretrained(folder, "vision", OPTION)
        info = {"source": hf_name(spec), "model_type": config["model_type"], "config": config, "processor": settings}
        if (settings["image_size"], settings["mean"], settings["std"]) != (image_size, list(mean), list(std)):
            # imported here: only a backbone read from its source (training) warns; a stored one loads without
            # Lightning (the lean `Captioner.from_pretrained`)
            from lightning.pytorch.utilities import rank_zero_warn

            rank_zero_warn(
                f"{OPTION}={spec} expects {settings['image_size']} px images normalised with mean "
                f"{settings['mean']} / std {settings['std']} (its image processor), got {image_size} px, "
                f"{list(mean)} / {list(std)}: give the data module these values (the CLI does it itself)"
            )
    model_type = str(info["config"]["model_type"])
    if info.get("processor") is not None:
        image_settings(
            {
                "size": info["processor"].get("image_size"),
                "image_mean": info["processor"].get("mean"),
                "image_std": info["processor"].get("std"),
            }
            if isinstance(info["processor"], dict)
            else {},
            "--model.pretrained_config.processor",
        )
    return HFImageEncoder(
        backbone, model_type, info["config"], image_size, dim, trainable_blocks, unfreeze_after_steps
    ), info
