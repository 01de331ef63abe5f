"""attn-app on the lean loaders: every task loads through its Lightning-free inference object, so starting the app
(imports, loading the three models, building the page) imports no Lightning, and each tab answers what the task's
module answers."""

# The fixtures come from app_fixtures (imported below, see its docstring): test arguments "redefine" them.
# ruff: noqa: F811
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import soundfile as sf
from app_fixtures import checkpoints, models  # noqa: F401  (fixtures)
from app_tiny_models import REPO, tone

from tasks.app.inference import Limits, example_images, run_captioning, run_speech, run_translation
from tasks.captioning.inference import Captioner
from tasks.registry import REGISTRY
from tasks.speech.inference import Transcriber
from tasks.translation.inference import Translator

LEAN = ("lightning", "torchmetrics", "lightning_fabric")


def test_the_app_loads_lean_inference_objects(models: dict[str, Any]) -> None:
    assert isinstance(models["translation"], Translator)
    assert isinstance(models["captioning"], Captioner)
    assert isinstance(models["speech"], Transcriber)
    assert {t: REGISTRY[t].inference_class() for t in models} == {
        "translation": Translator,
        "captioning": Captioner,
        "speech": Transcriber,
    }


def test_each_tab_answers_what_the_module_answers(
    models: dict[str, Any], checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    from tasks.captioning.module import CaptioningModule
    from tasks.speech.module import SpeechModule
    from tasks.translation.module import TranslationModule

    limits = Limits()
    want = TranslationModule.from_pretrained(checkpoints["translation"]).translate(
        ["the red car", "I love you"], beam=3, nbest=2
    )
    res = run_translation(models["translation"], "the red car\nI love you", 3, 2, limits)
    assert [row[2] for row in res.nbest] == [t for hyps in want for t in hyps]
    (image,) = example_images(tmp_path, count=1, image_size=96)
    hyps = CaptioningModule.from_pretrained(checkpoints["captioning"]).caption([str(image)], beam=3, nbest=3)[0]
    res = run_captioning(models["captioning"], image, 3, 3, limits)
    assert [row[1] for row in res.nbest] == [h.text for h in hyps] and res.figures
    sf.write(tmp_path / "a.wav", tone(1.0, 600.0), 16000)
    heard = SpeechModule.from_pretrained(checkpoints["speech"]).transcribe(str(tmp_path / "a.wav"), beam=2, nbest=2)
    res = run_speech(models["speech"], tmp_path / "a.wav", 2, 2, limits)
    assert [row[1] for row in res.nbest] == [t for t, _ in heard.nbest] and res.text == heard.text


def test_app_start_imports_no_lightning(checkpoints: dict[str, Path]) -> None:
    """``attn-app``'s start (its CLI module, loading the three models as ``--from`` does, building the page; not
    launching a server) imports neither Lightning nor torchmetrics: Gradio is the app's only heavy import. Nor do the
    translation tab's per-head figures (``tasks.translation.heads``, whose Marian adapter takes the fine-tuning policy
    from the Lightning-free ``core.train.freeze``)."""
    root = checkpoints["translation"].parents[1]
    code = (
        "import sys\n"
        "from tasks.app.cli import build_parser\n"
        "from tasks.app.loading import demo_checkpoints, load_task_model\n"
        "from tasks.app.app import build_app\n"
        "from tasks.app.inference import Limits\n"
        f"models = {{t: load_task_model(t, p) for t, p in demo_checkpoints({str(root)!r}).items()}}\n"
        "assert sorted(models) == ['captioning', 'speech', 'translation'], models\n"
        "build_app(models, Limits()).close()\n"
        "from tasks.translation.heads import layer_head_attention, target_ids\n"
        "t = models['translation']\n"
        "best = t.translate('I love you', return_attention=True)\n"
        "ids = t.src_tokenizer.encode('I love you')\n"
        "heads = layer_head_attention(t, ids, target_ids(t.tgt_tokenizer, best.tgt_tokens))\n"
        "assert len(heads) >= 1\n"
        f"bad = sorted(m for m in {LEAN!r} if m in sys.modules)\n"
        "assert not bad, bad\n"
        "assert 'gradio' in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
