"""The sentiment network: word embeddings -> BiGRU -> attention pooling (``core.attention``'s ``pooling``) -> class
scores. The attention over the words is the explanation the task draws."""

from __future__ import annotations

from torch import Tensor, nn

from core.attention import build_attention, lengths_to_mask


class SentimentNetwork(nn.Module):
    """Sentence classifier with attention pooling.

    Args:
        vocab_size: word vocabulary size (id 0 is padding).
        num_classes: classes.
        embed_dim: word embedding size.
        hidden_dim: GRU size per direction.
        attention_hidden: None for the article's ``softmax(Dense(1)(h))``, else ``w . tanh(W h)`` of this size.
    """

    def __init__(
        self, vocab_size: int, num_classes: int, embed_dim: int, hidden_dim: int, attention_hidden: int | None
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.rnn = nn.GRU(embed_dim, hidden_dim, batch_first=True, bidirectional=True)
        self.attention = build_attention(
            "pooling", query_dim=2 * hidden_dim, key_dim=2 * hidden_dim, hidden_dim=attention_hidden
        )
        self.out = nn.Linear(2 * hidden_dim, num_classes)

    def forward(self, ids: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``ids (B, S)``, ``lengths (B,)`` -> logits ``(B, C)`` and attention over the words ``(B, S)``."""
        h, _ = self.rnn(self.embed(ids))  # (B, S, 2H); padding is masked out of the pooling below
        pooled = self.attention(None, h, h, lengths_to_mask(lengths, ids.shape[1]))
        return self.out(pooled.context), pooled.weights
