"""Multi-head attention (Vaswani et al. 2017) on the shared interface, batch-first."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.attention.base import Attention, masked_softmax
from core.attention.dot import empty_row_safe_mask
from core.errors import ConfigError


class MultiHeadAttention(Attention):
    """Multi-head scaled dot-product attention with input and output projections.

    The context size is ``query_dim`` (the embedding size). With ``need_weights=False`` it
    runs `F.scaled_dot_product_attention` (flash / memory-efficient kernels on GPU);
    weights ``(B, H, Tq, S)`` are computed only on request.

    For incremental decoding, `precompute(keys, values)` gives the projected ``(k, v)``
    ``(B, H, S, Dh)``; a self-attention KV cache is the concatenation of those along dim 2.
    """

    def __init__(
        self,
        query_dim: int,
        key_dim: int | None = None,
        value_dim: int | None = None,
        num_heads: int = 8,
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        """Args:
        query_dim: embedding size E of queries and of the returned context.
        key_dim: size of the keys (default E).
        value_dim: size of the values (default ``key_dim``).
        num_heads: number of heads H; E must be divisible by H.
        dropout: dropout on the attention weights during training.
        bias: add biases to the projections.
        """
        key_dim = query_dim if key_dim is None else key_dim
        super().__init__(query_dim, key_dim, value_dim)
        if num_heads <= 0 or query_dim % num_heads != 0:
            raise ConfigError(f"MultiHeadAttention: query_dim {query_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = query_dim // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(query_dim, query_dim, bias=bias)
        self.k_proj = nn.Linear(key_dim, query_dim, bias=bias)
        self.v_proj = nn.Linear(self.value_dim, query_dim, bias=bias)
        self.out_proj = nn.Linear(query_dim, query_dim, bias=bias)
        self.output_dim = query_dim

    def _split_heads(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # (B, T, E) -> (B, H, T, Dh)

    def precompute(self, keys: Tensor, values: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Projected keys and values, each ``(B, H, S, Dh)``."""
        if values is None:
            values = keys
        return self._split_heads(self.k_proj(keys)), self._split_heads(self.v_proj(values))

    def _source_shape(self, keys: Tensor | None, values: Tensor | None, precomputed: Any) -> tuple[int, int]:
        if precomputed is not None:
            k, v = precomputed
            if k.dim() != 4 or k.shape != v.shape or k.shape[1] != self.num_heads:
                raise ValueError(
                    f"MultiHeadAttention: precomputed (k, v) must both be (B, H={self.num_heads}, S, Dh), "
                    f"got {tuple(k.shape)} and {tuple(v.shape)}"
                )
            return k.shape[0], k.shape[2]
        return super()._source_shape(keys, values, precomputed)

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
        b, tq, _ = query.shape
        if precomputed is None:
            assert keys is not None  # _check_shapes: keys are required without precomputed
            precomputed = self.precompute(keys, values)
        k, v = precomputed  # (B, H, S, Dh)
        q = self._split_heads(self.q_proj(query))  # (B, H, Tq, Dh)
        head_mask = None if mask is None else mask[:, None]  # (B, Tq|1, S) -> (B, 1, Tq|1, S)
        # Rows with nothing to attend to attend everywhere (no NaN) and get a zero output below,
        # after the projection (so not the bias either): one has-key check serves both.
        safe: Tensor | None = None  # (B, Tq|1, S)
        has_key: Tensor | None = None  # (B, Tq|1, 1)
        if mask is not None:
            safe, has_key = empty_row_safe_mask(mask)
        dropout_p = self.dropout if self.training else 0.0
        weights = None
        if not need_weights:
            if sdpa_causal:
                ctx = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
            elif safe is None:  # no mask
                ctx = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
            else:
                ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=safe[:, None], dropout_p=dropout_p)
        else:
            scores = torch.matmul(q, k.transpose(-2, -1)) * self.head_dim**-0.5  # (B, H, Tq, S)
            weights = masked_softmax(scores, head_mask)
            ctx = torch.matmul(F.dropout(weights, dropout_p).to(v.dtype), v)  # (B, H, Tq, Dh)
        ctx = ctx.transpose(1, 2).reshape(b, tq, self.query_dim)  # (B, H, Tq, Dh) -> (B, Tq, E)
        out = self.out_proj(ctx)
        if has_key is not None:
            # A query with nothing to attend to gets a zero context, not the output bias.
            out = out * has_key.to(out.dtype)  # (B, Tq|1, 1)
        return out, weights
