"""Checkpoints and model folders written before captioning ran on the core module (commit bedf076) still load,
and decode exactly what the code that wrote them decoded.

``tests/fixtures/compat_v2/captioning`` holds two tiny trained models (an ``hf:`` ViT encoder with a
Show-Attend-Tell LSTM decoder, and with a Transformer decoder) as that code wrote them -- ``rnn.ckpt``,
``transformer.ckpt`` and the model folder ``rnn/`` -- their input images, and ``expected.json``: that code's
greedy and beam-search captions, n-best scores and attention maps of those images (``make_fixture.py`` there
says how they were made).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tasks.captioning.module import CaptioningModule

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "compat_v2" / "captioning"
EXPECTED: dict[str, Any] = json.loads((FIXTURE / "expected.json").read_text(encoding="utf-8"))


def _decoded(model: CaptioningModule) -> dict[str, Any]:
    """The outputs ``make_fixture.py`` recorded, decoded by today's code."""
    images = [str(FIXTURE / "inputs" / name) for name in EXPECTED["inputs"]]
    nbest = model.caption(images, beam=3, nbest=2)
    attended = model.caption(images, beam=2, return_attention=True)
    return {
        "greedy": model.caption(images, beam=1),
        "beam3": model.caption(images, beam=3),
        "nbest": [[[c.text, c.score] for c in hyps] for hyps in nbest],
        "attention": [[text, weights.flatten(1).tolist()] for text, weights in attended],
    }


def _assert_same(got: dict[str, Any], expected: dict[str, Any]) -> None:
    assert got["greedy"] == expected["greedy"]
    assert got["beam3"] == expected["beam3"]
    assert [[t for t, _ in hyps] for hyps in got["nbest"]] == [[t for t, _ in hyps] for hyps in expected["nbest"]]
    for hyps, old in zip(got["nbest"], expected["nbest"]):
        assert [s for _, s in hyps] == pytest.approx([s for _, s in old], abs=1e-6)
    assert [t for t, _ in got["attention"]] == [t for t, _ in expected["attention"]]
    for (_, maps), (_, old) in zip(got["attention"], expected["attention"]):
        assert torch.tensor(maps).shape == torch.tensor(old).shape
        assert torch.allclose(torch.tensor(maps), torch.tensor(old), atol=1e-6)  # stored rounded to 7 decimals


@pytest.mark.parametrize("name", ["rnn.ckpt", "transformer.ckpt"])
def test_checkpoint_of_bedf076_decodes_the_same(name: str) -> None:
    raw = torch.load(FIXTURE / name, weights_only=True)
    assert any(k.startswith("encoder.") for k in raw["state_dict"])  # the module's own names of that code
    assert not any(k.startswith("model.") for k in raw["state_dict"])
    model = CaptioningModule.load_from_checkpoint(FIXTURE / name)
    assert {k.split(".")[0] for k in model.state_dict()} == {"model"}
    _assert_same(_decoded(model), EXPECTED[name])
    assert model.task_metadata() == {
        k: v for k, v in raw["attn_suite"].items() if k not in ("task", "format", "training")
    }


def test_model_folder_of_bedf076_decodes_the_same(tmp_path: Path) -> None:
    model = CaptioningModule.from_pretrained(FIXTURE / "rnn")
    _assert_same(_decoded(model), EXPECTED["rnn"])
    # written again by today's code, the folder holds the same files and loads to the same outputs
    again = Path(model.save_pretrained(tmp_path / "again"))
    assert sorted(p.name for p in again.iterdir()) == sorted(p.name for p in (FIXTURE / "rnn").iterdir())
    assert json.loads((again / "vocab.json").read_text()) == json.loads((FIXTURE / "rnn" / "vocab.json").read_text())
    _assert_same(_decoded(CaptioningModule.from_pretrained(again)), EXPECTED["rnn"])
