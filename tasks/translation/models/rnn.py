"""RNN encoder–decoder with attention (Bahdanau et al. 2015; Luong et al. 2015 input feeding).

Encoder: embedding → bidirectional GRU/LSTM (packed, so padding never leaks into the backward pass).
Decoder: ``core.layers.AttentionalRNNDecoder`` in its Luong form (the query is the new state, the
attentional vector ``tanh(W_c [s_t; c_t])`` is fed to the next step), started from the encoder's final
state, any ``core`` attention picked by name; for ``dot``/``scaled_dot`` the encoder outputs are projected
to the decoder size once per source.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from core.attention import attention_options as attention_options_for  # the argument has its name
from core.attention import lengths_to_mask
from core.decoding.beam import DecoderState
from core.layers import AttentionalRNNDecoder
from core.text.tokenizers import PAD_ID
from tasks.translation.options import RNNType


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

    def __init__(
        self,
        vocab_size: int,
        emb_dim: int,
        hidden_dim: int,
        num_layers: int = 1,
        rnn_type: RNNType = "gru",
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=PAD_ID)
        rnn_cls = nn.GRU if rnn_type == "gru" else nn.LSTM
        self.rnn = rnn_cls(
            emb_dim,
            hidden_dim,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.output_dim = 2 * hidden_dim

    def forward(
        self, src: Tensor, lengths: Tensor, host_lengths: Tensor | None = None, unpadded: bool = False
    ) -> tuple[Tensor, Tensor]:
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
        embed_dim: embedding size (both sides).
        hidden_dim: decoder hidden size; the encoder uses ``hidden_dim // 2`` per direction so its
            outputs are ``hidden_dim`` wide too.
        encoder_layers: encoder layers.
        decoder_layers: decoder layers.
        rnn_type: ``gru`` or ``lstm``.
        attention: ``core.attention`` name (additive, location, dot, general, scaled_dot, multihead).
        attention_options: extra constructor options of that mechanism (e.g. ``{"hidden_dim": 128}``).
        dropout: dropout rate.
        tie_embeddings: share the target embedding with the output projection (adds an E-sized
            bottleneck when ``hidden_dim != embed_dim``).
    """

    def __init__(
        self,
        src_vocab: int,
        tgt_vocab: int,
        embed_dim: int = 256,
        hidden_dim: int = 256,
        encoder_layers: int = 1,
        decoder_layers: int = 1,
        rnn_type: RNNType = "gru",
        attention: str = "additive",
        attention_options: dict[str, Any] | None = None,
        dropout: float = 0.1,
        tie_embeddings: bool = False,
    ) -> None:
        super().__init__()
        if hidden_dim % 2:
            raise ValueError(f"hidden_dim must be even (split over two encoder directions), got {hidden_dim}")
        self.encoder = RNNEncoder(src_vocab, embed_dim, hidden_dim // 2, encoder_layers, rnn_type, dropout)
        opts = attention_options_for(attention, attention_options, hidden_dim)
        if attention in ("additive", "location"):
            # Auto: the plain formulation (fewer ops, no Python backward) while the tanh the whole
            # decoder loop keeps is small, the recomputing one for long sources (AdditiveAttention).
            opts.setdefault("memory_efficient", None)
        enc_dim = self.encoder.output_dim
        self.decoder = AttentionalRNNDecoder(
            tgt_vocab,
            enc_dim,
            embed_dim,
            hidden_dim,
            decoder_layers,
            rnn_type,
            attention,
            opts,
            dropout,
            input_feed="attentional",
            init_dim=enc_dim,
            project_keys=attention in ("dot", "scaled_dot"),
            tie_embeddings=tie_embeddings,
            padding_idx=PAD_ID,
        )

    def _encode(
        self, src: Tensor, src_lengths: Tensor, host_lengths: Tensor | None = None, unpadded: bool = False
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(memory (B, S, H), mask (B, S), final state (B, H))``."""
        enc, final = self.encoder(src, src_lengths, host_lengths, unpadded)  # (B, S, 2He), (B, 2He)
        return enc, lengths_to_mask(src_lengths, src.shape[1]), final  # mask: True = real token

    def forward(
        self,
        src: Tensor,
        src_lengths: Tensor,
        tgt_in: Tensor,
        need_weights: bool = False,
        host_lengths: Tensor | None = None,
        unpadded: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
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
        enc, mask, final = self._encode(src, src_lengths, host_lengths, unpadded)
        return self.decoder(enc, mask, tgt_in, summary=final, need_weights=need_weights)

    def init_state(self, src: Tensor, src_lengths: Tensor) -> DecoderState:
        """Decoding state for :meth:`step` (encoder outputs, mask, key projections under ``source``)."""
        enc, mask, final = self._encode(src, src_lengths)
        return self.decoder.init_state(enc, mask, summary=final)

    def step(
        self, last_tokens: Tensor, state: DecoderState, need_weights: bool = False
    ) -> tuple[Tensor, DecoderState, Tensor | None]:
        """One decoding step: last_tokens (N,) → log_probs (N, V) float32, new state, attention (N, S) or None."""
        return self.decoder.step(last_tokens, state, need_weights)

    @property
    def cross_attentions(self) -> list[nn.Module]:
        """The decoder's one attention module (queried once per output step)."""
        return [self.decoder.attention]
