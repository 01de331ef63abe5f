"""Speech task tests: synthesis, loaders, features, bad input, model, CLI round trip.

All fixtures are generated (sine tones written with soundfile, a tiny eSpeak NG corpus); models are
tiny and train for a handful of steps, so the whole file runs in about a minute on 2 CPU cores.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from core.errors import DataError
from core.io.checks import FORMAT_VERSION
from tasks.speech.audio import SAMPLE_RATE, load_audio, split_on_silence
from tasks.speech.data import CHARSET, SpeechDataModule, make_char_tokenizer, validate_utterances
from tasks.speech.features import FeatureStats, LogMel, SpecAugment
from tasks.speech.sources import Utterance, read_fsdd, read_manifest, read_source
from tasks.speech.text import normalize_text

try:
    import espeakng_loader  # noqa: F401

    HAVE_ESPEAK = True
except ImportError:  # optional GPL extra
    HAVE_ESPEAK = False
needs_espeak = pytest.mark.skipif(not HAVE_ESPEAK, reason="espeakng-loader (attn-suite[speech]) not installed")

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"

TINY = [
    "--model.encoder_dim=32",
    "--model.encoder_layers=1",
    "--model.hidden_dim=48",
    "--model.embed_dim=16",
    '--model.attention_options={"hidden_dim": 32, "conv_channels": 4, "kernel_size": 5}',
    "--model.beam_size=2",
    "--model.plot_examples=1",
    "--data.num_workers=0",
    "--data.max_frames=6000",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.logger=false",
]


def tone(seconds: float, sr: int = SAMPLE_RATE, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    """A sine tone `(N,)` or `(N, C)` (soundfile's layout)."""
    t = np.arange(int(seconds * sr)) / sr
    x = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


# ---------------------------------------------------------------------------------------------
# text
# ---------------------------------------------------------------------------------------------
def test_normalize_text() -> None:
    assert normalize_text("Hello, World!  It's 42.") == "hello world it's four two"
    assert normalize_text("Café 'quoted'") == "cafe quoted"
    assert normalize_text("日本") == ""
    assert set(normalize_text("Any TEXT: with ~ symbols & ümlauts")) <= set(CHARSET)


# ---------------------------------------------------------------------------------------------
# synthesis
# ---------------------------------------------------------------------------------------------
@needs_espeak
def test_synthesis_length_and_determinism() -> None:
    from tasks.speech.synth import VoiceSpec, synthesize, synthesize_many

    wav, sr = synthesize("the quick brown fox jumps over the lazy dog", VoiceSpec("en-us", "", 175))
    dur = len(wav) / sr
    assert sr == 22050 and 1.5 < dur < 5.0, dur  # 9 words at 175 wpm ~ 3 s
    assert np.abs(wav).max() > 0.05
    jobs = [("four two nine", VoiceSpec("en-us", "f3", 160, 40, 50)), ("a red fox", VoiceSpec("en", "klatt", 200))]
    a = [w for chunk in synthesize_many(jobs) for w in chunk]
    b = [w for chunk in synthesize_many(jobs) for w in chunk]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))  # f3 has breath noise: reseeded per job


def test_missing_espeak_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from tasks.speech import synth

    real_import = builtins.__import__

    def fake_import(name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name == "espeakng_loader":
            raise ImportError("no module")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(synth.EspeakUnavailable, match=r"attn-suite\[speech\]"):
        synth._load_loader()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthesised corpus shared by the training tests."""
    if not HAVE_ESPEAK:
        pytest.skip("espeakng-loader not installed")
    from tasks.speech.synth import generate_corpus

    return generate_corpus(tmp_path_factory.mktemp("synth"), num_train=24, num_val=6, num_test=6, progress=False)


def test_corpus_unseen_test_voices(corpus: Path) -> None:
    from tasks.speech.synth import TEST_VARIANTS, TRAIN_VARIANTS

    assert not set(TRAIN_VARIANTS) & set(TEST_VARIANTS)
    rows = {
        s: [json.loads(line) for line in (corpus / f"{s}.jsonl").read_text().splitlines()] for s in ("train", "test")
    }
    train_v = {r["voice"].partition("+")[2] for r in rows["train"]}
    test_v = {r["voice"].partition("+")[2] for r in rows["test"]}
    assert test_v and not train_v & test_v
    assert all((corpus / r["path"]).is_file() and 0.3 < r["duration"] < 8 for r in rows["train"])


# ---------------------------------------------------------------------------------------------
# audio input and bad input
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000])
def test_resampling(tmp_path: Path, sr: int) -> None:
    f = tmp_path / f"a{sr}.wav"
    sf.write(f, tone(1.0, sr), sr)
    assert abs(load_audio(f).numel() - SAMPLE_RATE) <= 2


@pytest.mark.parametrize("subtype,ext", [("PCM_24", "wav"), ("FLOAT", "wav"), ("PCM_16", "flac"), ("PCM_U8", "wav")])
def test_formats_and_stereo(tmp_path: Path, subtype: str, ext: str) -> None:
    f = tmp_path / f"a.{ext}"
    sf.write(f, tone(0.5, 16000, channels=2), 16000, subtype=subtype)
    x = load_audio(f)
    assert x.dim() == 1 and x.numel() == 8000 and 0.2 < float(x.abs().max()) < 0.35


def test_mp3_supported_or_clear_error(tmp_path: Path) -> None:
    f = tmp_path / "a.mp3"
    if "MP3" in sf.available_formats():  # libsndfile >= 1.1 reads and writes MP3
        sf.write(f, tone(1.0), 16000, format="MP3")
        assert abs(load_audio(f).numel() - 16000) < 2000
    else:
        f.write_bytes(b"ID3" + b"\x00" * 64)
        with pytest.raises(DataError, match="MP3"):
            load_audio(f)


def test_waveform_inputs() -> None:
    x = load_audio((np.stack([tone(0.5, 8000)] * 2), 8000))  # (C, N) numpy at 8 kHz
    assert x.shape == (8000,)
    y = load_audio((torch.from_numpy((tone(0.25) * 32767).astype(np.int16)), 16000))  # int16 tensor
    assert y.shape == (4000,) and float(y.abs().max()) < 1.0


def test_bad_audio_errors(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF\x00\x00garbage" * 10)
    with pytest.raises(DataError, match="corrupt.wav"):
        load_audio(bad)
    with pytest.raises(DataError, match="not found"):
        load_audio(tmp_path / "missing.flac")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(DataError, match="empty"):
        load_audio(empty)
    mp3 = tmp_path / "fake.mp3"
    mp3.write_bytes(b"\xff\xfb" + b"\x00" * 100)
    with pytest.raises(DataError, match="fake.mp3"):
        load_audio(mp3)


# ---------------------------------------------------------------------------------------------
# loaders
# ---------------------------------------------------------------------------------------------
def test_librispeech_layout(tmp_path: Path) -> None:
    d = tmp_path / "LibriSpeech" / "dev" / "19" / "198"
    d.mkdir(parents=True)
    for i in range(2):
        sf.write(d / f"19-198-000{i}.flac", tone(0.5), 16000)
    (d / "19-198.trans.txt").write_text("19-198-0000 HELLO WORLD\n19-198-0001 IT'S ME\n19-198-0002 MISSING ONE\n")
    with pytest.warns(UserWarning, match="skipped 1 row"):
        utts = read_source(tmp_path / "LibriSpeech")
    assert [u.text for u in utts] == ["HELLO WORLD", "IT'S ME"] and utts[0].speaker == "19"


def test_manifests(tmp_path: Path) -> None:
    sf.write(tmp_path / "a.wav", tone(0.5), 16000)
    (tmp_path / "clips").mkdir()
    sf.write(tmp_path / "clips" / "b.wav", tone(0.4), 16000)
    (tmp_path / "m.jsonl").write_text(
        json.dumps({"path": "a.wav", "text": "A b", "duration": 0.5})
        + "\n"
        + json.dumps({"path": "nope.wav", "text": "x"})
        + "\n"
    )
    with pytest.warns(UserWarning, match="nope.wav"):
        utts = read_manifest(tmp_path / "m.jsonl")
    assert len(utts) == 1 and utts[0].duration == 0.5
    (tmp_path / "m.csv").write_text('path,text\na.wav,"hello, there"\n')
    assert read_manifest(tmp_path / "m.csv")[0].text == "hello, there"
    # Common Voice: header with `sentence`, clips/ next to the TSV; and a header-less path<TAB>text TSV.
    (tmp_path / "cv.tsv").write_text("client_id\tpath\tsentence\nxyz\tb.wav\tGood morning!\n")
    assert read_manifest(tmp_path / "cv.tsv")[0].audio.endswith("clips/b.wav")
    (tmp_path / "plain.tsv").write_text("clips/b.wav\tone\n")
    assert read_manifest(tmp_path / "plain.tsv")[0].text == "one"
    (tmp_path / "bad.jsonl").write_text('{"path": "a.wav", "text": "ok"}\n{not json\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2"):
        read_manifest(tmp_path / "bad.jsonl")
    (tmp_path / "nocol.jsonl").write_text('{"file_x": "a.wav"}\n')
    with pytest.raises(DataError, match="nocol.jsonl:1"):
        read_manifest(tmp_path / "nocol.jsonl")


def test_fsdd_and_validation(tmp_path: Path) -> None:
    rec = tmp_path / "recordings"
    rec.mkdir()
    sf.write(rec / "7_jackson_0.wav", tone(0.4, 8000), 8000)
    sf.write(rec / "3_theo_1.wav", tone(0.3, 8000), 8000)
    utts = read_fsdd(tmp_path)
    assert sorted(u.text for u in utts) == ["seven", "three"]
    (rec / "0_x_0.wav").write_bytes(b"junk")  # corrupt: skipped and counted
    sf.write(rec / "1_x_0.wav", np.zeros(0, dtype=np.float32), 8000)  # zero-length
    utts = read_fsdd(tmp_path) + [Utterance(str(rec / "7_jackson_0.wav"), "Ωμέγα")]  # only non-unit chars
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        kept = validate_utterances(utts, "fsdd", max_seconds=10.0)
    msgs = " ".join(str(x.message) for x in w)
    assert len(kept) == 2 and "unreadable" in msgs and "zero-length" in msgs and "empty transcript" in msgs


@pytest.mark.shared_data
@pytest.mark.skipif(not (SHARED / "librispeech-mini").is_dir(), reason="../shared/data absent")
def test_shared_corpora_load() -> None:
    assert len(read_source(SHARED / "librispeech-mini" / "LibriSpeech")) > 100
    cv = read_source(SHARED / "common-voice-100")
    assert cv and all(Path(str(u.audio)).is_file() for u in cv)
    fsdd = read_source(SHARED / "fsdd-subset")
    assert len(fsdd) > 100 and load_audio(fsdd[0].audio).numel() > 0  # 8 kHz -> 16 kHz


# ---------------------------------------------------------------------------------------------
# features, chunking, model
# ---------------------------------------------------------------------------------------------
def test_features_and_stats() -> None:
    lm = LogMel()
    f = lm(torch.from_numpy(tone(1.0)))
    assert f.shape == (101, 80) and lm.num_frames(16000) == 101
    torch.manual_seed(0)
    feats = [torch.randn(50, 80) * 3 + 2 for _ in range(4)]
    st = FeatureStats().fit(feats)
    z = st(torch.cat(feats))
    assert bool(st.initialized) and z.mean().abs() < 1e-4 and (z.std(0) - 1).abs().max() < 1e-2
    aug = SpecAugment().train()
    x = torch.randn(2, 120, 80)
    assert aug(x).shape == x.shape and (aug(x) == 0).any()
    assert torch.equal(aug.eval()(x), x)


def test_split_on_silence_cuts_in_pause() -> None:
    loud = torch.from_numpy(tone(1.5))
    wav = torch.cat([loud, torch.zeros(8000), loud, torch.zeros(4000), loud])  # 5.25 s, pauses at 1.5 s and 3.5 s
    cuts = split_on_silence(wav, max_seconds=2.5)
    assert cuts[0][0] == 0 and cuts[-1][1] == wav.numel() and len(cuts) >= 2
    assert all(b - a <= 2.5 * SAMPLE_RATE for a, b in cuts)
    assert 1.5 * SAMPLE_RATE <= cuts[0][1] <= 2.0 * SAMPLE_RATE  # inside the first pause


@pytest.mark.parametrize("encoder", ["lstm", "pblstm", "transformer", "conformer"])
def test_encoder_shapes(encoder: str) -> None:
    from tasks.speech.model import ASRModel

    m = ASRModel(
        32,
        encoder=encoder,
        encoder_dim=16,
        encoder_layers=3 if encoder == "pblstm" else 1,
        num_heads=2,
        hidden_dim=24,
        embed_dim=8,
        attention_options={"hidden_dim": 8},
    )
    feats, lens = torch.randn(2, 41, 80), torch.tensor([41, 30])
    enc, mask, ctc = m.encode(feats, lens)
    assert enc.shape[1] == 11 and mask.sum(1).tolist() == [11, 8] and ctc.shape == (2, 11, 32)
    logits, w = m.decoder(enc, mask, torch.ones(2, 5, dtype=torch.long), need_weights=True)
    assert logits.shape == (2, 5, 32) and w.shape == (2, 5, 11)
    assert torch.allclose(w.sum(-1), torch.ones(2, 5), atol=1e-5) and (w[1, :, 8:] == 0).all()


@pytest.mark.parametrize("attention", ["additive", "dot", "multihead"])
def test_other_attentions(attention: str) -> None:
    from tasks.speech.module import SpeechModule

    m = SpeechModule(
        encoder_dim=16,
        encoder_layers=1,
        hidden_dim=32,
        embed_dim=8,
        attention=attention,
        attention_options={"hidden_dim": 8} if attention == "additive" else None,
    )
    out = m.transcribe([(tone(0.5), 16000)], beam=2)
    assert isinstance(out[0], str)


# ---------------------------------------------------------------------------------------------
# training + CLI round trip
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_ckpt(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`fit` through the CLI for a few steps; returns the written last.ckpt."""
    from tasks.speech.cli import main

    root = tmp_path_factory.mktemp("fit")
    code = main(
        [
            "fit",
            "--data.cache_dir",
            str(corpus.parent),
            "--data.synth_train=24",
            "--data.synth_val=6",
            "--data.synth_test=6",
            *TINY,
            "--trainer.max_steps=3",
            "--trainer.max_epochs=3",
            f"--trainer.default_root_dir={root}",
            "--trainer.limit_val_batches=1",
        ]
    )
    assert code == 0
    ckpts = sorted(root.rglob("last.ckpt"))
    assert ckpts, list(root.rglob("*"))
    return ckpts[0]


def test_fast_dev_run_cli(corpus: Path, tmp_path: Path) -> None:
    from tasks.speech.cli import main

    code = main(
        [
            "fit",
            "--data.cache_dir",
            str(corpus.parent),
            "--data.synth_train=24",
            "--data.synth_val=6",
            "--data.synth_test=6",
            *TINY,
            "--trainer.fast_dev_run=1",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    assert code == 0


def test_checkpoint_weights_only_and_metadata(trained_ckpt: Path) -> None:
    ck = torch.load(trained_ckpt, map_location="cpu", weights_only=True)
    meta = ck["attn_suite"]
    assert meta["task"] == "speech" and meta["format"] == FORMAT_VERSION
    assert len(meta["feature_stats"]["mean"]) == 80 and meta["feature_config"]["n_mels"] == 80
    assert meta["units"] and meta["max_chunk_seconds"] > 0
    assert any(abs(m) > 1e-3 for m in meta["feature_stats"]["mean"])  # real statistics, not defaults


def test_transcribe_cli_round_trip(
    trained_ckpt: Path, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tasks.speech.cli import main

    good = sorted((corpus / "audio").glob("test-*.flac"))[:2]
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"not audio at all")
    plots = tmp_path / "plots"
    code = main(
        [
            "transcribe",
            "--ckpt",
            str(trained_ckpt),
            str(good[0]),
            str(bad),
            str(good[1]),
            "--beam",
            "2",
            "--plot",
            str(plots),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 1  # one file failed, the others were transcribed
    assert len(out.strip().splitlines()) == 2 and "broken.wav" in err and "Traceback" not in err
    assert len(list(plots.glob("*.png"))) >= 1  # alignment figure saved
    # Python API on the same checkpoint, with (waveform, sample_rate) input
    from tasks.speech.module import SpeechModule

    m = SpeechModule.load_from_checkpoint(trained_ckpt)
    wav, sr = sf.read(good[0], dtype="float32")
    assert isinstance(m.transcribe([(wav, sr)], beam=1)[0], str)


def test_predict_cli_prints_hypotheses(trained_ckpt: Path, corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tasks.speech.cli import main

    code = main(
        [
            "predict",
            "--data.cache_dir",
            str(corpus.parent),
            "--data.synth_train=24",
            "--data.synth_val=6",
            "--data.synth_test=6",
            *TINY,
            f"--ckpt_path={trained_ckpt}",
            f"--trainer.default_root_dir={trained_ckpt.parent}",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert len([ln for ln in out.splitlines() if ln.endswith(".flac") or "\t" in ln]) == 6


def test_transcribe_cli_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tasks.speech.cli import main

    fake = tmp_path / "x.ckpt"
    fake.write_bytes(b"junk")
    assert main(["transcribe", "--ckpt", str(fake), "a.wav"]) == 2
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "attn_suite": {"task": "translation", "format": 1}}, other)
    assert main(["transcribe", "--ckpt", str(other), "a.wav"]) == 2
    err = capsys.readouterr().err
    assert "x.ckpt" in err and "Traceback" not in err


def test_chunked_long_audio(trained_ckpt: Path) -> None:
    from tasks.speech.module import SpeechModule

    m = SpeechModule.load_from_checkpoint(trained_ckpt)
    m.max_chunk_seconds = 1.0
    loud = tone(0.7)
    wav = np.concatenate([loud, np.zeros(3200, np.float32), loud, np.zeros(3200, np.float32), loud])  # 2.5 s
    (res,) = m.transcribe([(wav, 16000)], beam=1, return_attention=True)
    assert len(res.chunks) >= 3 and all(c.weights.dim() == 2 for c in res.chunks)
    assert isinstance(res.text, str)
    silent = m.transcribe([(np.zeros(16000, np.float32), 16000)], beam=1)  # silent audio: no crash
    assert isinstance(silent[0], str)


@pytest.mark.slow
def test_overfit_few_utterances(corpus: Path) -> None:
    """A small model memorises 4 utterances: CER on them drops far below chance."""
    import lightning as L

    from tasks.speech.module import SpeechModule

    torch.manual_seed(0)
    dm = SpeechDataModule(
        cache_dir=str(corpus.parent),
        synth_train=24,
        synth_val=6,
        synth_test=6,
        limit_train=4,
        num_workers=0,
        max_frames=100000,
    )
    m = SpeechModule(
        encoder_dim=64,
        encoder_layers=1,
        hidden_dim=96,
        embed_dim=32,
        dropout=0.0,
        label_smoothing=0.0,
        spec_augment=False,
        lr=3e-3,
        warmup_steps=10,
        plot_examples=0,
        attention_options={"hidden_dim": 64, "conv_channels": 4, "kernel_size": 9},
    )
    tr = L.Trainer(
        max_steps=150,
        logger=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    tr.fit(m, dm)
    utts = dm.splits["train"]
    hyps = m.transcribe([u.audio for u in utts], beam=2)
    from torchmetrics.functional.text import char_error_rate

    cer = float(char_error_rate(hyps, [normalize_text(u.text) for u in utts]))
    assert cer < 0.3, (cer, hyps)


def test_char_units_cover_normalised_text() -> None:
    tk = make_char_tokenizer()
    s = normalize_text("Don't STOP me now, 7 times!")
    assert tk.decode(tk.encode(s)) == s and tk.unk_id not in tk.encode(s)


@pytest.mark.slow
def test_ddp_two_cpu_processes(corpus: Path, tmp_path: Path) -> None:
    """`fit` with strategy=ddp on 2 CPU processes (gloo): each rank gets its share of the batches."""
    import subprocess
    import sys

    script = tmp_path / "ddp_fit.py"
    args = [
        "fit",
        "--data.cache_dir",
        str(corpus.parent),
        "--data.synth_train=24",
        "--data.synth_val=6",
        "--data.synth_test=6",
        *TINY,
        "--trainer.max_steps=2",
        "--trainer.strategy=ddp",
        "--trainer.devices=2",
        "--trainer.accelerator=cpu",
        "--trainer.limit_val_batches=1",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    # Lightning's DDP launcher re-runs the script for rank 1, so it needs a real file with a main guard.
    script.write_text(
        f"import sys\nfrom tasks.speech.cli import main\nif __name__ == '__main__':\n    sys.exit(main({args!r}))\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(tmp_path.rglob("last.ckpt"))


def test_hf_datasets_saved_to_disk(tmp_path: Path) -> None:
    """HF `datasets` audio sources (a `save_to_disk` folder), both as file paths and as embedded bytes."""
    import io

    import datasets

    wav = tmp_path / "a.wav"
    sf.write(wav, tone(0.5, sr=22050), 22050)
    buf = io.BytesIO()
    sf.write(buf, tone(0.25), SAMPLE_RATE, format="WAV")
    ds = datasets.Dataset.from_dict(
        {
            "audio": [{"path": str(wav), "bytes": None}, {"path": None, "bytes": buf.getvalue()}],
            "sentence": ["Hello world", "two"],
        }
    ).cast_column("audio", datasets.Audio(decode=False))
    saved = tmp_path / "hf_ds"
    datasets.DatasetDict({"train": ds}).save_to_disk(str(saved))

    utts = read_source(f"hf:{saved}", split="train")
    assert [u.text for u in utts] == ["Hello world", "two"]
    assert isinstance(utts[1].audio, bytes)
    lengths = [load_audio(u.audio).shape[-1] for u in utts]
    assert lengths == [SAMPLE_RATE // 2, SAMPLE_RATE // 4]  # 22.05 kHz resampled to 16 kHz
    with pytest.raises(DataError, match="no split 'test'"):
        read_source(f"hf:{saved}", split="test")


# ---------------------------------------------------------------------------------------------
# guided attention (tasks.speech.guided)
# ---------------------------------------------------------------------------------------------
def test_guided_attention_loss_prefers_the_diagonal_and_ignores_padding() -> None:
    from tasks.speech.guided import diagonal_penalty, guided_attention_loss

    out_lens, in_lens = torch.tensor([4, 2]), torch.tensor([8, 4])
    diag = torch.zeros(2, 4, 8)
    for b, (lo, li) in enumerate(zip(out_lens.tolist(), in_lens.tolist())):
        for t in range(lo):
            diag[b, t, int((t + 0.5) * li / lo)] = 1.0  # one-hot on the diagonal
    stuck = torch.zeros(2, 4, 8)
    stuck[:, :, 0] = 1.0  # every step on the first frame: the failure the loss is for
    assert guided_attention_loss(diag, out_lens, in_lens) < 0.15  # on the diagonal: close to 0
    assert guided_attention_loss(stuck, out_lens, in_lens) > 0.4  # stuck on the first frame: far from it
    w = diagonal_penalty(out_lens, in_lens, 4, 8, 0.2)  # (B, L, S)
    assert w.shape == (2, 4, 8) and (w[1, 2:] == 0).all() and (w[1, :, 4:] == 0).all()  # padding costs nothing
    assert float(w.min()) >= 0.0 and float(w.max()) < 1.0
    # Attention mass on padded steps/frames changes nothing.
    noisy = diag.clone()
    noisy[1, 2:, :] = 5.0
    noisy[1, :, 4:] += 3.0
    assert torch.allclose(
        guided_attention_loss(noisy, out_lens, in_lens), guided_attention_loss(diag, out_lens, in_lens)
    )


def test_guided_attention_weight_adds_a_training_term_only() -> None:
    from tasks.speech.module import SpeechModule

    torch.manual_seed(0)
    kw = {
        "encoder_dim": 16,
        "encoder_layers": 1,
        "hidden_dim": 24,
        "embed_dim": 8,
        "attention_options": {"hidden_dim": 8, "conv_channels": 2, "kernel_size": 5},
        "spec_augment": False,
    }
    tk = make_char_tokenizer()
    texts = ["a cat", "dogs run"]
    tokens = torch.nn.utils.rnn.pad_sequence([torch.tensor(tk.encode(t)) for t in texts], batch_first=True)
    batch = {
        "feats": torch.randn(2, 120, 80),
        "feat_lens": torch.tensor([120, 90]),
        "tokens": tokens,
        "token_lens": torch.tensor([len(t) for t in texts]),
        "texts": texts,
    }
    plain = SpeechModule(**kw)
    guided = SpeechModule(**kw, guided_attention_weight=2.0)
    guided.load_state_dict(plain.state_dict())
    plain.train(), guided.train()
    torch.manual_seed(1)
    a = plain.task.losses(plain.model, batch)
    torch.manual_seed(1)
    b = guided.task.losses(guided.model, batch)
    assert "guided" not in a and 0.0 < float(b["guided"].detach()) < 1.0
    assert torch.allclose(b["loss"], a["loss"] + 2.0 * b["guided"])
    b["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in guided.parameters() if p.grad is not None)
    guided.eval()
    assert "guided" not in guided.task.losses(guided.model, batch)  # validation losses stay comparable across settings


def test_sortagrad_sampler_goes_short_to_long_once_then_shuffles() -> None:
    from tasks.speech.batching import SortaGradSampler

    s = SortaGradSampler(20, seed=3)
    first, second, third = list(s), list(s), list(s)
    assert first == list(range(20))  # the dataset's batches are built in ascending length order
    assert sorted(second) == sorted(third) == first and second != first and second != third
    assert len(s) == 20
    again = SortaGradSampler(20, seed=3)
    assert [list(again) for _ in range(3)][1:] == [second, third]  # seeded: the same order every run


def test_feature_cache_loads_each_utterance_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.speech import batching  # the module whose BucketedSpeechDataset calls load_audio
    from tasks.speech.features import FeatureConfig

    paths = []
    for i in range(3):
        paths.append(tmp_path / f"u{i}.wav")
        sf.write(paths[-1], tone(0.3 + 0.1 * i, freq=300.0 + 50 * i), SAMPLE_RATE)
    utts = validate_utterances([Utterance(str(p), "a b") for p in paths], "t", None)
    loads: list[str] = []
    real = batching.load_audio
    monkeypatch.setattr(batching, "load_audio", lambda src: loads.append(src) or real(src))
    cached = batching.BucketedSpeechDataset(utts, make_char_tokenizer(), FeatureConfig(), cache_features=True)
    first = [cached[b] for b in range(len(cached))]
    again = [cached[b] for b in range(len(cached))]
    assert len(loads) == 3  # the second epoch decodes nothing
    assert all(torch.equal(x["feats"], y["feats"]) for x, y in zip(first, again))
    plain = batching.BucketedSpeechDataset(utts, make_char_tokenizer(), FeatureConfig())
    _ = [plain[b] for b in range(len(plain))] + [plain[b] for b in range(len(plain))]
    assert len(loads) == 3 + 6


# ---------------------------------------------------------------------------------------------
# joint CTC/attention decoding (tasks.speech.ctc_prefix)
# ---------------------------------------------------------------------------------------------
def _ctc_log_probs(t: int, seed: int) -> torch.Tensor:
    """`(t, 6)` log-probs: blank 0, labels 1-3, BOS 4 and EOS 5 (both practically impossible)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(t, 6, generator=g, dtype=torch.float64) * 2
    logits[:, 4:] = -1e4
    return logits.log_softmax(-1)


def test_ctc_prefix_scores_sum_to_the_ctc_probability_of_the_sequence() -> None:
    import torch.nn.functional as F

    from tasks.speech.ctc_prefix import CTCPrefixScorer

    lps = [_ctc_log_probs(9, 0), _ctc_log_probs(6, 1)]
    lens = torch.tensor([9, 6])
    batch = torch.nn.utils.rnn.pad_sequence(lps, batch_first=True)  # (2, 9, 6), the second one padded
    labels = [[1, 2, 2, 3], [3, 1]]
    scorer = CTCPrefixScorer(batch, lens, blank=0, eos=5, never=(4,))
    state, static = scorer.initial_state(), scorer.static()
    total = torch.zeros(2, dtype=torch.float64)
    last = torch.tensor([4, 4])  # BOS
    running = [True, True]
    for step in range(len(labels[0]) + 1):
        delta, state = scorer.step(last, state, static)
        assert torch.isinf(delta[:, 0]).all() and torch.isinf(delta[:, 4]).all()  # blank, BOS: never labels
        # The prefix probability splits over what comes next: the sequence ends here, or one more label.
        split = torch.logsumexp(delta.double()[:, [1, 2, 3, 5]], dim=1)  # log sum of p(g+c...)/p(g...)
        for b in range(2):
            if running[b]:
                assert abs(float(split[b])) < 1e-6, (step, b)
        chosen = [lab[step] if step < len(lab) else 5 for lab in labels]
        for b in range(2):
            if running[b]:
                total[b] += float(delta[b, chosen[b]])
                running[b] = chosen[b] != 5
        last = torch.tensor([c if c != 5 else 0 for c in chosen])  # a finished row is fed blank (pad)
    want = -F.ctc_loss(
        batch.transpose(0, 1),
        torch.tensor(labels[0] + labels[1]),
        lens,
        torch.tensor([len(x) for x in labels]),
        blank=0,
        reduction="none",
    )
    assert torch.allclose(total, want.double(), atol=1e-6)  # log p_ctc(y), padding ignored


def test_ctc_prefix_eos_scores_match_ctc_loss_for_each_length() -> None:
    import torch.nn.functional as F

    from tasks.speech.ctc_prefix import CTCPrefixScorer

    lp = _ctc_log_probs(10, 2)[None]  # (1, 10, 6)
    for labels in ([1], [2, 2], [3, 1, 3], [1, 1, 1]):
        scorer = CTCPrefixScorer(lp, torch.tensor([10]), blank=0, eos=5, never=(4,))
        state, static, total, last = scorer.initial_state(), scorer.static(), 0.0, torch.tensor([4])
        for c in labels:
            delta, state = scorer.step(last, state, static)
            total += float(delta[0, c])
            last = torch.tensor([c])
        delta, _ = scorer.step(last, state, static)
        total += float(delta[0, 5])
        want = -F.ctc_loss(
            lp.transpose(0, 1),
            torch.tensor([labels]),
            torch.tensor([10]),
            torch.tensor([len(labels)]),
            blank=0,
            reduction="sum",
        )
        assert abs(total - float(want)) < 1e-5, labels


def test_guided_weight_fades_out() -> None:
    from tasks.speech.guided import guided_weight

    assert guided_weight(2.0, None, 10_000) == 2.0
    assert [guided_weight(2.0, 100, s) for s in (0, 50, 100, 500)] == [2.0, 1.0, 0.0, 0.0]
    assert [guided_weight(2.0, 100, s, final=0.2) for s in (0, 50, 100, 500)] == [2.0, 1.1, 0.2, 0.2]


def test_joint_ctc_decoding_runs_through_beam_search_with_the_decoder_state() -> None:
    from tasks.speech.module import SpeechModule

    torch.manual_seed(0)
    kw = {
        "encoder_dim": 16,
        "encoder_layers": 1,
        "hidden_dim": 24,
        "embed_dim": 8,
        "ctc_weight": 0.5,
        "attention_options": {"hidden_dim": 8, "conv_channels": 2, "kernel_size": 5},
        "spec_augment": False,
    }
    rescored, joint = SpeechModule(**kw), SpeechModule(**kw, joint_ctc_decoding=True)
    joint.load_state_dict(rescored.state_dict())
    feats, lens = torch.randn(3, 160, 80), torch.tensor([160, 120, 64])
    a = rescored.decode_features(feats, lens, beam=3, nbest=2, with_attention=True)
    b = joint.decode_features(feats, lens, beam=3, nbest=2, with_attention=True)
    assert [len(h) for h in a] == [len(h) for h in b] == [2, 2, 2]
    _, mask, _ = joint.eval().model.encode(joint.stats(feats), lens)
    for hyps, n in zip(b, mask.sum(-1).tolist()):
        assert hyps[0].score >= hyps[1].score and math.isfinite(hyps[0].score)
        assert hyps[0].attention is not None and hyps[0].attention.shape[1] == n  # over the valid encoder frames
    # beam 1 with CTC weight 1: the joint search follows the CTC prefix scores alone (a valid CTC labelling).
    joint.hparams.ctc_weight = 1.0
    greedy = joint.decode_features(feats[:1], lens[:1], beam=1)[0][0]
    assert math.isfinite(greedy.score)
