"""Pre-norm Transformer layers on ``core.attention.multihead`` (bool masks, True = attend).

* :class:`TransformerEncoderLayer` -- self-attention + feed-forward (translation encoder, speech encoder).
* :class:`TransformerDecoderLayer` -- causal self-attention with an explicit KV cache for incremental
  decoding, cross-attention over a memory whose key/value projections are computed once
  (``cross_attn.precompute``), feed-forward. Under beam search the beams of an item may share one copy of
  its memory (``memory_kv`` with fewer rows than ``x``): they become extra query positions of that item.
* :class:`TransformerEncoder` / :class:`TransformerDecoder` -- the stacks of those layers with their final
  LayerNorm; the decoder also runs one incremental step from a :class:`core.decoding.beam.DecoderState` (KV caches
  under ``cache``, the memory's projected keys/values and mask under ``shared``). A task's network adds its own
  embeddings and output projection around them (translation: token embeddings; captioning: image grid features).
* :class:`SinusoidalPositions` -- the fixed positional encoding (Vaswani et al. 2017), computed for any length.

Pre-norm residual blocks (LayerNorm before each sub-layer; the stacks end with their own LayerNorm) train
stably without a long warm-up at small scale. Attention runs with ``need_weights=False`` (fused SDPA
kernels) unless weights are asked for.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor, nn

from core.attention import build_attention
from core.decoding.beam import DecoderState
from core.decoding.fast_paths import append_to_cache

__all__ = [
    "FeedForward",
    "SinusoidalPositions",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerEncoderLayer",
    "sinusoidal_table",
]


def sinusoidal_table(length: int, dim: int, device: torch.device | None = None) -> Tensor:
    """Fixed sinusoidal position table ``(length, dim)``: sin on even, cos on odd channels."""
    pos = torch.arange(length, dtype=torch.float32, device=device)[:, None]  # (L, 1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim))  # (D/2,)
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(pos * div)
    table[:, 1::2] = torch.cos(pos * div[: dim // 2])
    return table


class SinusoidalPositions(nn.Module):
    """Adds sinusoidal positions to embeddings scaled by ``sqrt(dim)``: ``x * sqrt(D) + P[offset:offset+T]``.

    The table is cached up to the longest length seen (a non-persistent buffer, so checkpoints do not carry
    it); ``max_len`` bounds the positions a model accepts (``None``: any length).

    Args:
        dim: model width D.
        max_len: longest sequence accepted, or None.
    """

    table: Tensor  # the buffer registered in __init__

    def __init__(self, dim: int, max_len: int | None = None) -> None:
        super().__init__()
        self.dim, self.max_len = dim, max_len
        # computed on the CPU and moved: built on the ``meta`` device (a checkpoint's shape check), ``arange`` would
        # run through torch._refs, whose first call imports torch._dynamo (most of a second of start-up)
        table = sinusoidal_table(max_len or 0, dim, device=torch.device("cpu"))
        self.register_buffer("table", table.to(torch.get_default_device()), persistent=False)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """x ``(B, T, D)`` embeddings of positions ``offset .. offset + T - 1`` -> ``(B, T, D)``."""
        end = offset + x.shape[1]
        if self.max_len is not None and end > self.max_len:
            raise ValueError(f"sequence of {end} positions exceeds max_len={self.max_len}")
        if end > self.table.shape[0]:
            self.table = sinusoidal_table(end, self.dim, x.device)
        table = self.table if self.table.device == x.device else self.table.to(x.device)
        return x * math.sqrt(self.dim) + table[offset:end].to(x.dtype)


class FeedForward(nn.Sequential):
    """Position-wise FFN: Linear -> activation -> Dropout -> Linear (GELU, or ReLU as in the 2017 paper)."""

    def __init__(
        self, d_model: int, ffn_dim: int, dropout: float, activation: Literal["gelu", "relu"] = "gelu"
    ) -> None:
        act: nn.Module = nn.GELU() if activation == "gelu" else nn.ReLU()
        super().__init__(nn.Linear(d_model, ffn_dim), act, nn.Dropout(dropout), nn.Linear(ffn_dim, d_model))


class TransformerEncoderLayer(nn.Module):
    """Pre-norm self-attention + FFN block.

    Args:
        d_model: width D.
        num_heads: attention heads.
        ffn_dim: feed-forward width.
        dropout: dropout on the residual branches and the attention weights.
        activation: feed-forward activation.
    """

    def __init__(
        self, d_model: int, num_heads: int, ffn_dim: int, dropout: float, activation: Literal["gelu", "relu"] = "gelu"
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = build_attention(
            "multihead", query_dim=d_model, key_dim=d_model, num_heads=num_heads, dropout=dropout
        )
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, ffn_dim, dropout, activation)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """x ``(B, S, D)``, mask ``(B, S)`` bool True = token, or None (no padding) -> ``(B, S, D)``."""
        h = self.norm1(x)
        x = x + self.dropout(self.self_attn(h, h, h, mask, need_weights=False).context)
        return x + self.dropout(self.ff(self.norm2(x)))


class TransformerDecoderLayer(nn.Module):
    """Pre-norm causal self-attention + cross-attention + FFN block.

    Args:
        d_model: width D.
        num_heads: attention heads H.
        ffn_dim: feed-forward width.
        dropout: dropout on the residual branches and the attention weights.
    """

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        mha = {"query_dim": d_model, "key_dim": d_model, "num_heads": num_heads, "dropout": dropout}
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = build_attention("multihead", **mha)
        self.norm2 = nn.LayerNorm(d_model)
        self.cross_attn = build_attention("multihead", **mha)
        self.norm3 = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, ffn_dim, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        memory_kv: tuple[Tensor, Tensor],
        memory_mask: Tensor | None,
        self_kv: tuple[Tensor, Tensor] | None = None,
        need_weights: bool = False,
        reorder: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None, tuple[Tensor, Tensor] | None]:
        """Run the block.

        Args:
            x: ``(B, T, D)`` decoder inputs (T = 1 when decoding incrementally).
            memory_kv: cross-attention ``(k, v)``, each ``(A, H, S, Dh)``, from ``cross_attn.precompute``;
                A = B, or A = B / g when the g consecutive rows of x (beams of one item) share one memory.
            memory_mask: ``(A, S)`` memory mask, or None (no padding).
            self_kv: KV cache ``(k, v)`` each ``(M, H, t, Dh)`` of earlier positions, or None for teacher forcing.
            need_weights: return cross-attention weights ``(B, H, T, S)``.
            reorder: ``(B,)`` row of ``self_kv`` each row of x continues (beam search), or None (M = B).

        Returns:
            ``(B, T, D)`` output, cross weights or None, updated KV cache (None without one).
        """
        h = self.norm1(x)
        if self_kv is None:
            # Teacher forcing: a plain causal mask (padding only follows real tokens, so it never hides a
            # key a real query needs) keeps SDPA's is_causal fast path.
            sa = self.self_attn(h, h, h, causal=True, need_weights=False).context
            new_kv = None
        else:
            k_new, v_new = self.self_attn.precompute(h, h)  # (B, H, 1, Dh) each
            new_kv = (
                append_to_cache(self_kv[0], k_new, reorder),
                append_to_cache(self_kv[1], v_new, reorder),
            )  # (B, H, t+1, Dh) each
            # The new query may see every cached position: no causal mask needed.
            sa = self.self_attn(h, None, None, precomputed=new_kv, need_weights=False).context
        x = x + self.dropout(sa)
        h = self.norm2(x)
        n, t, d = h.shape
        a = memory_kv[0].shape[0]
        if a != n:
            # beam search: the n // a beams of an item (contiguous rows) share one copy of its memory and
            # become extra query positions of that item: (A * g, T, D) -> (A, g * T, D)
            ca = self.cross_attn(
                h.reshape(a, (n // a) * t, d), None, None, memory_mask, precomputed=memory_kv, need_weights=need_weights
            )
            ctx = ca.context.reshape(n, t, d)  # (A, g * T, D) -> (A * g, T, D)
            w = ca.weights
            if w is not None:  # (A, H, g * T, S) -> (A, H, g, T, S) -> (A, g, H, T, S) -> (A * g, H, T, S)
                w = w.reshape(a, w.shape[1], n // a, t, w.shape[-1]).transpose(1, 2).reshape(n, w.shape[1], t, -1)
        else:
            ca = self.cross_attn(h, None, None, memory_mask, precomputed=memory_kv, need_weights=need_weights)
            ctx, w = ca.context, ca.weights
        x = x + self.dropout(ctx)
        x = x + self.dropout(self.ff(self.norm3(x)))
        return x, w, new_kv


class TransformerEncoder(nn.Module):
    """A stack of :class:`TransformerEncoderLayer` and its final LayerNorm.

    Args:
        d_model: width D.
        num_heads: attention heads.
        ffn_dim: feed-forward width.
        num_layers: blocks.
        dropout: dropout on the residual branches and the attention weights.
    """

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, num_layers: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(d_model, num_heads, ffn_dim, dropout) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """x ``(B, S, D)`` embedded inputs, mask ``(B, S)`` (True = token) or None -> ``(B, S, D)``."""
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x)


class TransformerDecoder(nn.Module):
    """A stack of :class:`TransformerDecoderLayer` and its final LayerNorm, teacher-forced or one step at a time.

    Alignment weights, when asked for, are the last layer's cross-attention averaged over its heads.

    Args:
        d_model: width D.
        num_heads: attention heads H.
        ffn_dim: feed-forward width.
        num_layers: blocks.
        dropout: dropout on the residual branches and the attention weights.
    """

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, num_layers: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.layers = nn.ModuleList(
            TransformerDecoderLayer(d_model, num_heads, ffn_dim, dropout) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(
        self, x: Tensor, memory: Tensor, memory_mask: Tensor | None, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Teacher forcing.

        Args:
            x: ``(B, T, D)`` embedded decoder inputs.
            memory: ``(B, S, D)`` encoder output.
            memory_mask: ``(B, S)`` (True = position) or None (no padding).
            need_weights: also return the last layer's cross-attention.

        Returns:
            ``(B, T, D)`` normalised outputs, and ``(B, T, S)`` weights (mean over heads) or None.
        """
        weights = None
        for i, layer in enumerate(self.blocks):
            last = i == len(self.layers) - 1
            kv = layer.cross_attn.precompute(memory, memory)
            x, w, _ = layer(x, kv, memory_mask, need_weights=need_weights and last)
            if w is not None:
                weights = w.mean(dim=1)  # (B, H, T, S) -> (B, T, S)
        return self.norm(x), weights

    def init_state(self, memory: Tensor, memory_mask: Tensor | None) -> DecoderState:
        """The first decoding state: every layer's cross-attention keys/values and the mask under ``shared`` (one
        copy per item, never expanded to the beams), empty self-attention KV caches under ``cache`` (reordered by
        :meth:`step` itself, see ``core.decoding.beam``)."""
        b, _, d = memory.shape
        empty = memory.new_zeros(b, self.num_heads, 0, d // self.num_heads)  # (B, H, 0, Dh): before the first step
        cross = [layer.cross_attn.precompute(memory, memory) for layer in self.blocks]
        return DecoderState(shared={"mask": memory_mask, "cross": cross}, cache=[(empty, empty) for _ in self.layers])

    @property
    def cross_attentions(self) -> list[nn.Module]:
        """The cross-attention module of every layer, bottom first (for per-layer and per-head views)."""
        return [layer.cross_attn for layer in self.blocks]

    @property
    def blocks(self) -> list[TransformerDecoderLayer]:
        """The layers, typed (an ``nn.ModuleList`` yields plain modules)."""
        return [layer for layer in self.layers if isinstance(layer, TransformerDecoderLayer)]

    def step(
        self, x: Tensor, state: DecoderState, need_weights: bool = False
    ) -> tuple[Tensor, DecoderState, Tensor | None]:
        """One incremental step.

        Args:
            x: ``(N, 1, D)`` the embedded last tokens (N = items x beams).
            state: from :meth:`init_state` or the previous step (``state.reorder``: the rows to continue).
            need_weights: also return the last layer's cross-attention.

        Returns:
            ``(N, D)`` normalised output, the next state, ``(N, S)`` weights (mean over heads) or None.
        """
        shared: dict[str, Any] = state.shared
        new_cache = []
        weights = None
        for i, layer in enumerate(self.blocks):
            last = i == len(self.layers) - 1
            x, w, kv = layer(
                x,
                shared["cross"][i],
                shared["mask"],
                self_kv=state.cache[i],
                need_weights=need_weights and last,
                reorder=state.reorder,
            )
            new_cache.append(kv)
            if w is not None:
                weights = w.mean(dim=1)[:, 0]  # (N, H, 1, S) -> (N, S)
        return self.norm(x[:, 0]), DecoderState(shared=shared, cache=new_cache), weights
