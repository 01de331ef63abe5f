"""What a speech checkpoint or model folder stores beyond the weights, and how it is read back.

The artifacts (``attn_suite.*`` in a checkpoint; ``units.json``, ``preprocessor_config.json`` and ``config.json``
in a model folder) are the character units, the log-mel front end, its statistics (for reading; the weights hold
them too), the chunking range and an ``hf:`` encoder's config. Everything read back is untrusted: each reader
validates its field and names the file in its error. Old weight names are mapped by
`tasks.speech.network.upgrade_state_dict`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from core.errors import CheckpointError
from core.io.checkpoint import META_KEY
from core.text.tokenizers import BaseTokenizer, tokenizer_from_dict
from tasks.speech.features import FeatureConfig, FeatureStats

__all__ = ["check_stats", "read_chunk_seconds", "read_units", "speech_artifacts"]


def speech_artifacts(
    units: BaseTokenizer,
    feature_cfg: FeatureConfig,
    stats: FeatureStats,
    max_chunk_seconds: float | None,
    pretrained: dict[str, Any] | None,
) -> dict[str, Any]:
    """Units, feature front end and statistics, chunking range (and an ``hf:`` encoder's config, from which it is
    rebuilt offline), as plain data: the checkpoint alone can transcribe."""
    meta = {
        "units": units.to_dict(),
        "feature_config": feature_cfg.to_dict(),
        "feature_stats": {"mean": stats.mean.tolist(), "std": stats.std.tolist()},
        "max_chunk_seconds": max_chunk_seconds,
    }
    if pretrained is not None:
        meta["pretrained"] = pretrained
    return meta


def read_units(meta: Mapping[str, Any], source: str, vocab_size: int) -> BaseTokenizer | None:
    """The stored units (None when the file has none), which must number the model's output layer.

    Raises:
        CheckpointError: malformed units, or a number that does not fit (names ``source``).
    """
    if "units" not in meta:
        return None
    try:
        units = tokenizer_from_dict(meta["units"])
    except Exception as err:
        raise CheckpointError(
            f"{source}: malformed speech units in '{META_KEY}.units' ({type(err).__name__}: {err})"
        ) from None
    if units.vocab_size != vocab_size:
        raise CheckpointError(
            f"{source}: its speech units number {units.vocab_size}, the model's output layer {vocab_size}"
        )
    return units


def read_chunk_seconds(meta: Mapping[str, Any], source: str) -> float | None:
    """The stored chunking range in seconds (None when the file has none).

    Raises:
        CheckpointError: not a number in [1, 600] (names ``source``).
    """
    chunk = meta.get("max_chunk_seconds")
    if chunk is None:
        return None
    if isinstance(chunk, bool) or not isinstance(chunk, (int, float)) or not 1.0 <= chunk <= 600.0:
        raise CheckpointError(f"{source}: max_chunk_seconds = {chunk!r}, expected seconds in [1, 600]")
    return float(chunk)


def check_stats(stats: FeatureStats, source: str) -> None:
    """Feature statistics must be finite, with positive spreads (they divide every feature).

    Raises:
        CheckpointError: they are not (names ``source``).
    """
    mean, std = stats.mean, stats.std
    if not (bool(torch.isfinite(mean).all()) and bool(torch.isfinite(std).all()) and bool((std > 0).all())):
        raise CheckpointError(
            f"{source}: feature statistics are not finite or have a zero/negative std "
            f"(model.stats.mean/model.stats.std); the file was modified or its training data was broken"
        )
