"""``attn-sentiment``: ``fit`` / ``test`` with LightningCLI, ``classify`` sentences and draw the attention."""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from core.cli.infer import InferenceSpec, InputItem, Output
from core.cli.task import TaskCLI, task_main


class SentimentCLI(TaskCLI):
    def link_task_arguments(self, parser: Any) -> None:
        parser.link_arguments("data.vocab", "model.vocab", apply_on="instantiate")


def _decode(model: Any, texts: list[str], args: argparse.Namespace) -> list[Output]:
    from core.viz import plot_alignment, save_figure

    def plot(stem: Path, r: Any) -> list[Path]:
        return [save_figure(plot_alignment(r[3][None], r[2], [r[0]], title=f"{r[0]} ({r[1]:.2f})"), f"{stem}.png")]

    return [Output([(r[0], f"{r[1]:.3f}", t)], partial(plot, r=r)) for t, r in zip(texts, model.classify(texts))]


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("texts", nargs="+")


def _inputs(args: argparse.Namespace) -> Iterator[InputItem]:
    for i, text in enumerate(args.texts):
        yield InputItem(i, text, partial(str, text))  # loading a command-line sentence is the sentence itself


def main(argv: Sequence[str] | None = None) -> int:
    from tasks.sentiment.data import SentimentDataModule
    from tasks.sentiment.module import SentimentModule

    spec = InferenceSpec(
        "attn-sentiment classify",
        "Classify sentences ('label<TAB>probability<TAB>sentence' per line).",
        SentimentModule,
        _add_arguments,
        _inputs,
        _decode,
    )
    return task_main(argv, SentimentModule, SentimentDataModule, spec, cli_class=SentimentCLI)


if __name__ == "__main__":
    raise SystemExit(main())
