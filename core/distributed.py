"""DDP helpers shared by the tasks (all no-ops in a single process)."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["gather_objects"]


def gather_objects(items: list[Any]) -> list[Any]:
    """Concatenate a per-rank Python list over all ranks, in rank order.

    A collective: under DDP every rank must call it (even with an empty list), or the others hang.
    Corpus-level metrics (BLEU, CIDEr, CER) and prediction writers use it so that rank 0 sees every
    example. Samplers pad the last shard with repeats, so callers de-duplicate by example index.

    Args:
        items: this rank's picklable items.

    Returns:
        The items of rank 0, then rank 1, ...; ``items`` itself when not distributed.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        parts: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(parts, items)
        return [x for part in parts for x in part]
    return items
