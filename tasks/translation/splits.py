"""The deterministic train/validation/test split of translation pairs read from files: pairs grouped by their
source sentence, so every translation of one English sentence lands in the same split and no test sentence is
seen in training (the embedded corpus has its own split, `tasks.translation.grammar.split_corpus`)."""

from __future__ import annotations

import random

from core.errors import DataError
from tasks.translation.sources import Pair

__all__ = ["split_by_source"]


def split_by_source(pairs: list[Pair], n_val: int, n_test: int, seed: int) -> tuple[list[Pair], ...]:
    """Deterministic train/val/test split grouping pairs by their first side.

    Args:
        pairs: ``(first, second)`` pairs (first = English for every reader).
        n_val: minimum number of validation pairs.
        n_test: minimum number of test pairs.
        seed: shuffle seed.

    Returns:
        ``(train, val, test)``; val/test get whole source groups until they hold ``n_*`` pairs.
    """
    groups: dict[str, list[Pair]] = {}
    for p in pairs:
        groups.setdefault(p[0], []).append(p)
    keys = sorted(groups)  # sorted first: the shuffle result must not depend on file order quirks
    random.Random(seed).shuffle(keys)
    val: list[Pair] = []
    test: list[Pair] = []
    train: list[Pair] = []
    for k in keys:
        if len(test) < n_test:
            test.extend(groups[k])
        elif len(val) < n_val:
            val.extend(groups[k])
        else:
            train.extend(groups[k])
    if not train:
        raise DataError(
            f"only {len(pairs)} usable pairs: not enough for val={n_val} and test={n_test} "
            f"plus a training split; lower --data.val_size/--data.test_size"
        )
    return train, val, test
