"""Guided attention: a diagonal prior that teaches the attention decoder to listen early.

An attention decoder trained only by cross-entropy first learns the character language model and
only later where to look in the audio; until it does, every output step attends to the same few
frames and the transcripts are fluent guesses. Speech is monotonic and, within one utterance,
roughly uniform in rate, so output unit ``l`` of ``L`` should attend near encoder frame
``s ~= S * l / L``. Tachibana et al. (2018, "Efficiently trainable text-to-speech system based on deep
convolutional networks with guided attention") penalise attention away from that diagonal with

    W[l, s] = 1 - exp(-(s / S - l / L)^2 / (2 g^2)),    loss = mean over output steps of sum_s A[l, s] W[l, s]

which is zero for attention on the diagonal band (width ~g of the utterance) and approaches 1 far
from it. The loss per output step is the expected penalty under that step's attention, in [0, 1).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["diagonal_penalty", "guided_attention_loss", "guided_weight"]


def diagonal_penalty(out_lens: Tensor, in_lens: Tensor, max_out: int, max_in: int, sigma: float) -> Tensor:
    """Penalty weights ``W`` of the guided attention loss, zero outside each utterance's valid area.

    Positions are taken at the centres of their cells (``(l + 0.5) / L``), so the first and last output
    steps aim at the first and last frames rather than at the utterance's edges.

    Args:
        out_lens: `(B,)` output steps per utterance (targets plus EOS).
        in_lens: `(B,)` valid encoder frames per utterance.
        max_out: `L`, padded output steps.
        max_in: `S`, padded encoder frames.
        sigma: width `g` of the band, as a fraction of the utterance.

    Returns:
        `(B, L, S)` float tensor on `out_lens`' device.
    """
    dev = out_lens.device
    lo = out_lens.to(dev, torch.float32).clamp_min(1)[:, None, None]  # (B, 1, 1)
    li = in_lens.to(dev, torch.float32).clamp_min(1)[:, None, None]  # (B, 1, 1)
    pos_out = torch.arange(max_out, device=dev, dtype=torch.float32)[None, :, None]  # (1, L, 1)
    pos_in = torch.arange(max_in, device=dev, dtype=torch.float32)[None, None, :]  # (1, 1, S)
    w = 1.0 - torch.exp(-(((pos_in + 0.5) / li - (pos_out + 0.5) / lo) ** 2) / (2.0 * sigma * sigma))  # (B, L, S)
    valid = (pos_out < lo) & (pos_in < li)  # (B, L, S)
    return w * valid


def guided_attention_loss(weights: Tensor, out_lens: Tensor, in_lens: Tensor, sigma: float = 0.2) -> Tensor:
    """Expected distance of the attention from the diagonal, averaged over valid output steps.

    Args:
        weights: `(B, L, S)` attention of each output step over encoder frames (rows sum to 1 over
            valid frames; padded frames have zero weight).
        out_lens: `(B,)` valid output steps.
        in_lens: `(B,)` valid encoder frames.
        sigma: band width `g` (Tachibana et al. use 0.2).

    Returns:
        Scalar loss in [0, 1).
    """
    _, max_out, max_in = weights.shape
    w = diagonal_penalty(out_lens, in_lens, max_out, max_in, sigma).to(weights.dtype)  # (B, L, S)
    steps = out_lens.to(weights.device).clamp(max=max_out).sum().clamp_min(1)
    return (weights * w).sum() / steps


def guided_weight(weight: float, fade_steps: int | None, step: int, final: float = 0.0) -> float:
    """Weight of the guided loss at optimizer step `step`: `weight`, fading linearly to `final` over `fade_steps`.

    A linear diagonal is only roughly right (speaking rate varies within an utterance); held at full
    weight for the whole run it pulls the attention off the real alignment, so it can be faded once the
    decoder has found it, to a small `final` weight that keeps it from drifting back.
    """
    if not fade_steps:
        return weight
    return final + (weight - final) * max(0.0, 1.0 - step / fade_steps)
