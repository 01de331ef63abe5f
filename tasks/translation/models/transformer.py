"""Pre-norm Transformer encoder–decoder on ``core`` layers (``core.layers``, multi-head attention).

* Attention runs with ``need_weights=False`` (fused SDPA kernels) except for the last decoder layer's
  cross-attention when alignment weights are requested.
* Incremental decoding: each decoder self-attention keeps a KV cache ``(N, H, t, Dh)`` grown by one
  position per step, under ``DecoderState.cache``: beam search hands the step the row order to follow
  (``reorder``), applied in the same copy that appends the new position. Cross-attention keys/values are
  projected once per source and kept under ``DecoderState.shared``: beam search neither expands nor
  reorders them, the beams of an item attend to one copy.
"""

from __future__ import annotations

from torch import Tensor, nn

from core.attention import lengths_to_mask
from core.decoding.beam import DecoderState
from core.decoding.fast_paths import step_log_probs, vocab_projection
from core.layers import SinusoidalPositions, TransformerDecoder, TransformerEncoder
from core.text.tokenizers import PAD_ID


class TransformerSeq2Seq(nn.Module):
    """Transformer encoder–decoder.

    Args:
        src_vocab: source vocabulary size.
        tgt_vocab: target vocabulary size.
        d_model: model width D.
        num_heads: attention heads H.
        ffn_dim: FFN inner size.
        encoder_layers: encoder blocks.
        decoder_layers: decoder blocks.
        dropout: dropout rate.
        tie_embeddings: share the target embedding with the output projection.
        share_src_tgt_embeddings: also share the source embedding (needs a joint vocabulary).
        max_positions: longest sequence the position table covers.
    """

    def __init__(
        self,
        src_vocab: int,
        tgt_vocab: int,
        d_model: int = 256,
        num_heads: int = 4,
        ffn_dim: int = 1024,
        encoder_layers: int = 3,
        decoder_layers: int = 3,
        dropout: float = 0.1,
        tie_embeddings: bool = True,
        share_src_tgt_embeddings: bool = False,
        max_positions: int = 512,
    ) -> None:
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
        self.positions = SinusoidalPositions(d_model, max_positions)
        self.encoder = TransformerEncoder(d_model, num_heads, ffn_dim, encoder_layers, dropout)
        self.decoder = TransformerDecoder(d_model, num_heads, ffn_dim, decoder_layers, dropout)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(d_model, tgt_vocab, bias=False)
        if tie_embeddings:
            self.out.weight = self.tgt_embedding.weight  # (V, D) shared

    def _embed(self, emb: nn.Embedding, ids: Tensor, offset: int = 0) -> Tensor:
        return self.dropout(self.positions(emb(ids), offset))  # (B, T, D): emb * sqrt(D) + positions

    def encode(self, src: Tensor, src_lengths: Tensor, unpadded: bool = False) -> tuple[Tensor, Tensor | None]:
        """src (B, S) → memory (B, S, D), mask (B, S) or None.

        ``unpadded=True`` says the caller knows every source fills all S positions (the module knows
        from the lengths it kept on the host): attention then runs without a mask, on SDPA's unmasked
        fused kernels and without the masking ops. A Python bool, not a tensor check, so that
        `torch.compile` sees no data-dependent branch and checking lengths on a GPU never syncs.
        """
        mask = None if unpadded else lengths_to_mask(src_lengths, src.shape[1])  # (B, S)
        return self.encoder(self._embed(self.src_embedding, src), mask), mask

    def forward(
        self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, need_weights: bool = False, unpadded: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Teacher-forced logits (B, T, V) and last-layer cross-attention averaged over heads (B, T, S).

        ``unpadded``: no source has padding (see `encode`).
        """
        memory, mask = self.encode(src, src_lengths, unpadded)
        x, weights = self.decoder(self._embed(self.tgt_embedding, tgt_in), memory, mask, need_weights)  # (B, T, D)
        return self.out(x), weights

    def init_state(self, src: Tensor, src_lengths: Tensor) -> DecoderState:
        """Encode ``src`` and return the decoder's first state (see `core.layers.TransformerDecoder.init_state`)."""
        return self.decoder.init_state(*self.encode(src, src_lengths))

    @property
    def cross_attentions(self) -> list[nn.Module]:
        """The cross-attention module of every decoder layer, bottom first."""
        return self.decoder.cross_attentions

    def step(
        self, last_tokens: Tensor, state: DecoderState, need_weights: bool = False
    ) -> tuple[Tensor, DecoderState, Tensor | None]:
        """One incremental step: last_tokens (N,) → log_probs (N, V), new state, attention (N, S) | None."""
        t = state.cache[0][0].shape[2]  # positions already decoded
        x = self._embed(self.tgt_embedding, last_tokens[:, None], offset=t)  # (N,) -> (N, 1, D)
        h, state, weights = self.decoder.step(x, state, need_weights)  # (N, D)
        return step_log_probs(vocab_projection(self.out, h)), state, weights  # (N, V)
