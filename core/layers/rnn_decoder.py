"""One attentional RNN decoder for every task (GRU/LSTM, any ``core.attention`` mechanism by name).

Per step ``t`` with the default (Luong et al. 2015, input feeding)::

    x_t    = [emb(y_{t-1}); feed_{t-1}]               # feed: last attentional vector (or context)
    s_t    = RNNCell stack(x_t, s_{t-1})
    c_t    = attention(query=s_t, memory, precomputed=K)   # K computed once per source
    a_t    = tanh(W_c [s_t; c_t])                     # attentional vector
    logits = W_o dropout(a_t)

``attend_before=True`` gives Bahdanau / Show-Attend-Tell order instead: the query is the previous state,
``c_t`` joins this step's input (``x_t = [emb; beta * c_t]``), and ``deep_output=True`` reads the logits
from ``[s_t; c_t; emb]`` (Xu et al. 2015, eq. 7). ``gate`` is that paper's ``beta = sigmoid(W s)``.

Location-aware attention starts from uniform weights over the valid memory positions
(``LocationAttention.initial_weights``) and carries ``attn.accumulate(prev, w)`` explicitly, in training
and decoding alike. Multi-head weights ``(N, H, S)`` are averaged over heads for what is returned.

The output projection runs once on all teacher-forced steps stacked (one big matmul instead of T small
ones). Decoding uses :meth:`init_state` / :meth:`step`, the ``core.decoding.beam`` step-function contract.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from core.attention import LocationAttention, build_attention
from core.decoding.beam import DecoderState
from core.decoding.fast_paths import step_log_probs, vocab_projection

__all__ = ["AttentionalRNNDecoder"]


class AttentionalRNNDecoder(nn.Module):
    """Attentional RNN decoder.

    Args:
        vocab_size: output vocabulary V.
        memory_dim: width of the memory (encoder states / image grid features) attended over.
        embed_dim: token embedding size E.
        hidden_dim: RNN state size H (the attention query).
        num_layers: stacked RNN cells.
        rnn_type: ``gru`` or ``lstm``.
        attention: ``core.attention`` name (additive, location, dot, general, scaled_dot, multihead).
        attention_options: extra constructor options of that mechanism (e.g. ``{"hidden_dim": 128}``).
        dropout: dropout on embeddings, between cells and before the output layer.
        attend_before: query with the previous state and feed this step's context (Show-Attend-Tell).
        input_feed: what joins the next step's input when attending after the RNN: the attentional
            vector (Luong) or the raw context (Listen-Attend-Spell).
        deep_output: logits from ``[s_t; c_t; emb]`` instead of the attentional vector.
        gate: scale the context by ``sigmoid(W s)`` (Show-Attend-Tell's beta).
        init_dim: size of the summary vector the initial states are computed from (``tanh(W summary)``);
            None starts from zeros.
        init_cell: LSTM: also compute the initial cell state from the summary (else zeros).
        project_keys: for dot/scaled_dot, project the memory to H once per source; None: when sizes differ.
        tie_embeddings: share the embedding with the output projection (not with ``deep_output``).
        padding_idx: embedding row of the padding token.
    """

    def __init__(
        self,
        vocab_size: int,
        memory_dim: int,
        embed_dim: int = 256,
        hidden_dim: int = 256,
        num_layers: int = 1,
        rnn_type: Literal["gru", "lstm"] = "lstm",
        attention: str = "additive",
        attention_options: dict[str, Any] | None = None,
        dropout: float = 0.1,
        attend_before: bool = False,
        input_feed: Literal["attentional", "context"] = "attentional",
        deep_output: bool = False,
        gate: bool = False,
        init_dim: int | None = None,
        init_cell: bool = False,
        project_keys: bool | None = None,
        tie_embeddings: bool = False,
        padding_idx: int = 0,
    ) -> None:
        super().__init__()
        if rnn_type not in ("gru", "lstm"):
            raise ValueError(f"rnn_type must be 'gru' or 'lstm', got {rnn_type!r}")
        if tie_embeddings and deep_output:
            raise ValueError("tie_embeddings needs the attentional-vector output, not deep_output")
        self.rnn_type, self.hidden_dim, self.num_layers = rnn_type, hidden_dim, num_layers
        self.attend_before, self.input_feed, self.deep_output = attend_before, input_feed, deep_output
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
        if project_keys is None:
            project_keys = attention in ("dot", "scaled_dot") and memory_dim != hidden_dim
        self.key_proj = nn.Linear(memory_dim, hidden_dim, bias=False) if project_keys else None
        key_dim = hidden_dim if self.key_proj is not None else memory_dim
        self.attention = build_attention(
            attention, query_dim=hidden_dim, key_dim=key_dim, value_dim=memory_dim, **dict(attention_options or {})
        )
        self.is_location = isinstance(self.attention, LocationAttention)
        ctx_dim = self.attention.output_dim
        feed_dim = ctx_dim if attend_before or input_feed == "context" else hidden_dim
        cell_cls = nn.GRUCell if rnn_type == "gru" else nn.LSTMCell
        self.cells = nn.ModuleList(
            [cell_cls(embed_dim + feed_dim if i == 0 else hidden_dim, hidden_dim) for i in range(num_layers)]
        )
        self.bridge = nn.Linear(init_dim, hidden_dim * num_layers) if init_dim else None
        self.bridge_cell = nn.Linear(init_dim, hidden_dim * num_layers) if init_dim and init_cell else None
        self.gate = nn.Linear(hidden_dim, 1) if gate else None
        self.dropout = nn.Dropout(dropout)
        self.feed_dim = feed_dim
        if deep_output:
            self.combine = None
            self.pre_out: nn.Module = nn.Identity()
            self.out = nn.Linear(hidden_dim + ctx_dim + embed_dim, vocab_size)
        else:
            self.combine = nn.Linear(hidden_dim + ctx_dim, hidden_dim)
            if tie_embeddings:
                self.pre_out = nn.Linear(hidden_dim, embed_dim) if hidden_dim != embed_dim else nn.Identity()
                self.out = nn.Linear(embed_dim, vocab_size)
                self.out.weight = self.embedding.weight  # tied: (V, E) shared
            else:
                self.pre_out = nn.Identity()
                self.out = nn.Linear(hidden_dim, vocab_size)

    # ---------------------------------------------------------------- state
    def init_state(self, memory: Tensor, mask: Tensor | None, summary: Tensor | None = None) -> DecoderState:
        """Decoding state before the first step.

        Args:
            memory: ``(B, S, Dm)`` encoder states / grid features.
            mask: ``(B, S)`` bool, True = valid position, or None (no padding).
            summary: ``(B, init_dim)`` vector the initial states are computed from (needs ``init_dim``).

        Returns:
            ``DecoderState``: memory, mask and key projections under ``source`` (expanded to the beams once,
            never reordered); RNN states, input feed and previous weights under ``beams``.
        """
        b, s = memory.shape[0], memory.shape[1]
        keys = self.key_proj(memory) if self.key_proj is not None else memory  # (B, S, Dk)
        source = {"keys": keys, "values": memory, "mask": mask, "pre": self.attention.precompute(keys, memory)}
        zeros = memory.new_zeros(b, self.num_layers, self.hidden_dim)  # (B, L, H)
        if self.bridge is not None and summary is not None:
            h0 = torch.tanh(self.bridge(summary)).view(b, self.num_layers, self.hidden_dim)  # (B, L*H) -> (B, L, H)
        else:
            h0 = zeros
        c0 = (
            torch.tanh(self.bridge_cell(summary)).view(b, self.num_layers, self.hidden_dim)
            if self.bridge_cell is not None and summary is not None
            else zeros
        )
        hidden: list[Any] = []
        for i in range(self.num_layers):
            h = h0[:, i].contiguous()  # (B, H)
            hidden.append((h, c0[:, i].contiguous()) if self.rnn_type == "lstm" else h)
        beams: dict[str, Any] = {"hidden": hidden}
        if not self.attend_before:
            beams["feed"] = memory.new_zeros(b, self.feed_dim)
        if self.is_location:
            beams["prev"] = LocationAttention.initial_weights(None if mask is None else mask[:, None, :], b, s, memory)
        return DecoderState(beams=beams, source=source)

    # ---------------------------------------------------------------- one step
    def _attend(
        self, query: Tensor, source: dict[str, Any], prev: Tensor | None, need_weights: bool
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """``(context (N, C), weights (N, S) or None, next prev_weights or None)``."""
        a = self.attention(
            query,
            source["keys"],
            source["values"],
            source["mask"],
            precomputed=source["pre"],
            prev_weights=prev,
            need_weights=need_weights or self.is_location,
        )
        ctx = a.context
        if self.gate is not None:
            ctx = torch.sigmoid(self.gate(query)) * ctx  # (N, 1) * (N, C): beta gating
        w = a.weights
        nxt = self.attention.accumulate(prev, w) if self.is_location else None
        if w is not None and w.dim() == 3:  # multi-head (N, heads, S): averaged for plots and losses
            w = w.mean(dim=1)  # (N, H, S) -> (N, S)
        return ctx, w, nxt

    def _cells(self, x: Tensor, hidden: list[Any]) -> tuple[Tensor, list[Any]]:
        new_hidden: list[Any] = []
        for i, cell in enumerate(self.cells):
            h = cell(x, hidden[i])
            new_hidden.append(h)
            x = h[0] if isinstance(h, tuple) else h  # (N, H)
            if i < len(self.cells) - 1:
                x = self.dropout(x)
        return x, new_hidden

    def _top(self, hidden: list[Any]) -> Tensor:
        top = hidden[-1]
        return top[0] if isinstance(top, tuple) else top

    def _step(
        self, emb: Tensor, beams: dict[str, Any], source: dict[str, Any], need_weights: bool
    ) -> tuple[Tensor, dict[str, Any], Tensor | None]:
        """One step from an embedded input ``(N, E)`` -> ``(features for the output layer, beams, weights)``."""
        prev = beams.get("prev")
        if self.attend_before:
            ctx, w, nxt = self._attend(self._top(beams["hidden"]), source, prev, need_weights)
            h, hidden = self._cells(torch.cat([emb, ctx], dim=-1), beams["hidden"])  # (N, E + C)
            new: dict[str, Any] = {"hidden": hidden}
        else:
            h, hidden = self._cells(torch.cat([emb, beams["feed"]], dim=-1), beams["hidden"])  # (N, E + F)
            ctx, w, nxt = self._attend(h, source, prev, need_weights)
            new = {"hidden": hidden}
        if self.deep_output:
            feats = torch.cat([h, ctx, emb], dim=-1)  # (N, H + C + E)
        else:
            assert self.combine is not None
            feats = torch.tanh(self.combine(torch.cat([h, ctx], dim=-1)))  # (N, H) attentional vector
        if not self.attend_before:
            new["feed"] = feats if self.input_feed == "attentional" else ctx
        if nxt is not None:
            new["prev"] = nxt
        return feats, new, w

    # ---------------------------------------------------------------- interface
    def forward(
        self,
        memory: Tensor,
        mask: Tensor | None,
        inputs: Tensor,
        summary: Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Teacher-forced logits.

        Args:
            memory: ``(B, S, Dm)``; mask: ``(B, S)`` or None; inputs: ``(B, T)`` BOS-prefixed tokens;
            summary: ``(B, init_dim)`` for the initial states; need_weights: also return the weights.

        Returns:
            logits ``(B, T, V)`` and attention ``(B, T, S)`` or None.
        """
        state = self.init_state(memory, mask, summary)
        beams, source = state.beams, state.source
        emb = self.dropout(self.embedding(inputs))  # (B, T, E)
        feats: list[Tensor] = []
        weights: list[Tensor] = []
        for t in range(inputs.shape[1]):
            f, beams, w = self._step(emb[:, t], beams, source, need_weights)
            feats.append(f)
            if need_weights:
                assert w is not None  # every mechanism returns its weights when asked for them
                weights.append(w)
        h = torch.stack(feats, dim=1)  # T x (B, F) -> (B, T, F)
        logits = self.out(self.pre_out(self.dropout(h)))  # (B, T, V), one matmul for all steps
        return logits, (torch.stack(weights, dim=1) if need_weights else None)  # (B, T, S)

    def step(
        self, last_tokens: Tensor, state: DecoderState, need_weights: bool = True
    ) -> tuple[Tensor, DecoderState, Tensor | None]:
        """One decoding step (the ``core.decoding.beam`` step function).

        Args:
            last_tokens: ``(N,)`` previous output tokens (BOS first).
            state: from :meth:`init_state` / the previous step.
            need_weights: return the attention ``(N, S)``.

        Returns:
            log-probs ``(N, V)`` float32, the new state, attention or None.
        """
        emb = self.embedding(last_tokens)  # (N, E)
        feats, beams, w = self._step(emb, state.beams, state.source, need_weights)
        logits = vocab_projection(self.out, self.pre_out(feats))  # (N, V)
        return step_log_probs(logits), DecoderState(beams=beams, source=state.source), (w if need_weights else None)
