"""Speech recognition on `transformers` encoders (``--model.encoder hf:...``): tiny wav2vec2 / HuBERT / WavLM / Whisper
folders built here, a learned weighted sum of their layers under our attention decoder and CTC, fit through the CLI,
offline checkpoint loading, chunked transcription, resampling and bad input."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from core.errors import ConfigError
from tasks.speech.cli import main
from tasks.speech.module import SpeechModule

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hf_tiny import speech_folder, vision_folder, whisper_folder
from tiny_models import save_checkpoint

TINY = [
    "--model.hidden_dim=16",
    "--model.embed_dim=8",
    "--model.beam_size=2",
    "--model.attention_options={hidden_dim: 8, conv_channels: 2, kernel_size: 3}",
    "--data.num_workers=0",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.logger=false",
]
SMALL = {
    "hidden_dim": 16,
    "embed_dim": 8,
    "beam_size": 2,
    "attention_options": {"hidden_dim": 8, "conv_channels": 2, "kernel_size": 3},
}


def _noise(seconds: float, seed: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(16000 * seconds))).astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 clips of 1.0-1.2 s with one-word transcripts, as a JSONL manifest (the checkpoint keeps the longest
    training duration as its chunk length, which must be at least 1 s)."""
    root = tmp_path_factory.mktemp("asr_corpus")
    words = ["yes", "no", "up", "down", "left", "right"]
    lines = []
    for i in range(16):
        sf.write(root / f"u{i}.wav", _noise(1.0 + 0.05 * (i % 5), i), 16000)
        lines.append(json.dumps({"path": f"u{i}.wav", "text": words[i % 6]}))
    (root / "m.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root / "m.jsonl"


def _fit(corpus: Path, root: Path, encoder: Path, *extra: str) -> int:
    return main(
        [
            "fit",
            f"--data.train={corpus}",
            "--data.val_fraction=0.25",
            *TINY,
            "--trainer.max_steps=3",
            "--trainer.max_epochs=3",
            f"--trainer.default_root_dir={root}",
            "--trainer.limit_val_batches=1",
            f"--model.encoder=hf:{encoder}",
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def w2v_run(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``fit`` with a 2-layer wav2vec2 (top layer fine-tuned at a tenth of the LR); (last.ckpt, source folder)."""
    folder = speech_folder(tmp_path_factory.mktemp("hf_speech") / "w2v")
    root = tmp_path_factory.mktemp("w2v_fit")
    assert _fit(corpus, root, folder, "--model.trainable_blocks=1", "--model.encoder_lr_scale=0.1") == 0
    ckpts = sorted(root.rglob("last.ckpt"))
    assert ckpts
    return ckpts[0], folder


def test_wav2vec2_checkpoint_offline_chunked_transcription_and_plots(
    w2v_run: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import huggingface_hub
    import transformers

    ckpt, folder = w2v_run
    raw = torch.load(ckpt, weights_only=True, map_location="cpu")
    meta, state = raw["attn_suite"], raw["state_dict"]
    assert meta["pretrained"]["model_type"] == "wav2vec2"
    assert meta["pretrained"]["processor"] == {
        "sampling_rate": 16000,
        "do_normalize": True,
        "return_attention_mask": True,
    }
    assert not torch.equal(state["model.encoder.layer_weights"], torch.zeros(3))  # the layer mix learned
    original = SpeechModule(encoder=f"hf:{folder}", **SMALL).model.encoder.backbone.state_dict()
    key = "feature_extractor.conv_layers.0.conv.weight"  # the CNN feature encoder stays frozen
    assert torch.equal(state[f"model.encoder.backbone.{key}"], original[key])

    shutil.rmtree(folder)  # the pretrained source is gone; nothing may be downloaded or read from it

    def refuse(*a: Any, **k: Any) -> None:
        raise AssertionError("a checkpoint load tried to download or read pretrained weights")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", classmethod(refuse))
    model = SpeechModule.load_from_checkpoint(ckpt)
    assert model.reads_waveforms and model.max_chunk_seconds is not None and model.max_chunk_seconds < 1.5
    long = np.concatenate([_noise(1.2, 1), np.zeros(3200, np.float32), _noise(1.2, 2)])  # longer than a chunk
    res = model.transcribe([(long, 16000)], beam=2, return_attention=True)[0]
    assert len(res.chunks) >= 2 and all(c.weights.shape[1] > 0 for c in res.chunks)
    out = model.save_pretrained(tmp_path / "exported")
    again = SpeechModule.from_pretrained(out)
    assert again.transcribe([(long, 16000)], beam=2) == [res.text]
    sf.write(tmp_path / "a.wav", _noise(0.7, 3), 16000)
    assert main(["transcribe", "--ckpt", str(out), str(tmp_path / "a.wav"), "--plot", str(tmp_path / "plots")]) == 0
    assert capsys.readouterr().out.startswith(str(tmp_path / "a.wav"))
    assert list((tmp_path / "plots").glob("*.png"))


def test_resume_and_test_from_checkpoint_need_no_source(
    w2v_run: tuple[Path, Path], corpus: Path, tmp_path: Path
) -> None:
    """``test --ckpt_path`` rebuilds the encoder from the checkpoint's config (its folder is gone, see above)."""
    ckpt, folder = w2v_run
    shutil.rmtree(folder, ignore_errors=True)
    assert (
        main(
            [
                "test",
                f"--data.train={corpus}",
                "--data.val_fraction=0.25",
                *TINY,
                f"--model.encoder=hf:{folder}",
                f"--trainer.default_root_dir={tmp_path}",
                "--trainer.limit_test_batches=1",
                f"--ckpt_path={ckpt}",
            ]
        )
        == 0
    )


@pytest.mark.parametrize("model_type,mask", [("hubert", False), ("wavlm", True)])
def test_hubert_wavlm_padding_and_round_trip(tmp_path: Path, model_type: str, mask: bool) -> None:
    folder = speech_folder(tmp_path / model_type, model_type, attention_mask=mask)
    torch.manual_seed(0)
    model = SpeechModule(encoder=f"hf:{folder}", trainable_blocks=0, **SMALL).eval()
    enc = model.model.encoder
    assert {n for n, p in enc.named_parameters() if p.requires_grad} == {"layer_weights"}  # frozen encoder
    short, longer = torch.from_numpy(_noise(0.5, 0)), torch.from_numpy(_noise(0.8, 1))
    wavs = torch.nn.utils.rnn.pad_sequence([short, longer], batch_first=True)  # (2, N)
    with torch.no_grad():
        feats, frames = enc(wavs, torch.tensor([short.numel(), longer.numel()]))
        alone, n_alone = enc(short[None], torch.tensor([short.numel()]))
    assert feats.shape[-1] == 32 and int(frames[0]) == int(n_alone[0]) == alone.shape[1]
    if mask:  # with an attention mask, padding does not change an utterance's features
        assert torch.allclose(feats[0, : alone.shape[1]], alone[0], atol=1e-4)
    audio = [(_noise(0.6, 5), 16000), (_noise(0.4, 6), 8000)]  # any input rate: resampled to 16 kHz first
    expected = model.transcribe(audio, beam=2)
    loaded = SpeechModule.load_from_checkpoint(save_checkpoint(model, tmp_path / "m.ckpt"))
    assert loaded.transcribe(audio, beam=2) == expected


def test_encoder_rate_other_than_16k_is_resampled(tmp_path: Path) -> None:
    folder = speech_folder(tmp_path / "w2v8k")
    cfg = json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8"))
    (folder / "preprocessor_config.json").write_text(json.dumps({**cfg, "sampling_rate": 8000}), encoding="utf-8")
    model = SpeechModule(encoder=f"hf:{folder}", **SMALL).eval()
    with torch.no_grad():
        _, frames = model.model.encoder(torch.from_numpy(_noise(1.0, 0))[None], torch.tensor([16000]))
    expected = model.model.encoder.backbone._get_feat_extract_output_lengths(torch.tensor([8000]))
    assert int(frames[0]) == int(expected[0])  # one second at 8 kHz


def test_whisper_encoder(tmp_path: Path) -> None:
    folder = whisper_folder(tmp_path / "whisper")
    model = SpeechModule(encoder=f"hf:{folder}", trainable_blocks=1, **SMALL).eval()
    assert type(model.model.encoder.backbone).__name__ == "WhisperEncoder"  # the decoder is not kept
    with torch.no_grad():
        feats, frames = model.model.encoder(torch.from_numpy(_noise(1.0, 0))[None], torch.tensor([16000]))
    assert int(frames[0]) == 50 and feats.shape[-1] == 32  # 20 ms frames
    audio = [(_noise(0.5, 1), 16000)]
    expected = model.transcribe(audio, beam=2)
    loaded = SpeechModule.load_from_checkpoint(save_checkpoint(model, tmp_path / "w.ckpt"))
    assert loaded.transcribe(audio, beam=2) == expected


def test_bad_encoder_folders_are_one_line_errors(corpus: Path, tmp_path: Path, user_error: Any) -> None:
    vit = vision_folder(tmp_path / "vit")
    assert _fit(corpus, tmp_path / "r1", vit) == 2
    assert "holds a 'vit' model (a vision backbone); --model.encoder expects a speech encoder" in user_error()
    w2v = speech_folder(tmp_path / "w2v")
    (w2v / "preprocessor_config.json").write_text(json.dumps({"sampling_rate": 4}), encoding="utf-8")
    assert _fit(corpus, tmp_path / "r2", w2v) == 2
    assert f"{w2v}: sampling_rate = 4, expected 8000..48000 Hz" in user_error()
    (w2v / "preprocessor_config.json").unlink()
    assert _fit(corpus, tmp_path / "r3", w2v) == 2
    assert f"preprocessor_config.json is missing in {w2v}" in user_error()
    with pytest.raises(ConfigError, match="expected one of lstm, pblstm, transformer, conformer or hf:"):
        SpeechModule(encoder="wav2vec2")
    with pytest.raises(ConfigError, match=r"trainable_blocks=5: expected -1 \(all\), 0 \(frozen\) or 1..2"):
        SpeechModule(encoder=f"hf:{speech_folder(tmp_path / 'ok')}", trainable_blocks=5)


@pytest.mark.parametrize("mask", [True, False])
def test_every_trainable_encoder_parameter_gets_a_gradient(tmp_path: Path, mask: bool) -> None:
    """DDP needs it: LayerDrop is off (a dropped layer would leave the weighted sum short) and a pre-norm model's
    final layer norm is part of the last hidden state."""
    model = SpeechModule(encoder=f"hf:{speech_folder(tmp_path / 'w2v', attention_mask=mask)}", **SMALL).train()
    assert model.pretrained_info["config"]["layerdrop"] == 0.0  # type: ignore[index]
    feats, _ = model.model.encoder(torch.randn(2, 16000), torch.tensor([16000, 12000]))
    feats.sum().backward()
    assert [n for n, p in model.model.encoder.named_parameters() if p.requires_grad and p.grad is None] == []
