"""What a speech checkpoint or model folder stores and restores beyond the weights: the character units, the
log-mel front end and its statistics, the chunking range and an ``hf:`` encoder's config (written by
`SpeechStoredMixin.task_metadata`, read back and validated by the other hooks of `core.io.task_io`), and the
mapping of format-1 weight names to today's modules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from core.errors import CheckpointError
from core.io.checkpoint import META_KEY
from core.text.tokenizers import tokenizer_from_dict
from tasks.speech.features import FeatureConfig, LogMel
from tasks.speech.model import upgrade_state_dict_v1

__all__ = ["SpeechStoredMixin"]


class SpeechStoredMixin:
    """The `core.io.task_io.TaskCheckpointMixin` hooks of :class:`tasks.speech.module.SpeechModule` (mix in before
    ``TaskCheckpointMixin``; needs ``tokenizer``, ``feature_cfg``, ``logmel``, ``stats``, ``max_chunk_seconds``
    and ``pretrained_info``)."""

    @classmethod
    def upgrade_state_dict(cls, state: dict[str, Any], version: int) -> dict[str, Any]:
        return upgrade_state_dict_v1(state) if version < 2 else state

    def task_metadata(self) -> dict[str, Any]:
        """Units, feature front end and statistics, chunking range: the checkpoint alone can transcribe."""
        meta = {
            "units": self.tokenizer.to_dict(),
            "feature_config": self.feature_cfg.to_dict(),
            "feature_stats": {"mean": self.stats.mean.tolist(), "std": self.stats.std.tolist()},
            "max_chunk_seconds": self.max_chunk_seconds,
        }
        if self.pretrained_info is not None:  # the hf: encoder's config: rebuilt from it, offline
            meta["pretrained"] = self.pretrained_info
        return meta

    @classmethod
    def hparams_from_metadata(cls, meta: Mapping[str, Any], source: str) -> dict[str, Any]:
        """An ``hf:`` encoder is rebuilt from the config stored with it: loading never downloads it."""
        return {"pretrained_config": meta["pretrained"]} if isinstance(meta.get("pretrained"), dict) else {}

    def restore_metadata(self, meta: Mapping[str, Any], source: str) -> None:
        """Units, front end and chunking range from the file (validated: it is untrusted)."""
        if "units" in meta:
            try:
                units = tokenizer_from_dict(meta["units"])
            except Exception as err:
                raise CheckpointError(
                    f"{source}: malformed speech units in '{META_KEY}.units' ({type(err).__name__}: {err})"
                ) from None
            if units.vocab_size != self.tokenizer.vocab_size:
                raise CheckpointError(
                    f"{source}: its speech units number {units.vocab_size}, the model's output "
                    f"layer {self.tokenizer.vocab_size}"
                )
            self.tokenizer = units
        cfg = meta.get("feature_config")
        if cfg is not None:
            feature_cfg = FeatureConfig.from_dict(cfg, source)
            if feature_cfg != self.feature_cfg:
                self.feature_cfg = feature_cfg
                self.logmel = LogMel(feature_cfg)
        chunk = meta.get("max_chunk_seconds")
        if chunk is not None:
            if isinstance(chunk, bool) or not isinstance(chunk, (int, float)) or not 1.0 <= chunk <= 600.0:
                raise CheckpointError(f"{source}: max_chunk_seconds = {chunk!r}, expected seconds in [1, 600]")
            self.max_chunk_seconds = float(chunk)

    def check_loaded(self, source: str) -> None:
        """Feature statistics must be finite, with positive spreads (they divide every feature)."""
        mean, std = self.stats.mean, self.stats.std
        if not (bool(torch.isfinite(mean).all()) and bool(torch.isfinite(std).all()) and bool((std > 0).all())):
            raise CheckpointError(
                f"{source}: feature statistics are not finite or have a zero/negative std "
                f"(stats.mean/stats.std); the file was modified or its training data was broken"
            )
