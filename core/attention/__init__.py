"""Every attention mechanism behind one interface, picked by name.

Example:
    >>> import torch
    >>> from core.attention import build_attention
    >>> attn = build_attention("additive", query_dim=8, key_dim=6)
    >>> out = attn(torch.randn(2, 8), torch.randn(2, 5, 6), torch.randn(2, 5, 6))
    >>> out.context.shape, out.weights.shape
    (torch.Size([2, 6]), torch.Size([2, 5]))
"""

from core.attention.additive import AdditiveAttention, LocationAttention, additive_scores
from core.attention.base import Attention, AttentionOutput, causal_mask, lengths_to_mask, masked_softmax
from core.attention.dot import DotAttention, GeneralAttention, ScaledDotAttention
from core.attention.multihead import MultiHeadAttention
from core.attention.none import NoAttention
from core.attention.pooling import PoolingAttention
from core.attention.registry import attention_options, available_attentions, build_attention, register_attention

__all__ = [
    "AdditiveAttention",
    "Attention",
    "AttentionOutput",
    "DotAttention",
    "GeneralAttention",
    "LocationAttention",
    "MultiHeadAttention",
    "NoAttention",
    "PoolingAttention",
    "ScaledDotAttention",
    "additive_scores",
    "attention_options",
    "available_attentions",
    "build_attention",
    "causal_mask",
    "lengths_to_mask",
    "masked_softmax",
    "register_attention",
]
