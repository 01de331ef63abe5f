"""Speech checkpoints and model folders written before the core module (commit bedf076) load with the same outputs.

The fixture ``tests/fixtures/compat_v2/speech/`` was written by that commit's code (its ``make_fixture.py`` says
how): two tiny models trained a few steps on tones, each a weights-only Lightning checkpoint (the front end's
weights still named ``logmel.*`` / ``stats.*``, on the module itself), the first also a model folder, and
``expected.json``, what the old code decoded for fixed inputs. Today's code must decode exactly the same.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from tiny_models import save_checkpoint

from tasks.speech.module import SpeechModule

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "compat_v2" / "speech"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text(encoding="utf-8"))
MODELS = sorted(EXPECTED["models"])


def _maker() -> ModuleType:
    """The fixture's script: its ``outputs`` makes the very calls whose results ``expected.json`` holds."""
    spec = importlib.util.spec_from_file_location("speech_compat_fixture", FIXTURE / "make_fixture.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MAKER = _maker()


def outputs(model: SpeechModule) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return json.loads(json.dumps(MAKER.outputs(model)))  # tuples as lists, as in the JSON


def test_fixture_is_what_the_old_code_wrote() -> None:
    ckpt = torch.load(FIXTURE / "lstm_location.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["attn_suite"]["task"] == "speech" and ckpt["attn_suite"]["format"] == 2
    state = ckpt["state_dict"]
    assert "stats.mean" in state and "logmel.mel.mel_scale.fb" in state and "model.stats.mean" not in state
    assert MAKER.INPUTS == EXPECTED["inputs"]


@pytest.mark.parametrize("name", MODELS)
def test_old_checkpoint_decodes_as_before(name: str, tmp_path: Path) -> None:
    assert outputs(SpeechModule.load_from_checkpoint(FIXTURE / f"{name}.ckpt")) == EXPECTED["models"][name]["outputs"]
    # written again by today's code (front end under model.), it still decodes the same
    model = SpeechModule.load_from_checkpoint(FIXTURE / f"{name}.ckpt")  # (outputs() changed the chunk length)
    again = SpeechModule.load_from_checkpoint(save_checkpoint(model, tmp_path / "again.ckpt"))
    assert any(k.startswith("model.stats.") for k in again.state_dict())
    assert outputs(again) == EXPECTED["models"][name]["outputs"]


def test_old_model_folder_decodes_as_before(tmp_path: Path) -> None:
    name = next(n for n in MODELS if EXPECTED["models"][n]["folder"])
    assert outputs(SpeechModule.from_pretrained(FIXTURE / name)) == EXPECTED["models"][name]["outputs"]
    folder = Path(SpeechModule.from_pretrained(FIXTURE / name).save_pretrained(tmp_path / "again"))
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in (FIXTURE / name).iterdir())
    assert outputs(SpeechModule.from_pretrained(folder)) == EXPECTED["models"][name]["outputs"]


@pytest.mark.parametrize("name", MODELS)
def test_old_checkpoint_through_the_ckpt_path_hooks(name: str) -> None:
    """``--ckpt_path`` (fit/validate/test/predict): a module built from the options, then Lightning's hook and
    ``load_state_dict`` with the file's weights, as the trainer restores them."""
    ckpt = torch.load(FIXTURE / f"{name}.ckpt", map_location="cpu", weights_only=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SpeechModule(**EXPECTED["models"][name]["options"])
    model.on_load_checkpoint(ckpt)
    model.load_state_dict(ckpt["state_dict"])
    stored = {k: v for k, v in ckpt["attn_suite"].items() if k not in ("task", "format", "training")}
    assert model.task_metadata() == stored
    assert outputs(model.eval()) == EXPECTED["models"][name]["outputs"]
