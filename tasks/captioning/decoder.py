"""Caption decoders over a grid of image features.

* `LSTMAttentionDecoder` -- "Show, Attend and Tell" (Xu et al., 2015): an LSTMCell that at each
  step attends over the image grid with any `core.attention` mechanism (key projections
  precomputed once per image), a gating scalar beta = sigmoid(W h) on the context, a deep
  output layer, and the attention weights returned for the doubly stochastic regulariser.
* `TransformerCaptionDecoder` -- pre-LayerNorm Transformer decoder built from `core`
  ``multihead`` attention: causal self-attention with an explicit KV cache for incremental
  decoding, cross-attention whose key/value projections of the image grid are computed once.

Both expose the same three methods used by the LightningModule:
``forward(feats, inputs) -> (logits, alphas)`` (teacher forcing), ``init_state(feats)`` and
``step(tokens, state)`` (the `core.decoding` step-function contract).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from core.attention import build_attention
from core.errors import ConfigError
from core.inference import append_to_cache, step_log_probs, vocab_projection


def attention_kwargs(name: str, attention_dim: int, num_heads: int, dropout: float) -> dict[str, Any]:
    """Constructor options of a `core.attention` mechanism, per its name."""
    if name in ("additive", "location"):
        return {"hidden_dim": attention_dim}
    if name == "multihead":
        return {"num_heads": num_heads, "dropout": dropout}
    return {}


class LSTMAttentionDecoder(nn.Module):
    """LSTM decoder with soft visual attention (Show, Attend and Tell).

    Args:
        vocab_size: V.
        feat_dim: D, size of each image-grid feature.
        embed_dim: word embedding size E.
        hidden_dim: LSTM state size H.
        attention: `core.attention` mechanism name (additive, dot, general, scaled_dot, multihead, location).
        attention_dim: hidden size of additive/location attention.
        num_heads: heads when ``attention="multihead"``.
        gate: multiply the context by beta_t = sigmoid(W_beta h_{t-1}) (the paper's gating scalar).
        dropout: dropout on embeddings and before the output layer.
    """

    def __init__(
        self,
        vocab_size: int,
        feat_dim: int,
        embed_dim: int = 128,
        hidden_dim: int = 256,
        attention: str = "additive",
        attention_dim: int = 256,
        num_heads: int = 4,
        gate: bool = True,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        self.multihead = attention == "multihead"
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.attn = build_attention(
            attention, query_dim=hidden_dim, key_dim=feat_dim, **attention_kwargs(attention, attention_dim, num_heads, 0.0)
        )
        ctx_dim = self.attn.output_dim
        self.init_h = nn.Linear(feat_dim, hidden_dim)
        self.init_c = nn.Linear(feat_dim, hidden_dim)
        self.gate = nn.Linear(hidden_dim, 1) if gate else None
        self.cell = nn.LSTMCell(embed_dim + ctx_dim, hidden_dim)
        # Deep output (paper eq. 7): logits from the new state, the context and the input word.
        self.out = nn.Linear(hidden_dim + ctx_dim + embed_dim, vocab_size)
        self.drop = nn.Dropout(dropout)

    def _weights(self, w: Tensor | None) -> Tensor | None:
        """``(B, H, S)`` (multihead) -> ``(B, S)``; other mechanisms already give ``(B, S)``."""
        if w is not None and self.multihead:
            return w.mean(1)
        return w

    def _attend(self, h: Tensor, feats: Tensor, cache: Any, prev: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One attention read; returns ``(context (B, Dc), weights (B, S), next prev_weights)``."""
        out = self.attn(h, feats, feats, precomputed=cache, prev_weights=prev)  # context (B, Dc)
        ctx = out.context
        if self.gate is not None:
            ctx = torch.sigmoid(self.gate(h)) * ctx  # (B, 1) * (B, Dc): beta gating
        weights = self._weights(out.weights)
        assert weights is not None
        nxt = self.attn.accumulate(prev, out.weights) if not self.multihead else weights
        return ctx, weights, nxt

    def _init(self, feats: Tensor) -> tuple[Tensor, Tensor]:
        mean = feats.mean(1)  # (B, D)
        return torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean))  # (B, H) each

    def forward(self, feats: Tensor, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher-forced pass.

        Every step runs the full batch, padding included. (Shrinking the batch as captions end,
        as some implementations do, measured slower here on CPU: the decoder is bound by per-op
        overhead, and the extra slicing/padding ops cost more than the skipped rows save.)

        Args:
            feats: ``(B, S, D)`` image grid features.
            inputs: ``(B, T)`` input tokens starting with BOS.

        Returns:
            ``(logits (B, T, V), alphas (B, T, S))``.
        """
        b, t_len = inputs.shape
        cache = self.attn.precompute(feats, feats)  # key projections once per image, not per step
        h, c = self._init(feats)
        prev = feats.new_zeros(b, feats.shape[1])  # (B, S)
        emb = self.drop(self.embed(inputs))  # (B, T, E)
        hs, ctxs, alphas = [], [], []
        for t in range(t_len):
            ctx, w, prev = self._attend(h, feats, cache, prev)
            h, c = self.cell(torch.cat([emb[:, t], ctx], dim=-1), (h, c))
            hs.append(h)
            ctxs.append(ctx)
            alphas.append(w)
        # One big output projection after the loop instead of T small ones.
        deep = torch.cat([torch.stack(hs, 1), torch.stack(ctxs, 1), emb], dim=-1)  # (B, T, H+Dc+E)
        return self.out(self.drop(deep)), torch.stack(alphas, 1)  # (B, T, V), (B, T, S)

    def init_state(self, feats: Tensor) -> dict[str, Any]:
        """Decoding state for `core.decoding` (``"static"`` is expanded but never reordered)."""
        h, c = self._init(feats)
        return {
            "h": h,
            "c": c,
            "prev": feats.new_zeros(feats.shape[0], feats.shape[1]),  # (B, S)
            "static": {"feats": feats, "cache": self.attn.precompute(feats, feats)},
        }

    def step(self, tokens: Tensor, state: dict[str, Any]) -> tuple[Tensor, dict[str, Any], Tensor]:
        """One decoding step.

        Args:
            tokens: ``(N,)`` previous tokens.
            state: from `init_state` / the previous step.

        Returns:
            ``(log_probs (N, V), new state, attention (N, S))``.
        """
        feats, cache = state["static"]["feats"], state["static"]["cache"]
        emb = self.embed(tokens)  # (N, E)
        ctx, w, prev = self._attend(state["h"], feats, cache, state["prev"])
        h, c = self.cell(torch.cat([emb, ctx], dim=-1), (state["h"], state["c"]))
        logits = vocab_projection(self.out, torch.cat([h, ctx, emb], dim=-1))  # (N, V)
        return step_log_probs(logits), {"h": h, "c": c, "prev": prev, "static": state["static"]}, w


class _DecoderLayer(nn.Module):
    """Pre-LN Transformer decoder layer on `core` multi-head attention."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        kw = {"num_heads": num_heads, "dropout": dropout}
        self.self_attn = build_attention("multihead", query_dim=d_model, key_dim=d_model, **kw)
        self.cross_attn = build_attention("multihead", query_dim=d_model, key_dim=d_model, **kw)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, d_model))
        self.drop = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, memory_kv: Any, kv_cache: tuple[Tensor, Tensor] | None, need_weights: bool,
        reorder: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None, tuple[Tensor, Tensor] | None]:
        """Args:
            x: ``(B, T, d)`` (full sequence) or ``(B, 1, d)`` (one step with ``kv_cache``).
            memory_kv: cross-attention ``precompute`` of the image grid.
            kv_cache: self-attention ``(k, v)`` each ``(M, H, t, Dh)`` of earlier steps, or None
                for a full causal pass.
            need_weights: return cross-attention weights.
            reorder: ``(B,)`` row of ``kv_cache`` each row of x continues (beam search), or None.

        Returns:
            ``(x, cross weights (B, H, T, S) or None, updated kv cache or None)``.
        """
        y = self.norm1(x)
        if kv_cache is None:
            sa = self.self_attn(y, y, y, causal=True, need_weights=False).context  # (B, T, d)
            new_cache = None
        else:
            k_new, v_new = self.self_attn.precompute(y, y)  # (B, H, 1, Dh) each
            new_cache = (append_to_cache(kv_cache[0], k_new, reorder),
                         append_to_cache(kv_cache[1], v_new, reorder))  # (B, H, t+1, Dh) each
            # The single new query may see every cached position: no causal mask needed.
            sa = self.self_attn(y, None, None, precomputed=new_cache, need_weights=False).context
        x = x + self.drop(sa)
        ca = self.cross_attn(self.norm2(x), None, None, precomputed=memory_kv, need_weights=need_weights)
        x = x + self.drop(ca.context)
        x = x + self.drop(self.ff(self.norm3(x)))
        return x, ca.weights, new_cache


class TransformerCaptionDecoder(nn.Module):
    """Transformer decoder over the image grid (learned positions, tied-free output layer).

    Args:
        vocab_size: V.
        feat_dim: D, size of each image-grid feature (projected to ``d_model`` if different).
        d_model: model width.
        num_layers: decoder layers.
        num_heads: attention heads.
        ffn_dim: feed-forward width.
        dropout: dropout rate.
        max_len: longest caption (positions), BOS included.
    """

    def __init__(
        self,
        vocab_size: int,
        feat_dim: int,
        d_model: int = 256,
        num_layers: int = 2,
        num_heads: int = 4,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
        max_len: int = 64,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=0)
        self.pos = nn.Embedding(max_len, d_model)
        self.feat_proj: nn.Module = nn.Linear(feat_dim, d_model) if feat_dim != d_model else nn.Identity()
        self.feat_pos = nn.Parameter(torch.zeros(1, 256, d_model))  # grid-cell positions (up to 16x16)
        self.layers = nn.ModuleList([_DecoderLayer(d_model, num_heads, ffn_dim, dropout) for _ in range(num_layers)])
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, vocab_size)
        self.drop = nn.Dropout(dropout)
        self.d_model, self.max_len = d_model, max_len

    def _memory(self, feats: Tensor) -> list[Any]:
        """Cross-attention key/value projections of the grid, once per layer per image."""
        mem = self.feat_proj(feats) + self.feat_pos[:, : feats.shape[1]]  # (B, S, d)
        return [layer.cross_attn.precompute(mem, mem) for layer in self.layers]

    def forward(self, feats: Tensor, inputs: Tensor) -> tuple[Tensor, Tensor | None]:
        """Teacher-forced pass: ``feats (B, S, D)``, ``inputs (B, T)`` -> ``(logits (B, T, V), None)``.

        No attention maps are returned in training (the doubly stochastic regulariser is an
        LSTM-decoder idea), which lets the fused SDPA path run.
        """
        if inputs.shape[1] > self.max_len:
            # Reachable from the config (data.max_caption_len vs model.max_len): a user error, not a bug.
            raise ConfigError(
                f"data.max_caption_len: a training caption of {inputs.shape[1] - 1} words (+BOS) exceeds the transformer "
                f"decoder's {self.max_len} learned positions; lower data.max_caption_len to <= {self.max_len - 1} "
                f"or raise model.max_len to >= {inputs.shape[1] - 2}"
            )
        memory = self._memory(feats)
        pos = torch.arange(inputs.shape[1], device=inputs.device)
        x = self.drop(self.embed(inputs) * self.d_model**0.5 + self.pos(pos))  # (B, T, d)
        for layer, mem in zip(self.layers, memory):
            x, _, _ = layer(x, mem, None, need_weights=False)
        return self.out(self.norm(x)), None

    def init_state(self, feats: Tensor) -> dict[str, Any]:
        """Empty KV caches ``(B, H, 0, Dh)`` per layer under ``"lazy"`` (`step` follows the beams itself
        through ``"reorder"``, see `core.decoding`) plus the static image memory."""
        b = feats.shape[0]
        memory = self._memory(feats)
        caches = []
        for layer, (k, _) in zip(self.layers, memory):
            empty = k.new_zeros(b, k.shape[1], 0, k.shape[3])  # (B, H, 0, Dh)
            caches.append((empty, empty.clone()))
        return {"lazy": caches, "reorder": None, "static": {"memory": memory}}

    def step(self, tokens: Tensor, state: dict[str, Any]) -> tuple[Tensor, dict[str, Any], Tensor | None]:
        """One incremental step: ``tokens (N,)`` -> ``(log_probs (N, V), state, attn (N, S))``.

        The returned attention is the last layer's cross-attention averaged over heads.
        """
        t = state["lazy"][0][0].shape[2]  # tokens decoded so far = position of this one
        pos = torch.full_like(tokens, min(t, self.max_len - 1))
        x = self.embed(tokens)[:, None] * self.d_model**0.5 + self.pos(pos)[:, None]  # (N, 1, d)
        new_caches = []
        weights = None
        reorder = state.get("reorder")  # (N,) cache rows to continue, from beam search
        for i, (layer, mem, cache) in enumerate(zip(self.layers, state["static"]["memory"], state["lazy"])):
            x, w, cache = layer(x, mem, cache, need_weights=i == len(self.layers) - 1, reorder=reorder)
            new_caches.append(cache)
            weights = w
        logits = vocab_projection(self.out, self.norm(x[:, 0]))  # (N, V)
        attn = weights.mean(1)[:, 0] if weights is not None else None  # (N, H, 1, S) -> (N, S)
        return step_log_probs(logits), {"lazy": new_caches, "reorder": None, "static": state["static"]}, attn
