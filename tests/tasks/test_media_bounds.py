"""Memory is bounded by the limits, not by a tiny crafted input (security review: "memory decided by a tiny input").

* A 16-88 KB WAV whose header says 8,001 / 16,001 / 44,101 Hz made ``torchaudio.transforms.Resample`` build a
  windowed-sinc kernel of ~16,000 x rate float64 values (4 GB, 8 GB and over 11 GB peak); audio is now
  resampled with libsoxr (``soxr``), and the rate itself must lie in 1 kHz .. 384 kHz.
* A 16-bit 9,459 x 9,459 PNG (216 KB) or a float32 TIFF at PIL's pixel limit cost 2.2-2.4 GB through a
  full-size float64 conversion; they are now shrunk in their own mode first.
* A crafted speech model folder (n_fft 16,384, hop_length 1, matching filterbank and window) asked for
  1.7 GB on a 1.6 s clip; the front end's fields are now bounded when a checkpoint or folder is read.
* A pretrained encoder config with ``sampling_rate`` 16,001 would make ``torchaudio.functional.resample`` build
  the same kernel on every batch; such rates are refused when the encoder is built.

Each memory case runs in a fresh interpreter whose address space (``RLIMIT_AS``) is capped at what its imports
took plus ``HEADROOM`` (1.5 GiB), measured in that process after the imports (so it holds on any machine,
whatever ``import torch`` maps: 3.1 GiB of address space for the CUDA build here, 0.7 GiB resident).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from core.errors import CheckpointError, ConfigError, DataError
from tasks.speech.audio import (
    MAX_RESAMPLE_KERNEL,
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    SAMPLE_RATE,
    load_audio,
    resample_kernel_size,
    resampler,
    to_mono_16k,
)
from tasks.speech.features import FeatureConfig

ROOT = Path(__file__).resolve().parents[2]
#: Address space a crafted input may use beyond what the child's imports mapped.
HEADROOM = 3 * 2**29  # 1.5 GiB

needs_linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc are Linux")

_HARNESS = """
import resource
import sys

import torch

{imports}

torch.set_num_threads(1)
torch.ones(8).sum()  # start the allocator and the thread pool before measuring


def address_space() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))


limit = address_space() + {headroom}
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
{body}
"""


def run_capped(imports: str, body: str, headroom: int = HEADROOM) -> subprocess.CompletedProcess[str]:
    """Run ``body`` in a fresh interpreter after ``imports``, its address space capped at imports + headroom."""
    code = _HARNESS.format(imports=textwrap.dedent(imports), body=textwrap.dedent(body), headroom=headroom)
    # One thread and two malloc arenas: per-thread arenas reserve 64 MiB of address space each, which would make
    # the cap depend on the machine's core count.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)


def sine(seconds: float, sr: int, freq: float = 1000.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# ---------------------------------------------------------------------------------------------------- the harness
@needs_linux
def test_the_address_space_cap_is_enforced() -> None:
    """The cap is real: asking for more than the headroom fails (so the cases below prove something)."""
    res = run_capped("import numpy as np", f"np.ones({HEADROOM // 8 + 2**25}); print('allocated')")
    assert res.returncode != 0 and "MemoryError" in res.stderr and "allocated" not in res.stdout


# ---------------------------------------------------------------------------------------------------- audio
@pytest.mark.parametrize("rate", [44100, 8001])
def test_resampled_sine_keeps_its_length_and_pitch(rate: int) -> None:
    x = sine(1.0, rate)
    y = load_audio((x, rate))
    assert y.dtype == torch.float32 and y.dim() == 1
    assert abs(y.numel() - round(x.size * SAMPLE_RATE / rate)) <= 1  # 8,001 Hz: 16,000 samples for 1 s
    spectrum = np.abs(np.fft.rfft(y.numpy() * np.hanning(y.numel())))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / y.numel() - 1000.0) <= 1.0  # still a 1 kHz sine
    assert 0.25 < float(y[1000:-1000].abs().max()) < 0.35  # and the same level


def test_16k_audio_is_not_resampled() -> None:
    x = sine(0.5, SAMPLE_RATE)
    assert torch.equal(to_mono_16k(x, SAMPLE_RATE), torch.from_numpy(x))


@pytest.mark.parametrize("rate", [MIN_SAMPLE_RATE - 1, MAX_SAMPLE_RATE + 1, 0, -16000])
def test_sample_rate_outside_the_range_is_a_data_error(rate: int) -> None:
    with pytest.raises(DataError, match=rf"clip: invalid sample rate {rate} Hz, expected an integer in 1000\.\.384000"):
        to_mono_16k(np.zeros(100_000, np.float32), rate, source="clip")


def test_wav_with_an_absurd_rate_names_the_file(tmp_path: Path) -> None:
    sf.write(tmp_path / "slow.wav", np.zeros(4000, np.float32), 500)
    with pytest.raises(DataError, match=r"slow\.wav: invalid sample rate 500 Hz"):
        load_audio(tmp_path / "slow.wav")


def test_torchaudio_resampler_refuses_a_large_kernel() -> None:
    assert resample_kernel_size(22050, 16000) == 441 * 320  # the synthesiser's pair stays allowed
    resampler(22050, 16000)
    assert resample_kernel_size(16001, 16000) > MAX_RESAMPLE_KERNEL
    with pytest.raises(ValueError, match="16001 Hz -> 16000 Hz"):
        resampler(16001, 16000)


@needs_linux
@pytest.mark.parametrize("rate", [8001, 16001, 44101, 192000])
def test_odd_rate_wav_resamples_in_bounded_memory(rate: int, tmp_path: Path) -> None:
    """Half a second of 16-bit audio (8-192 KB): torchaudio needed 4 GB (8,001 Hz) to over 11 GB (44,101 Hz)."""
    path = tmp_path / f"a{rate}.wav"
    sf.write(path, sine(0.5, rate), rate, subtype="PCM_16")
    res = run_capped(
        "from tasks.speech.audio import load_audio",
        f"print(load_audio({str(path)!r}).numel())",
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert abs(int(res.stdout.split()[-1]) - SAMPLE_RATE // 2) <= 1


# ---------------------------------------------------------------------------------------------------- images
def wide_image(mode: str, folder: Path) -> Path:
    """A 16-bit PNG (216 KB) or a float32 TIFF (2.3 MB) of PIL's pixel limit, 9,459 x 9,459: grid lines."""
    side = math.isqrt(Image.MAX_IMAGE_PIXELS)
    arr = np.zeros((side, side), np.uint16 if mode == "I;16" else np.float32)
    arr[::97], arr[:, ::89] = (40000, 1000) if mode == "I;16" else (3.5, -1.0)
    if mode == "I;16":
        Image.fromarray(arr).save(path := folder / "deep.png")
    else:
        Image.fromarray(arr, "F").save(path := folder / "float.tif", compression="tiff_adobe_deflate")
    return path


@needs_linux
@pytest.mark.parametrize("mode", ["I;16", "F"])
def test_wide_image_at_the_pixel_limit_decodes_in_bounded_memory(mode: str, tmp_path: Path) -> None:
    """Decoded they are 179 / 358 MB; the old full-size float64 conversion took 2.2 / 2.4 GB more."""
    path = wide_image(mode, tmp_path)
    with Image.open(path) as img:
        assert img.mode == mode and img.width * img.height <= Image.MAX_IMAGE_PIXELS
    assert path.stat().st_size < 3_000_000
    res = run_capped(
        "import numpy as np\nfrom tasks.captioning.images import load_rgb",
        f"""
        out = load_rgb({str(path)!r})
        a = np.asarray(out)
        print(out.mode, out.size, int(a.min()), int(a.max()))
        """,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    out_mode, w, h, lo, hi = res.stdout.replace("(", "").replace(")", "").replace(",", "").split()
    assert out_mode == "RGB" and (int(w), int(h)) == (1024, 1024) and int(lo) < int(hi)  # grid lines survive


def test_shrinking_first_matches_converting_first(tmp_path: Path) -> None:
    """The 16-bit and float rescale and the alpha compositing give the same picture shrunk before or after."""
    from tasks.captioning.images import _to_rgb, load_rgb

    y, x = np.mgrid[0:1200, 0:2000]
    wave = np.sin(x / 150) + np.cos(y / 90)  # in [-2, 2]
    rgba = np.zeros((1200, 2000, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = x % 256, y % 256
    cases = {
        "deep.png": Image.fromarray(((wave + 2) / 4 * 65535).astype(np.uint16)),
        "float.tif": Image.fromarray((wave * 7.3).astype(np.float32), "F"),
        "int32.tif": Image.fromarray((wave * 1e6).astype(np.int32), "I"),
        "rgba.png": Image.fromarray(rgba, "RGBA"),
    }
    for name, img in cases.items():
        img.save(tmp_path / name)
        reference = _to_rgb(img)  # full size, then shrunk: what load_rgb did before
        reference.thumbnail((1024, 1024), Image.Resampling.BILINEAR)
        got = load_rgb(tmp_path / name)
        assert got.size == reference.size == (1024, 614), name
        diff = np.abs(np.asarray(got, np.int16) - np.asarray(reference, np.int16))
        assert diff.mean() < 0.2 and diff.max() <= 2, name


def test_nonfinite_float_pixels_do_not_break_the_rescale(tmp_path: Path) -> None:
    from tasks.captioning.images import load_rgb

    arr = np.linspace(0.0, 1.0, 64, dtype=np.float32).reshape(8, 8)
    arr[0, 0], arr[0, 1] = np.nan, np.inf
    Image.fromarray(arr, "F").save(tmp_path / "nan.tif")
    out = np.asarray(load_rgb(tmp_path / "nan.tif"))[..., 0]
    assert out.max() == 255 and out[7, 7] == 255


# ---------------------------------------------------------------------------------------------------- front end
@pytest.mark.parametrize(
    "cfg",
    [
        {},  # ours: 400 / 160, 80 mels (25 ms / 10 ms)
        {"n_fft": 512, "hop_length": 128, "n_mels": 128},  # Whisper-v3-like mels, torchaudio's n_fft / 4 hop
        {"n_fft": 1024, "hop_length": 256},
        {"n_fft": 2048, "hop_length": 512, "n_mels": 128, "sample_rate": 44100, "f_max": 22050.0},
        {"n_fft": 4096, "hop_length": 512},  # the extremes: n_fft 4096, overlap 8
        {"n_fft": 128, "hop_length": 16, "n_mels": 40},
    ],
)
def test_usual_front_ends_stay_valid(cfg: dict) -> None:
    assert FeatureConfig.from_dict({**FeatureConfig().to_dict(), **cfg}, "m.ckpt") == FeatureConfig(**cfg)


@pytest.mark.parametrize(
    "cfg, match",
    [
        ({"n_fft": 16384, "hop_length": 1}, r"feature_config\.n_fft = 16384, expected a number in \[16, 4096\]"),
        ({"hop_length": 1}, r"feature_config\.hop_length = 1, expected a number in \[16, 4096\]"),
        (
            {"n_fft": 4096, "hop_length": 256},
            r"feature_config\.hop_length = 256 is too small for n_fft = 4096: expected hop_length in \[512, 4096\]",
        ),
        (
            {"n_fft": 4096},
            r"feature_config\.hop_length = 160 is too small for n_fft = 4096",
        ),  # the default hop with a large n_fft
        ({"n_mels": 513}, r"feature_config\.n_mels = 513, expected a number in \[1, 512\]"),
        ({"win_length": 400}, "feature_config must be a dict with fields"),  # the window is n_fft long
    ],
)
def test_oversized_front_end_is_a_checkpoint_error(cfg: dict, match: str) -> None:
    with pytest.raises(CheckpointError, match=r"m\.ckpt: " + match):
        FeatureConfig.from_dict({**FeatureConfig().to_dict(), **cfg}, "m.ckpt")


@needs_linux
def test_crafted_front_end_in_a_model_folder_is_refused(tmp_path: Path) -> None:
    """n_fft 16,384 / hop_length 1 with a matching filterbank and window: refused on loading, in bounded memory."""
    from safetensors import safe_open
    from safetensors.torch import save_file
    from tiny_models import tiny_speech

    folder = Path(tiny_speech().save_pretrained(tmp_path / "crafted"))
    cfg = {**json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8")), "n_fft": 16384}
    (folder / "preprocessor_config.json").write_text(json.dumps({**cfg, "hop_length": 1}), encoding="utf-8")
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        meta, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    state["model.logmel.mel.spectrogram.window"] = torch.hann_window(16384)
    state["model.logmel.mel.mel_scale.fb"] = torch.rand(16384 // 2 + 1, state["model.logmel.mel.mel_scale.fb"].shape[1])
    save_file(state, str(folder / "model.safetensors"), metadata=meta)
    res = run_capped(
        "import numpy as np\nfrom core.errors import CheckpointError\nfrom tasks.speech.module import SpeechModule",
        f"""
        try:
            model = SpeechModule.from_pretrained({str(folder)!r})
        except CheckpointError as err:
            print("refused:", err)
        else:
            clip = (0.3 * np.sin(np.arange(25600) / 10)).astype(np.float32)  # 1.6 s
            print("transcribed:", model.transcribe([(clip, 16000)], beam=1))
        """,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "refused:" in res.stdout and "feature_config.n_fft = 16384, expected a number in [16, 4096]" in res.stdout


# ---------------------------------------------------------------------------------------------------- hf: encoders
@pytest.mark.parametrize("rate", [8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000])
def test_usual_encoder_rates_are_accepted(rate: int) -> None:
    from tasks.speech.hf_encoder import speech_settings

    assert speech_settings({"sampling_rate": rate}, "wav2vec2", "cfg")["sampling_rate"] == rate
    assert resample_kernel_size(SAMPLE_RATE, rate) <= MAX_RESAMPLE_KERNEL  # resampled on the batch's device


@pytest.mark.parametrize("rate", [16001, 8001, 44101, 47999])
def test_encoder_rate_with_a_huge_resampling_kernel_is_refused(rate: int) -> None:
    from tasks.speech.hf_encoder import speech_settings

    with pytest.raises(ConfigError, match=rf"preprocessor_config\.json: sampling_rate = {rate} Hz cannot be resampled"):
        speech_settings({"sampling_rate": rate}, "wav2vec2", "preprocessor_config.json")


def test_a_file_decoding_to_more_than_the_sample_limit_is_refused_without_decoding_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small compressed file can hold hours of silence: it is read up to the limit, never whole."""
    import numpy as np
    import soundfile as sf

    from core.errors import DataError
    from tasks.speech import audio

    path = tmp_path / "long_silence.flac"
    sf.write(path, np.zeros(16000 * 60, dtype=np.float32), 16000)  # a minute of silence: a few KB of FLAC
    assert path.stat().st_size < 50_000
    monkeypatch.setattr(audio, "MAX_DECODED_SAMPLES", 16000 * 30)  # a 30-second limit for the test
    with pytest.raises(DataError, match=r"long_silence.flac: the audio decodes to more than 480,000 samples"):
        audio.load_audio(path)
    sf.write(path, 0.1 * np.ones(16000 * 20, dtype=np.float32), 16000)
    assert audio.load_audio(path).numel() == 16000 * 20  # under the limit: read whole


def test_max_seconds_stops_decoding_at_the_limit(tmp_path: Path) -> None:
    import numpy as np
    import soundfile as sf

    from core.errors import DataError
    from tasks.speech.audio import load_audio

    path = tmp_path / "ten.wav"
    sf.write(path, 0.1 * np.ones(16000 * 10, dtype=np.float32), 16000)
    with pytest.raises(DataError, match=r"ten.wav: the audio is longer than 5 s"):
        load_audio(path, max_seconds=5)
    assert load_audio(path, max_seconds=10).numel() == 16000 * 10
