"""The app's translation tab on engine exports (CTranslate2, ONNX Runtime): the same text, n-best and alignment as
the PyTorch folder, and a note instead of the per-layer and per-head views, which need the PyTorch network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("gradio", reason="the app extra is not installed (pip install -e '.[app]')")

from core.text.tokenizers import BOS_ID, PAD_ID
from tasks.app.inference import DEFAULT_LIMITS, run_translation
from tasks.translation.export import export_ctranslate2, export_onnx
from tasks.translation.inference import Translator

PAIRS = ["I love you", "te quiero", "the red car", "el coche rojo", "the small dog", "el perro pequeño"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from core.text.tokenizers import CharTokenizer
    from tasks.translation.module import TranslationModule

    torch.manual_seed(0)
    src, tgt = CharTokenizer.train(PAIRS[::2]), CharTokenizer.train(PAIRS[1::2])
    model = TranslationModule(
        arch="transformer", hidden_dim=16, num_heads=2, ffn_dim=32, decoder_layers=2, plot_examples=0, dropout=0.0
    )
    model.set_tokenizers(src, tgt)
    model.build_model()
    net = model.model
    with torch.no_grad():  # as a trained model: outputs that depend on the input, no mass on PAD and BOS (which
        for p in model.parameters():  # the engines suppress differently; see tests/tasks/test_translation_ct2.py)
            p.mul_(3.0)
        net.decoder.norm.weight[0], net.decoder.norm.bias[0] = 0.0, 1.0  # channel 0 of the output is always 1
        net.out.weight[[PAD_ID, BOS_ID], 0] = -60.0
    return Path(model.save_pretrained(tmp_path_factory.mktemp("app_engines") / "model"))


@pytest.mark.parametrize("engine", ["ctranslate2", "onnxruntime"])
def test_translation_tab_on_an_export(folder: Path, tmp_path: Path, engine: str) -> None:
    pytest.importorskip(engine)
    export = export_ctranslate2 if engine == "ctranslate2" else export_onnx
    out = export(str(folder), str(tmp_path / engine), "float32", False)
    eager, exported = Translator.from_pretrained(folder), Translator.from_pretrained(out)
    assert exported.engine == engine
    want = run_translation(eager, "the red car\nI love you", 3, 2, DEFAULT_LIMITS)
    got = run_translation(exported, "the red car\nI love you", 3, 2, DEFAULT_LIMITS)
    assert got.text == want.text
    # the best hypothesis as PyTorch's; runners-up may differ on CTranslate2 (its own stopping rule, see
    # tests/tasks/test_translation_ct2.py)
    assert [row[:2] for row in got.nbest] == [row[:2] for row in want.nbest]
    best = [(g, w) for g, w in zip(got.nbest, want.nbest) if w[1] == 1]
    assert [g[2] for g, _ in best] == [w[2] for _, w in best]
    assert [g[3] for g, _ in best] == pytest.approx([w[3] for _, w in best], abs=1e-3)
    assert [title for _, title in got.figures] == [title for _, title in want.figures]
    assert want.details and not got.details
    assert got.notes == [f"this model runs on {engine}: per-layer and per-head views need its PyTorch model folder"]


def test_app_threads_reach_an_export(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``attn-app --threads N`` loads an export with N engine threads (``load_task_model(..., threads=N)``)."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    from tasks.app.loading import load_task_model

    out = export_ctranslate2(str(folder), str(tmp_path / "ct2"), "float32", False)
    seen: list[int] = []
    real = ctranslate2.Translator

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(int(kwargs["intra_threads"]))  # type: ignore[call-overload]
        return real(*args, **kwargs)

    monkeypatch.setattr(ctranslate2, "Translator", spy)
    model = load_task_model("translation", out, threads=1)
    assert (model.engine, seen) == ("ctranslate2", [1])
    assert model.translate("I love you") == Translator.from_pretrained(folder).translate("I love you")
