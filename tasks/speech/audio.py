"""Audio input: reading with soundfile, downmixing, resampling to 16 kHz, silence-aware chunking.

We read with `soundfile` (libsndfile: WAV of any PCM width or float, FLAC, OGG/Vorbis, and MP3
with libsndfile >= 1.1) rather than `torchaudio.load`, which in torchaudio >= 2.9 needs
torchcodec/FFmpeg. Everything a user can get wrong becomes a `core.errors.DataError` naming the file.

Input audio is resampled with `soxr` (libsoxr), not `torchaudio.transforms.Resample`: torchaudio builds
one windowed-sinc kernel of about `(new/g) * (orig/g)` float64 values (g = gcd of the two rates), so a
tiny WAV whose header says 16,001 Hz would make it allocate gigabytes. libsoxr's polyphase filters cost
a bounded few MB for any rate.
"""

from __future__ import annotations

import functools
import io
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchaudio

from core.errors import DataError

__all__ = [
    "MAX_DECODED_SAMPLES",
    "MAX_RESAMPLE_KERNEL",
    "MAX_SAMPLE_RATE",
    "MIN_SAMPLES",
    "MIN_SAMPLE_RATE",
    "SAMPLE_RATE",
    "SILENCE_DB",
    "AudioInput",
    "audio_info",
    "is_silent",
    "load_audio",
    "resample_kernel_size",
    "resampler",
    "split_on_silence",
    "to_mono_16k",
]

SAMPLE_RATE = 16000
#: Shortest usable input: one 25 ms analysis window at 16 kHz (a shorter one has no speech in it, and the
#: encoder's subsampling would leave nothing to attend to).
MIN_SAMPLES = 400
#: A chunk whose loudest 25 ms frame stays below this level (dB re full scale) is silence: speech, even
#: quiet, is tens of dB above it, while digital silence and dither sit below.
SILENCE_DB = -60.0
#: Sample rates accepted for input audio (Hz): telephone-band recordings to 384 kHz studio files.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 384000
#: Most samples (all channels together) one file may decode to: 1 GiB of float32, 4.6 hours of 16 kHz mono.
MAX_DECODED_SAMPLES = 1 << 28
#: Largest torchaudio resampling kernel `resampler` builds, in `(orig/g) * (new/g)` (g = gcd): 10^6
#: coefficients (about 8 MB in float64). Every common rate pair is far below it (44.1 kHz <-> 16 kHz:
#: 70,560; 11.025 kHz <-> 16 kHz: 282,240), while 16,001 Hz <-> 16 kHz would be 256 million (2 GB).
MAX_RESAMPLE_KERNEL = 1_000_000

# What `transcribe` and the datasets accept: a path, or (waveform, sample_rate) with the waveform
# shaped (N,) or (channels, N) (numpy array or tensor).
AudioInput = str | Path | tuple[Any, int]


def resample_kernel_size(orig: int, new: int) -> int:
    """Size measure of torchaudio's windowed-sinc kernel for `orig` -> `new` Hz: `(orig/g) * (new/g)`, g = gcd.

    torchaudio (`transforms.Resample`, `functional.resample`) builds a `(new/g, orig/g + 2*width)` kernel
    (width ~7..13) in float64 temporaries, so this is about the number of coefficients it allocates.
    """
    g = math.gcd(int(orig), int(new))
    return (int(orig) // g) * (int(new) // g)


@functools.lru_cache(maxsize=8)
def resampler(orig: int, new: int) -> torchaudio.transforms.Resample:
    """Cached torchaudio resampling transform for fixed, known rate pairs (e.g. the synthesiser's 22.05 kHz).

    Not for rates read from user files: use `to_mono_16k` (soxr), whose cost is bounded for any rate.

    Raises:
        ValueError: the rate pair would need a kernel over `MAX_RESAMPLE_KERNEL` (see `resample_kernel_size`).
    """
    if resample_kernel_size(orig, new) > MAX_RESAMPLE_KERNEL:
        raise ValueError(
            f"resampling {orig} Hz -> {new} Hz with torchaudio needs a {resample_kernel_size(orig, new):,}-coefficient "
            f"kernel (limit {MAX_RESAMPLE_KERNEL:,}); use tasks.speech.audio.to_mono_16k (soxr) instead"
        )
    return torchaudio.transforms.Resample(orig, new)


def _resample_16k(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """`(N,)` float32 at `sample_rate` -> float32 at 16 kHz with libsoxr (HQ: 20-bit, passband to 91%).

    Memory is the input, the output and a few MB of filter state for any rate (polyphase, rational or
    interpolated coefficients). The output has `round(N * 16000 / sample_rate)` samples (torchaudio: ceil,
    so at most one more). The response is flat (0.01 dB) to 7.3 kHz and -3 dB at 7.6 kHz; torchaudio's default
    Hann-windowed sinc is already -2 dB at 7 kHz.
    """
    import soxr

    return soxr.resample(np.ascontiguousarray(x, dtype=np.float32), int(sample_rate), SAMPLE_RATE, quality="HQ")


def to_mono_16k(wav: Any, sample_rate: int, source: str = "<array>") -> torch.Tensor:
    """Convert a waveform to mono float32 at 16 kHz.

    Args:
        wav: samples `(N,)` or `(C, N)` (channels first), numpy or torch, int or float.
        sample_rate: its sample rate in Hz.
        source: name used in error messages.

    Returns:
        Float32 tensor `(N',)` at 16 kHz.

    Raises:
        DataError: empty audio, NaN/Inf samples, a sample rate outside
            `MIN_SAMPLE_RATE`..`MAX_SAMPLE_RATE` (1 kHz .. 384 kHz) or a bad shape.
    """
    x = torch.as_tensor(np.asarray(wav) if not isinstance(wav, torch.Tensor) else wav)
    if not torch.is_floating_point(x):
        # Integer PCM: scale to [-1, 1) by the type's range (int16 -> 32768, int32 -> 2**31).
        x = x.float() / float(torch.iinfo(x.dtype).max + 1)
    x = x.float()
    if x.dim() == 2:
        x = x.mean(dim=0)  # (C, N) -> (N,): downmix
    if x.dim() != 1:
        raise DataError(f"{source}: expected a waveform shaped (N,) or (channels, N), got {tuple(x.shape)}")
    # The rate comes from a file header: bound it (each resampler's cost grows with it, torchaudio's with
    # the reduced ratio: 16,001 Hz would have cost 2 GB).
    rate = 0
    try:
        rate = int(sample_rate)
        ok = not isinstance(sample_rate, bool) and rate == sample_rate and MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise DataError(
            f"{source}: invalid sample rate {sample_rate!r} Hz, expected an integer in "
            f"{MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz"
        )
    sample_rate = rate
    if x.numel() == 0:
        raise DataError(f"{source}: the audio is empty (zero samples)")
    min_in = max(1, math.ceil(MIN_SAMPLES * sample_rate / SAMPLE_RATE))
    if x.numel() < min_in:
        raise DataError(
            f"{source}: the audio is too short ({x.numel()} samples at {sample_rate} Hz; at least "
            f"{min_in}, i.e. {1000 * MIN_SAMPLES // SAMPLE_RATE} ms)"
        )
    # A float file can hold NaN/Inf; one such sample would poison the features, the feature
    # statistics and the loss (and `nan == 0.0` is False, so silence checks would not catch it).
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise DataError(f"{source}: the audio contains {bad} NaN or infinite sample(s)")
    peak = float(x.abs().max())
    if peak > 1.0:
        # Float files may hold samples beyond full scale (or a tool wrote raw integers as floats): squared
        # in the power spectrum they overflow float32 and every feature becomes inf. Scale to full scale;
        # the log-mel features only shift by a constant.
        warnings.warn(f"{source}: samples reach {peak:.3g}, beyond full scale (1.0); scaled down", stacklevel=2)
        x = x / peak
    if sample_rate != SAMPLE_RATE:
        y = _resample_16k(x.detach().cpu().numpy(), sample_rate)
        x = torch.from_numpy(y).to(x.device)
    return x.contiguous()


def _read(src: str | Path | bytes, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """soundfile read -> `(C, N)` float32 and sample rate, with user-facing errors; at most
    `MAX_DECODED_SAMPLES`, and at most ``max_seconds`` when given (whatever the header says)."""
    import soundfile as sf

    name = "<bytes>" if isinstance(src, bytes) else str(src)
    if not isinstance(src, bytes) and not Path(src).is_file():
        raise DataError(f"{name}: audio file not found")
    try:
        with sf.SoundFile(io.BytesIO(src) if isinstance(src, bytes) else str(src)) as f:
            # Read at most MAX_DECODED_SAMPLES (plus one frame, to notice more): a small compressed file (a FLAC
            # of hours of silence) or a header that lies about its length never decodes into gigabytes.
            limit = max(1, MAX_DECODED_SAMPLES // max(f.channels, 1))
            if max_seconds is not None:
                limit = min(limit, max(1, math.ceil(max_seconds * f.samplerate)))
            data = f.read(frames=limit + 1, dtype="float32", always_2d=True)
            sr = f.samplerate
    except Exception as e:  # libsndfile raises LibsndfileError / RuntimeError / TypeError on bad data
        suffix = Path(name).suffix.lower()
        hint = (
            " (MP3 needs libsndfile >= 1.1; convert it to WAV or FLAC, e.g. `ffmpeg -i in.mp3 out.flac`)"
            if suffix == ".mp3"
            else " (expected WAV, FLAC or OGG readable by libsndfile)"
        )
        raise DataError(f"{name}: cannot read audio: {e}{hint}") from None
    if data.shape[0] > limit:
        if max_seconds is not None and limit < MAX_DECODED_SAMPLES // max(data.shape[1], 1):
            raise DataError(f"{name}: the audio is longer than {max_seconds:g} s")
        raise DataError(
            f"{name}: the audio decodes to more than {MAX_DECODED_SAMPLES:,} samples ({limit / max(sr, 1) / 60:.0f} "
            f"minutes at {sr} Hz with {data.shape[1]} channel(s)); split it into shorter files"
        )
    return data.T, int(sr)  # (N, C) -> (C, N)


def load_audio(src: AudioInput | bytes, max_seconds: float | None = None) -> torch.Tensor:
    """Load any supported input as mono 16 kHz float32.

    Args:
        src: a file path, raw file bytes, or `(waveform, sample_rate)`.
        max_seconds: refuse a file longer than this (decoding stops there, whatever its header says).

    Returns:
        Tensor `(N,)` at 16 kHz.

    Raises:
        DataError: missing/unreadable/corrupt file, empty audio, NaN/Inf samples, bad array shape.
    """
    if isinstance(src, tuple):
        wav, sr = src
        return to_mono_16k(wav, int(sr))
    data, sr = _read(src, max_seconds)
    return to_mono_16k(data, sr, source="<bytes>" if isinstance(src, bytes) else str(src))


def audio_info(path: str | Path) -> float:
    """Duration in seconds from the file header (cheap: no decoding). Raises DataError if unreadable."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception as e:
        raise DataError(f"{path}: cannot read audio header: {e}") from None
    return info.frames / info.samplerate if info.samplerate else 0.0


def frame_energy_db(wav: torch.Tensor, frame: int = 400, hop: int = 160) -> torch.Tensor:
    """Short-time energy in dB.

    Args:
        wav: `(N,)` samples.
        frame, hop: window and hop in samples (25 ms / 10 ms at 16 kHz).

    Returns:
        `(F,)` energies, `F = 1 + (N - frame) // hop` (at least 1).
    """
    if wav.numel() < frame:
        wav = torch.nn.functional.pad(wav, (0, frame - wav.numel()))
    frames = wav.unfold(0, frame, hop)  # (F, frame)
    return 10.0 * torch.log10(frames.pow(2).mean(dim=1) + 1e-10)


def is_silent(wav: torch.Tensor, threshold_db: float = SILENCE_DB) -> bool:
    """Whether the loudest 25 ms frame of `(N,)` samples stays below `threshold_db` (no speech in it)."""
    return wav.numel() == 0 or float(frame_energy_db(wav).max()) < threshold_db


def split_on_silence(
    wav: torch.Tensor, max_seconds: float, sample_rate: int = SAMPLE_RATE, min_seconds: float | None = None
) -> list[tuple[int, int]]:
    """Cut long audio into chunks no longer than `max_seconds`, at the quietest point where possible.

    Greedy: from the current start, look at the window `[start + min_seconds, start + max_seconds]`
    and cut at the frame with the lowest short-time energy (a pause between words when there is
    one; an arbitrary point in continuous sound, which is the best we can do).

    Args:
        wav: `(N,)` samples.
        max_seconds: longest chunk.
        sample_rate: sample rate of `wav`.
        min_seconds: shortest chunk before the last (default `max_seconds / 2`).

    Returns:
        `(start, end)` sample indices covering `wav` in order.
    """
    n = wav.numel()
    max_len = max(1, int(max_seconds * sample_rate))
    if n <= max_len:
        return [(0, n)]
    min_len = int((min_seconds if min_seconds is not None else max_seconds / 2) * sample_rate)
    hop, frame = sample_rate // 100, sample_rate // 40
    energy = frame_energy_db(wav, frame, hop)  # (F,)
    # Smooth over ~100 ms so a single quiet frame inside a word does not win over a real pause.
    energy = torch.nn.functional.avg_pool1d(energy[None, None], 9, stride=1, padding=4, count_include_pad=False)[0, 0]
    cuts, start = [], 0
    while n - start > max_len:
        lo, hi = (start + min_len) // hop, (start + max_len - frame) // hop
        if hi <= lo:
            cut = start + max_len
        else:
            cut = (lo + int(torch.argmin(energy[lo:hi]))) * hop + frame // 2
        cuts.append((start, cut))
        start = cut
    cuts.append((start, n))
    return cuts
