"""The lean inference path: :meth:`Translator.from_pretrained` loads a model folder or ``.ckpt`` without Lightning,
through the same checks as ``TranslationModule.from_pretrained``, and translates exactly as the module does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from core.errors import CheckpointError, ConfigError
from tasks.translation.inference import Translation, Translator

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "compat_v2" / "translation"
EXPECTED: dict[str, Any] = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))
SENTENCES = ["I love you", "the red car is small", "", "zebra blue ñ"]
PAIRS = ["I love you", "te quiero", "the red car", "el coche rojo", "the small dog", "el perro pequeño"]


def _tiny(tmp: Path, **options: Any) -> tuple[Any, Path, Path]:
    """A random tiny TranslationModule, written as a model folder and as a ``.ckpt`` (as ``fit`` writes it)."""
    from core.text.tokenizers import CharTokenizer
    from tasks.translation.module import TranslationModule

    torch.manual_seed(0)
    src, tgt = CharTokenizer.train(PAIRS[::2]), CharTokenizer.train(PAIRS[1::2])
    model = TranslationModule(plot_examples=0, dropout=0.0, **options)
    model.set_tokenizers(src, tgt)
    model.build_model()
    with torch.no_grad():  # larger weights than the init: outputs that depend on the input
        for p in model.parameters():
            p.mul_(3.0)
    folder = Path(model.save_pretrained(tmp / "model"))
    ckpt: dict[str, Any] = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    model.on_save_checkpoint(ckpt)
    path = tmp / "model.ckpt"
    torch.save(ckpt, path)
    return model, folder, path


def _same(a: Any, b: Any) -> None:
    """Equal translations, attention included."""
    if isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
        return
    if isinstance(a, Translation):
        assert isinstance(b, Translation)
        assert (a.text, a.src_tokens, a.tgt_tokens) == (b.text, b.src_tokens, b.tgt_tokens)
        assert a.score == pytest.approx(b.score, rel=1e-6, abs=1e-6)
        assert (a.attention is None) == (b.attention is None)
        if a.attention is not None:
            torch.testing.assert_close(a.attention, b.attention)
        return
    assert a == b


OPTIONS = {
    "rnn-additive": {"embed_dim": 8, "hidden_dim": 8},
    "rnn-location-lstm": {"embed_dim": 8, "hidden_dim": 8, "attention": "location", "rnn_type": "lstm"},
    "rnn-none": {"embed_dim": 8, "hidden_dim": 8, "attention": "none"},
    "transformer": {"arch": "transformer", "hidden_dim": 16, "num_heads": 2, "ffn_dim": 32, "decoder_layers": 2},
}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_lean_translator_matches_the_module(name: str, tmp_path: Path) -> None:
    from tasks.translation.module import TranslationModule

    model, folder, ckpt = _tiny(tmp_path, **OPTIONS[name])
    for path in (folder, ckpt):
        library = TranslationModule.from_pretrained(path)
        lean = Translator.from_pretrained(path)
        assert lean.device == torch.device("cpu") and not lean.network.training
        assert (lean.max_len, lean.max_source_tokens, lean.length_penalty) == (
            library.translator.max_len,
            library.translator.max_source_tokens,
            library.translator.length_penalty,
        )
        assert (lean.attention, lean.multihead) == (library.translator.attention, library.translator.multihead)
        _same(
            lean.translate(SENTENCES, beam=1, return_attention=True),
            model.translate(SENTENCES, beam=1, return_attention=True),
        )
        for beam, nbest in ((1, 1), (3, 1), (3, 3)):
            want = library.translate(SENTENCES, beam=beam, nbest=nbest, return_attention=True)
            _same(lean.translate(SENTENCES, beam=beam, nbest=nbest, return_attention=True), want)
        assert lean.translate("I love you") == library.translate("I love you")
        assert lean.unknown_words("the zebra") == library.unknown_words("the zebra")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_lean_translator_reads_old_files_as_before(name: str) -> None:
    """The committed files of format 2 (``test_translation_compat.py``): the lean path decodes what the old code
    did, attention and scores included."""
    lean = Translator.from_pretrained(FIXTURES / name)
    want = EXPECTED[name]
    greedy = lean.translate(SENTENCES, beam=1, return_attention=True)
    assert [t.text for t in greedy] == want["greedy"]
    for got, old in zip(greedy, want["attention"]):
        assert (got.attention is None) == (old is None)
        if old is not None:
            torch.testing.assert_close(got.attention, torch.tensor(old), rtol=1e-5, atol=1e-6)
    assert lean.translate(SENTENCES, beam=3) == want["beam"]
    nbest = lean.translate(SENTENCES, beam=3, nbest=3, return_attention=True)
    assert [[h.text for h in hyps] for hyps in nbest] == [[t for t, _ in hyps] for hyps in want["nbest"]]
    for hyps, old in zip(nbest, want["nbest"]):
        assert [h.score for h in hyps] == pytest.approx([s for _, s in old], rel=1e-5, abs=1e-6)


def test_lean_translator_overrides(tmp_path: Path) -> None:
    _, folder, _ = _tiny(tmp_path, **OPTIONS["rnn-additive"])
    assert Translator.from_pretrained(folder, max_len=3).max_len == 3
    with pytest.raises(ConfigError, match="no option lr"):
        Translator.from_pretrained(folder, lr=0.1)


def _tamper(path: Path, kind: str) -> None:
    ckpt = torch.load(path, weights_only=True)
    if kind == "too-large":
        ckpt["hyper_parameters"]["hidden_dim"] = 99_999
    elif kind == "wrong-type":
        ckpt["hyper_parameters"]["encoder_layers"] = "two"
    elif kind == "wrong-shape":
        name = next(k for k, v in ckpt["state_dict"].items() if v.dim() == 2)
        ckpt["state_dict"][name] = torch.zeros(3, 5)
    elif kind == "nan":
        name = next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point())
        ckpt["state_dict"][name] = torch.full_like(ckpt["state_dict"][name], float("nan"))
    elif kind == "no-tokenizers":
        del ckpt["attn_suite"]["tokenizers"]
    elif kind == "instantiation":
        ckpt["hyper_parameters"]["attention_options"] = {"class_path": "os.system"}
    torch.save(ckpt, path)


TAMPERED = {
    "too-large": "hyper-parameter 'hidden_dim' = 99999: expected a value in",
    "wrong-type": "hyper-parameter 'encoder_layers' = 'two': expected int",
    "wrong-shape": "does not fit the translation network",
    "nan": "NaN or infinite",
    "no-tokenizers": "has no tokenizers",
    "instantiation": "would name Python code to import",
}


@pytest.mark.parametrize("kind", list(TAMPERED))
def test_lean_translator_refuses_tampered_files_naming_them(kind: str, tmp_path: Path) -> None:
    from tasks.translation.module import TranslationModule

    _, _, path = _tiny(tmp_path, **OPTIONS["rnn-additive"])
    _tamper(path, kind)
    with pytest.raises(CheckpointError) as lean:
        Translator.from_pretrained(path)
    assert str(path) in str(lean.value) and TAMPERED[kind] in str(lean.value), lean.value
    with pytest.raises(CheckpointError) as library:  # the module refuses it too
        TranslationModule.from_pretrained(path)
    assert str(path) in str(library.value)


def test_lean_translator_bad_files(bad_checkpoints: Any, bad_checkpoint_kind: str) -> None:
    path = bad_checkpoints(bad_checkpoint_kind, "translation")
    with pytest.raises(CheckpointError) as info:
        Translator.from_pretrained(path)
    assert bad_checkpoints.expected(bad_checkpoint_kind, "translation") in str(info.value)
    assert str(path.name) in str(info.value)


def test_lean_translator_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a folder|not found"):
        Translator.from_pretrained(tmp_path / "nowhere")
    _, folder, _ = _tiny(tmp_path, **OPTIONS["rnn-additive"])
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    (folder / "config.json").write_text(json.dumps({**config, "task": "captioning"}), encoding="utf-8")
    with pytest.raises(CheckpointError, match=f"model folder {folder} holds a 'captioning' model"):
        Translator.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({**config, "architecture": "Other"}), encoding="utf-8")
    with pytest.raises(CheckpointError, match="holds a 'Other', expected a TranslationModule"):
        Translator.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "model.safetensors").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="model.safetensors is truncated"):
        Translator.from_pretrained(folder)


def test_lean_translator_imports_no_lightning() -> None:
    """Loading a model folder and translating imports neither Lightning nor torchmetrics (start-up: issue 25), nor
    torch._dynamo, which the shape check on the meta device used to pull in (most of a second)."""
    code = (
        "import sys\n"
        "from tasks.translation.inference import Translator\n"
        f"t = Translator.from_pretrained({str(FIXTURES / 'rnn')!r})\n"
        "assert isinstance(t.translate('I love you'), str)\n"
        f"Translator.from_pretrained({str(FIXTURES / 'transformer.ckpt')!r}).translate('I love you')\n"
        "heavy = ('lightning', 'torchmetrics', 'lightning_fabric', 'transformers', 'torch._dynamo')\n"
        "bad = sorted(m for m in heavy if m in sys.modules)\n"
        "assert not bad, bad\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_translate_threads_sets_pytorch_threads(capsys: pytest.CaptureFixture[str]) -> None:
    """``--threads N`` on a PyTorch model sets PyTorch's threads (an engine export's go to its loader:
    tests/tasks/test_translation_ct2.py); the translation does not change."""
    import torch

    from tasks.translation.cli import main

    before = torch.get_num_threads()
    try:
        assert main(["translate", "--ckpt", str(FIXTURES / "rnn"), "I love you"]) == 0
        want = capsys.readouterr().out
        torch.set_num_threads(2)
        assert main(["translate", "--ckpt", str(FIXTURES / "rnn"), "--threads", "1", "I love you"]) == 0
        assert torch.get_num_threads() == 1
        assert capsys.readouterr().out == want
    finally:
        torch.set_num_threads(before)


def test_translate_subcommand_imports_no_lightning() -> None:
    """``attn-translate translate`` loads through the lean Translator: the CLI's inference path imports neither
    Lightning nor torch._dynamo, and prints the same translation as the library call."""
    code = (
        "import sys\n"
        "from tasks.translation.cli import main\n"
        f"assert main(['translate', '--ckpt', {str(FIXTURES / 'rnn')!r}, 'I love you']) == 0\n"
        "heavy = ('lightning', 'torchmetrics', 'lightning_fabric', 'transformers', 'torch._dynamo')\n"
        "bad = sorted(m for m in heavy if m in sys.modules)\n"
        "assert not bad, bad\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    from tasks.translation.module import TranslationModule

    assert out.stdout.strip() == TranslationModule.from_pretrained(FIXTURES / "rnn").translate("I love you", beam=5)
