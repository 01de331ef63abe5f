"""Additive attention (Bahdanau et al. 2015) and location-aware attention (Chorowski et al. 2015).

Both score ``e[b, t, s] = v · tanh(W_q q[b, t] + W_k k[b, s] (+ U f[b, s]))``. The naive way
builds the ``(B, T, S, H)`` tensor inside the tanh and autograd keeps it (or one
``(B, S, H)`` slice per decoder step) alive until backward. `additive_scores` instead
evaluates it in bounded chunks and recomputes the tanh in backward, so the only tensors
saved are the projected queries ``(B, T, H)``, the projected keys ``(B, S, H)`` (shared by
all steps) and, for location attention, the small conv features ``(B, S, C)``.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor, nn

from core.attention.base import Attention, masked_softmax

#: Upper bound on elements of one (B, chunk, S, H) block inside `additive_scores` (CPU).
CHUNK_ELEMENTS = 1 << 22
#: On GPU, fewer and larger blocks: each block is a handful of kernel launches.
CUDA_CHUNK_ELEMENTS = 1 << 27
#: ``memory_efficient=None`` (auto) uses the recomputing `additive_scores` only when the energy
#: tanh that the plain formulation would keep for backward has more than this many elements, and
#: the plain formulation below it. See `AdditiveAttention` for the rule and the measurements.
AUTO_CPU_ELEMENTS = 1 << 28
AUTO_CUDA_ELEMENTS = 1 << 30


def auto_memory_efficient(b: int, t: int, s: int, h: int, device: torch.device, training: bool = True) -> bool:
    """What ``memory_efficient=None`` picks for a call with ``(B, Tq, S, H)`` energies on ``device``.

    With autograd recording (``training``), a decoder step (``Tq == 1``) is one of a loop whose kept
    tensors add up, so it is budgeted as the ``(B, S, S, H)`` whole loop (about one step per source
    position); a sequence call (``Tq > 1``) as its own ``(B, Tq, S, H)``. Without autograd nothing is
    kept: only one call's own size counts (the recompute path then just bounds the forward's
    temporary by evaluating it in chunks).
    """
    bound = AUTO_CUDA_ELEMENTS if device.type == "cuda" else AUTO_CPU_ELEMENTS
    steps = max(t, s) if t == 1 and training else t
    return b * steps * s * h > bound


def _chunk_len(b: int, t: int, s: int, h: int, device: torch.device) -> int:
    budget = CUDA_CHUNK_ELEMENTS if device.type == "cuda" else CHUNK_ELEMENTS
    return max(1, min(t, budget // max(1, b * s * h)))


def _fwd_chunk(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Energies of one query chunk: q ``(B, c, H)``, k ``(B, S, H)``, v ``(H,)`` -> ``(B, c, S)``."""
    e = torch.tanh(q[:, :, None, :] + k[:, None, :, :])  # (B, c, S, H)
    return torch.matmul(e, v)  # (B, c, S, H) @ (H,) -> (B, c, S)


def _bwd_chunk(q: Tensor, k: Tensor, v: Tensor, g: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of one chunk, recomputing the tanh; g ``(B, c, S)``.

    Returns:
        dq ``(B, c, H)``, this chunk's share of dk ``(B, S, H)`` and of dv ``(H,)``, in fp32
        for low-precision inputs (they are summed over chunks).
    """
    acc = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    h = q.shape[-1]
    th = torch.tanh(q[:, :, None, :] + k[:, None, :, :])  # (B, c, S, H)
    # (1, N) @ (N, H): a GEMV is much faster than a broadcast multiply + 3-axis sum.
    dv = torch.matmul(g.reshape(1, -1), th.reshape(-1, h)).view(-1).to(acc)
    de = g[..., None] * v * (1 - th * th)  # d(tanh input), (B, c, S, H)
    return de.sum(dim=2, dtype=acc), de.sum(dim=1, dtype=acc), dv


def _fwd_chunk_fusable(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    # Written as a reduction so the compiler fuses add, tanh and the dot with v into one
    # kernel: the (B, c, S, H) block is never written to memory.
    return (torch.tanh(q[:, :, None, :] + k[:, None, :, :]) * v).sum(-1)


def _bwd_chunk_fusable(q: Tensor, k: Tensor, v: Tensor, g: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    acc = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    th = torch.tanh(q[:, :, None, :] + k[:, None, :, :]).to(acc)  # (B, c, S, H)
    gg = g[..., None].to(acc)
    de = gg * v.to(acc) * (1 - th * th)
    return de.sum(dim=2), de.sum(dim=1), (gg * th).sum(dim=(0, 1, 2))


_COMPILED: tuple | None = None


def _chunk_kernels(device: torch.device) -> tuple:
    """(forward, backward) chunk functions: eager on CPU, `torch.compile`d on CUDA.

    On GPU the eager chunk costs ~10 passes over a (B, c, S, H) block; compiled, add + tanh
    + reduction fuse. Set ``ATTN_COMPILE_ADDITIVE=0`` to use the eager kernels everywhere.
    """
    global _COMPILED
    if device.type != "cuda" or os.environ.get("ATTN_COMPILE_ADDITIVE", "1") == "0":
        return _fwd_chunk, _bwd_chunk
    if _COMPILED is None:
        _COMPILED = (torch.compile(_fwd_chunk_fusable, dynamic=True), torch.compile(_bwd_chunk_fusable, dynamic=True))
    return _COMPILED


class _AdditiveScores(torch.autograd.Function):
    """``scores = tanh(qh[:, :, None] + kh[:, None] (+ (f @ u.T)[:, None])) @ v`` without saving the tanh."""

    @staticmethod
    def forward(ctx: Any, qh: Tensor, kh: Tensor, v: Tensor, f: Tensor | None, u: Tensor | None) -> Tensor:
        dtype = torch.promote_types(qh.dtype, kh.dtype)
        # Autocast is switched off inside: dtypes are chosen explicitly so forward and the
        # recomputation in backward agree (they follow the inputs, bf16 under autocast).
        with torch.autocast(qh.device.type, enabled=False):
            q, k, vv = qh.to(dtype), kh.to(dtype), v.to(dtype)
            if f is not None:
                assert u is not None, "location features f need their projection u"
                k = k + torch.matmul(f.to(dtype), u.to(dtype).t())  # (B, S, C) @ (C, H) -> (B, S, H)
            b, t, h = q.shape
            s = k.shape[1]
            c = _chunk_len(b, t, s, h, q.device)
            fwd_chunk, _ = _chunk_kernels(q.device)
            if c >= t:  # one block (every decoder step): no output buffer, no copy
                scores = fwd_chunk(q, k, vv)  # (B, T, S)
            else:
                scores = q.new_empty(b, t, s)
                for i in range(0, t, c):
                    scores[:, i : i + c] = fwd_chunk(q[:, i : i + c], k, vv)  # (B, c, S)
        ctx.save_for_backward(qh, kh, v, f, u)
        ctx.compute_dtype = dtype
        return scores

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        qh, kh, v, f, u = ctx.saved_tensors
        dtype = ctx.compute_dtype
        # Gradients accumulated over chunks are kept in fp32 for bf16/fp16 inputs.
        acc = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
        with torch.autocast(qh.device.type, enabled=False):
            q, k, vv, g_all = qh.to(dtype), kh.to(dtype), v.to(dtype), grad.to(dtype)
            if f is not None:
                k = k + torch.matmul(f.to(dtype), u.to(dtype).t())  # (B, S, H)
            b, t, h = q.shape
            s = k.shape[1]
            c = _chunk_len(b, t, s, h, q.device)
            _, bwd_chunk = _chunk_kernels(q.device)
            if c >= t:  # one block: its gradients are the gradients (no buffers, no accumulation)
                dq, dk, dv = bwd_chunk(q, k, vv, g_all)
            else:
                dq = torch.empty(b, t, h, dtype=acc, device=q.device)
                dk = torch.zeros(b, s, h, dtype=acc, device=q.device)
                dv = torch.zeros(h, dtype=acc, device=q.device)
                for i in range(0, t, c):
                    dq_c, dk_c, dv_c = bwd_chunk(q[:, i : i + c], k, vv, g_all[:, i : i + c])
                    dq[:, i : i + c] = dq_c
                    dk += dk_c
                    dv += dv_c
            df = du = None
            if f is not None:
                df = torch.matmul(dk, u.to(acc)).to(f.dtype) if ctx.needs_input_grad[3] else None  # (B, S, C)
                if ctx.needs_input_grad[4]:
                    du = torch.matmul(dk.reshape(-1, h).t(), f.reshape(-1, f.shape[-1]).to(acc)).to(u.dtype)  # (H, C)
        return dq.to(qh.dtype), dk.to(kh.dtype), dv.to(v.dtype), df, du


def additive_scores(qh: Tensor, kh: Tensor, v: Tensor, f: Tensor | None = None, u: Tensor | None = None) -> Tensor:
    """Additive attention energies without keeping ``(B, T, S, H)`` for backward.

    Args:
        qh: projected queries ``(B, T, H)``.
        kh: projected keys ``(B, S, H)``.
        v: the energy vector ``(H,)``.
        f: optional location features ``(B, S, C)``.
        u: projection of the location features ``(H, C)`` (with ``f``).

    Returns:
        Energies ``(B, T, S)``.
    """
    return _AdditiveScores.apply(qh, kh, v, f, u)


class AdditiveAttention(Attention):
    """Bahdanau attention: ``score(q, k) = v · tanh(W_q q + W_k k)``.

    `precompute(keys)` returns ``W_k k`` ``(B, S, H)``: compute it once per source and pass
    it as ``precomputed`` at each decoder step.

    ``memory_efficient`` picks how the ``(B, Tq, S, H)`` tanh is handled:

    * True (default): `additive_scores`, which recomputes the tanh in backward, so a decoder
      step saves nothing of size ``(B, S, H)`` (21x less saved memory in the decoder-step
      micro-benchmark).
    * False: the plain autograd formulation, which keeps the tanh for backward but runs fewer
      ops (3 forward kernels, no Python backward).
    * None ("auto"): the plain formulation while the tanh it keeps stays small, the recomputing
      one above: at most `AUTO_CPU_ELEMENTS` (2^28, 1 GiB in fp32) elements on CPU or
      `AUTO_CUDA_ELEMENTS` (2^30, 2 GiB in bf16) on CUDA, where a training decoder step counts as
      a loop of about S steps (`auto_memory_efficient`): one step alone is small, the loop's
      ``(B, T, S, H)`` is not. Token-capped sentence batches (B*S <= 16384 tokens, H 512) keep
      the faster plain form up to S = 128; a batch of 32 1,000-frame utterances (4.1G elements
      by that estimate) takes the recompute. Without autograd (decoding) only a call's own size
      counts. Measured, 12 decoder steps fwd+bwd with keys projected once (min of 5 interleaved
      runs, 2 threads, shared CPU): the recompute ran at 0.56-0.73x the plain speed at every size
      tried, B128 S12 H256 to B32 S400 H256; on an H200 (bf16) at 0.59x a naive step at B32
      S1000 H512. Speed never favours the recompute in these figures: it is a memory choice.
    """

    def __init__(
        self,
        query_dim: int,
        key_dim: int,
        value_dim: int | None = None,
        hidden_dim: int | None = None,
        memory_efficient: bool | None = True,
    ) -> None:
        """Args:
        query_dim: size of the query (decoder state) vectors.
        key_dim: size of the key (encoder output) vectors.
        value_dim: size of the value vectors (default ``key_dim``).
        hidden_dim: size H of the energy MLP (default ``query_dim``).
        memory_efficient: recompute the tanh in backward (`additive_scores`) instead of
            letting autograd keep a ``(B, Tq, S, H)`` tensor; False trades that memory
            for fewer kernels (faster for short sources on GPU, see benchmarks/RESULTS.md);
            None picks per call by the memory the plain form would keep (see above).
        """
        super().__init__(query_dim, key_dim, value_dim)
        self.hidden_dim = hidden_dim or query_dim
        self.memory_efficient = memory_efficient
        self.query_proj = nn.Linear(query_dim, self.hidden_dim, bias=False)
        self.key_proj = nn.Linear(key_dim, self.hidden_dim, bias=True)
        self.energy = nn.Linear(self.hidden_dim, 1, bias=False)

    def precompute(self, keys: Tensor, values: Tensor | None = None) -> Tensor:
        """Projected keys ``(B, S, H)``."""
        return self.key_proj(keys)

    def _scores(self, qh: Tensor, kh: Tensor, f: Tensor | None = None) -> Tensor:
        """Energies ``(B, Tq, S)`` from projected queries/keys (and location features ``f``)."""
        v = self.energy.weight.view(-1)
        loc: nn.Linear | None = None  # the location projection, with location features only
        if f is not None:
            proj = self._modules.get("loc_proj")  # (a plain dict look-up: this runs at every decoder step)
            assert isinstance(proj, nn.Linear), "location features need the loc_proj layer"
            loc = proj
        me = self.memory_efficient
        if me is None:
            b, t, h = qh.shape
            recording = torch.is_grad_enabled() and (qh.requires_grad or kh.requires_grad)
            me = auto_memory_efficient(b, t, kh.shape[1], h, qh.device, training=recording)
        if me:
            return additive_scores(qh, kh, v, f, None if loc is None else loc.weight)
        if loc is not None:
            kh = kh + loc(f)  # (B, S, C) -> (B, S, H)
        if v.dtype != qh.dtype:
            v = v.to(qh.dtype)
        return torch.matmul(torch.tanh(qh[:, :, None, :] + kh[:, None, :, :]), v)  # (B, Tq, S, H) -> (B, Tq, S)

    def _projected_keys(self, keys: Tensor | None, precomputed: Any) -> Tensor:
        if precomputed is not None:
            return precomputed
        assert keys is not None
        return self.key_proj(keys)

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
        kh = self._projected_keys(keys, precomputed)  # (B, S, H)
        qh = self.query_proj(query)  # (B, Tq, H)
        scores = self._scores(qh, kh)  # (B, Tq, S)
        weights = masked_softmax(scores, mask)
        w = weights if weights.dtype == values.dtype else weights.to(values.dtype)
        return torch.matmul(w, values), weights  # (B, Tq, Dv)


class LocationAttention(AdditiveAttention):
    """Location-aware attention (Chorowski et al. 2015).

    ``score = v · tanh(W_q q + W_k k + U (F * a_prev))``: convolutional features of the
    previous step's weights (or their running sum with ``cumulative=True``) join the
    additive energy, which helps monotonic alignments such as speech.

    Pass ``prev_weights`` ``(B, S)`` each step and carry ``attn.accumulate(prev, weights)``
    to the next; without it the first step starts from uniform weights over valid keys. A
    query with ``Tq > 1`` is processed step by step, each step using the previous one's
    weights (teacher forcing with a fixed sequence of queries).
    """

    def __init__(
        self,
        query_dim: int,
        key_dim: int,
        value_dim: int | None = None,
        hidden_dim: int | None = None,
        conv_channels: int = 10,
        kernel_size: int = 31,
        cumulative: bool = False,
        memory_efficient: bool | None = True,
    ) -> None:
        """Args:
        query_dim: size of the query (decoder state) vectors.
        key_dim: size of the key (encoder output) vectors.
        value_dim: size of the value vectors (default ``key_dim``).
        hidden_dim: size H of the energy MLP (default ``query_dim``).
        conv_channels: number C of location filters.
        kernel_size: width of the location filters (odd, so features stay aligned).
        cumulative: feed the running sum of all previous weights instead of the last.
        memory_efficient: see `AdditiveAttention`.
        """
        super().__init__(query_dim, key_dim, value_dim, hidden_dim, memory_efficient)
        if kernel_size % 2 != 1:
            raise ValueError(f"LocationAttention: kernel_size must be odd, got {kernel_size}")
        self.cumulative = cumulative
        self.conv = nn.Conv1d(1, conv_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.loc_proj = nn.Linear(conv_channels, self.hidden_dim, bias=False)

    def accumulate(self, prev_weights: Tensor | None, weights: Tensor) -> Tensor:
        """Next step's ``prev_weights``: the running sum if cumulative, else ``weights``."""
        if self.cumulative and prev_weights is not None:
            return prev_weights + weights
        return weights

    @staticmethod
    def initial_weights(mask: Tensor | None, b: int, s: int, like: Tensor) -> Tensor:
        """Uniform weights over the valid keys, ``(B, S)``."""
        if mask is None:
            return like.new_full((b, s), 1.0 / s)
        valid = mask[:, 0, :].to(like.dtype)  # (B, S)
        return valid / valid.sum(dim=-1, keepdim=True).clamp_min(1.0)

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
        kh = self._projected_keys(keys, precomputed)  # (B, S, H)
        qh = self.query_proj(query)  # (B, Tq, H)
        b, tq, _ = qh.shape
        s = kh.shape[1]
        if prev_weights is not None and tuple(prev_weights.shape) != (b, s):
            raise ValueError(
                f"LocationAttention: prev_weights must be (B, S) = {(b, s)}, got {tuple(prev_weights.shape)}"
            )
        contexts, all_weights = [], []
        for t in range(tq):
            # Same carry rule as a caller stepping by hand: start uniform, then accumulate.
            loc_in = self.initial_weights(mask, b, s, qh) if prev_weights is None else prev_weights
            f = self.conv(loc_in[:, None, :].to(self.conv.weight.dtype)).transpose(
                1, 2
            )  # (B, 1, S) -> (B, C, S) -> (B, S, C)
            scores = self._scores(qh[:, t : t + 1], kh, f)  # (B, 1, S)
            step_mask = None if mask is None else mask[:, t : t + 1] if mask.shape[1] == tq else mask
            w = masked_softmax(scores, step_mask)  # (B, 1, S)
            contexts.append(torch.matmul(w.to(values.dtype), values))  # (B, 1, Dv)
            all_weights.append(w)
            prev_weights = self.accumulate(prev_weights, w[:, 0])
        if tq == 1:  # a decoder step: cat of one tensor would still copy it
            return contexts[0], all_weights[0]
        return torch.cat(contexts, dim=1), torch.cat(all_weights, dim=1)  # (B, Tq, Dv), (B, Tq, S)
