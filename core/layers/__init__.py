"""Layers shared by the tasks, built on ``core.attention`` (one mask convention: bool, True = attend)."""

from core.layers.rnn_decoder import AttentionalRNNDecoder
from core.layers.transformer import (
    FeedForward,
    SinusoidalPositions,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
    sinusoidal_table,
)

__all__ = [
    "AttentionalRNNDecoder",
    "FeedForward",
    "SinusoidalPositions",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerEncoderLayer",
    "sinusoidal_table",
]
