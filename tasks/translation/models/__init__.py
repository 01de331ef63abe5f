"""Encoder–decoder models for translation (RNN with attention, Transformer).

Both implement the same small interface used by :class:`tasks.translation.module.TranslationModule`:

* ``forward(src (B, S), src_lengths (B,), tgt_in (B, T), need_weights=False)``
  → ``(logits (B, T, V), attention (B, T, S) | None)`` — teacher forcing;
* ``init_state(src, src_lengths)`` → a ``core.decoding.beam.DecoderState`` (encoder outputs under ``source``; for
  the Transformer its cross-attention keys/values under ``shared``, one row per source, never expanded to beams);
* ``step(last_tokens (N,), state, need_weights)`` → ``(log_probs (N, V), state, attention (N, S) | None)``,
  the step function :mod:`core.decoding.beam` drives.
"""

from tasks.translation.models.rnn import RNNSeq2Seq
from tasks.translation.models.transformer import TransformerSeq2Seq

__all__ = ["RNNSeq2Seq", "TransformerSeq2Seq"]
