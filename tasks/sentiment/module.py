"""The sentiment task on the core module: its typed options and ``classify`` for inference (the task's parts:
:mod:`tasks.sentiment.task`)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from core.io.hparams import SIZE
from core.text.tokenizers import tokenizer_from_dict
from core.train.module import TaskModule
from tasks.sentiment.data import LABELS
from tasks.sentiment.network import SentimentNetwork
from tasks.sentiment.task import SentimentTask


class SentimentModule(TaskModule[SentimentNetwork]):
    """Sentence classifier whose attention over the words is the explanation it draws.

    Args:
        vocab: word vocabulary (``WordTokenizer.to_dict()``), linked from the data module by the CLI.
        embed_dim: word embedding size.
        hidden_dim: GRU size per direction.
        attention_hidden: None for the article's ``softmax(Dense(1)(h))``, else ``w . tanh(W h)`` of this size.
        optimizer, lr, weight_decay, betas, eps, warmup_steps, lr_schedule, min_lr_ratio: the optimizer and its
            schedule (`core.train.schedule.OptimizerOptions`).
    """

    TASK, MONITOR, HPARAMS_FROM_DATA = "sentiment", "val/acc", ("vocab",)
    HPARAM_BOUNDS = {"embed_dim": SIZE, "hidden_dim": SIZE, "attention_hidden": SIZE}

    def __init__(
        self,
        vocab: dict[str, Any] | None = None,
        embed_dim: int = 32,
        hidden_dim: int = 32,
        attention_hidden: int | None = None,
        optimizer: Literal["adamw", "adam", "sgd"] = "adam",
        lr: float = 0.01,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        warmup_steps: int = 0,
        lr_schedule: Literal["inverse_sqrt", "cosine", "linear", "constant"] = "constant",
        min_lr_ratio: float = 0.0,
    ) -> None:
        tokenizer = tokenizer_from_dict(vocab or {"type": "word", "vocab": ["<pad>", "<s>", "</s>", "<unk>"]})
        super().__init__(SentimentTask(tokenizer, embed_dim, hidden_dim, attention_hidden))
        self.save_hyperparameters()
        self.tokenizer = tokenizer
        self.model = self.task.build_network()

    @classmethod
    def upgrade_state_dict(cls, state: dict[str, Any], version: int) -> dict[str, Any]:
        """Before the core module, the network's layers sat on the module itself (no ``model.`` prefix)."""
        if any(k.startswith(("embed.", "rnn.", "attention.", "out.")) for k in state):
            return {f"model.{k}": v for k, v in state.items()}
        return state

    @torch.no_grad()
    def classify(self, texts: list[str]) -> list[tuple[str, float, list[str], Tensor]]:
        """``(label, probability, words, attention over the words)`` per sentence."""
        self.eval()
        out = []
        for text in texts:
            ids = torch.tensor([self.tokenizer.encode(text) or [self.tokenizer.unk_id]], device=self.device)
            logits, weights = self.network(ids, torch.tensor([ids.shape[1]], device=self.device))
            p = logits.softmax(-1)[0]
            words = [self.tokenizer.id_to_token(int(i)) for i in ids[0]]
            out.append((LABELS[int(p.argmax())], float(p.max()), words, weights[0].cpu()))
        return out
