"""Generated review sentences ("the film was not good" -> negative) and their data module."""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from core.text.tokenizers import WordTokenizer

POSITIVE, NEGATIVE = ("good", "great", "fun", "lovely", "brilliant"), ("bad", "boring", "awful", "dull", "terrible")
NOUNS, FILLER = ("film", "book", "meal", "game", "song", "show"), ("long", "short", "new", "old", "loud")
LABELS = ("negative", "positive")

Row = tuple[int, tuple[str, int]]  # (dataset index, (sentence, label))


def review(rng: random.Random) -> tuple[str, int]:
    """One sentence and its label: the adjective's polarity, flipped by "not"; a neutral clause may follow."""
    positive, negated = rng.random() < 0.5, rng.random() < 0.3
    words = ["the", rng.choice(NOUNS), rng.choice(("is", "was"))] + ["not"] * negated
    words += [rng.choice(("very", "really"))] * (rng.random() < 0.3) + [rng.choice(POSITIVE if positive else NEGATIVE)]
    if rng.random() < 0.5:  # a distractor the attention should learn to ignore
        words += ["and", "the", rng.choice(NOUNS), rng.choice(("is", "was")), rng.choice(FILLER)]
    return " ".join(words), int(positive != negated)


class _Rows(Dataset[Row]):
    """Sentences with their labels, each numbered by its position (the ``index`` of a batch)."""

    def __init__(self, rows: list[tuple[str, int]]) -> None:
        self.rows: list[Row] = list(enumerate(rows))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Row:
        return self.rows[i]


class SentimentDataModule(L.LightningDataModule):
    """Train/val/test splits of generated reviews (80/10/10) and a word vocabulary from the training split."""

    def __init__(self, size: int = 3000, batch_size: int = 64, seed: int = 0, predict_path: str | None = None) -> None:
        """Args: ``size`` generated sentences, ``batch_size``, ``seed``; ``predict_path``: a UTF-8 file of
        sentences, one per line, for ``predict`` (default: the test split)."""
        super().__init__()
        self.save_hyperparameters()
        self.batch_size = batch_size
        self.predict_path = predict_path
        rng = random.Random(seed)
        data = [review(rng) for _ in range(size)]
        n = size // 10
        self.splits = {"train": data[2 * n :], "val": data[:n], "test": data[n : 2 * n]}
        self.tokenizer = WordTokenizer.train([t for t, _ in self.splits["train"]], min_freq=1)
        self.vocab = self.tokenizer.to_dict()  # the CLI links it into the model

    def collate(self, rows: list[Row]) -> dict[str, Any]:
        """``(dataset index, (sentence, label))`` rows -> a padded batch (``index``, ``texts`` stay beside it)."""
        ids = [self.tokenizer.encode(t) or [self.tokenizer.unk_id] for _, (t, _) in rows]
        x = torch.zeros(len(ids), max(map(len, ids)), dtype=torch.long)  # (B, S), 0 = padding
        for i, seq in enumerate(ids):
            x[i, : len(seq)] = torch.tensor(seq)
        return {
            "ids": x,
            "lengths": torch.tensor([len(s) for s in ids]),
            "labels": torch.tensor([y for _, (_, y) in rows]),
            "index": torch.tensor([i for i, _ in rows]),
            "texts": [t for _, (t, _) in rows],
        }

    def _loader(self, rows: list[tuple[str, int]], shuffle: bool = False) -> DataLoader:
        return DataLoader(_Rows(rows), batch_size=self.batch_size, shuffle=shuffle, collate_fn=self.collate)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.splits["train"], shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.splits["val"])

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.splits["test"])

    def predict_dataloader(self) -> DataLoader:
        if self.predict_path is None:
            return self._loader(self.splits["test"])
        with open(self.predict_path, encoding="utf-8") as f:
            return self._loader([(line.rstrip("\n"), 0) for line in f])  # the label is unused
