"""Caption decoders over a grid of image features.

* ``rnn`` -- "Show, Attend and Tell" (Xu et al., 2015) on ``core.layers.AttentionalRNNDecoder``: the query
  is the previous state, a gating scalar beta = sigmoid(W h) scales the context, the logits read a deep
  output ``[h; context; word]``, the initial state comes from the mean grid feature, and the attention
  weights are returned for the doubly stochastic regulariser. Any ``core.attention`` mechanism.
* ``transformer`` -- :class:`TransformerCaptionDecoder`: the ``core.layers.TransformerDecoder`` stack (causal
  self-attention with an explicit KV cache, cross-attention whose key/value projections of the grid are
  computed once per image and shared by its beams, final LayerNorm) between learned word and grid-cell
  positions and an untied output layer.

Both expose ``forward(memory, mask, inputs, summary, need_weights) -> (logits, alphas)`` (teacher
forcing), ``init_state(memory, mask, summary)`` and ``step(tokens, state)`` (``core.decoding.beam``).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from core.decoding.beam import DecoderState
from core.decoding.fast_paths import step_log_probs, vocab_projection
from core.errors import ConfigError
from core.layers import AttentionalRNNDecoder, TransformerDecoder

__all__ = ["TransformerCaptionDecoder", "show_attend_tell_decoder", "upgrade_decoder_v1"]


def show_attend_tell_decoder(
    vocab_size: int,
    feat_dim: int,
    embed_dim: int,
    hidden_dim: int,
    num_layers: int,
    rnn_type: Literal["gru", "lstm"],
    attention: str,
    attention_options: dict[str, Any],
    gate: bool,
    dropout: float,
) -> AttentionalRNNDecoder:
    """The Show-Attend-Tell form of the shared attentional RNN decoder (see module docstring)."""
    return AttentionalRNNDecoder(
        vocab_size,
        feat_dim,
        embed_dim,
        hidden_dim,
        num_layers,
        rnn_type,
        attention,
        attention_options,
        dropout,
        attend_before=True,
        deep_output=True,
        gate=gate,
        init_dim=feat_dim,
        init_cell=True,
        padding_idx=0,
    )


class TransformerCaptionDecoder(nn.Module):
    """Transformer decoder over the image grid (learned positions, untied output layer).

    The layers and their final LayerNorm are ``core.layers.TransformerDecoder`` (weights ``stack.*``); this
    module adds the word embeddings and positions, the grid features' projection and learned cell positions, and
    the output layer.

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
        self.stack = TransformerDecoder(d_model, num_heads, ffn_dim, num_layers, dropout)
        self.out = nn.Linear(d_model, vocab_size)
        self.drop = nn.Dropout(dropout)
        self.d_model, self.max_len = d_model, max_len

    def _grid(self, feats: Tensor) -> Tensor:
        """Grid features ``(B, S, D)`` projected to the model width, plus their cell positions -> ``(B, S, d)``."""
        return self.feat_proj(feats) + self.feat_pos[:, : feats.shape[1]]

    def forward(
        self,
        memory: Tensor,
        mask: Tensor | None,
        inputs: Tensor,
        summary: Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Teacher-forced pass: ``memory (B, S, D)``, ``inputs (B, T)`` -> ``(logits (B, T, V), None)``.

        No attention maps are returned in training (the doubly stochastic regulariser is an RNN-decoder
        idea), which lets the fused SDPA path run.
        """
        if inputs.shape[1] > self.max_len:
            # Reachable from the config (data.max_caption_len vs model.max_len): a user error, not a bug.
            raise ConfigError(
                f"data.max_caption_len: a training caption of {inputs.shape[1] - 1} words (+BOS) exceeds the "
                f"transformer decoder's {self.max_len} learned positions; lower data.max_caption_len to <= "
                f"{self.max_len - 1} or raise model.max_len to >= {inputs.shape[1] - 2}"
            )
        pos = torch.arange(inputs.shape[1], device=inputs.device)
        x = self.drop(self.embed(inputs) * self.d_model**0.5 + self.pos(pos))  # (B, T, d)
        h, _ = self.stack(x, self._grid(memory), mask)  # (B, T, d), final norm applied
        return self.out(h), None

    def init_state(self, memory: Tensor, mask: Tensor | None = None, summary: Tensor | None = None) -> DecoderState:
        """The grid's cross-attention keys/values of every layer under ``shared`` (one copy per image, attended by
        all its beams) and empty KV caches ``(B, H, 0, Dh)`` per layer under ``cache`` (``step`` follows the beams
        itself through ``reorder``, see ``core.decoding.beam``)."""
        return self.stack.init_state(self._grid(memory), mask)

    def step(
        self, tokens: Tensor, state: DecoderState, need_weights: bool = True
    ) -> tuple[Tensor, DecoderState, Tensor | None]:
        """One incremental step: ``tokens (N,)`` -> ``(log_probs (N, V), state, attn (N, S) or None)``.

        The returned attention is the last layer's cross-attention averaged over heads.
        """
        t = state.cache[0][0].shape[2]  # tokens decoded so far = position of this one
        pos = torch.full_like(tokens, min(t, self.max_len - 1))
        x = self.embed(tokens)[:, None] * self.d_model**0.5 + self.pos(pos)[:, None]  # (N, 1, d)
        h, state, attn = self.stack.step(x, state, need_weights)  # (N, d), final norm applied
        return step_log_probs(vocab_projection(self.out, h)), state, attn


def upgrade_decoder_v1(state: dict[str, Any]) -> dict[str, Any]:
    """Format-1 weight names of the Show-Attend-Tell LSTM decoder under today's shared decoder."""
    renames = {
        "decoder.embed.": "decoder.embedding.",
        "decoder.attn.": "decoder.attention.",
        "decoder.init_h.": "decoder.bridge.",
        "decoder.init_c.": "decoder.bridge_cell.",
        "decoder.cell.": "decoder.cells.0.",
    }
    if "decoder.cell.weight_ih" not in state:  # a Transformer decoder: its names did not change
        return state
    out: dict[str, Any] = {}
    for key, value in state.items():
        for old, new in renames.items():
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        out[key] = value
    return out
