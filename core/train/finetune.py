"""Fine-tuning pretrained parts: which layers train, when they start to, and at which learning rate.

A task's adapter around a pretrained network (``tasks/<task>/hf_encoder.py``, the Marian model) owns a
:class:`FreezePolicy` as ``self.freeze_policy``; three hyper-parameters drive it, with the same names in
every task:

* ``trainable_blocks``: -1 fine-tunes the whole pretrained part, 0 freezes it, ``k`` fine-tunes only its
  last ``k`` layer blocks (and what sits above them, e.g. a final layer norm);
* ``unfreeze_after_steps``: the pretrained part stays frozen for this many optimizer steps (the new layers
  on top train alone first), then ``trainable_blocks`` applies; None = from the start;
* ``encoder_lr_scale``: the pretrained parameters train at ``lr * encoder_lr_scale``
  (:func:`optimizer_groups` gives ``core.train.schedule.configure_optimizer`` the groups).

Frozen parameters have ``requires_grad=False`` (no gradient is computed for them) and frozen blocks stay in
eval mode (dropout off, batch-norm statistics kept). Parameters a schedule unfreezes later are in the
optimizer from the start: with no gradient the optimizer leaves them alone. :class:`FreezeSchedule` (a
Lightning callback the modules return from ``configure_callbacks``) applies the policy at every step.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

from core.errors import ConfigError
from core.train.freeze import FreezePolicy, attn_implementation, find_blocks, freeze_policies, optimizer_groups

__all__ = [
    "FreezePolicy",
    "FreezeSchedule",
    "attn_implementation",
    "find_blocks",
    "freeze_policies",
    "optimizer_groups",
]


class FreezeSchedule(pl.Callback):
    """Applies the modules' :class:`FreezePolicy` objects at every training step (and when resuming).

    Raises:
        ConfigError: ``unfreeze_after_steps`` under DDP (DDP registers the trainable parameters once, when it
            wraps the model; parameters unfrozen later would never be synchronised).
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        delayed = any(p.unfreeze_after_steps for p in freeze_policies(pl_module))
        if stage == "fit" and trainer.world_size > 1 and delayed:
            raise ConfigError(
                "--model.unfreeze_after_steps does not work with several processes (DDP registers "
                "the trainable parameters once); use --model.trainable_blocks, or train on one device"
            )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for policy in freeze_policies(pl_module):
            policy.apply(trainer.global_step)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        for policy in freeze_policies(pl_module):
            frozen = trainer.global_step < policy.unfreeze_after_steps
            if policy.unfreeze_after_steps and policy.frozen_phase != frozen:
                policy.apply(trainer.global_step)
