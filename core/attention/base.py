"""The shared attention interface: output type, shape checks and masking helpers.

Conventions used by every mechanism in `core.attention`:

* query ``(B, Tq, Dq)`` or ``(B, Dq)`` for a single decoder step; keys ``(B, S, Dk)``;
  values ``(B, S, Dv)``.
* masks are boolean and **True means "attend"**, shaped ``(B, S)`` or ``(B, Tq, S)``.
* masked keys get exactly zero weight; a query row whose keys are all masked gets zero
  weights and a zero context (never NaN), in fp32, bf16 and fp16.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn


class AttentionOutput(NamedTuple):
    """What every attention module returns.

    Attributes:
        context: ``(B, Tq, output_dim)``, or ``(B, output_dim)`` for a 2-D query.
        weights: ``(B, Tq, S)`` (``(B, H, Tq, S)`` for multi-head), without the ``Tq`` axis
            for a 2-D query; ``None`` when ``need_weights=False`` let a fused kernel run.
    """

    context: Tensor
    weights: Tensor | None


def lengths_to_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """Boolean key mask from sequence lengths.

    Args:
        lengths: ``(B,)`` integer lengths.
        max_len: width of the mask; defaults to ``lengths.max()`` (a host sync: pass it
            when you know it).

    Returns:
        ``(B, max_len)`` bool, True on real (attendable) positions.
    """
    if max_len is None:
        max_len = int(lengths.max())
    positions = torch.arange(max_len, device=lengths.device)
    return positions[None, :] < lengths[:, None]  # (B, S)


def causal_mask(tq: int, s: int, device: torch.device | None = None) -> Tensor:
    """Causal mask aligned to the end of the keys.

    Query ``i`` sits at key position ``s - tq + i``, so the mask is right for full
    self-attention (``tq == s``) and for incremental decoding with a cache (``tq < s``).

    Returns:
        ``(tq, s)`` bool, True where the query may attend.
    """
    q_pos = torch.arange(tq, device=device)[:, None] + (s - tq)
    k_pos = torch.arange(s, device=device)[None, :]
    return k_pos <= q_pos  # (Tq, S)


def masked_softmax(scores: Tensor, mask: Tensor | None) -> Tensor:
    """Softmax over the last axis that gives exact zeros on masked keys.

    Args:
        scores: ``(..., Tq, S)`` attention energies.
        mask: bool broadcastable to ``scores``, True = attend, or None.

    Returns:
        Weights shaped like ``scores``; rows with no attendable key are all zero.
    """
    if mask is None:
        return scores.softmax(dim=-1)
    # finfo.min rather than -1e9 so the fill is representable in fp16/bf16. `torch.where`
    # with the keep-mask is one kernel each way (``masked_fill(~mask, x)`` is an inversion,
    # a copy and the fill, and its backward another copy + fill): this runs at every step.
    scores = torch.where(mask, scores, torch.finfo(scores.dtype).min)
    # A fully masked row becomes uniform here; zeroing the masked entries afterwards makes
    # it all-zero and keeps its gradient finite (no inf - inf anywhere).
    return torch.where(mask, scores.softmax(dim=-1), 0.0)


class Attention(nn.Module):
    """Interface shared by every mechanism (no state is kept between calls).

    Subclasses implement `_attend` on a 3-D query and may override `precompute` (work done
    once per source, e.g. key projections) and `accumulate` (what carries across steps).
    """

    #: Size of the context vector this module returns.
    output_dim: int

    def __init__(self, query_dim: int, key_dim: int, value_dim: int | None = None) -> None:
        super().__init__()
        for name, dim in (("query_dim", query_dim), ("key_dim", key_dim)):
            if not isinstance(dim, int) or dim <= 0:
                raise ValueError(f"{type(self).__name__}: {name} must be a positive int, got {dim!r}")
        self.query_dim = query_dim
        self.key_dim = key_dim
        self.value_dim = key_dim if value_dim is None else value_dim
        self.output_dim = self.value_dim

    def precompute(self, keys: Tensor, values: Tensor | None = None) -> Any:
        """Work that depends only on the source; compute it once, pass it to every step.

        Args:
            keys: ``(B, S, Dk)``.
            values: ``(B, S, Dv)`` (used by mechanisms that project values).

        Returns:
            Whatever `forward(..., precomputed=...)` accepts, or None.
        """
        return None

    def accumulate(self, prev_weights: Tensor | None, weights: Tensor) -> Tensor:
        """What to pass as ``prev_weights`` to the next decoder step.

        Only location-aware attention reads it; the default keeps the last weights.
        """
        return weights

    def forward(
        self,
        query: Tensor,
        keys: Tensor | None,
        values: Tensor | None,
        mask: Tensor | None = None,
        *,
        precomputed: Any = None,
        prev_weights: Tensor | None = None,
        need_weights: bool = True,
        causal: bool = False,
    ) -> AttentionOutput:
        """Attend from ``query`` over ``keys``/``values``.

        Args:
            query: ``(B, Tq, Dq)`` or ``(B, Dq)``.
            keys: ``(B, S, Dk)``.
            values: ``(B, S, Dv)``.
            mask: bool ``(B, S)`` or ``(B, Tq, S)``, True = attend.
            precomputed: the result of `precompute(keys, values)` for this source.
            prev_weights: ``(B, S)`` weights carried from the previous step (location only).
            need_weights: False lets dot-product mechanisms use a fused SDPA kernel.
            causal: query ``i`` may only see keys up to position ``S - Tq + i``.

        Returns:
            `AttentionOutput` ``(context, weights)``.
        """
        single_step = query.dim() == 2
        if single_step:
            query = query.unsqueeze(1)  # (B, Dq) -> (B, 1, Dq)
        b, tq, s = self._check_shapes(query, keys, values, precomputed)
        full_mask = self._combine_masks(mask, causal, b, tq, s, query.device)
        # A plain causal mask over a square score matrix can use SDPA's is_causal flag, which
        # keeps the flash kernel eligible on GPU (an explicit mask would rule it out).
        sdpa_causal = causal and mask is None and tq == s
        context, weights = self._attend(
            query,
            keys,
            values,
            full_mask,
            precomputed=precomputed,
            prev_weights=prev_weights,
            need_weights=need_weights,
            sdpa_causal=sdpa_causal,
        )
        if single_step:
            context = context.squeeze(-2)  # (B, 1, D) -> (B, D)
            if weights is not None:
                weights = weights.squeeze(-2)  # (B, [H,] 1, S) -> (B, [H,] S)
        return AttentionOutput(context, weights)

    def _attend(
        self,
        query: Tensor,
        keys: Tensor | None,
        values: Tensor | None,
        mask: Tensor | None,
        *,
        precomputed: Any,
        prev_weights: Tensor | None,
        need_weights: bool,
        sdpa_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Mechanism-specific attention on a 3-D query.

        ``mask`` is ``(B, Tq|1, S)`` bool or None (causal already folded in). ``sdpa_causal``
        says the mask is exactly a square causal mask, for kernels with a built-in flag.
        """
        raise NotImplementedError

    # -- validation -----------------------------------------------------------------------

    def _source_shape(self, keys: Tensor | None, values: Tensor | None, precomputed: Any) -> tuple[int, int]:
        """(B, S) of the source, from keys or (for mechanisms that allow it) `precomputed`."""
        if keys is None or values is None:
            raise ValueError(f"{type(self).__name__}: keys and values are required")
        return keys.shape[0], keys.shape[1]

    def _check_shapes(
        self, query: Tensor, keys: Tensor | None, values: Tensor | None, precomputed: Any
    ) -> tuple[int, int, int]:
        name = type(self).__name__
        if query.dim() != 3:
            raise ValueError(f"{name}: query must be (B, Tq, Dq) or (B, Dq), got shape {tuple(query.shape)}")
        if keys is not None and keys.dim() != 3:
            raise ValueError(f"{name}: keys must be (B, S, Dk), got shape {tuple(keys.shape)}")
        if values is not None and values.dim() != 3:
            raise ValueError(f"{name}: values must be (B, S, Dv), got shape {tuple(values.shape)}")
        if keys is not None and values is not None and keys.shape[:2] != values.shape[:2]:
            raise ValueError(f"{name}: keys {tuple(keys.shape)} and values {tuple(values.shape)} must share (B, S)")
        b, s = self._source_shape(keys, values, precomputed)
        if query.shape[0] != b:
            raise ValueError(
                f"{name}: query batch {query.shape[0]} != key batch {b} "
                f"(query {tuple(query.shape)}, keys {None if keys is None else tuple(keys.shape)})"
            )
        if query.shape[-1] != self.query_dim:
            raise ValueError(
                f"{name}: query feature size {query.shape[-1]} != query_dim {self.query_dim} "
                f"(query shape {tuple(query.shape)})"
            )
        if keys is not None and keys.shape[-1] != self.key_dim:
            raise ValueError(
                f"{name}: key feature size {keys.shape[-1]} != key_dim {self.key_dim} (keys shape {tuple(keys.shape)})"
            )
        if values is not None and values.shape[-1] != self.value_dim:
            raise ValueError(
                f"{name}: value feature size {values.shape[-1]} != value_dim {self.value_dim} "
                f"(values shape {tuple(values.shape)})"
            )
        return b, query.shape[1], s

    def _combine_masks(
        self, mask: Tensor | None, causal: bool, b: int, tq: int, s: int, device: torch.device
    ) -> Tensor | None:
        """Normalise the user mask (and causal flag) to ``(B, Tq|1, S)`` bool or None."""
        name = type(self).__name__
        if mask is not None:
            if mask.dtype != torch.bool:
                raise ValueError(f"{name}: mask must be bool (True = attend), got dtype {mask.dtype}")
            if mask.dim() == 2:
                if tuple(mask.shape) != (b, s):
                    raise ValueError(f"{name}: mask shape {tuple(mask.shape)} != (B, S) = {(b, s)}")
                mask = mask.unsqueeze(1)  # (B, S) -> (B, 1, S)
            elif mask.dim() == 3:
                if tuple(mask.shape) != (b, tq, s):
                    raise ValueError(f"{name}: mask shape {tuple(mask.shape)} != (B, Tq, S) = {(b, tq, s)}")
            else:
                raise ValueError(f"{name}: mask must be (B, S) or (B, Tq, S), got shape {tuple(mask.shape)}")
        if causal:
            cm = causal_mask(tq, s, device)[None]  # (1, Tq, S)
            mask = cm if mask is None else mask & cm
        return mask
