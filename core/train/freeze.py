"""Which layers of a pretrained part train, and at which learning rate, without Lightning.

:class:`FreezePolicy`, :func:`find_blocks`, :func:`freeze_policies`, :func:`optimizer_groups` and
:func:`attn_implementation` (what the three options ``trainable_blocks``, ``unfreeze_after_steps`` and
``encoder_lr_scale`` mean: :mod:`core.train.finetune`, which adds the Lightning callback that applies the policies
at every step). They live here so that a task's adapter around a pretrained network (``tasks/<task>/hf_encoder.py``)
can be built for inference without importing Lightning.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from torch import nn

from core.errors import ConfigError

__all__ = ["FreezePolicy", "attn_implementation", "find_blocks", "freeze_policies", "optimizer_groups"]

# Attribute paths of the layer stacks of the transformers models we load, tried in order.
_BLOCK_PATHS = (
    "encoder.layer",
    "encoder.layers",
    "encoder.stages",
    "vision_model.encoder.layers",
    "layers",
    "model.decoder.layers",
)


def find_blocks(model: nn.Module, paths: Sequence[str] = _BLOCK_PATHS) -> list[nn.Module]:
    """The main stack of layer blocks of a pretrained network (bottom first), or ``[]``."""
    for path in paths:
        obj: Any = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList) and len(obj) > 0:
            return list(obj)
    return []


class FreezePolicy:
    """Which parameters of a pretrained network train, and from which step.

    Args:
        model: the pretrained network.
        blocks: its layer blocks, bottom first (:func:`find_blocks`).
        trainable_blocks: -1 all, 0 none, ``k`` the last ``k`` blocks plus the parameters registered after
            them (final norms).
        unfreeze_after_steps: frozen entirely before this optimizer step (None or 0: no frozen phase).
        never: parameter name prefixes that never train (unused heads, a CNN feature encoder kept frozen,
            fixed sinusoidal position tables).
        what: the option group, for messages (e.g. ``--model.trainable_blocks``).

    Raises:
        ConfigError: ``trainable_blocks`` below -1 or above the number of blocks.
    """

    def __init__(
        self,
        model: nn.Module,
        blocks: Sequence[nn.Module],
        trainable_blocks: int = -1,
        unfreeze_after_steps: int | None = None,
        never: Sequence[str] = (),
        what: str = "--model.trainable_blocks",
    ) -> None:
        if not -1 <= trainable_blocks <= len(blocks):
            choices = f"-1 (all), 0 (frozen) or 1..{len(blocks)}" if blocks else "-1 (all) or 0 (frozen)"
            raise ConfigError(
                f"{what}={trainable_blocks}: expected {choices} (this pretrained network has "
                f"{len(blocks)} layer blocks)"
            )
        self.model = model
        self.unfreeze_after_steps = unfreeze_after_steps or 0
        names = {id(p): n for n, p in model.named_parameters()}
        never_ids = {id(p) for n, p in model.named_parameters() if any(n.startswith(x) for x in never)}
        if trainable_blocks == -1:
            chosen = [p for p in model.parameters()]
        elif trainable_blocks == 0:
            chosen = []
        else:
            top = list(blocks)[len(blocks) - trainable_blocks :]
            chosen = [p for b in top for p in b.parameters()]
            # parameters registered after the last block (e.g. a final layer norm) work on its output
            order = {id(p): i for i, p in enumerate(model.parameters())}
            last = max((order[id(p)] for p in blocks[-1].parameters()), default=len(order))
            chosen += [p for p in model.parameters() if order[id(p)] > last]
        seen: set[int] = set()
        self.trainable: list[nn.Parameter] = []
        for p in chosen:
            if id(p) not in seen and id(p) not in never_ids and id(p) in names:
                seen.add(id(p))
                self.trainable.append(p)
        self._trainable_ids = seen
        # modules with parameters none of which ever train: kept in eval mode (dropout off, BN statistics fixed)
        self.frozen_modules = [
            m
            for m in model.modules()
            if any(True for _ in m.parameters()) and not any(id(p) in seen for p in m.parameters())
        ]
        self.frozen_phase = False
        self.apply(0)

    def apply(self, step: int) -> None:
        """Set ``requires_grad`` for optimizer step ``step`` (before ``unfreeze_after_steps``: all frozen)."""
        self.frozen_phase = step < self.unfreeze_after_steps
        for p in self.model.parameters():
            p.requires_grad_(not self.frozen_phase and id(p) in self._trainable_ids)
        if self.model.training:
            self.fix_modes()

    def fix_modes(self) -> None:
        """After ``train()``: frozen blocks (all of the network in the frozen phase) back to eval mode."""
        if self.frozen_phase:
            self.model.eval()
            return
        for m in self.frozen_modules:
            m.eval()

    @property
    def fully_frozen(self) -> bool:
        """No pretrained parameter trains at this step (the network can run without autograd)."""
        return self.frozen_phase or not self.trainable


def freeze_policies(module: nn.Module) -> list[FreezePolicy]:
    """Every :class:`FreezePolicy` held by ``module``'s submodules (as ``freeze_policy``)."""
    found = [getattr(m, "freeze_policy", None) for m in module.modules()]
    return [p for p in found if isinstance(p, FreezePolicy)]


def optimizer_groups(module: nn.Module, pretrained_lr_scale: float) -> list[tuple[list[nn.Parameter], float]] | None:
    """``core.train.schedule.configure_optimizer`` groups: pretrained parameters that may train (now or after a
    frozen phase) at ``lr * pretrained_lr_scale``, everything else that trains at ``lr``; None without a
    pretrained part (the default grouping)."""
    policies = freeze_policies(module)
    if not policies:
        return None
    pretrained = [p for pol in policies for p in pol.trainable]
    inside = {id(p) for pol in policies for p in pol.model.parameters()}
    rest = [p for p in module.parameters() if p.requires_grad and id(p) not in inside]
    return [(pretrained, pretrained_lr_scale), (rest, 1.0)]


@contextmanager
def attn_implementation(model: Any, name: str) -> Iterator[None]:
    """Run a ``transformers`` model with another attention implementation (e.g. ``eager``, which returns
    attention weights, where ``sdpa`` does not), then switch back."""
    old = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if old is None or old == name:
        yield
        return
    model.set_attn_implementation(name)
    try:
        yield
    finally:
        model.set_attn_implementation(old)
