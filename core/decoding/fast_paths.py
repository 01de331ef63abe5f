"""Inference-only fast paths shared by the decoders' step functions."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

__all__ = ["append_to_cache", "clear_vocab_projection_cache", "eval_mode", "step_log_probs", "vocab_projection"]


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Run the block with ``module`` in eval mode, then restore its previous mode (also on errors).

    Inference entry points (``translate``, ``caption``, ``transcribe``) and in-training decoding use it,
    so calling them from a training loop never leaves dropout off afterwards.
    """
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


# layer -> (weak reference to its weight, (storage address, version), (D, V) copy). Kept outside the
# module so that modules still pickle (torch.save(model), spawn) and carry no extra copy when they do.
_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[weakref.ref[Tensor], tuple[int, int], Tensor]] = (
    weakref.WeakKeyDictionary()
)


def vocab_projection(layer: nn.Linear, x: Tensor) -> Tensor:
    """``layer(x)`` for one decoding step, through a cached row-major ``W^T`` on CPU.

    On CPU, oneDNN runs ``(N, D) @ (D, V)`` 10-19 % faster from a contiguous ``(D, V)`` matrix
    than from ``nn.Linear``'s ``(V, D)`` weight at decoding sizes (measured at N 80, D 256,
    V 8000 with 1 and 2 threads; no gain for the small square projections), and the vocabulary
    projection is the largest matmul of a step. The copy is made once and remade when the weight
    changes: another tensor object, another storage, or an in-place update through autograd's
    version counter (optimizer steps, ``load_state_dict``, writes through a tied embedding).
    Writes through ``weight.data`` bypass the version counter and are not seen: after
    ``layer.weight.data.copy_(...)`` call `clear_vocab_projection_cache`. Elsewhere (GPU,
    autograd, non-fp32, inference-mode weights, which have no version counter) this is ``layer(x)``.

    Args:
        layer: the output projection (weight ``(V, D)``).
        x: ``(N, D)`` decoder states.

    Returns:
        Logits ``(N, V)``.
    """
    w = layer.weight
    if (
        x.dim() != 2
        or x.device.type != "cpu"
        or x.dtype != torch.float32
        or w.dtype != torch.float32
        or (w.is_inference() or (torch.is_grad_enabled() and (w.requires_grad or x.requires_grad)))
    ):
        return layer(x)
    # The same tensor object (a weak reference: a replaced weight is not kept alive), storage and
    # version: an address alone could be reused by a new weight after the old one is freed.
    key = (w.data_ptr(), w._version)
    cached = _CACHE.get(layer)
    if cached is None or cached[0]() is not w or cached[1] != key:
        cached = (weakref.ref(w), key, w.detach().t().contiguous())  # (V, D) -> (D, V) row-major
        _CACHE[layer] = cached
    if layer.bias is None:
        return torch.mm(x, cached[2])
    return torch.addmm(layer.bias, x, cached[2])


def clear_vocab_projection_cache() -> None:
    """Drop every cached ``W^T`` (needed only after writes through ``weight.data``)."""
    _CACHE.clear()


def step_log_probs(logits: Tensor) -> Tensor:
    """``log_softmax(logits.float(), -1)`` for a decoding step, written over ``logits`` on CPU.

    A fresh ``(N, V)`` output costs more than the softmax itself on CPU: measured at N 80,
    V 8000, 1 thread, projection + log-softmax took 7.5 ms with a new output tensor and 4.8 ms
    in place (the projection alone 4.4 ms), the difference being the allocator handing back
    freshly mapped pages. The CPU kernel reads each element before writing the same position,
    so in-place is exact (tested). Elsewhere (GPU, autograd, non-fp32 logits) it allocates.

    Args:
        logits: ``(N, V)`` scores of one step, owned by the caller (overwritten on CPU).

    Returns:
        Log-probabilities ``(N, V)`` in float32.
    """
    if (
        logits.device.type == "cpu"
        and logits.dtype == torch.float32
        and logits.is_contiguous()
        and not (torch.is_grad_enabled() and logits.requires_grad)
    ):
        return torch.log_softmax(logits, dim=-1, out=logits)
    return torch.log_softmax(logits.float(), dim=-1)


def append_to_cache(cache: Tensor, new: Tensor, rows: Tensor | None) -> Tensor:
    """``cat([cache[rows], new], dim=2)`` with one copy of the cache.

    Args:
        cache: ``(M, H, t, Dh)`` keys or values of earlier positions.
        new: ``(N, H, 1, Dh)`` this step's.
        rows: ``(N,)`` row of ``cache`` that each new row continues (beam search), or None (same rows).

    Returns:
        ``(N, H, t + 1, Dh)``.
    """
    if rows is not None:
        rows = rows.to(cache.device)
    if cache.dtype != new.dtype or (torch.is_grad_enabled() and (cache.requires_grad or new.requires_grad)):
        # out= has no autograd and needs one dtype: the two-copy form (teacher-forcing checks run
        # steps with grad; cat promotes mixed dtypes).
        return torch.cat([cache if rows is None else cache.index_select(0, rows), new], dim=2)
    n, h, t, d = new.shape[0], cache.shape[1], cache.shape[2], cache.shape[3]
    out = new.new_empty(n, h, t + 1, d)
    if rows is None:
        out[:, :, :t] = cache
    else:
        torch.index_select(cache, 0, rows, out=out[:, :, :t])  # gathered straight into place
    out[:, :, t:] = new
    return out
