"""The sentiment task's parts for the core module: cross-entropy on the label, macro accuracy, predictions."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F

from core.cli.output import Prediction
from core.text.tokenizers import BaseTokenizer
from core.train.task import EvalStage, Evaluation, Objective, Stage, Task
from tasks.sentiment.data import LABELS
from tasks.sentiment.network import SentimentNetwork

Batch = dict[str, Any]


class SentimentTask(Task[SentimentNetwork, Batch]):
    """Cross-entropy on the label; scored by macro-averaged accuracy (the mean of the per-class recalls)."""

    unit = "sent"

    def __init__(self, tokenizer: BaseTokenizer, embed_dim: int, hidden_dim: int, attention_hidden: int | None) -> None:
        self.tokenizer = tokenizer
        self.sizes = (embed_dim, hidden_dim, attention_hidden)

    def build_network(self) -> SentimentNetwork:
        return SentimentNetwork(self.tokenizer.vocab_size, len(LABELS), *self.sizes)

    def objective(self, network: SentimentNetwork, batch: Batch, stage: Stage) -> Objective:
        logits, _ = network(batch["ids"], batch["lengths"])  # (B, C)
        return Objective(F.cross_entropy(logits, batch["labels"]), size=len(batch["labels"]))

    def evaluate(self, network: SentimentNetwork, batch: Batch, stage: EvalStage) -> Evaluation:
        predicted = network(batch["ids"], batch["lengths"])[0].argmax(-1).tolist()
        return Evaluation(
            batch["index"].tolist(), [LABELS[p] for p in predicted], [[LABELS[y]] for y in batch["labels"].tolist()]
        )

    def score(self, hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
        recalls = []
        for label in LABELS:
            rows = [h == label for h, (r,) in zip(hypotheses, references) if r == label]
            if rows:
                recalls.append(sum(rows) / len(rows))
        return {"acc": sum(recalls) / len(recalls)} if recalls else {}

    def predict(
        self, network: SentimentNetwork, batch: Batch, datamodule: Any, dataloader_idx: int
    ) -> list[Prediction]:
        probs = network(batch["ids"], batch["lengths"])[0].softmax(-1)  # (B, C)
        best, label = probs.max(-1)
        return [
            Prediction(int(i), (LABELS[int(c)], f"{float(p):.3f}", text))
            for i, c, p, text in zip(batch["index"].tolist(), label, best, batch["texts"])
        ]

    def batch_units(self, batch: Batch) -> float:
        return float(len(batch["labels"]))
