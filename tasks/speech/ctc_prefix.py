"""CTC prefix scores for joint CTC/attention beam search (Watanabe et al. 2017, "Hybrid CTC/attention").

Rescoring the n-best of an attention-only beam with CTC can only choose among what the attention
decoder proposed; early in training that decoder repeats or drops words, and none of its hypotheses is
right. Joint decoding adds, at every step, the change in CTC prefix probability of each candidate
extension, ``log p_ctc(g + c ...) - log p_ctc(g ...)``, to the decoder's log-probability, so the beam
only follows prefixes the acoustics support. For EOS the CTC term is the probability of the finished
sequence ``log p_ctc(g)``; summed over the steps, a hypothesis' score is
``(1 - w) log p_att(y) + w log p_ctc(y)``.

The prefix forward variables ``r_t^n(h)`` (paths ending in the last label) and ``r_t^b(h)`` (ending
in blank) obey linear recurrences in probability space, so for all frames at once they are cumulative
sums in log space (``logcumsumexp``): one vectorised pass per decoding step instead of a loop over
frames. Everything here runs in float64: the cumulative log-probabilities reach a few hundred in
magnitude and their differences must stay exact to ~1e-6.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from core.decoding.beam import DecoderState, StepFn

__all__ = ["CTCPrefixScorer", "joint_search_inputs"]

NEG_INF = float("-inf")


class CTCPrefixScorer:
    """Incremental CTC prefix scores of every one-label extension of a batch of prefixes.

    State per hypothesis row (reordered with the beam): ``r`` `(N, T + 1, V, 2)`, the forward
    variables of each candidate extension computed at the previous step (index 0 of the time axis is
    frame -1), and ``psi`` `(N, V)`, their prefix log-probabilities; the next step picks the column of
    the label the beam chose. Keeping all `V` candidates avoids a second pass once the beam has chosen.

    Args:
        log_probs: `(B, T, V)` CTC log-probabilities (log-softmax over V).
        lengths: `(B,)` valid frames.
        blank: blank id.
        eos: end-of-sequence id (its score is the probability of the finished prefix).
        never: ids that are never a CTC label (e.g. BOS); they get -inf.
    """

    def __init__(self, log_probs: Tensor, lengths: Tensor, blank: int, eos: int, never: tuple[int, ...] = ()) -> None:
        self.blank, self.eos, self.never = blank, eos, never
        t = log_probs.shape[1]
        valid = torch.arange(t, device=log_probs.device)[None, :] < lengths.to(log_probs.device)[:, None]  # (B, T)
        # Frames past the end get log 1 (not -inf): the cumulative sums stay finite there, and every
        # value that reads them is masked or gathered at the last valid frame.
        self.x = log_probs.double().masked_fill(~valid[..., None], 0.0)  # (B, T, V)
        self.lengths = lengths.to(log_probs.device).long()

    def initial_state(self) -> dict[str, Tensor]:
        """State of the empty prefix for every candidate column (so the first step's BOS gathers it)."""
        b, t, v = self.x.shape  # (B, T, V)
        rb = torch.cat([self.x.new_zeros(b, 1), self.x[..., self.blank].cumsum(1)], dim=1)  # (B, T+1): blanks only
        rn = torch.full_like(rb, NEG_INF)
        r = torch.stack([rn, rb], dim=-1)[:, :, None, :].expand(b, t + 1, v, 2).contiguous()  # (B, T+1, V, 2)
        return {"r": r, "psi": self.x.new_zeros(b, v)}

    def static(self) -> dict[str, Tensor]:
        """What does not change across steps (one row per hypothesis once the beam is expanded)."""
        return {"x": self.x, "lengths": self.lengths}

    def step(
        self, last: Tensor, state: dict[str, Tensor], static: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Scores of every extension of each row's prefix.

        Args:
            last: `(N,)` label each row's prefix ended with at the previous step (BOS at the start).
            state: from `initial_state` or the previous `step`, rows following the beam.
            static: from `static`, rows of the same hypotheses.

        Returns:
            `(delta (N, V) float32, new state)`: ``delta[n, c] = log p(g_n + c ...) - log p(g_n ...)``
            (for EOS, the finished prefix's log-probability minus its prefix probability).
        """
        x, lengths = static["x"], static["lengths"]  # (N, T, V), (N,)
        n, t, v = x.shape
        rows = torch.arange(n, device=x.device)
        r_g = state["r"][rows, :, last]  # (N, T+1, 2): the prefix the beam chose
        score_g = state["psi"][rows, last]  # (N,)
        # Rows the beam feeds a dead token (finished hypotheses) have -inf here; keep them finite.
        score_g = torch.where(torch.isfinite(score_g), score_g, torch.zeros_like(score_g))
        rn_g, rb_g = r_g[..., 0], r_g[..., 1]  # (N, T+1)
        total_g = torch.logaddexp(rn_g, rb_g)  # (N, T+1)
        # phi: probability of g up to frame t such that c may start at t + 1. A repeated label needs a
        # blank in between, so for c == last(g) only the paths ending in blank count.
        same = torch.nn.functional.one_hot(last.clamp(0, v - 1), v).bool()[:, None, :]  # (N, 1, V)
        phi = torch.where(same, rb_g[..., None], total_g[..., None])  # (N, T+1, V)
        a = phi[:, :t]  # a_t = phi_{t-1} for t = 0..T-1
        cx = x.cumsum(1)  # (N, T, V)
        # r^n_t(h) = (r^n_{t-1}(h) + a_t) x_t(c)  =>  log r^n_t = X_t + logcumsumexp_k(a_k - X_{k-1})
        rn = cx + torch.logcumsumexp(a - (cx - x), dim=1)  # (N, T, V)
        xb = x[..., self.blank]  # (N, T)
        cb = xb.cumsum(1)  # (N, T)
        rn_prev = torch.cat([torch.full_like(rn[:, :1], NEG_INF), rn[:, :-1]], dim=1)  # r^n_{t-1}(h)
        # r^b_t(h) = (r^b_{t-1}(h) + r^n_{t-1}(h)) x_t(blank)
        rb = cb[..., None] + torch.logcumsumexp(rn_prev - (cb - xb)[..., None], dim=1)  # (N, T, V)
        valid = (torch.arange(t, device=x.device)[None, :] < lengths[:, None])[..., None]  # (N, T, 1)
        psi = torch.logsumexp((a + x).masked_fill(~valid, NEG_INF), dim=1)  # (N, V): c first emitted at t
        psi[:, self.eos] = total_g.gather(1, lengths[:, None]).squeeze(1)  # g complete at its last frame
        psi[:, self.blank] = NEG_INF
        for i in self.never:
            psi[:, i] = NEG_INF
        start = torch.full((n, 1, v, 2), NEG_INF, dtype=x.dtype, device=x.device)  # frame -1 of a non-empty h
        r = torch.cat([start, torch.stack([rn, rb], dim=-1)], dim=1)  # (N, T+1, V, 2)
        return (psi - score_g[:, None]).float(), {"r": r, "psi": psi}


def joint_search_inputs(
    step_fn: StepFn, state: DecoderState, scorer: CTCPrefixScorer, weight: float
) -> tuple[StepFn, DecoderState]:
    """Wrap an attention decoder's beam-search step function and state for joint CTC/attention search.

    The CTC state rides beside the decoder's own: its forward variables in ``beams`` (they follow the
    beams), the frame log-probabilities and lengths in ``source`` (expanded once, never reordered; see
    `core.decoding.beam.DecoderState`). The decoder sees exactly the state it made.

    Args:
        step_fn: ``(tokens (N,), DecoderState) -> (log_probs (N, V), DecoderState, attention)`` of the decoder.
        state: the decoder's initial `DecoderState`.
        scorer: CTC prefix scorer of the same batch.
        weight: CTC weight ``w`` of ``(1 - w) log p_att + w log p_ctc``.

    Returns:
        The joint step function and initial state, for `core.decoding.beam.beam_search`.
    """
    joint_state = DecoderState(
        beams={"dec": state.beams, "ctc": scorer.initial_state()},
        source={"dec": state.source, "ctc": scorer.static()},
        shared=state.shared,
        cache=state.cache,
    )

    def joint(tokens: Tensor, st: DecoderState) -> tuple[Tensor, DecoderState, Any]:
        inner = DecoderState(st.beams["dec"], st.source["dec"], st.shared, st.cache, st.reorder)
        log_probs, new, attn = step_fn(tokens, inner)
        delta, new_ctc = scorer.step(tokens, st.beams["ctc"], st.source["ctc"])
        out = DecoderState(
            beams={"dec": new.beams, "ctc": new_ctc},
            source={"dec": new.source, "ctc": st.source["ctc"]},
            shared=new.shared,
            cache=new.cache,
        )
        return (1.0 - weight) * log_probs + weight * delta.to(log_probs.dtype), out, attn

    return joint, joint_state
