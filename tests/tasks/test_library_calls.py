"""The library calls of every task: one input gives one result, absurd beams and broken models are named."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import BUILDERS

from core.errors import ConfigError, DecodingError

IMAGE = Image.fromarray(np.full((40, 40, 3), 128, np.uint8))
WAVE = ((0.3 * np.sin(2 * np.pi * 300 * np.arange(8000) / 16000)).astype(np.float32), 16000)


def _call(task: str, model: Any, item: Any, **kw: Any) -> Any:
    name = {"translation": "translate", "captioning": "caption", "speech": "transcribe"}[task]
    return getattr(model, name)(item, **kw)


ONE = {"translation": "i love you", "captioning": IMAGE, "speech": WAVE}


@pytest.mark.parametrize("task", sorted(BUILDERS))
def test_a_single_input_gives_its_one_result(task: str, tmp_path: Any) -> None:
    model = BUILDERS[task]()
    single = _call(task, model, ONE[task], beam=2)
    assert isinstance(single, str)
    assert single == _call(task, model, [ONE[task]], beam=2)[0]
    if task == "translation":  # a string is one sentence, never a list of its characters
        assert len(_call(task, model, ["i love you", "the red car"], beam=2)) == 2
    if task == "speech":
        import soundfile as sf

        sf.write(tmp_path / "a.wav", WAVE[0], WAVE[1])
        assert _call(task, model, str(tmp_path / "a.wav"), beam=2) == single


@pytest.mark.parametrize("task", sorted(BUILDERS))
def test_absurd_beam_is_refused(task: str) -> None:
    model = BUILDERS[task]()
    with pytest.raises(ConfigError, match="beam"):
        _call(task, model, [ONE[task]], beam=10**6)


@pytest.mark.parametrize("task", ["translation", "captioning"])
def test_non_finite_outputs_are_a_decoding_error(task: str) -> None:
    model = BUILDERS[task]()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    with pytest.raises(DecodingError, match="no hypothesis"):
        _call(task, model, [ONE[task]], beam=2)
