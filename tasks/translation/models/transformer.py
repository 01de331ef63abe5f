"""Pre-norm Transformer encoder–decoder on ``core`` multi-head attention.

* Pre-norm residual blocks (LayerNorm before each sub-layer, a final LayerNorm per stack): stable
  without long warm-up at small scale.
* Attention runs with ``need_weights=False`` (fused SDPA kernels) except for the last decoder layer's
  cross-attention when alignment weights are requested.
* Incremental decoding: each decoder self-attention keeps a KV cache ``(N, H, t, Dh)`` grown by one
  position per step, under ``"lazy"``: beam search hands the step the row order to follow
  (``"reorder"``), applied in the same copy that appends the new position. Cross-attention
  keys/values are projected once per source and stored under ``"shared"``: beam search neither
  expands nor reorders them, the beams of an item attend to one copy.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from core.attention import build_attention, lengths_to_mask
from core.inference import append_to_cache, step_log_probs, vocab_projection
from core.tokenizers import PAD_ID


def sinusoidal_positions(max_len: int, dim: int) -> Tensor:
    """Fixed sinusoidal position table (max_len, dim) (Vaswani et al. 2017)."""
    pos = torch.arange(max_len, dtype=torch.float32)[:, None]  # (L, 1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))  # (D/2,)
    table = torch.zeros(max_len, dim)
    table[:, 0::2] = torch.sin(pos * div)
    table[:, 1::2] = torch.cos(pos * div[: dim // 2])
    return table


class FeedForward(nn.Sequential):
    """Position-wise FFN: Linear → GELU → Dropout → Linear."""

    def __init__(self, d_model: int, ff_dim: int, dropout: float) -> None:
        super().__init__(nn.Linear(d_model, ff_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_dim, d_model))


class EncoderLayer(nn.Module):
    """Pre-norm self-attention + FFN block."""

    def __init__(self, d_model: int, num_heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = build_attention("multihead", query_dim=d_model, key_dim=d_model, num_heads=num_heads,
                                         dropout=dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, ff_dim, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """x (B, S, D), mask (B, S) bool True = token, or None (no padding) → (B, S, D)."""
        h = self.norm1(x)
        x = x + self.dropout(self.self_attn(h, h, h, mask, need_weights=False).context)
        return x + self.dropout(self.ff(self.norm2(x)))


class DecoderLayer(nn.Module):
    """Pre-norm causal self-attention + cross-attention + FFN block."""

    def __init__(self, d_model: int, num_heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        mha = dict(query_dim=d_model, key_dim=d_model, num_heads=num_heads, dropout=dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = build_attention("multihead", **mha)
        self.norm2 = nn.LayerNorm(d_model)
        self.cross_attn = build_attention("multihead", **mha)
        self.norm3 = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, ff_dim, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, memory_kv: tuple[Tensor, Tensor], memory_mask: Tensor,
                self_kv: tuple[Tensor, Tensor] | None = None, need_weights: bool = False,
                reorder: Tensor | None = None) -> tuple[Tensor, Tensor | None, tuple[Tensor, Tensor] | None]:
        """Run the block.

        Args:
            x: (B, T, D) decoder inputs (T = 1 when decoding incrementally).
            memory_kv: cross-attention (k, v), each (A, H, S, Dh), from ``cross_attn.precompute``; A = B, or
                A = B / g when the g consecutive rows of x (beams of one item) share one memory.
            memory_mask: (A, S) source mask, or None (no padding).
            self_kv: KV cache (k, v) each (M, H, t, Dh) of earlier positions, or None for teacher forcing.
            need_weights: return cross-attention weights (B, H, T, S).
            reorder: (B,) row of ``self_kv`` each row of x continues (beam search), or None (M = B).

        Returns:
            (B, T, D) output, cross weights or None, updated KV cache (None without one).
        """
        h = self.norm1(x)
        if self_kv is None:
            # Teacher forcing: a plain causal mask (padding only follows real tokens, so it never
            # hides a key a real query needs) keeps SDPA's is_causal fast path.
            sa = self.self_attn(h, h, h, causal=True, need_weights=False).context
            new_kv = None
        else:
            k_new, v_new = self.self_attn.precompute(h, h)  # (B, H, 1, Dh) each
            new_kv = (append_to_cache(self_kv[0], k_new, reorder),
                      append_to_cache(self_kv[1], v_new, reorder))  # (B, H, t+1, Dh) each
            sa = self.self_attn(h, None, None, precomputed=new_kv, need_weights=False).context
        x = x + self.dropout(sa)
        h = self.norm2(x)
        n, t, d = h.shape
        a = memory_kv[0].shape[0]
        if a != n:
            # beam search: the n // a beams of an item (contiguous rows) share one copy of its memory;
            # they become extra query positions of that item: (A * g, T, D) -> (A, g * T, D)
            ca = self.cross_attn(h.reshape(a, (n // a) * t, d), None, None, memory_mask, precomputed=memory_kv,
                                 need_weights=need_weights)
            ctx = ca.context.reshape(n, t, d)
            w = ca.weights
            if w is not None:  # (A, H, g * T, S) -> (A * g, H, T, S)
                w = w.reshape(a, w.shape[1], n // a, t, w.shape[-1]).transpose(1, 2).reshape(n, w.shape[1], t, -1)
        else:
            ca = self.cross_attn(h, None, None, memory_mask, precomputed=memory_kv, need_weights=need_weights)
            ctx, w = ca.context, ca.weights
        x = x + self.dropout(ctx)
        x = x + self.dropout(self.ff(self.norm3(x)))
        return x, w, new_kv


class TransformerSeq2Seq(nn.Module):
    """Transformer encoder–decoder.

    Args:
        src_vocab: source vocabulary size.
        tgt_vocab: target vocabulary size.
        d_model: model width D.
        num_heads: attention heads H.
        ff_dim: FFN inner size.
        enc_layers: encoder blocks.
        dec_layers: decoder blocks.
        dropout: dropout rate.
        tie_embeddings: share the target embedding with the output projection.
        share_src_tgt_embeddings: also share the source embedding (needs a joint vocabulary).
        max_positions: longest sequence the position table covers.
    """

    def __init__(self, src_vocab: int, tgt_vocab: int, d_model: int = 256, num_heads: int = 4,
                 ff_dim: int = 1024, enc_layers: int = 3, dec_layers: int = 3, dropout: float = 0.1,
                 tie_embeddings: bool = True, share_src_tgt_embeddings: bool = False,
                 max_positions: int = 512) -> None:
        super().__init__()
        self.d_model = d_model
        self.num_heads = num_heads
        self.max_positions = max_positions
        self.src_embedding = nn.Embedding(src_vocab, d_model, padding_idx=PAD_ID)
        if share_src_tgt_embeddings:
            if src_vocab != tgt_vocab:
                raise ValueError("share_src_tgt_embeddings needs a joint vocabulary (--data.joint_vocab true)")
            self.tgt_embedding = self.src_embedding
        else:
            self.tgt_embedding = nn.Embedding(tgt_vocab, d_model, padding_idx=PAD_ID)
        for emb in (self.src_embedding, self.tgt_embedding):
            nn.init.normal_(emb.weight, std=d_model**-0.5)
        self.register_buffer("positions", sinusoidal_positions(max_positions, d_model), persistent=False)
        self.enc_layers = nn.ModuleList(EncoderLayer(d_model, num_heads, ff_dim, dropout) for _ in range(enc_layers))
        self.dec_layers = nn.ModuleList(DecoderLayer(d_model, num_heads, ff_dim, dropout) for _ in range(dec_layers))
        self.enc_norm = nn.LayerNorm(d_model)
        self.dec_norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(d_model, tgt_vocab, bias=False)
        if tie_embeddings:
            self.out.weight = self.tgt_embedding.weight  # (V, D) shared

    def _embed(self, emb: nn.Embedding, ids: Tensor, offset: int = 0) -> Tensor:
        t = ids.shape[1]
        if offset + t > self.max_positions:
            raise ValueError(f"sequence of {offset + t} tokens exceeds max_positions={self.max_positions}")
        x = emb(ids) * math.sqrt(self.d_model) + self.positions[offset:offset + t]  # (B, T, D)
        return self.dropout(x)

    def encode(self, src: Tensor, src_lengths: Tensor, unpadded: bool = False) -> tuple[Tensor, Tensor | None]:
        """src (B, S) → memory (B, S, D), mask (B, S) or None.

        ``unpadded=True`` says the caller knows every source fills all S positions (the module knows
        from the lengths it kept on the host): attention then runs without a mask, on SDPA's unmasked
        fused kernels and without the masking ops. A Python bool, not a tensor check, so that
        `torch.compile` sees no data-dependent branch and checking lengths on a GPU never syncs.
        """
        mask = None if unpadded else lengths_to_mask(src_lengths, src.shape[1])  # (B, S)
        x = self._embed(self.src_embedding, src)
        for layer in self.enc_layers:
            x = layer(x, mask)
        return self.enc_norm(x), mask

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, need_weights: bool = False,
                unpadded: bool = False) -> tuple[Tensor, Tensor | None]:
        """Teacher-forced logits (B, T, V) and last-layer cross-attention averaged over heads (B, T, S).

        ``unpadded``: no source has padding (see `encode`).
        """
        memory, mask = self.encode(src, src_lengths, unpadded)
        x = self._embed(self.tgt_embedding, tgt_in)  # (B, T, D)
        weights = None
        for i, layer in enumerate(self.dec_layers):
            last = i == len(self.dec_layers) - 1
            x, w, _ = layer(x, layer.cross_attn.precompute(memory, memory), mask,
                            need_weights=need_weights and last)
            if w is not None:
                weights = w.mean(dim=1)  # (B, H, T, S) -> (B, T, S)
        return self.out(self.dec_norm(x)), weights

    def init_state(self, src: Tensor, src_lengths: Tensor) -> dict[str, Any]:
        """Decoding state: per-layer cross (k, v) and the source mask under ``"shared"`` (one copy per
        item, never expanded to the beams), empty self-attention KV caches under ``"lazy"`` (reordered
        by `step` itself, see `core.decoding`)."""
        memory, mask = self.encode(src, src_lengths)
        b = src.shape[0]
        dh = self.d_model // self.num_heads
        empty = memory.new_zeros(b, self.num_heads, 0, dh)  # (B, H, 0, Dh): cache before the first step
        return {
            "shared": {"mask": mask, "cross": [layer.cross_attn.precompute(memory, memory) for layer in self.dec_layers]},
            "lazy": [(empty, empty) for _ in self.dec_layers],
            "reorder": None,
        }

    def step(self, last_tokens: Tensor, state: dict[str, Any], need_weights: bool = False
             ) -> tuple[Tensor, dict[str, Any], Tensor | None]:
        """One incremental step: last_tokens (N,) → log_probs (N, V), new state, attention (N, S) | None."""
        t = state["lazy"][0][0].shape[2]  # positions already decoded
        reorder = state.get("reorder")  # (N,) rows of the caches to continue, from beam search
        x = self._embed(self.tgt_embedding, last_tokens[:, None], offset=t)  # (N,) -> (N, 1, D)
        st = state["shared"]
        new_cache = []
        weights = None
        for i, layer in enumerate(self.dec_layers):
            last = i == len(self.dec_layers) - 1
            x, w, kv = layer(x, st["cross"][i], st["mask"], self_kv=state["lazy"][i],
                             need_weights=need_weights and last, reorder=reorder)
            new_cache.append(kv)
            if w is not None:
                weights = w.mean(dim=1)[:, 0]  # (N, H, 1, S) -> (N, S)
        logits = vocab_projection(self.out, self.dec_norm(x[:, 0]))  # (N, D) -> (N, V)
        return step_log_probs(logits), {"shared": st, "lazy": new_cache, "reorder": None}, weights
