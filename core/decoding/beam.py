"""Batched beam search over an incremental step function; ``beam_size=1`` is greedy (arg-max) search.

The search drives a model through a *step function* with explicit state::

    step_fn(last_tokens: LongTensor (N,), state) -> (log_probs (N, V), new_state, attn (N, S) | None)

``state`` is either any pytree (dict / list / tuple nesting of tensors whose leading dim is the batch:
every leaf follows the hypotheses), or a :class:`DecoderState`, whose named fields say how each part
follows the beams:

* ``beams``: one row per hypothesis, expanded to the beams and reordered every step (RNN states,
  previous attention weights);
* ``source``: one row per hypothesis that is the same for all beams of an item (encoder outputs,
  masks, precomputed key projections): expanded once, never reordered (wasted memory traffic);
* ``shared``: one row per *unfinished item*, never expanded nor reordered: the step maps its
  ``N = A * K`` rows (beams of an item contiguous) onto it, e.g. the Transformer attends from an item's
  beams, as extra query positions, to one copy of its cross-attention keys/values;
* ``cache``: one row per hypothesis that the step function reorders itself: before each step beam
  search puts the ``(N,)`` parent row of every row in ``reorder``; the step applies it (e.g. fused with
  appending to a KV cache: one copy instead of a reorder copy plus an append) and returns
  ``reorder=None``. ``reorder`` is None when every row continues itself (the first step, and with
  ``beam_size=1`` every step on which no item finished).

Beam search runs the first step on the ``B`` rows of the initial state (all beams of an item start
identical) and expands what that step returns to ``B * beam`` rows once (with one beam there is nothing to
expand: greedy search is beam search with ``beam_size=1``, at the same cost). Finished items are dropped from
the running state, so late steps only pay for items still decoding; the loop stops when all are done.

Scores are length-normalised log-probabilities: ``sum(log p) / length ** length_penalty`` where
``length`` counts the generated tokens *including* EOS (a hypothesis cut at ``max_len`` has length
``max_len``). ``length_penalty=0`` gives the raw log-probability.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import torch
from torch import Tensor

from core.decoding.result import DecodeResult
from core.errors import ConfigError, DecodingError
from core.io.hparams import BEAM

__all__ = ["DecodeResult", "DecoderState", "StepDecoder", "StepFn", "beam_search", "tree_map"]

StepFn = Callable[[Tensor, Any], tuple[Tensor, Any, Tensor | None]]
"""``step_fn(last_tokens (N,), state) -> (log_probs (N, V), new_state, attn (N, S) or None)``."""


@dataclass
class DecoderState:
    """A step function's state, split by how each part follows the beams (see the module docstring).

    Attributes:
        beams: pytree, one row per hypothesis; reordered every step.
        source: pytree, one row per hypothesis, identical across an item's beams; never reordered.
        shared: pytree, one row per unfinished item; never expanded nor reordered.
        cache: pytree, one row per hypothesis; the step function reorders it with ``reorder``.
        reorder: ``(N,)`` parent row of every row, set by beam search for ``cache``; None otherwise.
    """

    beams: Any = None
    source: Any = None
    shared: Any = None
    cache: Any = None
    reorder: Tensor | None = None

    def map(self, fn: Callable[[Tensor], Tensor], shared_fn: Callable[[Tensor], Tensor] | None) -> DecoderState:
        """Every part through ``fn`` (``shared`` through ``shared_fn``, or left as is when None)."""
        return DecoderState(
            tree_map(fn, self.beams),
            tree_map(fn, self.source),
            self.shared if shared_fn is None else tree_map(shared_fn, self.shared),
            tree_map(fn, self.cache),
            self.reorder,
        )


# ----------------------------------------------------------------------------------------------
# pytree helpers
# ----------------------------------------------------------------------------------------------
def tree_map(fn: Callable[[Tensor], Tensor], tree: Any) -> Any:
    """Apply ``fn`` to every tensor leaf of a dict/list/tuple nesting; other leaves pass through."""
    if isinstance(tree, Tensor):
        return fn(tree)
    if isinstance(tree, dict):
        return type(tree)((k, tree_map(fn, v)) for k, v in tree.items())
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):  # namedtuple: positional rebuild
        return type(tree)(*(tree_map(fn, v) for v in tree))
    if isinstance(tree, (list, tuple)):
        return type(tree)(tree_map(fn, v) for v in tree)
    return tree


def _as_state(state: Any) -> tuple[DecoderState, bool]:
    """``(DecoderState, wrapped)``: a plain pytree is all ``beams`` (``wrapped``: unwrap for the step)."""
    return (state, False) if isinstance(state, DecoderState) else (DecoderState(beams=state), True)


def _call(step_fn: StepFn, last: Tensor, state: DecoderState, wrapped: bool) -> tuple[Tensor, DecoderState, Any]:
    """One step, with the state in the form the step function uses; checks the ``reorder`` contract."""
    log_probs, new, attn = step_fn(last, state.beams if wrapped else state)
    if wrapped:
        return log_probs, DecoderState(beams=new), attn
    if not isinstance(new, DecoderState):
        raise TypeError(f"step_fn was given a DecoderState and must return one, got {type(new).__name__}")
    if new.reorder is not None:
        raise ValueError(
            "step_fn returned a state whose 'reorder' is not None: apply state.reorder to the "
            "'cache' entries and return reorder=None (see core.decoding.beam)"
        )
    return log_probs, new, attn


def _check_batch(batch_size: int) -> Callable[[Tensor], Tensor]:
    """Return an identity leaf-fn that validates the leading (batch) dim of state tensors."""

    def check(t: Tensor) -> Tensor:
        if t.dim() > 0 and t.size(0) != batch_size:
            raise ValueError(
                f"decoding state tensor has leading dim {t.size(0)}, expected batch_size={batch_size} "
                f"(shape {tuple(t.shape)}); every state tensor must be batch-first"
            )
        return t

    return check


def _select_rows(rows: Tensor) -> Callable[[Tensor], Tensor]:
    """Leaf-fn selecting ``rows`` along dim 0 (0-dim tensors pass through)."""

    def sel(t: Tensor) -> Tensor:
        return t if t.dim() == 0 else t.index_select(0, rows.to(t.device))

    return sel


#: `_top_candidates` on CPU scans blocks of this many log-probs for their maximum first.
TOPK_BLOCK = 64


def _top_candidates(beam_scores: Tensor, log_probs: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """The ``n`` best continuations of each item: ``topk(beam_scores[..., None] + log_probs)``.

    Args:
        beam_scores: ``(A, K)`` summed log-probs of an item's ``K`` beams.
        log_probs: ``(A, K, V)``, or ``(A, 1, V)`` when only beam 0 is alive (first step).
        n: candidates per item (at most ``K * V``).

    Returns:
        scores ``(A, n)`` sorted descending, and flat indices ``k * V + token`` ``(A, n)``.
    """
    a, r, v = log_probs.shape
    if n == 1 and r == 1:  # one beam (greedy): an arg-max, and s + max(lp) == max(s + lp) exactly
        best, idx = log_probs.view(a, v).max(dim=1, keepdim=True)  # (A, 1)
        return beam_scores[:, :1] + best, idx
    nb = -(-v // TOPK_BLOCK)
    if log_probs.device.type != "cpu" or nb < 16 or r * nb < n:
        # One topk kernel over all K*V sums (on GPU this is cheaper than the blocked version's
        # extra launches).
        cand = beam_scores.unsqueeze(-1) + log_probs  # (A, K, V), broadcast when R == 1
        return cand.view(a, -1).topk(n, dim=1)
    beam_scores = beam_scores[:, :r]  # (A, R)
    # CPU: torch.topk scans an (A, R*V) row at ~1 ns per element, a vectorised max ~10x faster.
    # Taking the maximum of each block of TOPK_BLOCK log-probs first, the n best candidates lie in
    # the n blocks with the best (offset) maxima: any candidate outside them is beaten by those n
    # maxima. So the top n scores come from topk over the block maxima, then over n blocks, exactly
    # (only the order among exactly tied candidates may differ from one flat topk).
    # The (A, R, V) sum is never materialised either.
    x = log_probs.reshape(a * r, v)  # (A*R, V)
    full = (v // TOPK_BLOCK) * TOPK_BLOCK
    bmax = x[:, :full].unfold(1, TOPK_BLOCK, TOPK_BLOCK).amax(-1)  # (A*R, V // blk)
    if full < v:
        bmax = torch.cat([bmax, x[:, full:].amax(-1, keepdim=True)], dim=1)  # (A*R, nb)
    bmax = bmax.view(a, r, nb) + beam_scores.unsqueeze(-1)  # (A, R, nb)
    blocks = bmax.view(a, r * nb).topk(n, dim=1).indices  # (A, n)
    row = torch.div(blocks, nb, rounding_mode="floor")  # (A, n) row within the item
    pos = (blocks % nb).unsqueeze(-1) * TOPK_BLOCK + torch.arange(TOPK_BLOCK, device=x.device)  # (A, n, blk)
    in_range = pos < v  # the last block may be short
    pos = pos.clamp_max(v - 1)
    flat_row = (torch.arange(a, device=x.device).unsqueeze(1) * r + row).unsqueeze(-1)  # (A, n, 1)
    vals = x[flat_row, pos] + beam_scores.gather(1, row).unsqueeze(-1)  # (A, n, blk)
    vals = vals.masked_fill(~in_range, float("-inf"))
    scores, i = vals.view(a, -1).topk(n, dim=1)  # (A, n) over the n * blk gathered candidates
    idx = row.gather(1, i // TOPK_BLOCK) * v + pos.view(a, -1).gather(1, i)  # (A, n) flat r * V + token
    return scores, idx


def _suppressed(log_probs: Tensor, ids: Tensor | None) -> Tensor:
    """``log_probs`` with the columns ``ids`` (a ``(n,)`` index tensor, or None) set to -inf, in place (the
    step's fresh output)."""
    return log_probs if ids is None else log_probs.index_fill_(1, ids, float("-inf"))


def _length_norm(score: float, length: int, length_penalty: float) -> float:
    """Length-normalise a summed log-prob (``length`` includes EOS, always >= 1)."""
    return score / (max(length, 1) ** length_penalty)


# ----------------------------------------------------------------------------------------------
# beam
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def beam_search(
    step_fn: StepFn,
    init_state: Any,
    *,
    batch_size: int,
    bos_id: int = 1,
    eos_id: int = 2,
    max_len: int = 100,
    beam_size: int = 5,
    length_penalty: float = 1.0,
    nbest: int = 1,
    pad_id: int = 0,
    suppress: tuple[int, ...] = (),
    device: torch.device | str | None = None,
) -> DecodeResult:
    """Batched beam search over ``batch_size * beam_size`` rows.

    Each step scores all ``K * V`` continuations of an item's ``K`` live beams, takes the top ``2K`` (one
    if ``K = 1``); EOS candidates ranked within the top ``K`` become finished hypotheses (scored with the
    length penalty), the best ``K`` non-EOS candidates become the next live beams. An item is done once it
    has ``K`` finished hypotheses; at ``max_len`` the live beams are finished as they are. Done items are
    dropped from the running state. With ``K = 1`` this is exactly greedy search, and as cheap: one arg-max
    per row, and no state is moved on steps where no item finishes.

    Args:
        step_fn: see module docstring; called first with the ``batch_size`` rows of ``init_state``
            (one per item: the beams are still identical), then with ``N = (#unfinished items) *
            beam_size`` rows, beams of one item contiguous (row ``i * K + k``).
        init_state: a ``DecoderState`` (parts that follow the beams differently) or a pytree of
            batch-first tensors (leading dim ``batch_size``; every leaf follows the beams).
        batch_size: B.
        bos_id: first input token.
        eos_id: end-of-sequence token (not included in the output).
        max_len: maximum number of decoding steps (EOS included).
        beam_size: K (>= 1).
        length_penalty: exponent ``alpha`` of ``score / length ** alpha``.
        nbest: hypotheses returned per item (<= beam_size); fewer only if the vocabulary is too small
            to form that many distinct hypotheses.
        pad_id: token fed to rows whose hypothesis can no longer be extended (never scored).
        suppress: token ids never emitted (e.g. PAD and BOS): their log-probs are set to -inf, so every
            returned token is a real output token with its own attention row.
        device: device of the token tensors; defaults to the first tensor leaf's device, else CPU.

    Returns:
        DecodeResult, hypotheses sorted best first.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    if not BEAM[0] <= beam_size <= BEAM[1] or not 1 <= nbest <= beam_size:
        # ConfigError is a ValueError too; the bound keeps a library call's memory (B * K rows) sane, as the
        # CLI's --beam does.
        raise ConfigError(
            f"need {BEAM[0]} <= beam_size <= {BEAM[1]} and 1 <= nbest <= beam_size, got {beam_size=}, {nbest=}"
        )
    state, wrapped = _as_state(init_state)
    state.map(_check_batch(batch_size), _check_batch(batch_size))
    device = _infer_device(state, device)
    K = beam_size
    # The first step runs on the B unexpanded rows: the K beams of an item are identical until they
    # first branch, so scoring K copies would be (K-1)/K wasted work on that step. Its output state is
    # then expanded to B*K rows once (every part but `shared`, which stays one row per item).
    expand = _select_rows(torch.arange(batch_size, device=device).repeat_interleave(K))

    dead = torch.finfo(torch.float32).min  # score of an impossible hypothesis (never selected first)
    active = torch.arange(batch_size, device=device)  # (A,) original item index of each active item
    beam_scores = torch.full((batch_size, K), dead, device=device)  # (A, K) summed log-probs
    beam_scores[:, 0] = 0.0  # all K rows start identical: only beam 0 may expand at step 0
    last = torch.full((batch_size,), bos_id, dtype=torch.long, device=device)  # (B,) first step, then (A*K,)
    # History at full size (B, K) per step so that dropping items never breaks backtracking.
    hist_tok: list[Tensor] = []  # token chosen for each new live slot
    hist_parent: list[Tensor] = []  # slot (at the previous step) that each new live slot extends
    hist_attn: list[Tensor | None] = []  # attention row that produced that token, (B, K, *attn)
    # A step's history before the active items' rows are written in (index_copy copies, these stay as they are).
    full_tok = torch.full((batch_size, K), pad_id, dtype=torch.long, device=device)
    full_par = torch.zeros((batch_size, K), dtype=torch.long, device=device)
    suppress_ids = torch.tensor(suppress, dtype=torch.long, device=device) if suppress else None
    # finished[b] = list of (normalised score, step of last real token, slot at that step)
    finished: list[list[tuple[float, int, int]]] = [[] for _ in range(batch_size)]

    for t in range(max_len):
        A = active.numel()
        log_probs, state, attn = _call(step_fn, last, state, wrapped)
        V = log_probs.size(-1)
        if log_probs.shape[0] != last.shape[0]:
            raise ValueError(
                f"step_fn returned log_probs for {log_probs.shape[0]} rows, "
                f"expected one per input token ({last.shape[0]})"
            )
        if t == 0 and K > 1:  # one row per item so far: (B, ...) -> (B*K, ...)
            state = state.map(expand, None)
            if attn is not None:
                attn = attn.repeat_interleave(K, dim=0)  # (B, *attn) -> (B*K, *attn)
        # 2K candidates hold K non-EOS ones. With K == 1 one is enough: if it is EOS the item is done.
        n_top = 1 if K == 1 else min(2 * K, K * V)
        # At t == 0 log_probs is (B, V): one row per item, whose beam 0 is the only live one.
        lp = _suppressed(log_probs.float(), suppress_ids).reshape(A, -1, V)  # (A, K|1, V)
        top_scores, top_idx = _top_candidates(beam_scores, lp, n_top)  # (A, n_top) sorted desc
        if K == 1:  # one row per item: the flat index is the token, the parent is slot 0
            top_parent, top_tok = full_par[:A], top_idx
        else:
            top_parent = torch.div(top_idx, V, rounding_mode="floor")  # (A, n_top)
            top_tok = top_idx % V  # (A, n_top)
        is_eos = top_tok == eos_id
        valid = top_scores > dead / 2  # candidates descending from a real hypothesis

        # New live beams: the K best non-EOS candidates (stable sort keeps score order).
        if K == 1:  # the one candidate (if EOS, the item is done: its slot is dead)
            new_scores, new_parent, new_tok = top_scores, top_parent, top_tok  # (A, K)
            dead_slot = ~valid | is_eos  # (A, K)
        else:
            order = torch.sort(is_eos.to(torch.int8), dim=1, stable=True).indices[:, :K]  # (A, K)
            new_scores = top_scores.gather(1, order)  # (A, K)
            new_parent = top_parent.gather(1, order)  # (A, K)
            new_tok = top_tok.gather(1, order)  # (A, K)
            dead_slot = ~valid.gather(1, order) | (new_tok == eos_id)  # (A, K)
        new_scores = new_scores.masked_fill(dead_slot, dead)

        hist_tok.append(full_tok.index_copy(0, active, new_tok))
        hist_parent.append(full_par if K == 1 else full_par.index_copy(0, active, new_parent))  # one beam: all 0
        if attn is not None:
            sel = attn.reshape(A, K, *attn.shape[1:])  # (A, K, *attn)
            if K > 1:  # the row of the parent that chose each token (one beam: its own)
                gather_idx = new_parent.view(A, K, *([1] * (attn.dim() - 1))).expand(A, K, *attn.shape[1:])
                sel = sel.gather(1, gather_idx)
            hist_attn.append(attn.new_zeros((batch_size, K, *attn.shape[1:])).index_copy(0, active, sel))
        else:
            hist_attn.append(None)

        # Finished hypotheses: valid EOS candidates ranked within the top K (host bookkeeping).
        eos_hits = (is_eos & valid)[:, :K].nonzero().tolist()
        if eos_hits:
            sc = top_scores[:, :K].tolist()  # host lists: element-wise tensor indexing costs ~1 us a call
            par = top_parent[:, :K].tolist()
            act = active.tolist()
            for a, r in eos_hits:
                b = act[a]
                if len(finished[b]) < K:
                    # EOS at step t: tokens end at step t-1 in slot `par`; length t+1 includes EOS
                    finished[b].append((_length_norm(sc[a][r], t + 1, length_penalty), t - 1, par[a][r]))
        if t == max_len - 1:  # out of steps: live beams finish as they are
            live = new_scores.tolist()
            for a, b in enumerate(active.tolist()):
                for k in range(K):
                    if len(finished[b]) < K and live[a][k] > dead / 2:
                        finished[b].append((_length_norm(live[a][k], max_len, length_penalty), t, k))
            break

        # dead slots (no valid continuation) get PAD as input; their outputs are never selected
        new_tok = new_tok.masked_fill(dead_slot, pad_id)
        done_list = [len(finished[b]) >= K for b in active.tolist()] if eos_hits else []
        keep: Tensor | None = None
        if any(done_list):
            done = torch.tensor(done_list, device=device)  # (A,)
            keep = (~done).nonzero().squeeze(1)  # (A',)
            if keep.numel() == 0:
                break
            active, new_scores, new_tok = active[keep], new_scores[keep], new_tok[keep]
            keep_rows = (keep.unsqueeze(1) * K + torch.arange(K, device=device)).reshape(-1)  # (A'*K,)
            # `source` and `shared` drop the finished items' rows here; `beams` and `cache` are about to be
            # re-indexed by `rows` (parent rows into the current, unfiltered state), which drops them too.
            state = replace(
                state,
                source=tree_map(_select_rows(keep_rows), state.source),
                shared=tree_map(_select_rows(keep), state.shared),
            )
        beam_scores = new_scores
        if K > 1 or keep is not None:  # one beam, no item dropped: every row continues itself, nothing moves
            rows = (torch.arange(A, device=device) * K).unsqueeze(1) + new_parent  # (A, K) parent rows
            rows_flat = (rows if keep is None else rows[keep]).reshape(-1)  # (A'*K,) parent row of each new row
            # Follow the beams: `beams` here; `cache` by the step itself (fused with its own copy);
            # `source` and `shared` never change within an item.
            state = replace(
                state,
                beams=tree_map(_select_rows(rows_flat), state.beams),
                reorder=rows_flat if state.cache is not None else None,
            )
        last = new_tok.reshape(-1)  # (A*K,)

    return _backtrack(finished, hist_tok, hist_parent, hist_attn, nbest)


def _stack_attention(hist_attn: list[Tensor | None], dim: int) -> Tensor | None:
    """Stack the per-step attention along ``dim`` as float32 on the CPU.

    Args:
        hist_attn: one entry per step: that step's attention, or None when the step function returned none.
        dim: the new (step) dimension.

    Returns:
        The stacked tensor, or None when there are no steps or the first step returned no attention.

    Raises:
        TypeError: the first step returned attention and a later one returned None (as ``torch.stack`` would).
    """
    if not hist_attn or hist_attn[0] is None:
        return None
    steps = [a for a in hist_attn if a is not None]
    if len(steps) != len(hist_attn):
        raise TypeError("step_fn returned attention weights at some steps and None at others")
    return torch.stack(steps, dim=dim).float().cpu()


def _backtrack(
    finished: list[list[tuple[float, int, int]]],
    hist_tok: list[Tensor],
    hist_parent: list[Tensor],
    hist_attn: list[Tensor | None],
    nbest: int,
) -> DecodeResult:
    """Rebuild the ``nbest`` best hypotheses of every item from the per-step back-pointers."""
    tok = torch.stack(hist_tok).tolist()  # [T][B][K]: walked on the host, element by element
    par = torch.stack(hist_parent).tolist()  # [T][B][K]
    att = _stack_attention(hist_attn, dim=0)  # (T, B, K, *attn) or None
    res = DecodeResult()
    for b, hyps in enumerate(finished):
        if not hyps:  # every continuation scored NaN (or -inf): nothing to return, and "" would hide it
            raise DecodingError(
                f"input {b} of the batch has no hypothesis: every continuation scored NaN or -inf (the model's "
                f"outputs are not finite: corrupt weights, or an input it overflows on)"
            )
        hyps = sorted(hyps, key=lambda h: h[0], reverse=True)[:nbest]
        res.tokens.append([])
        res.scores.append([])
        res.attention.append([])
        for score, t_end, slot in hyps:
            ids: list[int] = []
            slots: list[int] = []
            k = slot
            for t in range(t_end, -1, -1):  # walk back-pointers: O(length) cheap host work
                ids.append(tok[t][b][k])
                slots.append(k)
                k = par[t][b][k]
            ids.reverse()
            slots.reverse()
            res.tokens[b].append(ids)
            res.scores[b].append(score)
            if att is None:
                res.attention[b].append(None)
            else:  # (len, *attn): the row of step t in the slot the hypothesis held then, one gather
                res.attention[b].append(att[torch.arange(len(slots)), b, torch.tensor(slots, dtype=torch.long)])
    return res


def _infer_device(state: DecoderState, device: torch.device | str | None) -> torch.device:
    """Device for token tensors: explicit, else the first tensor leaf's, else CPU."""
    if device is not None:
        return torch.device(device)
    found: list[torch.device] = []

    def note_device(t: Tensor) -> Tensor:
        found.append(t.device)
        return t

    state.map(note_device, note_device)
    return found[0] if found else torch.device("cpu")


class StepDecoder(Protocol):
    """The network contract decoding relies on: one step over a typed :class:`DecoderState`.

    Every task's network implements it (translation's RNN, Transformer and Marian networks, the captioning
    ``CaptionNetwork``, the speech ``SpeechNetwork``), each beside an ``init_state`` over its own inputs (token ids,
    image grid features, encoder frames), so ``network.step`` is a :data:`StepFn` for :func:`beam_search`. The
    type checker verifies each network against it (``tasks/<task>/inference.py``).
    """

    def step(
        self, tokens: Tensor, state: DecoderState, need_weights: bool = ...
    ) -> tuple[Tensor, DecoderState, Tensor | None]:
        """``tokens (N,)`` -> log-probabilities ``(N, V)``, the next state, attention ``(N, S)`` or None."""
        ...
