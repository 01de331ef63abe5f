"""Translation checkpoints and model folders written before the core module (commit bedf076) load with today's
code and translate exactly as the old code did (``tests/fixtures/compat_v2/translation/make_fixture.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tasks.translation.module import TranslationModule

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "compat_v2" / "translation"
EXPECTED: dict[str, Any] = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))
SENTENCES = ["I love you", "the red car is small", "", "zebra blue ñ"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_old_files_translate_as_before(name: str) -> None:
    path = FIXTURES / name
    model = (
        TranslationModule.load_from_checkpoint(path)
        if name.endswith(".ckpt")
        else TranslationModule.from_pretrained(path)
    )
    want = EXPECTED[name]
    greedy = model.translate(SENTENCES, beam=1, return_attention=True)
    assert [t.text for t in greedy] == want["greedy"]
    for got, old in zip(greedy, want["attention"]):
        assert (got.attention is None) == (old is None)
        if old is not None:
            torch.testing.assert_close(got.attention, torch.tensor(old), rtol=1e-5, atol=1e-6)
    assert model.translate(SENTENCES, beam=3) == want["beam"]
    nbest = model.translate(SENTENCES, beam=3, nbest=3, return_attention=True)
    assert [[h.text for h in hyps] for hyps in nbest] == [[t for t, _ in hyps] for hyps in want["nbest"]]
    for hyps, old in zip(nbest, want["nbest"]):
        assert [h.score for h in hyps] == pytest.approx([s for _, s in old], rel=1e-5, abs=1e-6)
