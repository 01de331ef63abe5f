"""Log-mel features, global normalisation statistics and SpecAugment."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torchaudio
from torch import Tensor, nn

from core.errors import DataError

__all__ = ["FEATURE_LIMITS", "MAX_OVERLAP", "FeatureConfig", "FeatureStats", "LogMel", "SpecAugment"]


#: Allowed range of each `FeatureConfig` field when it is read from a checkpoint or model folder (untrusted).
#: The front end's memory grows with n_fft / hop_length (values per input sample) and n_fft * n_mels (the
#: filterbank), so both are bounded: n_fft <= 4096 (256 ms at 16 kHz), hop_length >= 16 (1 ms at 16 kHz),
#: n_fft <= MAX_OVERLAP * hop_length. Usual front ends: 400/160 (ours, Whisper), 512/128, 1024/256, 2048/512.
#: There is no win_length field: torchaudio's window is n_fft long (an extra field is refused).
FEATURE_LIMITS: dict[str, tuple[float, float]] = {
    "sample_rate": (1000, 192000),
    "n_mels": (1, 512),
    "n_fft": (16, 4096),
    "hop_length": (16, 4096),
    "f_min": (0.0, 96000.0),
    "f_max": (1.0, 96000.0),
}
#: Largest n_fft / hop_length (frame overlap): 8 = 87.5 % overlap; usual front ends use 2.5 to 4.
MAX_OVERLAP = 8


@dataclass
class FeatureConfig:
    """Log-mel front end settings (stored in checkpoints so inference uses the same front end).

    Attributes:
        sample_rate: input rate in Hz (audio is resampled to it).
        n_mels: mel bins.
        n_fft: FFT size in samples (25 ms at 16 kHz).
        hop_length: frame shift in samples (10 ms).
        f_min, f_max: mel filterbank range in Hz.
    """

    sample_rate: int = 16000
    n_mels: int = 80
    n_fft: int = 400
    hop_length: int = 160
    f_min: float = 20.0
    f_max: float = 7600.0

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (checkpoint-safe)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, source: str) -> FeatureConfig:
        """Rebuild from `to_dict()` output read from `source`, validated (it is untrusted).

        Raises:
            CheckpointError: not a dict, unknown fields, values outside `FEATURE_LIMITS`, inconsistent
                values, or a hop_length under n_fft / `MAX_OVERLAP`; the message names the field and the range.
        """
        from core.errors import CheckpointError

        limits = FEATURE_LIMITS
        if not isinstance(data, dict) or set(data) - set(limits):
            got = sorted(data) if isinstance(data, dict) else data
            raise CheckpointError(f"{source}: feature_config must be a dict with fields {sorted(limits)}, got {got!r}")
        for key, value in data.items():
            low, high = limits[key]
            integral = isinstance(getattr(cls, key), int)
            ok_type = isinstance(value, int) if integral else isinstance(value, (int, float))
            if isinstance(value, bool) or not ok_type or not low <= value <= high:
                raise CheckpointError(
                    f"{source}: feature_config.{key} = {value!r}, expected a number in [{low}, {high}]"
                )
        cfg = cls(**data)
        if cfg.f_min >= cfg.f_max or cfg.f_max > cfg.sample_rate / 2 or cfg.hop_length > cfg.n_fft:
            raise CheckpointError(
                f"{source}: feature_config is inconsistent (need f_min < f_max <= sample_rate/2 "
                f"and hop_length <= n_fft): {data}"
            )
        if cfg.n_fft > MAX_OVERLAP * cfg.hop_length:
            # The STFT holds about n_fft/hop_length values per input sample (frames x (n_fft/2 + 1) bins,
            # complex): n_fft 16384 with hop_length 1 asks for 1.7 GB on a 1.6 s clip.
            low = -(-cfg.n_fft // MAX_OVERLAP)
            raise CheckpointError(
                f"{source}: feature_config.hop_length = {cfg.hop_length} is too small for n_fft = {cfg.n_fft}: "
                f"expected hop_length in [{low}, {cfg.n_fft}] (n_fft at most {MAX_OVERLAP} x hop_length)"
            )
        return cfg


class LogMel(nn.Module):
    """Waveform -> log-mel spectrogram `(frames, n_mels)`."""

    def __init__(self, cfg: FeatureConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or FeatureConfig()
        # Always real CPU tensors, also when the module is built on the meta device to check a checkpoint's
        # shapes (core.io.rebuild): torchaudio computes the filterbank with .item(), which meta tensors lack;
        # its size is bounded by the validated FeatureConfig.
        with torch.device("cpu"):
            self.mel = self._mel()

    def _mel(self) -> torchaudio.transforms.MelSpectrogram:
        return torchaudio.transforms.MelSpectrogram(
            sample_rate=self.cfg.sample_rate,
            n_fft=self.cfg.n_fft,
            hop_length=self.cfg.hop_length,
            f_min=self.cfg.f_min,
            f_max=self.cfg.f_max,
            n_mels=self.cfg.n_mels,
            power=2.0,
        )

    @torch.no_grad()
    def forward(self, wav: Tensor) -> Tensor:
        """Args: wav `(N,)` float at `cfg.sample_rate`. Returns `(frames, n_mels)`, frames = N // hop + 1."""
        spec = self.mel(wav)  # (n_mels, frames)
        # log with a floor: digital silence would give -inf otherwise.
        return torch.log(spec + 1e-6).transpose(0, 1).contiguous()  # (frames, n_mels)

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for `num_samples` samples (centered STFT)."""
        return num_samples // self.cfg.hop_length + 1


class FeatureStats(nn.Module):
    """Global per-bin mean / std, estimated on the training split; buffers live in the checkpoint."""

    mean: Tensor  # (n_mels,)
    std: Tensor  # (n_mels,)
    initialized: Tensor  # () bool: set from data or a checkpoint

    def __init__(self, n_mels: int = 80) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_mels))
        self.register_buffer("std", torch.ones(n_mels))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def fit(self, feats: Iterable[Tensor]) -> FeatureStats:
        """Estimate mean/std from `(frames, n_mels)` tensors (float64 sums: many frames).

        Raises:
            DataError: the statistics are not finite (some features held NaN/Inf), which would
                turn every normalised feature, and so the whole run, into NaN.
        """
        n, s, ss = 0, None, None
        for f in feats:
            f64 = f.double()
            s = f64.sum(0) if s is None else s + f64.sum(0)
            ss = (f64**2).sum(0) if ss is None else ss + (f64**2).sum(0)
            n += f.shape[0]
        if n == 0 or s is None or ss is None:
            return self
        mean = s / n
        var = (ss / n - mean**2).clamp_min(1e-8)
        mean32, std32 = mean.float(), var.sqrt().float()
        if not (bool(torch.isfinite(mean32).all()) and bool(torch.isfinite(std32).all())):
            raise DataError(
                f"feature statistics over {n} frames are not finite (NaN/Inf in the audio or "
                f"features of the training utterances used for them); check the training audio"
            )
        self.set(mean32, std32)
        return self

    def set(self, mean: Tensor | list[float], std: Tensor | list[float]) -> None:
        """Set the statistics (from `fit` or from checkpoint metadata)."""
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp_min(1e-4))
        self.initialized.fill_(True)

    def forward(self, feats: Tensor) -> Tensor:
        """Normalise `(..., n_mels)` features."""
        return (feats - self.mean) / self.std


class SpecAugment(nn.Module):
    """Frequency and time masking (Park et al. 2019) with torchaudio's masking transforms.

    Applied on normalised features (masked values become 0 = the global mean), per utterance
    (`iid_masks=True`), in training only.
    """

    def __init__(
        self,
        freq_masks: int = 2,
        freq_width: int = 15,
        time_masks: int = 2,
        time_width: int = 25,
        time_ratio: float = 0.1,
    ) -> None:
        super().__init__()
        self.freq_masks, self.time_masks = freq_masks, time_masks
        self.fmask = torchaudio.transforms.FrequencyMasking(freq_width, iid_masks=True)
        # p caps each mask at time_ratio of the utterance so short utterances are not wiped out.
        self.tmask = torchaudio.transforms.TimeMasking(time_width, iid_masks=True, p=time_ratio)

    def forward(self, feats: Tensor) -> Tensor:
        """Args: feats `(B, T, F)`. Returns masked features `(B, T, F)` (identity in eval mode)."""
        if not self.training or (self.freq_masks == 0 and self.time_masks == 0):
            return feats
        x = feats.transpose(1, 2).unsqueeze(1)  # (B, 1, F, T): torchaudio's (..., freq, time) layout
        for _ in range(self.freq_masks):
            x = self.fmask(x)
        for _ in range(self.time_masks):
            x = self.tmask(x)
        return x.squeeze(1).transpose(1, 2)  # (B, T, F)
