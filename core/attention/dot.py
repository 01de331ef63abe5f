"""Dot-product family: Luong ``dot`` and ``general``, and ``scaled_dot`` (Vaswani et al.)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.attention.base import Attention, masked_softmax


def empty_row_safe_mask(mask: Tensor) -> tuple[Tensor, Tensor]:
    """A boolean attention mask SDPA can take without NaN, and which query rows it had keys for.

    SDPA gives NaN (or backend-dependent values) for a row with no attendable key, so such rows
    attend everywhere instead (finite, cheap); the caller zeroes their output with ``has_key``.

    Args:
        mask: bool ``(..., Tq|1, S)``, True = attend.

    Returns:
        ``safe`` (same shape as ``mask``) and ``has_key`` ``(..., Tq|1, 1)``.
    """
    has_key = mask.any(dim=-1, keepdim=True)  # (..., Tq|1, 1)
    return mask | ~has_key, has_key


def sdpa_with_empty_rows(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None,
    *,
    scale: float | None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
) -> Tensor:
    """`F.scaled_dot_product_attention` that returns zeros for fully masked query rows.

    SDPA gives NaN (or backend-dependent values) for a row with no attendable key. We let
    such rows attend everywhere (finite, cheap) and zero their output afterwards.

    Args:
        q: ``(B, [H,] Tq, D)``.  k: ``(B, [H,] S, D)``.  v: ``(B, [H,] S, Dv)``.
        mask: bool broadcastable to ``(B, [H,] Tq, S)``, True = attend, or None.
        is_causal: square causal masking by the kernel's own flag (``mask`` must be None).

    Returns:
        ``(..., Tq, Dv)``.
    """
    if q.dim() == 3:
        # The fused CUDA kernels (flash / memory-efficient) take (B, H, T, D) only; a 3-D
        # call silently falls back to the slow math path, so add a unit head axis.
        mask4 = None if mask is None else mask[:, None]  # (B, Tq|1, S) -> (B, 1, Tq|1, S)
        out = sdpa_with_empty_rows(
            q[:, None], k[:, None], v[:, None], mask4, scale=scale, dropout_p=dropout_p, is_causal=is_causal
        )
        return out[:, 0]  # (B, 1, Tq, Dv) -> (B, Tq, Dv)
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, scale=scale, dropout_p=dropout_p, is_causal=is_causal)
    safe_mask, has_key = empty_row_safe_mask(mask)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=safe_mask, scale=scale, dropout_p=dropout_p)
    return out * has_key.to(out.dtype)  # zero the rows that had nothing to attend to


class DotAttention(Attention):
    """Luong "dot": ``score(q, k) = q · k``. Needs ``query_dim == key_dim``."""

    scale: float | None = 1.0

    def __init__(self, query_dim: int, key_dim: int, value_dim: int | None = None) -> None:
        """Args:
        query_dim: size of the query vectors.
        key_dim: size of the key vectors (must equal ``query_dim``).
        value_dim: size of the value vectors (default ``key_dim``).
        """
        super().__init__(query_dim, key_dim, value_dim)
        if query_dim != key_dim:
            raise ValueError(
                f"{type(self).__name__} needs query_dim == key_dim, got {query_dim} and {key_dim}; "
                "use 'general' (a learned bilinear map) for different sizes"
            )

    def _keys_for_scoring(self, keys: Tensor | None, precomputed: Any) -> Tensor:
        """Keys in query space ``(B, S, Dq)``."""
        assert keys is not None
        return keys

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
        assert values is not None
        k = self._keys_for_scoring(keys, precomputed)  # (B, S, Dq)
        scale = self.scale if self.scale is not None else 1.0 / math.sqrt(query.shape[-1])
        if not need_weights:
            # Fused kernel (flash / memory-efficient on GPU); weights never materialised.
            return sdpa_with_empty_rows(query, k, values, mask, scale=scale, is_causal=sdpa_causal), None
        scores = torch.matmul(query, k.transpose(-2, -1)) * scale  # (B, Tq, S)
        weights = masked_softmax(scores, mask)
        return torch.matmul(weights.to(values.dtype), values), weights  # (B, Tq, Dv)


class ScaledDotAttention(DotAttention):
    """``score(q, k) = q · k / sqrt(d)``; uses SDPA when weights are not needed."""

    scale = None  # 1/sqrt(d), resolved at call time


class GeneralAttention(DotAttention):
    """Luong "general": ``score(q, k) = q · W k`` with a learned ``W`` (any key size)."""

    def __init__(self, query_dim: int, key_dim: int, value_dim: int | None = None) -> None:
        """Args:
        query_dim: size of the query vectors.
        key_dim: size of the key vectors.
        value_dim: size of the value vectors (default ``key_dim``).
        """
        Attention.__init__(self, query_dim, key_dim, value_dim)
        # W k is applied to the keys (once per source via `precompute`) rather than to the
        # query, so each decoder step costs one (Tq x S) product and nothing more.
        self.key_proj = nn.Linear(key_dim, query_dim, bias=False)

    def precompute(self, keys: Tensor, values: Tensor | None = None) -> Tensor:
        """Keys mapped into query space, ``(B, S, Dq)``."""
        return self.key_proj(keys)

    def _keys_for_scoring(self, keys: Tensor | None, precomputed: Any) -> Tensor:
        if precomputed is not None:
            return precomputed
        assert keys is not None
        return self.key_proj(keys)
