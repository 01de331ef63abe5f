"""Our Transformer on CTranslate2 (``attn-translate export --format ctranslate2``): the same translations, scores and
alignments as PyTorch, loaded by ``Translator.from_pretrained`` and ``attn-translate translate``; clear errors for
what it cannot hold."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("ctranslate2")

from core.errors import CheckpointError, ConfigError
from core.text.tokenizers import BOS_ID, EOS_ID, PAD_ID
from tasks.translation.cli import main
from tasks.translation.export import export_ctranslate2
from tasks.translation.inference import Translation, Translator

SENTENCES = ["I love you", "the red car is small", "zebra blue ñ", "the small dog", "I love the red car", "dog"]
PAIRS = ["I love you", "te quiero", "the red car", "el coche rojo", "the small dog", "el perro pequeño"]
TRANSFORMER = {"arch": "transformer", "hidden_dim": 16, "num_heads": 2, "ffn_dim": 32, "decoder_layers": 2}


def _tiny(tmp: Path, **options: Any) -> Path:
    """A random tiny translation model folder whose network, like a trained one, gives PAD and BOS no mass.

    Both engines never emit PAD or BOS, but differently: we set their log-probabilities to -inf after the softmax,
    CTranslate2 masks their logits (renormalising over the rest). A trained model gives them no mass, so the two
    agree; a random one would not, so the fixture makes them impossible: a constant channel of the final norm's
    output times a large negative weight.
    """
    from core.text.tokenizers import CharTokenizer
    from tasks.translation.module import TranslationModule

    torch.manual_seed(0)
    src, tgt = CharTokenizer.train(PAIRS[::2]), CharTokenizer.train(PAIRS[1::2])
    model = TranslationModule(plot_examples=0, dropout=0.0, **options)
    model.set_tokenizers(src, tgt)
    model.build_model()
    net = model.model
    with torch.no_grad():  # larger weights than the init: outputs that depend on the input
        for p in model.parameters():
            p.mul_(3.0)
        if options.get("arch") == "transformer":
            net.decoder.norm.weight[0], net.decoder.norm.bias[0] = 0.0, 1.0  # channel 0 of the output is always 1
            net.out.weight[[PAD_ID, BOS_ID], 0] = -60.0
    return Path(model.save_pretrained(tmp / "model"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("ct2")
    folder = _tiny(tmp, **TRANSFORMER)
    assert main(["export", "--ckpt", str(folder), "--out", str(tmp / "ct2"), "--format", "ctranslate2",
                 "--quantize", "float32"]) == 0  # fmt: skip
    return folder, tmp / "ct2"


def _teacher_forced(eager: Translator, text: str, hyp: Translation) -> torch.Tensor:
    """The (T, S) attention PyTorch computes for ``hyp`` given its tokens (what the figure must show)."""
    ids = eager.encode([text])[0]
    tgt = [BOS_ID] + [eager.tgt_tokenizer.token_to_id(t) for t in hyp.tgt_tokens]
    with torch.no_grad():
        _, w = eager.network(torch.tensor([ids]), torch.tensor([len(ids)]), torch.tensor([tgt]), need_weights=True)
    return w[0, : len(hyp.tgt_tokens)]


def test_export_writes_an_engine_folder(exported: tuple[Path, Path]) -> None:
    _, out = exported
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert (config["engine"], config["quantize"], config["task"]) == ("ctranslate2", "float32", "translation")
    assert {"tokenizer_src.json", "tokenizer_tgt.json", "README.md"} <= {p.name for p in out.iterdir()}
    assert (out / "ctranslate2" / "model.bin").is_file()
    assert "ctranslate2" in (out / "README.md").read_text(encoding="utf-8")


def _teacher_forced_score(eager: Translator, text: str, hyp: Translation, limit: int) -> float:
    """``hyp``'s length-normalised log-probability under the PyTorch network (EOS included, as both report it,
    unless the hypothesis was cut at the batch's length ``limit``)."""
    ids = eager.encode([text])[0]
    out = [eager.tgt_tokenizer.token_to_id(t) for t in hyp.tgt_tokens]
    if len(out) < limit:
        out.append(EOS_ID)
    with torch.no_grad():
        logits, _ = eager.network(torch.tensor([ids]), torch.tensor([len(ids)]), torch.tensor([[BOS_ID] + out[:-1]]))
    logp = logits[0].log_softmax(-1).gather(1, torch.tensor(out)[:, None]).sum()
    return float(logp) / len(out) ** eager.length_penalty


def test_ctranslate2_translates_as_pytorch(exported: tuple[Path, Path]) -> None:
    """Greedy and the best beam hypothesis: the same tokens, scores to float precision and alignments.

    Lower n-best entries may differ, explained: our search ends an item once it holds ``beam`` finished hypotheses
    (OpenNMT-py's rule); CTranslate2 ends it by its own rule, so when ``nbest`` fills most of the beam it can return
    other (sometimes better-scoring) runners-up. Each one it returns is still scored exactly as PyTorch scores it.
    """
    folder, out = exported
    eager, ct2 = Translator.from_pretrained(folder), Translator.from_pretrained(out)
    assert (ct2.engine, eager.engine) == ("ctranslate2", "pytorch")
    assert (ct2.max_len, ct2.length_penalty) == (eager.max_len, eager.length_penalty)
    limit = min(eager.max_len, 2 * max(map(len, eager.encode(SENTENCES))) + 10)  # one batch: one length limit
    for beam, nbest in ((1, 1), (2, 1), (4, 1), (4, 4)):
        want = eager.translate(SENTENCES, beam=beam, nbest=nbest, return_attention=True)
        got = ct2.translate(SENTENCES, beam=beam, nbest=nbest, return_attention=True)
        for text, w, g in zip(SENTENCES, want, got):
            ws, gs = (w, g) if nbest > 1 else ([w], [g])
            assert (gs[0].text, gs[0].tgt_tokens) == (ws[0].text, ws[0].tgt_tokens)
            assert gs[0].score == pytest.approx(ws[0].score, abs=2e-5)
            assert ws[0].attention is not None
            torch.testing.assert_close(gs[0].attention, ws[0].attention, atol=2e-5, rtol=1e-4)
            for h in gs:  # every hypothesis: PyTorch's score and alignment for its tokens
                assert h.score == pytest.approx(_teacher_forced_score(eager, text, h, limit), abs=2e-5)
                assert h.attention is not None
                torch.testing.assert_close(h.attention, _teacher_forced(eager, text, h), atol=2e-5, rtol=1e-4)
    assert ct2.translate("I love you") == eager.translate("I love you")
    assert ct2.unknown_words("the zebra") == eager.unknown_words("the zebra")


def test_threads_go_to_ctranslate2(
    exported: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--threads N`` becomes CTranslate2's threads per translation (``intra_threads``; 0: its default); the
    output does not change."""
    import ctranslate2

    _, out = exported
    seen: list[int] = []
    real = ctranslate2.Translator

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["intra_threads"])
        return real(*args, **kwargs)

    monkeypatch.setattr(ctranslate2, "Translator", spy)
    assert main(["translate", "--ckpt", str(out), "I love you"]) == 0
    want = capsys.readouterr().out
    assert main(["translate", "--ckpt", str(out), "--threads", "1", "I love you"]) == 0
    assert capsys.readouterr().out == want
    assert seen == [0, 1]


def test_int8_export_runs(exported: tuple[Path, Path], tmp_path: Path) -> None:
    folder, _ = exported
    out = export_ctranslate2(str(folder), str(tmp_path / "int8"), "int8")
    ct2 = Translator.from_pretrained(out)
    got = ct2.translate(SENTENCES, beam=4, nbest=2, return_attention=True)
    assert len(got) == len(SENTENCES) and all(len(hyps) == 2 for hyps in got)
    for hyps in got:
        for h in hyps:
            assert isinstance(h.text, str) and torch.isfinite(torch.tensor(h.score))
            assert h.attention is not None and h.attention.shape[0] == len(h.tgt_tokens)
    assert json.loads((out / "config.json").read_text(encoding="utf-8"))["quantize"] == "int8"


def test_cli_translates_and_plots_with_the_export(
    exported: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, out = exported
    assert main(["translate", "--ckpt", str(folder), "--beam", "3", *SENTENCES]) == 0
    want = capsys.readouterr().out
    assert main(["translate", "--ckpt", str(out), "--beam", "3", "--plot", str(tmp_path / "plots"), *SENTENCES]) == 0
    assert capsys.readouterr().out == want
    assert len(list((tmp_path / "plots").glob("*.png"))) == len(SENTENCES)
    assert main(["translate", "--ckpt", str(out), "--plot", str(tmp_path / "p2"), "--heads", "dog"]) == 2
    assert "--heads draws each head from the PyTorch network" in capsys.readouterr().err


def test_reexport_replaces_the_engine_files(exported: tuple[Path, Path], tmp_path: Path) -> None:
    folder, _ = exported
    out = tmp_path / "again"
    export_ctranslate2(str(folder), str(out), "float32")
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    export_ctranslate2(str(folder), str(out), "int8")  # an earlier export: replaced, the user's file kept
    assert json.loads((out / "config.json").read_text(encoding="utf-8"))["quantize"] == "int8"
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    Translator.from_pretrained(out).translate("dog")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.csv").write_text("x", encoding="utf-8")
    with pytest.raises(CheckpointError, match="is not empty and is not an attn-suite model folder"):
        export_ctranslate2(str(folder), str(foreign), "int8")


def test_what_ctranslate2_cannot_hold(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rnn = _tiny(tmp_path, embed_dim=8, hidden_dim=8)
    assert main(["export", "--ckpt", str(rnn), "--out", str(tmp_path / "x"), "--format", "ctranslate2"]) == 2
    err = capsys.readouterr().err
    assert "CTranslate2 runs Transformer encoder-decoders" in err and "--format onnx" in err
    assert not (tmp_path / "x").exists()
    assert main(["export", "--ckpt", str(rnn), "--out", str(tmp_path / "x"), "--quantize", "int8"]) == 2
    assert "--quantize applies to an engine --format" in capsys.readouterr().err


def test_missing_ctranslate2_is_named(exported: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    _, out = exported
    real = importlib.import_module

    def no_ct2(name: str, *args: Any) -> Any:
        if name == "ctranslate2":
            raise ImportError("No module named 'ctranslate2'")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_ct2)
    with pytest.raises(ConfigError, match=r"pip install 'attn-suite\[ctranslate2\]'"):
        Translator.from_pretrained(out)


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_tampered_exports_are_refused_naming_them(exported: tuple[Path, Path], tmp_path: Path) -> None:
    from tasks.translation.module import TranslationModule

    _, out = exported
    with pytest.raises(CheckpointError, match="is an export for the ctranslate2 inference engine"):
        TranslationModule.from_pretrained(out)  # training, validation and re-export need the PyTorch folder
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    cases = {
        "layout": ({**config, "engine_format": 99}, "an export of layout version 99"),
        "engine": ({**config, "engine": "tensorrt"}, "is an export for 'tensorrt'"),
        "options": ({**config, "hyper_parameters": {**config["hyper_parameters"], "max_len": "many"}}, "max_len"),
    }
    for name, (changed, message) in cases.items():
        bad = _copy(out, tmp_path / name)
        (bad / "config.json").write_text(json.dumps(changed), encoding="utf-8")
        with pytest.raises(CheckpointError, match=message) as info:
            Translator.from_pretrained(bad)
        assert str(bad) in str(info.value)
    bad = _copy(out, tmp_path / "no-model")
    (bad / "ctranslate2" / "model.bin").unlink()
    with pytest.raises(CheckpointError, match="ctranslate2/model.bin is missing"):
        Translator.from_pretrained(bad)
    bad = _copy(out, tmp_path / "other-vocab")  # the tokenizer of another model beside this engine model
    (bad / "tokenizer_tgt.json").write_text((bad / "tokenizer_src.json").read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(CheckpointError, match="is not the vocabulary of the export's target tokenizer"):
        Translator.from_pretrained(bad)
    bad = _copy(out, tmp_path / "junk")
    (bad / "ctranslate2" / "model.bin").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="CTranslate2 cannot load ctranslate2/"):
        Translator.from_pretrained(bad)
    with pytest.raises(ConfigError, match="an engine export has none"):
        Translator.from_pretrained(out, sha256="abc")


def test_ctranslate2_path_imports_no_torch(exported: tuple[Path, Path]) -> None:
    """Translating with the export, as a library call and through ``attn-translate translate``, imports neither
    Lightning nor PyTorch (its start-up is the engine's: a fraction of a second, where ``import torch`` alone takes
    over one); the same translation as the PyTorch folder. Attention asked for brings PyTorch in (a tensor)."""
    folder, out = exported
    code = (
        "import sys\n"
        "from tasks.translation.cli import main\n"
        "from tasks.translation.inference import Translator\n"
        f"print(Translator.from_pretrained({str(out)!r}).translate('I love you'))\n"
        f"assert main(['translate', '--ckpt', {str(out)!r}, '--nbest', '2', 'I love you']) == 0\n"
        "bad = [m for m in ('torch', 'lightning', 'torchmetrics', 'transformers', 'onnxruntime') if m in sys.modules]\n"
        "assert not bad, bad\n"
        f"Translator.from_pretrained({str(out)!r}).translate('I love you', return_attention=True)\n"
        "assert 'torch' in sys.modules\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    eager = Translator.from_pretrained(folder)
    assert lines[0] == eager.translate("I love you")
    best2 = eager.translate("I love you", nbest=2, return_attention=True)
    assert [line.split("\t")[2] for line in lines[1:]] == [h.text for h in best2]
