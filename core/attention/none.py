"""No attention: one fixed context per source, the encoder–decoder of Cho et al. / Sutskever et al. (2014).

The baseline that shows what attention buys. Every decoder step gets the same summary of the source, the
mean of its (unmasked) states, whatever it is generating; with captioning's image grid this is the mean
image feature of Show and Tell (Vinyals et al. 2015). Written as a mechanism so that it is chosen like one
(``--model.attention none``) and the rest of the model stays exactly the same.

The "weights" it returns are the uniform average it takes (``1/S`` on every source position). They say
nothing about the input: an alignment score of ``none`` is not defined, and the study reports none.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from core.attention.base import Attention, masked_softmax

__all__ = ["NoAttention"]


class NoAttention(Attention):
    """A fixed context: the masked mean of the values, the same for every query (no parameters).

    Args:
        query_dim: size of the queries (only checked; they are not used).
        key_dim: size of the keys (only checked).
        value_dim: size of the values averaged (default ``key_dim``).
    """

    def _attend(
        self,
        query: Tensor,
        keys: Tensor | None,
        values: Tensor | None,
        mask: Tensor | None,
        *,
        precomputed: Any,
        prev_weights: Tensor | None,
        need_weights: bool,
        sdpa_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        assert values is not None
        b, tq, s = query.shape[0], query.shape[1], values.shape[1]
        scores = values.new_zeros(b, tq, s)  # (B, Tq, S): every position equal
        weights = masked_softmax(scores, mask)  # uniform over the allowed keys; a fully masked row is zeros
        context = weights @ values  # (B, Tq, S) @ (B, S, Dv) -> (B, Tq, Dv)
        return context, (weights if need_weights else None)
