"""Image encoders: a CNN backbone turned into a grid of feature vectors for attention.

``ImageEncoder`` runs a backbone (a tiny CNN trained from scratch, or a torchvision
resnet18/34/50 / mobilenet_v3_small/large), pools its last feature map to a fixed
``grid_size x grid_size`` grid (adaptive average pooling, so any input size works), and
projects every cell to ``dim`` features: the decoder attends over these ``grid_size**2`` cells.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from core.errors import ConfigError

EncoderName = Literal["tiny", "resnet18", "resnet34", "resnet50", "mobilenet_v3_small", "mobilenet_v3_large"]
ENCODERS: tuple[str, ...] = ("tiny", "resnet18", "resnet34", "resnet50", "mobilenet_v3_small", "mobilenet_v3_large")


def _conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TinyCNN(nn.Module):
    """Small from-scratch CNN (~0.3 M parameters, ~0.05 GFLOP at 96 px) for CPU training.

    Four stride-2 stages (total stride 16): a 96 px image gives a 6x6 map of 128 channels.
    Stages are kept as ``self.blocks`` so "fine-tune the last k blocks" works like for resnets.
    """

    out_channels = 128

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.blocks = nn.ModuleList(
            [
                _conv_bn(3, w, 2),  # (B, w, H/2, W/2)
                nn.Sequential(_conv_bn(w, 2 * w, 2), _conv_bn(2 * w, 2 * w, 1)),  # (B, 2w, H/4, W/4)
                nn.Sequential(_conv_bn(2 * w, 4 * w, 2), _conv_bn(4 * w, 4 * w, 1)),  # (B, 4w, H/8, W/8)
                nn.Sequential(_conv_bn(4 * w, self.out_channels, 2), _conv_bn(self.out_channels, self.out_channels, 1)),
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` -> ``(B, 128, H/16, W/16)``."""
        for block in self.blocks:
            x = block(x)
        return x


def _torchvision_backbone(name: str, pretrained: str | None) -> tuple[nn.Module, list[nn.Module], int]:
    """Build a torchvision backbone without its classifier.

    Args:
        name: torchvision model name.
        pretrained: None (random init), ``"imagenet"``/``"DEFAULT"``/an enum member name such as
            ``"IMAGENET1K_V1"`` (torchvision weights; downloads once, needs network), or the path of a
            local weights file (a ``state_dict`` of the full torchvision model, loaded with
            ``weights_only=True``).

    Returns:
        ``(features module, list of blocks in order (for partial fine-tuning), out channels)``.
    """
    import torchvision.models as tvm

    weights = None
    local: Path | None = None
    if pretrained:
        candidate = Path(pretrained).expanduser()
        if candidate.suffix in (".pt", ".pth", ".bin", ".ckpt") or candidate.exists():
            if not candidate.is_file():
                raise ConfigError(f"model.pretrained: weights file not found: {candidate}")
            local = candidate
        else:
            enum = tvm.get_model_weights(name)
            key = "DEFAULT" if pretrained.lower() in ("imagenet", "default", "true") else pretrained
            try:
                weights = enum[key]
            except KeyError:
                raise ConfigError(
                    f"model.pretrained={pretrained!r}: not a file and not one of {[w.name for w in enum]} "
                    f"(or 'imagenet') for {name}"
                ) from None
    try:
        model = tvm.get_model(name, weights=weights)
    except (OSError, RuntimeError) as err:  # offline (URLError is an OSError), interrupted/corrupt download
        raise ConfigError(
            f"model.pretrained={pretrained!r}: could not get the torchvision weights for {name} ({err}); "
            "check the network, or pass a local weights file (model.pretrained=/path/to/weights.pth)"
        ) from None
    if local is not None:
        try:
            state = torch.load(local, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated file, not a torch file, unsafe pickle
            raise ConfigError(f"model.pretrained: cannot read weights file {local}: {err}") from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ConfigError(f"model.pretrained: {local} does not hold a state_dict")
        # The classifier head may differ (e.g. other class count): only the backbone matters.
        state = {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier."))}
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith(("fc.", "classifier."))]
        if missing or unexpected:
            raise ConfigError(
                f"model.pretrained: {local} does not match {name} "
                f"(missing {missing[:3]}..., unexpected {list(unexpected)[:3]}...)"
            )
    if name.startswith("resnet"):
        blocks = [
            nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool),
            model.layer1,
            model.layer2,
            model.layer3,
            model.layer4,
        ]
        channels = model.fc.in_features
    else:  # mobilenet_v3_*: features is a Sequential of inverted-residual blocks
        blocks = list(model.features)
        channels = model.features[-1].out_channels
    return nn.Sequential(*blocks), blocks, channels


class ImageEncoder(nn.Module):
    """CNN -> ``(B, grid_size**2, dim)`` attention keys/values (+ a pooled summary).

    Args:
        name: backbone (`ENCODERS`).
        dim: feature size of every grid cell after the 1x1 projection.
        grid_size: side of the pooled grid (7 or 14 for 224 px resnets, 6 for the tiny CNN at 96 px).
        pretrained: see `_torchvision_backbone` (ignored for ``tiny``).
        trainable_blocks: -1 = train the whole backbone; 0 = freeze it; k > 0 = fine-tune only
            the last k blocks (resnet: stem, layer1..4; mobilenet: feature blocks).
        dropout: dropout on the projected features.
    """

    def __init__(
        self,
        name: str = "tiny",
        dim: int = 256,
        grid_size: int = 6,
        pretrained: str | None = None,
        trainable_blocks: int = -1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if name not in ENCODERS:
            raise ConfigError(f"model.encoder={name!r}: expected one of {list(ENCODERS)}")
        if name == "tiny":
            cnn = TinyCNN()
            self.backbone: nn.Module = cnn
            blocks: list[nn.Module] = list(cnn.blocks)
            channels = cnn.out_channels
        else:
            self.backbone, blocks, channels = _torchvision_backbone(name, pretrained)
        self.grid_size = grid_size
        self.pool = nn.AdaptiveAvgPool2d(grid_size)
        self.proj = nn.Sequential(nn.Linear(channels, dim), nn.ReLU(), nn.Dropout(dropout))
        self.dim = dim
        self._frozen: list[nn.Module] = []
        if trainable_blocks >= 0:
            self._frozen = blocks[: max(len(blocks) - trainable_blocks, 0)]
            for block in self._frozen:
                for p in block.parameters():
                    p.requires_grad_(False)

    def train(self, mode: bool = True) -> ImageEncoder:
        super().train(mode)
        # Frozen blocks keep their BatchNorm statistics (as with pretrained features).
        for block in self._frozen:
            block.eval()
        return self

    def forward(self, images: Tensor) -> Tensor:
        """Encode images.

        Args:
            images: ``(B, 3, H, W)`` normalised.

        Returns:
            ``(B, grid_size**2, dim)`` features in row-major grid order (cell ``r * grid + c``).
        """
        fmap = self.pool(self.backbone(images))  # (B, C, g, g)
        feats = fmap.flatten(2).transpose(1, 2)  # (B, g*g, C)
        return self.proj(feats)  # (B, g*g, dim)
