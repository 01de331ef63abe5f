"""What a search returns, as plain lists: ``core.decoding.beam.beam_search``, and engines that search whole
sequences themselves (``core.engines.search``), which return it without PyTorch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["DecodeResult"]


@dataclass
class DecodeResult:
    """Decoded hypotheses, best first for each batch item.

    Attributes:
        tokens: ``tokens[b][k]`` -- token ids of hypothesis ``k`` of item ``b``, without BOS/EOS.
        scores: ``scores[b][k]`` -- length-normalised log-probability (higher is better).
        attention: ``attention[b][k]`` -- ``(len(tokens[b][k]), S)`` float CPU tensor (one row per
            emitted token; the EOS step is not included), or ``None`` when the step function returned
            no attention.
    """

    tokens: list[list[list[int]]] = field(default_factory=list)
    scores: list[list[float]] = field(default_factory=list)
    attention: list[list[Tensor | None]] = field(default_factory=list)
