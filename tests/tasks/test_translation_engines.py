"""Engine exports end to end, as a user runs them: ``attn-translate export --format onnx|ctranslate2`` writes a
folder that ``attn-translate translate --ckpt`` and ``Translator.from_pretrained`` run on its engine with the outputs
of the PyTorch folder; what an export cannot do is refused with a message saying why.

(The CTranslate2 parity details are in ``test_translation_ct2.py``, the ONNX graphs' in ``test_translation_onnx.py``.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("onnxruntime")

from core.errors import CheckpointError
from tasks.translation.cli import main
from tasks.translation.inference import Translator

SENTENCES = ["I love you", "the red car is small", "zebra blue ñ", "the small dog", "dog"]
PAIRS = ["I love you", "te quiero", "the red car", "el coche rojo", "the small dog", "el perro pequeño"]


def _folder(tmp: Path, **options: Any) -> Path:
    from core.text.tokenizers import CharTokenizer
    from tasks.translation.module import TranslationModule

    torch.manual_seed(0)
    src, tgt = CharTokenizer.train(PAIRS[::2]), CharTokenizer.train(PAIRS[1::2])
    model = TranslationModule(plot_examples=0, dropout=0.0, **options)
    model.set_tokenizers(src, tgt)
    model.build_model()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    return Path(model.save_pretrained(tmp / "model"))


@pytest.fixture(scope="module")
def rnn_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("onnx")
    folder = _folder(tmp, embed_dim=8, hidden_dim=8, attention="location")
    assert main(["export", "--ckpt", str(folder), "--out", str(tmp / "onnx"), "--format", "onnx"]) == 0
    return folder, tmp / "onnx"


def test_onnx_export_translates_as_pytorch_from_the_cli(
    rnn_export: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, out = rnn_export
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert (config["engine"], config["quantize"]) == ("onnxruntime", "float32")
    assert Translator.from_pretrained(out).engine == "onnxruntime"
    for beam in ("1", "4"):
        assert main(["translate", "--ckpt", str(folder), "--beam", beam, *SENTENCES]) == 0
        want = capsys.readouterr().out
        assert main(["translate", "--ckpt", str(out), "--beam", beam, *SENTENCES]) == 0
        assert capsys.readouterr().out == want
    assert main(["translate", "--ckpt", str(out), "--nbest", "3", "--plot", str(tmp_path / "p"), "dog"]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [r[0] for r in rows] == ["0"] * 3 and len(list((tmp_path / "p").glob("*.png"))) == 1
    assert main(["translate", "--ckpt", str(out), "--plot", str(tmp_path / "p"), "--heads", "dog"]) == 2
    assert "use the PyTorch model folder for --heads" in capsys.readouterr().err


def test_onnx_int8_export_from_the_cli(rnn_export: tuple[Path, Path], tmp_path: Path) -> None:
    folder, _ = rnn_export
    out = tmp_path / "int8"
    assert main(["export", "--ckpt", str(folder), "--out", str(out), "--format", "onnx", "--quantize", "int8"]) == 0
    got = Translator.from_pretrained(out).translate(SENTENCES, beam=3, nbest=2)
    assert len(got) == len(SENTENCES) and all(len(h) == 2 and all(isinstance(t, str) for t in h) for h in got)


def test_export_options_and_engines_are_checked(
    rnn_export: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, out = rnn_export
    bad = [
        (["--format", "onnx", "--quantize", "int8_float16"], "--format onnx takes --quantize float32, int8"),
        (["--format", "onnx", "--push", "me/x"], "--push applies to the PyTorch model folder"),
    ]
    for extra, message in bad:
        assert main(["export", "--ckpt", str(folder), "--out", str(tmp_path / "x"), *extra]) == 2
        assert message in capsys.readouterr().err
    # an export is for inference: exporting it again, or training from it, needs the PyTorch folder
    assert main(["export", "--ckpt", str(out), "--out", str(tmp_path / "y"), "--format", "ctranslate2"]) == 2
    assert "cannot be trained, evaluated or exported again" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()
    from tasks.translation.module import TranslationModule

    with pytest.raises(CheckpointError, match="is an export for the onnxruntime inference engine"):
        TranslationModule.from_pretrained(out)
    assert main(["test", "--ckpt_path", str(out)]) == 2
    assert "is an export for the onnxruntime inference engine" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_onnx_path_imports_no_lightning(rnn_export: tuple[Path, Path]) -> None:
    _, out = rnn_export
    code = (
        "import sys\n"
        "from tasks.translation.cli import main\n"
        f"assert main(['translate', '--ckpt', {str(out)!r}, 'I love you']) == 0\n"
        "bad = [m for m in ('lightning', 'torchmetrics', 'lightning_fabric', 'transformers', 'torch._dynamo',"
        " 'ctranslate2') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)


@pytest.mark.parametrize("options", [{"embed_dim": 16, "hidden_dim": 32}, {"arch": "transformer", "hidden_dim": 16}])
def test_models_with_dropout_export(options: dict[str, Any], tmp_path: Path) -> None:
    """Trained models have dropout (0.1 by default): the export runs them in eval mode throughout (the exporter once
    left the network in training mode after tracing, so its own check compared against a dropped-out network)."""
    from core.text.tokenizers import CharTokenizer
    from tasks.translation.module import TranslationModule

    torch.manual_seed(0)
    model = TranslationModule(plot_examples=0, dropout=0.1, **options)
    model.set_tokenizers(CharTokenizer.train(PAIRS[::2]), CharTokenizer.train(PAIRS[1::2]))
    model.build_model()
    folder = Path(model.save_pretrained(tmp_path / "model"))
    assert main(["export", "--ckpt", str(folder), "--out", str(tmp_path / "onnx"), "--format", "onnx"]) == 0
    eager, onnx = Translator.from_pretrained(folder), Translator.from_pretrained(tmp_path / "onnx")
    assert onnx.translate(SENTENCES, beam=1) == eager.translate(SENTENCES, beam=1)
