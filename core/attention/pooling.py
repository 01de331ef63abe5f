"""Query-free attention pooling: a learned score per position, softmax over the sequence, weighted sum.

The article this suite implements shows one attention layer in code::

    weights = softmax(Dense(1)(encoder_states))      # over the sequence
    context = sum_s weights_s * encoder_states_s

``PoolingAttention`` is that layer behind the common interface: ``score(h) = w . h + b``, or with
``hidden_dim`` the feed-forward form ``w . tanh(W h + b)`` (Yang et al. 2016, "Hierarchical Attention
Networks"). There is no query: ``query`` may be None (the result is then one pooled vector per sequence,
``(B, Dv)``); a given query only sets how many times the same pooling is returned (``(B, Tq, Dv)``).
Since the scores depend on the source alone, ``precompute`` returns them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from core.attention.base import Attention, AttentionOutput, masked_softmax

__all__ = ["PoolingAttention"]


class PoolingAttention(Attention):
    """Attention pooling over a sequence (no query).

    Args:
        query_dim: size of a query if one is passed (ignored otherwise); defaults to ``key_dim``.
        key_dim: size of the states scored, Dk.
        value_dim: size of the values pooled (default ``key_dim``).
        hidden_dim: None for the single linear score ``w . h``; H for ``w . tanh(W h)``.
    """

    def __init__(
        self,
        query_dim: int | None = None,
        key_dim: int = 0,
        value_dim: int | None = None,
        hidden_dim: int | None = None,
    ) -> None:
        super().__init__(query_dim if query_dim is not None else key_dim, key_dim, value_dim)
        self.hidden = nn.Linear(key_dim, hidden_dim) if hidden_dim else None
        self.score = nn.Linear(hidden_dim or key_dim, 1)

    def precompute(self, keys: Tensor, values: Tensor | None = None) -> Tensor:
        """Scores ``(B, S)`` of every position (they do not depend on any query)."""
        h = torch.tanh(self.hidden(keys)) if self.hidden is not None else keys  # (B, S, H|Dk)
        return self.score(h).squeeze(-1)  # (B, S, 1) -> (B, S)

    def forward(
        self,
        query: Tensor | None,
        keys: Tensor | None,
        values: Tensor | None,
        mask: Tensor | None = None,
        *,
        precomputed: Any = None,
        prev_weights: Tensor | None = None,
        need_weights: bool = True,
        causal: bool = False,
    ) -> AttentionOutput:
        """Pool ``values`` with weights from ``keys``; ``query`` may be None (see module docstring)."""
        if query is None:
            if keys is None:
                raise ValueError("PoolingAttention: keys are required")
            query = keys.new_zeros(keys.shape[0], self.query_dim)  # (B, Dq): one pooled vector, query unused
        return super().forward(
            query,
            keys,
            values,
            mask,
            precomputed=precomputed,
            prev_weights=prev_weights,
            need_weights=need_weights,
            causal=causal,
        )

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
        assert keys is not None and values is not None
        scores = precomputed if precomputed is not None else self.precompute(keys)  # (B, S)
        scores = scores[:, None, :].expand(-1, query.shape[1], -1)  # (B, 1, S) -> (B, Tq, S)
        weights = masked_softmax(scores, mask)  # (B, Tq, S); a fully masked row gives zeros, not NaN
        return weights @ values, weights  # (B, Tq, S) @ (B, S, Dv) -> (B, Tq, Dv)
