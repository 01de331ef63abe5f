"""RNN encoder–decoder with attention (Bahdanau et al. 2015; Luong et al. 2015 input feeding).

Encoder: embedding → bidirectional GRU/LSTM (packed, so padding never leaks into the backward pass).
Decoder, per step ``t``::

    x_t   = [emb(y_{t-1}); h~_{t-1}]          # input feeding: last attentional vector
    s_t   = RNNCell stack(x_t, s_{t-1})
    c_t   = attention(query=s_t, keys=enc, values=enc, precomputed=K)  # K computed once per source
    h~_t  = tanh(W_c [s_t; c_t])
    p(y_t) = softmax(W_o dropout(h~_t))

The output projection runs once on all steps stacked (one big matmul instead of T small ones). Any
``core`` attention is picked by name; dot-product scores need ``query_dim == key_dim``, so for
``dot``/``scaled_dot`` the encoder outputs are projected to the decoder size once per source.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from core.attention import LocationAttention, build_attention, lengths_to_mask
from core.inference import step_log_probs, vocab_projection
from core.tokenizers import PAD_ID

RNNType = Literal["gru", "lstm"]


class RNNEncoder(nn.Module):
    """Bidirectional GRU/LSTM encoder.

    Args:
        vocab_size: source vocabulary size.
        emb_dim: embedding size E.
        hidden_dim: per-direction hidden size H (outputs are 2H).
        num_layers: stacked layers.
        rnn_type: ``gru`` or ``lstm``.
        dropout: dropout on embeddings and between layers.
    """

    def __init__(self, vocab_size: int, emb_dim: int, hidden_dim: int, num_layers: int = 1,
                 rnn_type: RNNType = "gru", dropout: float = 0.1) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=PAD_ID)
        rnn_cls = nn.GRU if rnn_type == "gru" else nn.LSTM
        self.rnn = rnn_cls(emb_dim, hidden_dim, num_layers=num_layers, batch_first=True, bidirectional=True,
                           dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.output_dim = 2 * hidden_dim

    def forward(self, src: Tensor, lengths: Tensor, host_lengths: Tensor | None = None,
                unpadded: bool = False) -> tuple[Tensor, Tensor]:
        """Encode.

        Args:
            src: (B, S) token ids.
            lengths: (B,) valid lengths (≥ 1).
            host_lengths: the same lengths as a CPU tensor, when the caller has them: packing needs
                CPU lengths, and copying ``lengths`` from a GPU is a host-device sync per batch.
            unpadded: the caller knows no source is padded (a Python bool: no tensor check, so no
                data-dependent branch under `torch.compile`).

        Returns:
            outputs (B, S, 2H) (zeros at padding) and final (B, 2H) = [forward last; backward first]
            state of the top layer.
        """
        emb = self.dropout(self.embedding(src))  # (B, S, E)
        # pack_padded_sequence needs CPU lengths: without host_lengths, one small copy per batch.
        if not unpadded:
            cpu_lengths = host_lengths if host_lengths is not None else lengths.cpu()
            unpadded = bool((cpu_lengths == src.shape[1]).all())
        if unpadded:
            # No padding (e.g. length-bucketed batches): the plain cuDNN/fused RNN call gives the
            # same result without the sort, pack and unpack kernels.
            out, h = self.rnn(emb)  # (B, S, 2H)
        else:
            packed = pack_padded_sequence(emb, cpu_lengths, batch_first=True, enforce_sorted=False)
            out, h = self.rnn(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])  # (B, S, 2H)
        if isinstance(h, tuple):  # LSTM: (h_n, c_n)
            h = h[0]
        # h: (layers * 2, B, H); the top layer's two directions are the last two rows.
        final = torch.cat([h[-2], h[-1]], dim=-1)  # (B, 2H)
        return out, final


class RNNSeq2Seq(nn.Module):
    """Bidirectional-RNN encoder, attentional RNN decoder with input feeding.

    Args:
        src_vocab: source vocabulary size.
        tgt_vocab: target vocabulary size.
        emb_dim: embedding size (both sides).
        hidden_dim: decoder hidden size; the encoder uses ``hidden_dim // 2`` per direction so its
            outputs are ``hidden_dim`` wide too.
        enc_layers: encoder layers.
        dec_layers: decoder layers.
        rnn_type: ``gru`` or ``lstm``.
        attention: ``core.attention`` name (additive, location, dot, general, scaled_dot, multihead).
        attention_options: extra constructor options of that mechanism (e.g. ``{"hidden_dim": 128}``).
        dropout: dropout rate.
        tie_embeddings: share the target embedding with the output projection (adds an E-sized
            bottleneck when ``hidden_dim != emb_dim``).
    """

    def __init__(self, src_vocab: int, tgt_vocab: int, emb_dim: int = 256, hidden_dim: int = 256,
                 enc_layers: int = 1, dec_layers: int = 1, rnn_type: RNNType = "gru",
                 attention: str = "additive", attention_options: dict[str, Any] | None = None,
                 dropout: float = 0.1, tie_embeddings: bool = False) -> None:
        super().__init__()
        if hidden_dim % 2:
            raise ValueError(f"hidden_dim must be even (split over two encoder directions), got {hidden_dim}")
        self.rnn_type = rnn_type
        self.hidden_dim = hidden_dim
        self.dec_layers = dec_layers
        self.encoder = RNNEncoder(src_vocab, emb_dim, hidden_dim // 2, enc_layers, rnn_type, dropout)
        enc_dim = self.encoder.output_dim
        self.tgt_embedding = nn.Embedding(tgt_vocab, emb_dim, padding_idx=PAD_ID)
        cell_cls = nn.GRUCell if rnn_type == "gru" else nn.LSTMCell
        self.cells = nn.ModuleList(
            [cell_cls(emb_dim + hidden_dim if i == 0 else hidden_dim, hidden_dim) for i in range(dec_layers)])
        # Encoder final state → initial decoder state of every layer.
        self.bridge = nn.Linear(enc_dim, hidden_dim * dec_layers)
        opts = dict(attention_options or {})
        if attention in ("additive", "location"):
            opts.setdefault("hidden_dim", hidden_dim)
            # Auto: the plain formulation (fewer ops, no Python backward) while the tanh the whole
            # decoder loop keeps is small, the recomputing one for long sources (AdditiveAttention).
            opts.setdefault("memory_efficient", None)
        if attention == "multihead":
            opts.setdefault("num_heads", 4)
        self.key_proj = nn.Linear(enc_dim, hidden_dim, bias=False) if attention in ("dot", "scaled_dot") else None
        key_dim = hidden_dim if self.key_proj is not None else enc_dim
        self.attention = build_attention(attention, query_dim=hidden_dim, key_dim=key_dim, value_dim=enc_dim,
                                         **opts)
        self.is_location = isinstance(self.attention, LocationAttention)
        self.combine = nn.Linear(hidden_dim + self.attention.output_dim, hidden_dim)
        self.dropout = nn.Dropout(dropout)
        if tie_embeddings:
            self.pre_out: nn.Module = nn.Linear(hidden_dim, emb_dim) if hidden_dim != emb_dim else nn.Identity()
            self.out = nn.Linear(emb_dim, tgt_vocab)
            self.out.weight = self.tgt_embedding.weight  # tied: (V, E) shared
        else:
            self.pre_out = nn.Identity()
            self.out = nn.Linear(hidden_dim, tgt_vocab)

    # ------------------------------------------------------------------ pieces
    def _encode(self, src: Tensor, src_lengths: Tensor, host_lengths: Tensor | None = None,
                unpadded: bool = False) -> dict[str, Any]:
        enc, final = self.encoder(src, src_lengths, host_lengths, unpadded)  # (B, S, 2He), (B, 2He)
        mask = lengths_to_mask(src_lengths, src.shape[1])  # (B, S) True = real token
        keys = self.key_proj(enc) if self.key_proj is not None else enc  # (B, S, Dk)
        static = {"keys": keys, "values": enc, "mask": mask,
                  # Key projections computed once per source, reused at every decoder step.
                  "pre": self.attention.precompute(keys, enc)}
        b = src.shape[0]
        h0 = torch.tanh(self.bridge(final)).view(b, self.dec_layers, self.hidden_dim)  # (B, L*H) -> (B, L, H)
        hidden: list[Any] = []
        for i in range(self.dec_layers):
            h = h0[:, i].contiguous()  # (B, H)
            hidden.append((h, torch.zeros_like(h)) if self.rnn_type == "lstm" else h)
        state: dict[str, Any] = {"static": static, "hidden": hidden,
                                 "feed": enc.new_zeros(b, self.hidden_dim)}
        if self.is_location:
            state["prev"] = LocationAttention.initial_weights(mask[:, None, :], b, src.shape[1], enc)  # (B, S)
        return state

    def _decode_step(self, emb_t: Tensor, state: dict[str, Any], need_weights: bool = True
                     ) -> tuple[Tensor, dict[str, Any], Tensor | None]:
        """One decoder step from an embedded input (B, E) → attentional vector h~ (B, H)."""
        st = state["static"]
        x = torch.cat([emb_t, state["feed"]], dim=-1)  # (B, E + H) input feeding
        new_hidden: list[Any] = []
        for i, cell in enumerate(self.cells):
            h = cell(x, state["hidden"][i])
            new_hidden.append(h)
            x = h[0] if isinstance(h, tuple) else h  # (B, H)
            if i < len(self.cells) - 1:
                x = self.dropout(x)
        a = self.attention(x, st["keys"], st["values"], st["mask"], precomputed=st["pre"],
                           prev_weights=state.get("prev"), need_weights=need_weights or self.is_location)
        feed = torch.tanh(self.combine(torch.cat([x, a.context], dim=-1)))  # (B, H)
        new_state: dict[str, Any] = {"static": st, "hidden": new_hidden, "feed": feed}
        weights = a.weights
        if weights is not None and weights.dim() == 3:  # multihead (B, heads, S): average heads for plots
            weights = weights.mean(dim=1)  # (B, H, S) -> (B, S)
        if self.is_location:
            new_state["prev"] = self.attention.accumulate(state["prev"], a.weights)
        return feed, new_state, weights

    # ------------------------------------------------------------------ interface
    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, need_weights: bool = False,
                host_lengths: Tensor | None = None, unpadded: bool = False) -> tuple[Tensor, Tensor | None]:
        """Teacher-forced logits.

        Args:
            src: (B, S) source ids.
            src_lengths: (B,).
            tgt_in: (B, T) BOS + target ids.
            need_weights: also return attention.
            host_lengths: ``src_lengths`` as a CPU tensor, if at hand (no host-device sync then).
            unpadded: no source is padded (known to the caller; skips packing without a check).

        Returns:
            logits (B, T, V) and attention (B, T, S) or None.
        """
        state = self._encode(src, src_lengths, host_lengths, unpadded)
        emb = self.dropout(self.tgt_embedding(tgt_in))  # (B, T, E)
        feeds, attns = [], []
        for t in range(tgt_in.shape[1]):
            feed, state, w = self._decode_step(emb[:, t], state, need_weights)
            feeds.append(feed)
            if need_weights:
                attns.append(w)
        h = torch.stack(feeds, dim=1)  # T x (B, H) -> (B, T, H)
        logits = self.out(self.pre_out(self.dropout(h)))  # (B, T, V), one matmul for all steps
        return logits, (torch.stack(attns, dim=1) if need_weights else None)  # (B, T, S)

    def init_state(self, src: Tensor, src_lengths: Tensor) -> dict[str, Any]:
        """Decoding state for :meth:`step`: encoder outputs/masks/key projections under ``"static"``."""
        return self._encode(src, src_lengths)

    def step(self, last_tokens: Tensor, state: dict[str, Any], need_weights: bool = False
             ) -> tuple[Tensor, dict[str, Any], Tensor | None]:
        """One decoding step.

        Args:
            last_tokens: (N,) previous output tokens (BOS first).
            state: from :meth:`init_state` / the previous step.
            need_weights: return attention (N, S).

        Returns:
            log_probs (N, V) float32, new state, attention or None.
        """
        feed, state, w = self._decode_step(self.tgt_embedding(last_tokens), state, need_weights)
        logits = vocab_projection(self.out, self.pre_out(feed))  # (N, V)
        return step_log_probs(logits), state, (w if need_weights else None)
