"""Word embeddings -> BiGRU -> attention pooling (``core.attention``'s ``pooling``) -> class scores."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from core.attention import build_attention, lengths_to_mask
from core.io.hparams import RATE, SIZE
from core.io.task_io import TaskCheckpointMixin
from core.text.tokenizers import tokenizer_from_dict
from tasks.sentiment.data import LABELS


class SentimentModule(TaskCheckpointMixin, L.LightningModule):
    """Sentence classifier whose attention over the words is the explanation it draws.

    Args:
        vocab: word vocabulary (``WordTokenizer.to_dict()``), linked from the data module by the CLI.
        embed_dim: word embedding size.
        hidden_dim: GRU size per direction.
        attention_hidden: None for the article's ``softmax(Dense(1)(h))``, else ``w . tanh(W h)`` of this size.
        lr: Adam learning rate.
    """

    TASK, MONITOR, HPARAMS_FROM_DATA = "sentiment", "val/acc", ("vocab",)
    HPARAM_BOUNDS = {"embed_dim": SIZE, "hidden_dim": SIZE, "attention_hidden": SIZE, "lr": RATE}

    def __init__(
        self,
        vocab: dict[str, Any] | None = None,
        embed_dim: int = 32,
        hidden_dim: int = 32,
        attention_hidden: int | None = None,
        lr: float = 0.01,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.tokenizer = tokenizer_from_dict(vocab or {"type": "word", "vocab": ["<pad>", "<s>", "</s>", "<unk>"]})
        self.embed = nn.Embedding(self.tokenizer.vocab_size, embed_dim, padding_idx=0)
        self.rnn = nn.GRU(embed_dim, hidden_dim, batch_first=True, bidirectional=True)
        self.attention = build_attention(
            "pooling", query_dim=2 * hidden_dim, key_dim=2 * hidden_dim, hidden_dim=attention_hidden
        )
        self.out = nn.Linear(2 * hidden_dim, len(LABELS))
        self.val_acc, self.test_acc = MulticlassAccuracy(len(LABELS)), MulticlassAccuracy(len(LABELS))

    def forward(self, ids: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``ids (B, S)``, ``lengths (B,)`` -> logits ``(B, C)`` and attention over the words ``(B, S)``."""
        h, _ = self.rnn(self.embed(ids))  # (B, S, 2H); padding is masked out of the pooling below
        pooled = self.attention(None, h, h, lengths_to_mask(lengths, ids.shape[1]))
        return self.out(pooled.context), pooled.weights

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = F.cross_entropy(self(batch["ids"], batch["lengths"])[0], batch["labels"])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _eval(self, batch: dict[str, Tensor], stage: str) -> None:
        metric = self.val_acc if stage == "val" else self.test_acc
        metric(self(batch["ids"], batch["lengths"])[0].argmax(-1), batch["labels"])
        self.log(f"{stage}/acc", metric, prog_bar=True)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    @torch.no_grad()
    def classify(self, texts: list[str]) -> list[tuple[str, float, list[str], Tensor]]:
        """``(label, probability, words, attention over the words)`` per sentence."""
        self.eval()
        out = []
        for text in texts:
            ids = torch.tensor([self.tokenizer.encode(text) or [self.tokenizer.unk_id]], device=self.device)
            logits, weights = self(ids, torch.tensor([ids.shape[1]], device=self.device))
            p = logits.softmax(-1)[0]
            out.append(
                (
                    LABELS[int(p.argmax())],
                    float(p.max()),
                    [self.tokenizer.id_to_token(int(i)) for i in ids[0]],
                    weights[0].cpu(),
                )
            )
        return out
