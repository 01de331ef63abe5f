"""The fourth task: built from the core skeleton, it learns the generated reviews and points at the words."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tasks.sentiment.cli import main
from tasks.sentiment.data import NEGATIVE, POSITIVE, SentimentDataModule, review

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "sentiment" / "default.yaml"


def test_labels_follow_polarity_and_negation() -> None:
    import random

    rng = random.Random(0)
    for _ in range(200):
        text, label = review(rng)
        words = text.split()
        adj = next(w for w in words if w in POSITIVE or w in NEGATIVE)
        assert label == int((adj in POSITIVE) != ("not" in words))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sentiment")
    assert (
        main(
            [
                "fit",
                "--config",
                str(CONFIG),
                "--trainer.default_root_dir",
                str(root),
                "--data.size",
                "1500",
                "--trainer.enable_progress_bar",
                "false",
                "--trainer.enable_model_summary",
                "false",
            ]
        )
        == 0
    )
    return root / "checkpoints" / "best.ckpt"


def test_fit_then_classify_with_attention_on_the_deciding_words(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tasks.sentiment.module import SentimentModule

    model = SentimentModule.load_from_checkpoint(trained)  # the shared safe loader (core.io.rebuild)
    dm = SentimentDataModule(size=1500)
    correct = total = 0
    ignored: list[float] = []
    for text, label in dm.splits["test"]:
        pred, _, words, weights = model.classify([text])[0]
        correct += pred == ("positive" if label else "negative")
        total += 1
        if "and" in words:  # the neutral clause after "and" decides nothing: it gets little of the attention
            ignored.append(float(weights[words.index("and") :].sum()))
    assert correct / total > 0.95
    assert sum(ignored) / len(ignored) < 0.2
    assert main(["classify", "--ckpt", str(trained), "the film was not good", "--plot", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("negative\t")
    assert (tmp_path / "0000_the_film_was_not_good.png").stat().st_size > 1000


def test_export_and_reload_folder(trained: Path, tmp_path: Path) -> None:
    from tasks.sentiment.module import SentimentModule

    assert main(["export", "--ckpt", str(trained), "--out", str(tmp_path / "folder")]) == 0
    a = SentimentModule.load_from_checkpoint(trained)
    b = SentimentModule.from_pretrained(tmp_path / "folder")
    ids, lengths = torch.tensor([[4, 5, 6]]), torch.tensor([3])
    torch.testing.assert_close(a(ids, lengths)[0], b(ids, lengths)[0])
