"""attn-app without a server: model loading, input checks, the figures of each tab, per-head attention,
the n-best additions to the task APIs, and that nothing outside the app imports Gradio."""

# The fixtures come from app_fixtures (imported below, see its docstring): test arguments "redefine" them.
# ruff: noqa: F811
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from app_fixtures import checkpoints, models  # noqa: F401  (fixtures)
from app_tiny_models import REPO, tone
from PIL import Image

from core.errors import CheckpointError
from tasks.app.inference import (
    AppInputError,
    Limits,
    example_images,
    read_audio,
    read_image,
    run_captioning,
    run_speech,
    run_translation,
    split_sentences,
)
from tasks.app.loading import demo_checkpoints, find_checkpoint, load_task_model
from tasks.translation.heads import layer_head_attention, target_ids

LIMITS = Limits(max_sentences=3, max_chars=50, max_upload_mb=1.0, max_audio_seconds=5.0)


# ------------------------------------------------------------------------------------------------ loading
def test_find_checkpoint_file_folder_and_errors(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    ckpt = checkpoints["translation"]
    assert find_checkpoint("translation", ckpt) == ckpt
    assert find_checkpoint("translation", ckpt.parent) == ckpt  # <task>.ckpt inside the folder
    single = tmp_path / "one"
    single.mkdir()
    (single / "weird-name.ckpt").write_bytes(b"x")
    assert find_checkpoint("speech", single) == single / "weird-name.ckpt"
    (single / "other.ckpt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"2 \.ckpt files"):
        find_checkpoint("speech", single)
    with pytest.raises(CheckpointError, match="does not exist"):
        find_checkpoint("speech", tmp_path / "nope")
    with pytest.raises(CheckpointError, match="does not exist"):
        find_checkpoint("speech", "hf://someone/model")  # a hub id is the shared loader's, not a local search


def test_model_folders_load_like_checkpoints(
    models: dict[str, Any], checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    """An exported model folder (and demo_output's <task>/model) is loaded by the same lean loader as a checkpoint."""
    from tasks.speech.module import SpeechModule

    folder = Path(SpeechModule.from_pretrained(checkpoints["speech"]).save_pretrained(tmp_path / "speech" / "model"))
    again = load_task_model("speech", folder)
    assert type(again) is type(models["speech"])
    audio = (torch.from_numpy(tone(1.0, 600.0)), 16000)
    assert again.transcribe(audio, beam=2) == models["speech"].transcribe(audio, beam=2)
    assert demo_checkpoints(tmp_path) == {"speech": folder}


def test_load_task_model_rejects_another_tasks_checkpoint(checkpoints: dict[str, Path]) -> None:
    with pytest.raises(CheckpointError, match="translation"):
        load_task_model("speech", checkpoints["translation"])


def test_demo_checkpoints_layout(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    root = checkpoints["translation"].parents[1]
    assert demo_checkpoints(root) == checkpoints
    with pytest.raises(CheckpointError, match="make demo"):
        demo_checkpoints(tmp_path)


# ------------------------------------------------------------------------------------------------ input checks
def test_sentence_checks() -> None:
    assert split_sentences(" a b \n\n c ", LIMITS) == ["a b", "c"]
    for bad, msg in [
        ("", "no text"),
        ("  \n ", "no text"),
        (None, "no text"),
        ("a\nb\nc\nd", "up to 3"),
        ("x" * 51, "51 characters"),
    ]:
        with pytest.raises(AppInputError, match=msg):
            split_sentences(bad, LIMITS)


def test_image_checks(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(AppInputError, match=r"notes\.png is not an image .*expected PNG, JPEG"):
        read_image(tmp_path / "notes.png", LIMITS)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(AppInputError, match="empty"):
        read_image(tmp_path / "empty.png", LIMITS)
    (tmp_path / "big.png").write_bytes(b"\0" * (2**20 + 1))
    with pytest.raises(AppInputError, match="accepts up to 1 MB"):
        read_image(tmp_path / "big.png", LIMITS)
    with pytest.raises(AppInputError, match="no image given"):
        read_image(None, LIMITS)
    # A Gradio upload payload: the message shows the name the user uploaded, not the server's temp path.
    with pytest.raises(AppInputError, match=r"^holiday\.jpg is not an image"):
        read_image({"path": str(tmp_path / "notes.png"), "orig_name": "holiday.jpg"}, LIMITS)
    Image.new("LA", (20, 10)).save(tmp_path / "grey.png")
    assert read_image(tmp_path / "grey.png", LIMITS).mode == "RGB"


def test_audio_checks(tmp_path: Path) -> None:
    cases = {
        "silent.wav": np.zeros(16000, np.float32),
        "zero.wav": np.zeros(0, np.float32),
        "long.wav": tone(5.5),
        "short.wav": tone(0.05),
    }
    for name, samples in cases.items():
        sf.write(tmp_path / name, samples, 16000)
    expected = {
        "silent.wav": "silent",
        "zero.wav": "empty",
        "long.wav": "5.5 s long; this app accepts up to 5 s",
        "short.wav": "at least 0.1 s",
    }
    for name, msg in expected.items():
        with pytest.raises(AppInputError, match=msg):
            read_audio(tmp_path / name, LIMITS)
    (tmp_path / "text.wav").write_text("hello")
    with pytest.raises(AppInputError, match="not audio this app can read: upload a WAV"):
        read_audio(tmp_path / "text.wav", LIMITS)
    sf.write(tmp_path / "ok.flac", np.stack([tone(1.0, sr=22050)] * 2, 1), 22050)  # stereo FLAC at 22.05 kHz
    wav = read_audio(tmp_path / "ok.flac", LIMITS)
    assert wav.dim() == 1 and abs(wav.numel() - 16000) <= 1


def test_beam_and_nbest_controls(models: dict[str, Any]) -> None:
    with pytest.raises(AppInputError, match="beam size must be between 1 and 10"):
        run_translation(models["translation"], "hi", 0, 1, LIMITS)
    res = run_translation(models["translation"], "hi", 2, 5, LIMITS)  # n-best is capped at the beam
    assert [r[1] for r in res.nbest] == [1, 2]


# ------------------------------------------------------------------------------------------------ each tab
def test_translation_tab_outputs(models: dict[str, Any]) -> None:
    res = run_translation(models["translation"], "the red car\nI love you", 3, 2, LIMITS)
    assert len(res.text.splitlines()) == 2
    assert [row[:2] for row in res.nbest] == [[1, 1], [1, 2], [2, 1], [2, 2]]
    assert all(isinstance(row[3], float) for row in res.nbest)
    assert res.nbest[0][3] >= res.nbest[1][3]  # best first
    assert len(res.figures) == 2 and all(img.size[0] > 100 for img, _ in res.figures)
    # 2 layers x (mean + 2 heads) per sentence for the tiny Transformer
    assert len(res.details) == 12
    assert res.details[0][1] == "1: layer 1/2, mean of heads" and res.details[-1][1] == "2: layer 2/2, head 2"
    assert res.notes == []  # this model does not know its training words: it says nothing


def test_translation_tab_names_words_never_seen(models: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from core.text.known_words import KnownWords

    model = models["translation"]
    monkeypatch.setattr(model, "known_words", KnownWords.from_texts(["the red car", "i love you"]))
    res = run_translation(model, "the red car\nI love the zebra", 2, 1, LIMITS)
    assert res.notes == ["line 2: never seen in training: zebra (their translation is a guess)"]
    assert res.figures[1][1].endswith("(never seen in training: zebra)") and "never" not in res.figures[0][1]


def test_layer_head_attention_matches_the_search(models: dict[str, Any]) -> None:
    """Teacher forcing the hypothesis reproduces the search's alignment (last layer, mean of heads)."""
    model = models["translation"]
    hyp = model.translate(["the red car"], beam=3, return_attention=True)[0]
    src = model.src_tokenizer.encode("the red car")
    layers = layer_head_attention(model, src, target_ids(model.tgt_tokenizer, hyp.tgt_tokens))  # the app's Translator
    assert [tuple(w.shape) for w in layers] == [(2, len(hyp.tgt_tokens), len(src))] * 2
    torch.testing.assert_close(layers[-1].mean(0), hyp.attention, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(layers[0], layers[1])  # the layers really are different maps


def test_layer_head_attention_rnn_multihead() -> None:
    """The RNN decoder queries its attention once per step: heads are stacked over the steps."""
    from core.text.tokenizers import WordTokenizer
    from tasks.translation.module import TranslationModule

    torch.manual_seed(0)
    tok = WordTokenizer.train(["a b c d e f"])
    model = TranslationModule(
        embed_dim=16, hidden_dim=16, attention="multihead", attention_options={"num_heads": 2}, dropout=0.0, max_len=6
    )
    model.set_tokenizers(tok, tok)
    model.build_model()
    hyp = model.translate(["a b c"], beam=2, return_attention=True)[0]
    src = tok.encode("a b c")
    (w,) = layer_head_attention(model.translator, src, target_ids(tok, hyp.tgt_tokens))
    assert tuple(w.shape) == (2, len(hyp.tgt_tokens), len(src))
    torch.testing.assert_close(w.mean(0), hyp.attention, atol=1e-5, rtol=1e-4)


def test_captioning_tab_outputs(models: dict[str, Any], tmp_path: Path) -> None:
    paths = example_images(tmp_path, count=2, image_size=96)
    assert [p.name for p in paths] == ["scene_0.png", "scene_1.png"] and Image.open(paths[0]).size == (96, 96)
    res = run_captioning(models["captioning"], paths[0], 3, 3, LIMITS)
    assert res.text and [r[0] for r in res.nbest] == [1, 2, 3] and res.nbest[0][1] == res.text
    assert res.nbest[0][2] >= res.nbest[-1][2]
    assert len(res.figures) == 1
    assert [w for _, w in res.details] == res.text.split()[: len(res.details)] and res.details


def test_speech_tab_outputs(models: dict[str, Any], tmp_path: Path) -> None:
    sf.write(tmp_path / "a.wav", tone(1.0, 600.0), 16000)
    res = run_speech(models["speech"], tmp_path / "a.wav", 2, 2, LIMITS)
    assert res.nbest and res.nbest[0][1] == res.text and len(res.nbest) <= 2
    assert len(res.figures) == 1 and res.figures[0][0].size[1] > 100


# ------------------------------------------------------------------------------------------------ task APIs
def test_caption_nbest_keeps_the_one_best_api(models: dict[str, Any], tmp_path: Path) -> None:
    model = models["captioning"]
    (img,) = example_images(tmp_path, count=1)
    plain = model.caption([img], beam=3)
    assert isinstance(plain[0], str)
    text, maps = model.caption([img], beam=3, return_attention=True)[0]
    hyps = model.caption([img], beam=3, nbest=3)[0]  # Caption objects with scores and attention
    assert len(hyps) == 3 and hyps[0].text == text == plain[0]
    torch.testing.assert_close(hyps[0].attention, maps)
    scores = [h.score for h in hyps]
    assert scores == sorted(scores, reverse=True)
    with pytest.raises(ValueError, match="nbest <= beam_size"):
        model.caption([img], beam=2, nbest=3)


def test_transcribe_nbest_keeps_the_one_best_api(models: dict[str, Any]) -> None:
    model = models["speech"]
    audio = (torch.from_numpy(tone(1.0, 600.0)), 16000)
    plain = model.transcribe([audio], beam=3)
    assert isinstance(plain[0], str)
    res = model.transcribe([audio], beam=3, nbest=3)[0]
    assert res.text == plain[0] and res.nbest[0][0] == res.text and 1 <= len(res.nbest) <= 3
    scores = [s for _, s in res.nbest]
    assert scores == sorted(scores, reverse=True)
    hyps = model.decode_features(model.logmel(audio[0])[None], torch.tensor([101]), beam=3, nbest=2)[0]
    assert len(hyps) == 2 and hyps[0].score >= hyps[1].score


def test_long_audio_alternatives_join_chunks() -> None:
    from tasks.speech.inference import Hypothesis, _join

    chunks = [([Hypothesis("a", -1.0), Hypothesis("b", -2.0)], None), ([Hypothesis("c", -3.0)], None), ([], None)]
    assert _join(chunks).nbest == [("a c", -2.0), ("b c", -2.5)]  # the silent (empty) chunk adds nothing


# ------------------------------------------------------------------------------------------------ packaging
def test_core_and_task_clis_do_not_import_gradio() -> None:
    code = (
        "import sys, core, core.viz, core.decoding.beam, tasks.demo, tasks.translation.cli, tasks.captioning.cli, "
        "tasks.speech.cli, tasks.app, tasks.app.loading, tasks.app.inference, tasks.translation.heads, tasks.app.cli; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('gradio', 'gradio_client')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout + out.stderr
