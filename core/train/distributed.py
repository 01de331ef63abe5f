"""DDP helpers shared by the tasks (all no-ops in a single process)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

import torch

__all__ = ["dedupe_by_index", "gather_objects"]

T = TypeVar("T")


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


def dedupe_by_index(items: Iterable[tuple[int, T]]) -> list[T]:
    """Values of ``(dataset_index, value)`` pairs in index order, each index once (first seen wins).

    Under DDP every rank runs the same number of steps, so samplers pad the last shards with repeats of
    earlier examples; after gathering the outputs of all ranks (:func:`gather_objects`) this drops those
    repeats, so nothing is scored or written twice, and the order no longer depends on the world size.
    """
    seen: dict[int, T] = {}
    for index, value in items:
        seen.setdefault(int(index), value)
    return [seen[i] for i in sorted(seen)]
