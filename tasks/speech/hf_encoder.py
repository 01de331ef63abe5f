"""Self-supervised speech encoders from ``transformers`` under our attention decoder and CTC head.

``--model.encoder hf:<hub-id-or-folder>`` loads wav2vec2, HuBERT, WavLM (or Whisper's encoder) through
``core.io.pretrained``. It reads the raw 16 kHz waveform (the data module then also carries waveforms), resampled
to the encoder's rate when that differs and normalised as its feature extractor does; the decoder attends
over a learned softmax-weighted sum of all its hidden layers (SpeechBrain's ``weighted_ssl``, s3prl's
featurizer): lower layers hold acoustics, upper ones more phonetic content, and the mix is learned. Each
layer is layer-normalised first so that no layer wins by scale alone.

How much of the encoder trains is ``core.train.freeze.FreezePolicy`` (``trainable_blocks`` counts its
Transformer layers); its convolutional feature encoder always stays frozen, as in wav2vec2 fine-tuning.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.attention import lengths_to_mask
from core.errors import ConfigError
from core.io.pretrained import (
    build_from_config,
    hf_name,
    load_pretrained,
    read_json_file,
    read_model_type,
    resolve_pretrained,
)
from core.train.freeze import FreezePolicy, find_blocks

__all__ = ["HFSpeechEncoder", "hf_speech_encoder", "speech_settings"]

# LayerDrop skips whole layers in training, which leaves hidden states out of the weighted sum (and
# `transformers` then returns fewer of them): off, as SpeechBrain's weighted-SSL models do.
_NO_LAYERDROP = {"layerdrop": 0.0, "encoder_layerdrop": 0.0}

OPTION = "--model.encoder"
INPUT_RATE = 16000  # what tasks.speech.audio.load_audio delivers
_WHISPER_KEYS = ("feature_size", "hop_length", "chunk_length", "n_fft", "padding_value")


def speech_settings(processor: Mapping[str, Any], model_type: str, what: str) -> dict[str, Any]:
    """The feature extractor settings the encoder needs, checked (they may come from a checkpoint).

    Raises:
        ConfigError: a sampling rate outside 8..48 kHz, or one whose resampling kernel from 16 kHz would be large
            (e.g. 16,001 Hz: see ``_check_resample_rate``), or settings of the wrong type; names ``what``.
    """
    rate = processor.get("sampling_rate", INPUT_RATE)
    if isinstance(rate, bool) or not isinstance(rate, int) or not 8000 <= rate <= 48000:
        raise ConfigError(f"{what}: sampling_rate = {rate!r}, expected 8000..48000 Hz")
    _check_resample_rate(rate, what)
    out: dict[str, Any] = {
        "sampling_rate": rate,
        "do_normalize": bool(processor.get("do_normalize", False)),
        "return_attention_mask": bool(processor.get("return_attention_mask", False)),
    }
    if model_type == "whisper":
        limits = {
            "feature_size": (1, 512),
            "hop_length": (1, 4096),
            "chunk_length": (1, 60),
            "n_fft": (16, 8192),
            "padding_value": (-1e6, 1e6),
        }
        for key in _WHISPER_KEYS:
            value = processor.get(key)
            low, high = limits[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise ConfigError(f"{what}: whisper feature extractor {key} = {value!r}, expected {low}..{high}")
            out[key] = value
    return out


def _check_resample_rate(rate: int, what: str) -> None:
    """Refuse an encoder rate whose 16 kHz -> ``rate`` torchaudio kernel would be large (see ``_prepare``).

    ``torchaudio.functional.resample`` builds a ``(rate/g, 16000/g + ~14)`` kernel (g = gcd): 16,001 Hz would be
    16,001 x 16,014 coefficients, 2 GB in float64. Every usual rate is far below ``MAX_RESAMPLE_KERNEL`` (10^6):
    8, 12, 16, 24, 32, 48 kHz need at most 12; 22.05 and 44.1 kHz 141,120 and 70,560; 11.025 kHz 282,240.

    Raises:
        ConfigError: names ``what`` and the value.
    """
    from tasks.speech.audio import MAX_RESAMPLE_KERNEL, resample_kernel_size

    size = resample_kernel_size(INPUT_RATE, rate)
    if size > MAX_RESAMPLE_KERNEL:
        g = math.gcd(INPUT_RATE, rate)
        raise ConfigError(
            f"{what}: sampling_rate = {rate!r} Hz cannot be resampled from {INPUT_RATE} Hz with a bounded kernel "
            f"(reduced ratio {rate // g}/{INPUT_RATE // g}: {size:,} coefficients, limit {MAX_RESAMPLE_KERNEL:,}); "
            f"use a usual rate such as 8000, 16000, 22050, 24000, 44100 or 48000 Hz"
        )


class HFSpeechEncoder(nn.Module):
    """A ``transformers`` speech encoder -> weighted sum of its layers ``(B, S, D)`` + lengths.

    Args:
        backbone: the pretrained encoder (``Wav2Vec2Model``-like, or a ``WhisperEncoder``).
        model_type: its ``model_type``.
        config: its config as plain data.
        settings: :func:`speech_settings`.
        trainable_blocks: -1 fine-tune all Transformer layers, 0 frozen, k the top k.
        unfreeze_after_steps: keep it frozen for this many optimizer steps first.
    """

    def __init__(
        self,
        backbone: nn.Module,
        model_type: str,
        config: Mapping[str, Any],
        settings: Mapping[str, Any],
        trainable_blocks: int = -1,
        unfreeze_after_steps: int | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.model_type = model_type
        self.settings = dict(settings)
        _check_resample_rate(int(self.settings["sampling_rate"]), "HFSpeechEncoder settings")
        whisper = model_type == "whisper"
        layers = int(config["encoder_layers"] if whisper else config["num_hidden_layers"])
        self.output_dim = int(config["d_model"] if whisper else config["hidden_size"])
        # one weight per hidden state (the embedding output and every layer), softmax-normalised: uniform at first
        self.layer_weights = nn.Parameter(torch.zeros(layers + 1))
        never = ["conv1.", "conv2.", "embed_positions."] if whisper else ["feature_extractor."]
        if not whisper and not float(config.get("mask_time_prob", 0.0)) > 0:
            never.append("masked_spec_embed")  # only used by time masking: unused without it
        self.freeze_policy = FreezePolicy(
            backbone, find_blocks(backbone), trainable_blocks, unfreeze_after_steps, never=never
        )
        self._whisper_fe: Any = None
        if whisper:
            from transformers import WhisperFeatureExtractor

            kw = {k: self.settings[k] for k in _WHISPER_KEYS}
            self._whisper_fe = WhisperFeatureExtractor(sampling_rate=self.settings["sampling_rate"], **kw)

    def train(self, mode: bool = True) -> HFSpeechEncoder:
        super().train(mode)
        if mode:
            self.freeze_policy.fix_modes()
        return self

    def _prepare(self, wavs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Resample to the encoder's rate, zero the padding and normalise per utterance (over its samples)."""
        rate = self.settings["sampling_rate"]
        if rate != INPUT_RATE:
            import torchaudio

            # on the batch's device (GPU too); the kernel's size was bounded when the encoder was built
            wavs = torchaudio.functional.resample(wavs, INPUT_RATE, rate)  # (B, N') along the last dim
            lengths = (lengths * rate + INPUT_RATE - 1) // INPUT_RATE
        mask = lengths_to_mask(lengths.to(wavs.device), wavs.shape[1])  # (B, N) True = sample
        x = wavs.float().masked_fill(~mask, 0.0)
        if self.settings["do_normalize"]:
            n = lengths.to(x.device).clamp_min(1).unsqueeze(1).float()  # (B, 1)
            mean = x.sum(1, keepdim=True) / n
            var = ((x - mean).masked_fill(~mask, 0.0) ** 2).sum(1, keepdim=True) / n
            x = ((x - mean) / torch.sqrt(var + 1e-7)).masked_fill(~mask, 0.0)  # as Wav2Vec2FeatureExtractor
        return x, lengths, mask

    def _run(self, x: Tensor, lengths: Tensor, mask: Tensor) -> tuple[tuple[Tensor, ...], Tensor]:
        """The backbone's hidden states (each ``(B, S, D)``) and the valid output frames ``(B,)``.

        The last one is the model's output (``last_hidden_state``): for pre-norm models (wav2vec2 "stable layer
        norm", Whisper) the final layer norm is part of it, so that norm is used and trained too.
        """
        if self._whisper_fe is not None:
            # Whisper reads the log-mels of a 30 s window (padded); its convolutions halve the frame rate,
            # so one output frame covers 2 * hop_length input samples.
            fe = self._whisper_fe
            feats = fe(
                [w[: int(n)].cpu().numpy() for w, n in zip(x, lengths)],
                sampling_rate=fe.sampling_rate,
                return_tensors="pt",
            ).input_features.to(x.device)  # (B, n_mels, frames)
            out = self.backbone(feats, output_hidden_states=True)
            frames = (lengths.to(x.device) + 2 * fe.hop_length - 1) // (2 * fe.hop_length)
        else:
            attention = mask.long() if self.settings["return_attention_mask"] else None
            out = self.backbone(x, attention_mask=attention, output_hidden_states=True)
            output_lengths: Any = self.backbone._get_feat_extract_output_lengths  # its conv stack's rule
            frames = output_lengths(lengths.to(x.device))  # (B,)
        hidden = (*out.hidden_states[:-1], out.last_hidden_state)
        return hidden, frames.clamp(1, out.last_hidden_state.shape[1])

    def forward(self, wavs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Encode waveforms.

        Args:
            wavs: ``(B, N)`` 16 kHz waveforms, zero-padded.
            lengths: ``(B,)`` valid samples.

        Returns:
            ``(B, S, output_dim)`` weighted hidden states (about 50 frames per second) and their lengths ``(B,)``.
        """
        x, lengths, mask = self._prepare(wavs, lengths)
        if self._whisper_fe is not None and int(lengths.max()) > self._whisper_fe.n_samples:
            raise ConfigError(
                f"whisper encoders read at most {self._whisper_fe.chunk_length} s at once; set "
                f"model.max_chunk_seconds / data.max_seconds below it"
            )
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_policy.fully_frozen):
            hidden, frames = self._run(x, lengths, mask)
        if len(hidden) != self.layer_weights.numel():
            raise RuntimeError(
                f"the {self.model_type} encoder returned {len(hidden)} hidden states, expected "
                f"{self.layer_weights.numel()} (is LayerDrop on?)"
            )
        stack = torch.stack(hidden)  # (L+1, B, S, D)
        stack = F.layer_norm(stack, stack.shape[-1:])
        weights = torch.softmax(self.layer_weights, dim=0).to(stack.dtype)  # (L+1,)
        feats = (weights.view(-1, 1, 1, 1) * stack).sum(0)  # (B, S, D)
        return feats, frames


def hf_speech_encoder(
    spec: str, stored: Mapping[str, Any] | None, trainable_blocks: int, unfreeze_after_steps: int | None
) -> tuple[HFSpeechEncoder, dict[str, Any]]:
    """Build the encoder of ``--model.encoder hf:...``.

    Args:
        spec: ``hf:<hub-id-or-folder>``.
        stored: a checkpoint's ``pretrained_config`` (then only it is read: offline), or None to load ``spec``.
        trainable_blocks, unfreeze_after_steps: see :class:`HFSpeechEncoder`.

    Returns:
        ``(encoder, pretrained_config)``: ``{"source", "model_type", "config", "processor"}`` as plain data.
    """
    if stored is not None:
        config: Any = stored.get("config")  # untrusted: build_from_config checks it
        backbone = build_from_config(config, "speech", "--model.pretrained_config", overrides=_NO_LAYERDROP)
        info = dict(stored)
        model_type = str(info["config"]["model_type"])
        processor = info.get("processor")
        settings = speech_settings(
            processor if isinstance(processor, dict) else {}, model_type, "--model.pretrained_config.processor"
        )
    else:
        folder = resolve_pretrained(spec, OPTION)
        model_type = read_model_type(folder, "speech", OPTION)
        what = f"{OPTION}={folder}"
        processor = read_json_file(
            folder / "preprocessor_config.json", what, "the feature extractor's sampling rate and normalisation"
        )
        settings = speech_settings(processor, model_type, what)
        backbone, config = load_pretrained(folder, "speech", OPTION, overrides=_NO_LAYERDROP)
        info = {"source": hf_name(spec), "model_type": model_type, "config": config, "processor": settings}
    return HFSpeechEncoder(backbone, model_type, info["config"], settings, trainable_blocks, unfreeze_after_steps), info
