"""Token-id datasets, padding collate and a length-bucketed, token-budget batch sampler."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from core.errors import ConfigError
from core.text.tokenizers import BOS_ID, EOS_ID, PAD_ID

T = TypeVar("T")


class PairDataset(Dataset):
    """Encoded sentence pairs (ids without BOS/EOS) plus their texts (references for BLEU).

    Args:
        src_ids: per example, source token ids.
        tgt_ids: per example, target token ids (may be empty lists for predict-only data).
        src_texts: source strings.
        tgt_texts: target strings ("" when unknown).
    """

    def __init__(
        self,
        src_ids: Sequence[Sequence[int]],
        tgt_ids: Sequence[Sequence[int]],
        src_texts: Sequence[str],
        tgt_texts: Sequence[str],
    ) -> None:
        self.src_ids = [list(s) for s in src_ids]
        self.tgt_ids = [list(t) for t in tgt_ids]
        self.src_texts = list(src_texts)
        self.tgt_texts = list(tgt_texts)

    def __len__(self) -> int:
        return len(self.src_ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            "index": i,
            "src": self.src_ids[i],
            "tgt": self.tgt_ids[i],
            "src_text": self.src_texts[i],
            "tgt_text": self.tgt_texts[i],
        }

    def lengths(self) -> list[int]:
        """Padded-cost length of each example: the longer of source and target+1 (BOS/EOS)."""
        return [max(len(s), len(t) + 1) for s, t in zip(self.src_ids, self.tgt_ids)]


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Pad a list of examples into a batch.

    Returns:
        dict with ``src`` (B, S) long, ``src_lengths`` (B,), ``tgt_in`` (B, T) = BOS + target,
        ``tgt_out`` (B, T) = target + EOS (PAD = 0 elsewhere), ``index`` (B,), ``src_text`` / ``tgt_text``
        lists of str, and ``src_lengths_host``: the source lengths as a tuple, which stays on the host when
        Lightning moves the batch (it moves only tensors), so the RNN encoder packs without copying lengths back
        from the GPU (a sync every step) and the Transformer drops the mask of unpadded batches.
    """
    b = len(items)
    s_max = max(1, max(len(it["src"]) for it in items))
    t_max = max(len(it["tgt"]) for it in items) + 1
    src = torch.full((b, s_max), PAD_ID, dtype=torch.long)
    tgt_in = torch.full((b, t_max), PAD_ID, dtype=torch.long)
    tgt_out = torch.full((b, t_max), PAD_ID, dtype=torch.long)
    lengths = torch.zeros(b, dtype=torch.long)
    for i, it in enumerate(items):
        s, t = it["src"], it["tgt"]
        if s:
            src[i, : len(s)] = torch.tensor(s)
        lengths[i] = max(1, len(s))  # an empty source still has one (PAD) position the encoder can see
        tgt_in[i, : len(t) + 1] = torch.tensor([BOS_ID] + t)
        tgt_out[i, : len(t) + 1] = torch.tensor(t + [EOS_ID])
    return {
        "src": src,
        "src_lengths": lengths,
        "src_lengths_host": tuple(lengths.tolist()),
        "tgt_in": tgt_in,
        "tgt_out": tgt_out,
        "index": torch.tensor([it["index"] for it in items]),
        "src_text": [it["src_text"] for it in items],
        "tgt_text": [it["tgt_text"] for it in items],
    }


class TokenBucketBatchSampler:
    """Batches of similar-length examples whose padded size stays under a token budget.

    Examples are shuffled (per epoch, seeded), cut into pools of ``pool_batches`` budget-sized batches,
    sorted by length inside each pool (so padding is small but batches still vary across epochs),
    packed greedily so ``batch_size * max_len <= max_tokens``, and the batch order is shuffled.

    Distributed training shards *batches*: rank ``r`` of ``R`` takes ``batches[r::R]`` after the list is
    padded (by repeating leading batches) to a multiple of ``R`` so every rank runs the same number of
    steps (no collective hangs); evaluation drops the repeated examples again after gathering
    (:func:`dedupe_by_index`). Lightning's own sampler injection cannot wrap a custom batch sampler,
    so the CLI sets ``trainer.use_distributed_sampler=false`` and the data module passes rank/world size.

    Args:
        lengths: per-example padded-cost length (see :meth:`PairDataset.lengths`).
        max_tokens: token budget per batch (padded tokens of the longer side).
        shuffle: shuffle examples and batches (training) or keep a deterministic sorted order (eval).
        seed: base seed; the epoch is added so each epoch differs but reruns are identical.
        max_batch_size: optional cap on examples per batch.
        num_replicas: world size.
        rank: this process's rank.
        pool_batches: pool size in batches for the local sort.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        max_tokens: int,
        shuffle: bool = True,
        seed: int = 0,
        max_batch_size: int | None = None,
        num_replicas: int = 1,
        rank: int = 0,
        pool_batches: int = 50,
    ) -> None:
        if max_tokens <= 0:
            raise ConfigError(f"--data.max_tokens (token budget per batch) must be >= 1, got {max_tokens}")
        self.lengths = list(lengths)
        self.max_tokens = max_tokens
        self.shuffle = shuffle
        self.seed = seed
        self.max_batch_size = max_batch_size
        self.num_replicas = max(1, num_replicas)
        self.rank = rank
        self.pool_batches = pool_batches
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch (reshuffles)."""
        self.epoch = epoch

    def skip_next(self, n: int) -> None:
        """Make the next iteration start after its first ``n`` batches (mid-epoch resume)."""
        self._skip = n

    def _all_batches(self) -> list[list[int]]:
        n = len(self.lengths)
        order = list(range(n))
        if self.shuffle:
            rng = random.Random(self.seed + self.epoch)
            rng.shuffle(order)
            avg = max(1, sum(self.lengths) // max(1, n))
            pool = max(1, self.pool_batches * max(1, self.max_tokens // avg))
            order = [i for k in range(0, n, pool) for i in sorted(order[k : k + pool], key=self.lengths.__getitem__)]
        else:
            order.sort(key=lambda i: (self.lengths[i], i))
        batches: list[list[int]] = []
        cur: list[int] = []
        cur_max = 0
        for i in order:
            new_max = max(cur_max, self.lengths[i])
            too_many = self.max_batch_size is not None and len(cur) >= self.max_batch_size
            if cur and ((len(cur) + 1) * new_max > self.max_tokens or too_many):
                batches.append(cur)
                cur, new_max = [], self.lengths[i]
            cur.append(i)
            cur_max = new_max
        if cur:
            batches.append(cur)
        if self.shuffle:
            random.Random(self.seed + self.epoch + 10_007).shuffle(batches)
        if self.num_replicas > 1 and batches:
            total = math.ceil(len(batches) / self.num_replicas) * self.num_replicas
            # Cycle (not one slice): with fewer batches than ranks a single repeat would leave ranks empty.
            batches = [batches[i % len(batches)] for i in range(total)]
            batches = batches[self.rank :: self.num_replicas]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        skip, self._skip = self._skip, 0
        return iter(self._all_batches()[skip:])

    def __len__(self) -> int:
        return len(self._all_batches())


def pad_ids(seqs: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
    """Right-pad id lists: returns ``(ids (B, S), lengths (B,))`` (empty lists become one PAD)."""
    b = len(seqs)
    s_max = max(1, max((len(s) for s in seqs), default=1))
    ids = torch.full((b, s_max), PAD_ID, dtype=torch.long)
    lengths = torch.ones(b, dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, : len(s)] = torch.tensor(list(s))
            lengths[i] = len(s)
    return ids, lengths


class ResumableDataLoader(DataLoader):
    """DataLoader over a :class:`TokenBucketBatchSampler` whose in-epoch position is checkpointed.

    Lightning stores ``state_dict()`` of loaders that have one in the checkpoint and calls
    ``load_state_dict()`` on resume, so a run killed mid-epoch continues with the batches it had not
    seen instead of replaying the epoch from its start (the batch order is a pure function of seed and
    epoch). Lightning prefetches one batch, so at most one batch is skipped on resume.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._yielded = 0
        self._resume_skip = 0

    # torch types DataLoader.__iter__ as its private _BaseDataLoaderIter; this generator wraps that iterator
    # (counting batches), which Lightning and Python only use as an iterator.
    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        sampler = self.batch_sampler
        skip, self._resume_skip = self._resume_skip, 0
        if skip and isinstance(sampler, TokenBucketBatchSampler):
            sampler.skip_next(skip)
        self._yielded = skip
        for batch in super().__iter__():
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        sampler = self.batch_sampler
        return {"epoch": int(getattr(sampler, "epoch", 0)), "batches": int(self._yielded)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        sampler = self.batch_sampler
        if isinstance(sampler, TokenBucketBatchSampler):
            sampler.set_epoch(int(state.get("epoch", 0)))
        self._resume_skip = int(state.get("batches", 0))


def shard_indices(n: int, num_replicas: int, rank: int) -> list[int]:
    """Dataset indices rank ``rank`` of ``num_replicas`` handles (predict sharding under DDP).

    A strided split (``rank, rank + R, ...``; neighbouring sentences go to different ranks, so shards have
    similar lengths), padded by repeating leading indices so every rank gets the same number of items
    and none is empty (a rank with no batch would skip the predict hooks and leave the others waiting in
    the final gather). The repeats are dropped again by :func:`dedupe_by_index`.

    Args:
        n: dataset size.
        num_replicas: world size.
        rank: this process's global rank (``0 <= rank < num_replicas``).

    Returns:
        ``ceil(n / R)`` indices (empty only when ``n == 0``).
    """
    num_replicas = max(1, num_replicas)
    if n == 0:
        return []
    total = math.ceil(n / num_replicas) * num_replicas
    padded = [i % n for i in range(total)]
    return padded[rank::num_replicas]
