"""Tests for core.decoding.beam: beam_size=1 against an arg-max reference, search quality, n-best, EOS/max_len,
state handling."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor

from core.decoding.beam import DecoderState, beam_search

PAD, BOS, EOS = 0, 1, 2


class ToyModel:
    """A small random recurrent scorer with dot attention over a fake encoder output.

    state = DecoderState(beams={"h": (N, D), "t": (N,)}, source={"enc": (N, S, D)}); EOS gets a bonus growing
    with t so that hypotheses end at different lengths.
    """

    def __init__(self, vocab: int = 11, dim: int = 8, src_len: int = 6, eos_bonus: float = 0.6, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.emb = torch.randn(vocab, dim, generator=g)
        self.w = torch.randn(dim, dim, generator=g) / math.sqrt(dim)
        self.out = torch.randn(dim, vocab, generator=g)
        self.vocab, self.dim, self.src_len, self.eos_bonus = vocab, dim, src_len, eos_bonus
        self.static_ids: list[int] = []

    def init_state(self, batch: int, seed: int = 1) -> DecoderState:
        g = torch.Generator().manual_seed(seed)
        enc = torch.randn(batch, self.src_len, self.dim, generator=g)
        return DecoderState(beams={"h": enc.mean(1), "t": torch.zeros(batch)}, source={"enc": enc})

    def step(self, last: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState, Tensor]:
        self.static_ids.append(id(state.source["enc"]))
        enc = state.source["enc"]  # (N, S, D)
        beams = state.beams
        h = torch.tanh(beams["h"] @ self.w + self.emb[last])  # (N, D)
        attn = torch.softmax((enc @ h.unsqueeze(-1)).squeeze(-1), dim=-1)  # (N, S)
        ctx = (attn.unsqueeze(-1) * enc).sum(1)  # (N, D)
        logits = (h + ctx) @ self.out  # (N, V)
        logits[:, EOS] += self.eos_bonus * beams["t"]
        logits[:, PAD] = torch.finfo(logits.dtype).min  # never generate PAD / BOS
        logits[:, BOS] = torch.finfo(logits.dtype).min
        new = DecoderState(beams={**beams, "h": h, "t": beams["t"] + 1}, source=state.source, cache=state.cache)
        return torch.log_softmax(logits, -1), new, attn


def _slice(state: DecoderState, b: int) -> DecoderState:
    return state.map(lambda t: t[b : b + 1], lambda t: t[b : b + 1])


def _teacher_force(model: ToyModel, state: Any, tokens: list[int], with_eos: bool) -> tuple[float, Tensor]:
    """Summed log-prob (incl. EOS if with_eos) and attention rows of one hypothesis."""
    last, total, rows = torch.tensor([BOS]), 0.0, []
    for tok in tokens + ([EOS] if with_eos else []):
        lp, state, attn = model.step(last, state)
        total += float(lp[0, tok])
        rows.append(attn[0])
        last = torch.tensor([tok])
    return total, torch.stack(rows[: len(tokens)]) if tokens else torch.zeros(0, model.src_len)


def _argmax_reference(
    model: ToyModel, state: DecoderState, batch: int, max_len: int, length_penalty: float
) -> tuple[list[list[int]], list[float], list[Tensor]]:
    """Plain greedy decoding: every row steps to ``max_len`` (none is dropped), each takes its arg-max until EOS.

    Returns per item the tokens (without EOS), the length-normalised score and the attention rows of the tokens.
    """
    last = torch.full((batch,), BOS)
    tokens: list[list[int]] = [[] for _ in range(batch)]
    rows: list[list[Tensor]] = [[] for _ in range(batch)]
    sums, ended = [0.0] * batch, [False] * batch
    for _ in range(max_len):
        lp, state, attn = model.step(last, state)
        last = lp.argmax(-1)
        for b in range(batch):
            if not ended[b]:
                tok = int(last[b])
                sums[b] += float(lp[b, tok])
                ended[b] = tok == EOS
                if not ended[b]:
                    tokens[b].append(tok)
                    rows[b].append(attn[b])
    scores = [sums[b] / (len(tokens[b]) + int(ended[b])) ** length_penalty for b in range(batch)]
    return tokens, scores, [torch.stack(r) if r else torch.zeros(0, model.src_len) for r in rows]


def test_beam1_equals_argmax_reference() -> None:
    model = ToyModel()
    kw = dict(batch_size=5, bos_id=BOS, eos_id=EOS, max_len=12, length_penalty=0.7)
    b = beam_search(model.step, model.init_state(5), beam_size=1, **kw)
    tokens, scores, attention = _argmax_reference(model, model.init_state(5), 5, 12, 0.7)
    assert [t[0] for t in b.tokens] == tokens
    assert [s[0] for s in b.scores] == pytest.approx(scores, abs=1e-5)
    for ba, ra in zip(b.attention, attention):
        torch.testing.assert_close(ba[0], ra, rtol=1e-5, atol=1e-6)
    lengths = {len(t) for t in tokens}
    assert len(lengths) > 1, "fixture should produce hypotheses of different lengths"


def test_beam_beats_greedy_on_handmade_scorer() -> None:
    # vocab: 0 pad, 1 bos, 2 eos, 3 "a", 4 "b". Step 0: a=.6, b=.4. After a: eos=.34, a=.33, b=.33.
    # After b: eos ~ 1. Greedy: "a" (p=.204); the best sequence is "b" (p~.4).
    def step(last: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor], None]:
        n, t = last.size(0), state["t"]
        first = torch.where(t == 1, last, state["first"])  # at step 1 the input token is the first one
        p = torch.full((n, 5), 1e-6)
        at_start = t == 0
        p[at_start, 3], p[at_start, 4] = 0.6, 0.4
        after_a = ~at_start & (first == 3)
        p[after_a, 2], p[after_a, 3], p[after_a, 4] = 0.34, 0.33, 0.33
        after_b = ~at_start & (first == 4)
        p[after_b, 2] = 1.0
        return (p / p.sum(-1, keepdim=True)).log(), {"first": first, "t": t + 1}, None

    init = {"first": torch.zeros(2, dtype=torch.long), "t": torch.zeros(2, dtype=torch.long)}
    kw = dict(batch_size=2, bos_id=BOS, eos_id=EOS, max_len=5, length_penalty=0.0)
    g = beam_search(step, init, beam_size=1, **kw)
    b = beam_search(step, init, beam_size=2, nbest=2, **kw)
    assert g.tokens[0][0] == [3]
    assert g.scores[0][0] == pytest.approx(math.log(0.6 * 0.34), abs=1e-4)  # "a", then EOS
    assert b.tokens[0][0] == [4]
    assert b.scores[0][0] > g.scores[0][0]
    assert b.scores[0][0] == pytest.approx(math.log(0.4), abs=1e-4)
    assert b.attention[0][0] is None


def test_nbest_sorted_and_consistent_with_teacher_forcing() -> None:
    model = ToyModel(seed=3)
    B, K, max_len, lp = 3, 4, 10, 1.0
    init = model.init_state(B)
    res = beam_search(
        model.step, init, batch_size=B, bos_id=BOS, eos_id=EOS, max_len=max_len, beam_size=K, length_penalty=lp, nbest=K
    )
    for b in range(B):
        assert len(res.tokens[b]) == K
        assert res.scores[b] == sorted(res.scores[b], reverse=True)
        assert len({tuple(t) for t in res.tokens[b]}) == K  # distinct hypotheses
        for toks, score, attn in zip(res.tokens[b], res.scores[b], res.attention[b]):
            assert EOS not in toks and BOS not in toks
            with_eos = len(toks) < max_len
            total, rows = _teacher_force(model, _slice(init, b), toks, with_eos)
            length = len(toks) + int(with_eos)
            assert score == pytest.approx(total / length**lp, abs=1e-4)
            assert attn is not None and attn.shape == (len(toks), model.src_len)
            torch.testing.assert_close(attn, rows, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_batch_items_independent(beam_size: int) -> None:
    """Dropping finished items from the batch must not change any item's result."""
    model = ToyModel(seed=5)
    B = 4
    init = model.init_state(B)
    kw = dict(bos_id=BOS, eos_id=EOS, max_len=10, beam_size=beam_size, nbest=min(2, beam_size))
    full = beam_search(model.step, init, batch_size=B, **kw)
    for b in range(B):
        one = beam_search(model.step, _slice(init, b), batch_size=1, **kw)
        assert one.tokens[0] == full.tokens[b]
        assert one.scores[0] == pytest.approx(full.scores[b], abs=1e-5)


def test_max_len_without_eos_and_immediate_eos() -> None:
    model = ToyModel(eos_bonus=0.0)

    def no_eos(last: Tensor, state: Any) -> tuple[Tensor, Any, Tensor]:
        lp, st, attn = model.step(last, state)
        lp = lp.clone()
        lp[:, EOS] = float("-inf")
        return lp, st, attn

    def eos_first(last: Tensor, state: Any) -> tuple[Tensor, Any, Tensor]:
        lp, st, attn = model.step(last, state)
        lp = torch.full_like(lp, -20.0)
        lp[:, EOS] = 0.0
        return lp, st, attn

    for extra in ({"beam_size": 1}, {"beam_size": 3, "nbest": 3}):
        res = beam_search(no_eos, model.init_state(2), batch_size=2, bos_id=BOS, eos_id=EOS, max_len=7, **extra)
        for hyps, atts in zip(res.tokens, res.attention):
            for toks, att in zip(hyps, atts):
                assert len(toks) == 7 and att.shape == (7, model.src_len)
        res = beam_search(eos_first, model.init_state(2), batch_size=2, bos_id=BOS, eos_id=EOS, max_len=7, **extra)
        assert res.tokens[0][0] == [] and res.attention[0][0].shape == (0, model.src_len)
        assert res.scores[0][0] == pytest.approx(0.0)


def test_early_stop_calls() -> None:
    model = ToyModel(eos_bonus=0.0)
    calls = 0

    def eos_second(last: Tensor, state: Any) -> tuple[Tensor, Any, Tensor]:
        nonlocal calls
        calls += 1
        lp, st, attn = model.step(last, state)
        lp = torch.full_like(lp, -30.0)
        lp[:, 5] = 0.0
        lp[:, EOS] = torch.where(state.beams["t"] >= 1, 5.0, -30.0)  # EOS certain from step 2 on
        return torch.log_softmax(lp, -1), st, attn

    res = beam_search(
        eos_second, model.init_state(3), batch_size=3, bos_id=BOS, eos_id=EOS, max_len=50, beam_size=2, nbest=2
    )
    assert res.tokens[0][0] == [5]
    assert calls <= 4  # stopped long before max_len


def test_static_state_not_reordered_and_dynamic_follows_beams() -> None:
    model = ToyModel(eos_bonus=0.0)

    def no_eos(last: Tensor, state: DecoderState) -> tuple[Tensor, Any, Tensor]:
        # the beams' "item" must keep naming the batch item (beams never cross items) while reordering
        assert torch.equal(state.beams["item"], state.source["item"])
        lp, st, attn = model.step(last, state)
        lp = lp.clone()
        lp[:, EOS] = float("-inf")
        return lp, st, attn

    init = model.init_state(3)
    init.beams["item"] = torch.arange(3.0)
    init.source["item"] = torch.arange(3.0)
    model.static_ids.clear()
    beam_search(no_eos, init, batch_size=3, bos_id=BOS, eos_id=EOS, max_len=6, beam_size=4)
    assert len(model.static_ids) == 6
    assert model.static_ids[0] == id(init.source["enc"])  # step 0: the caller's unexpanded rows
    assert len(set(model.static_ids[1:])) == 1  # then the same (expanded once) tensor object every step


def test_first_step_scores_one_row_per_item() -> None:
    """Step 0 runs on the B initial rows (the beams are identical), later steps on B*K rows."""
    model = ToyModel(seed=3)
    rows: list[int] = []

    def counting(last: Tensor, state: Any) -> tuple[Tensor, Any, Tensor]:
        rows.append(last.numel())
        return model.step(last, state)

    kw = dict(batch_size=4, bos_id=BOS, eos_id=EOS, max_len=7, beam_size=3, nbest=3)
    res = beam_search(counting, model.init_state(4), **kw)
    assert rows[0] == 4 and rows[1] == 12
    # The (B, V) first step broadcast over each item's beams must keep items apart: every item
    # decodes exactly as it does alone (teacher-forced scores are checked in the n-best test).
    for b in range(4):
        one = beam_search(model.step, _slice(model.init_state(4), b), **{**kw, "batch_size": 1})
        assert res.tokens[b] == one.tokens[0]
        assert res.scores[b] == pytest.approx(one.scores[0], abs=1e-5)
        for a, a1 in zip(res.attention[b], one.attention[0]):
            torch.testing.assert_close(a, a1)


def test_bad_args() -> None:
    model = ToyModel()
    with pytest.raises(ValueError):
        beam_search(model.step, model.init_state(2), batch_size=2, beam_size=2, nbest=3)
    with pytest.raises(ValueError, match="batch_size"):
        beam_search(model.step, model.init_state(2), batch_size=3, beam_size=2)


def test_tiny_vocab_large_beam_and_multihead_attention() -> None:
    """V=4 (one real token) with beam 5: never returns impossible hypotheses; (N, H, S) attention works."""

    def step(last: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        n = last.size(0)
        lp = torch.log_softmax(torch.tensor([-50.0, -50.0, 0.0, 0.5]).repeat(n, 1) + state["x"], -1)
        return lp, state, torch.full((n, 2, 3), 1.0 / 3)

    init = {"x": torch.zeros(2, 1)}
    res = beam_search(step, init, batch_size=2, bos_id=BOS, eos_id=EOS, max_len=4, beam_size=5, nbest=5)
    for hyps, scores, atts in zip(res.tokens, res.scores, res.attention):
        assert 1 <= len(hyps) <= 5
        assert all(math.isfinite(s) and s > -100 for s in scores)
        assert all(set(h) <= {3} for h in hyps)
        assert all(a.shape == (len(h), 2, 3) for h, a in zip(hyps, atts))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    model = ToyModel(seed=7)
    cuda = ToyModel(seed=7)
    cuda.emb, cuda.w, cuda.out = cuda.emb.cuda(), cuda.w.cuda(), cuda.out.cuda()
    init = model.init_state(4)
    kw = dict(batch_size=4, bos_id=BOS, eos_id=EOS, max_len=10, beam_size=3, nbest=3)
    cpu_res = beam_search(model.step, init, **kw)
    gpu_res = beam_search(cuda.step, init.map(lambda t: t.cuda(), lambda t: t.cuda()), **kw)
    assert gpu_res.tokens == cpu_res.tokens
    assert gpu_res.scores == pytest.approx(cpu_res.scores, abs=1e-3)
    assert gpu_res.attention[0][0].device.type == "cpu"
    greedy_kw = dict(batch_size=4, bos_id=BOS, eos_id=EOS, max_len=10, beam_size=1)
    greedy = beam_search(cuda.step, init.map(lambda t: t.cuda(), lambda t: t.cuda()), **greedy_kw)
    assert greedy.tokens == beam_search(model.step, init, **greedy_kw).tokens


@pytest.mark.parametrize("rows,vocab", [(4, 1037), (4, 2048), (1, 1100)])
def test_blocked_top_candidates_match_topk(rows: int, vocab: int) -> None:
    """The CPU block-max top-k returns torch.topk's candidates (dead beams, -inf, short last block); the
    random scores have no ties, whose order may differ."""
    from core.decoding.beam import _top_candidates

    g = torch.Generator().manual_seed(vocab)
    a, k, n = 3, 4, 8
    lp = torch.log_softmax(torch.randn(a, rows, vocab, generator=g) * 3, -1)
    lp[0, 0, vocab - 1] = 5.0  # best candidate in the short last block
    lp[1, :, :100] = float("-inf")
    beam = torch.randn(a, k, generator=g)
    beam[2, 1:] = torch.finfo(torch.float32).min  # dead beams
    scores, idx = _top_candidates(beam, lp, n)
    ref_scores, ref_idx = (beam[:, :rows, None] + lp).view(a, -1).topk(n, dim=1)
    assert torch.equal(scores, ref_scores)
    assert torch.equal(idx, ref_idx)


def test_beam_search_same_with_and_without_blocked_topk(monkeypatch: pytest.MonkeyPatch) -> None:
    import core.decoding.beam as dec

    model = ToyModel(vocab=3000, dim=16, seed=5, eos_bonus=0.3)
    kw = dict(batch_size=3, bos_id=BOS, eos_id=EOS, max_len=8, beam_size=4, nbest=4)
    blocked = beam_search(model.step, model.init_state(3), **kw)
    monkeypatch.setattr(dec, "TOPK_BLOCK", 10**6)  # one block: the plain topk path
    plain = beam_search(model.step, model.init_state(3), **kw)
    assert blocked.tokens == plain.tokens
    assert blocked.scores == plain.scores


@pytest.mark.parametrize("beam_size", [1, 3])
def test_cache_reordered_by_the_step_function(beam_size: int) -> None:
    """A step function that applies ``reorder`` to its ``cache`` itself gets the same search as one whose
    ``beams`` beam search reorders; finished items are dropped from the cache too. With one beam, ``reorder``
    is only handed in to drop finished items."""
    model = ToyModel(seed=11, eos_bonus=0.8)
    reorders: list[tuple[int, int] | None] = []  # (rows of the reorder, rows of the cache) per cached step

    def with_history(last: Tensor, state: DecoderState, cached: bool) -> tuple[Tensor, DecoderState, Tensor]:
        hist = state.cache["hist"] if cached else state.beams["hist"]  # (M, t) tokens so far
        if cached:
            reorders.append(None if state.reorder is None else (state.reorder.numel(), hist.shape[0]))
        if cached and state.reorder is not None:
            hist = hist.index_select(0, state.reorder)
        hist = torch.cat([hist, last[:, None].float()], 1)  # (N, t+1)
        # the history must be the row's own prefix: its sum feeds the scores
        lp, st, attn = model.step(last, state)
        lp = torch.log_softmax(lp + 0.01 * hist.sum(1, keepdim=True) * torch.arange(lp.shape[1]), -1)
        if cached:
            st = DecoderState(beams=st.beams, source=st.source, cache={"hist": hist})
        else:
            st.beams["hist"] = hist
        return lp, st, attn

    kw = dict(batch_size=4, bos_id=BOS, eos_id=EOS, max_len=9, beam_size=beam_size, nbest=beam_size)
    init = model.init_state(4)
    cached = beam_search(
        lambda t, s: with_history(t, s, True),
        DecoderState(beams=init.beams, source=init.source, cache={"hist": torch.zeros(4, 0)}),
        **kw,
    )
    eager = beam_search(
        lambda t, s: with_history(t, s, False),
        DecoderState(beams={**init.beams, "hist": torch.zeros(4, 0)}, source=init.source),
        **kw,
    )
    assert cached.tokens == eager.tokens
    assert cached.scores == eager.scores
    assert len({len(h[0]) for h in cached.tokens}) > 1  # items finished at different steps (drops)
    assert reorders[0] is None  # the first step runs on the initial rows
    if beam_size == 1:
        drops = [r for r in reorders if r is not None]
        assert drops and all(n < m for n, m in drops)  # handed in only to drop finished items' rows
        assert None in reorders[1:]


def test_step_must_consume_reorder() -> None:
    model = ToyModel(seed=2)

    def forgets(last: Tensor, state: DecoderState) -> tuple[Tensor, Any, Tensor]:
        lp, st, attn = model.step(last, state)
        return lp, DecoderState(st.beams, st.source, cache=state.cache, reorder=state.reorder), attn  # never applies it

    init = model.init_state(2)
    init.cache = {"x": torch.zeros(2, 1)}
    with pytest.raises(ValueError, match="reorder"):
        beam_search(forgets, init, batch_size=2, bos_id=BOS, eos_id=EOS, max_len=5, beam_size=3)

    def sets_one(last: Tensor, state: DecoderState) -> tuple[Tensor, Any, Tensor]:
        lp, st, attn = forgets(last, state)
        st.reorder = torch.arange(last.numel())
        return lp, st, attn

    with pytest.raises(ValueError, match="reorder"):  # one beam: no reorder handed in, none may come back
        beam_search(sets_one, init, batch_size=2, bos_id=BOS, eos_id=EOS, max_len=5, beam_size=1)


def test_plain_pytree_state_follows_the_beams() -> None:
    """A step function may keep a plain pytree as its state: every leaf is treated as ``beams``."""
    model = ToyModel(seed=6)

    def plain(last: Tensor, state: dict[str, Any]) -> tuple[Tensor, dict[str, Any], Tensor]:
        lp, st, attn = model.step(last, DecoderState(beams=state["beams"], source=state["source"]))
        return lp, {"beams": st.beams, "source": st.source}, attn

    init = model.init_state(3)
    kw = dict(batch_size=3, bos_id=BOS, eos_id=EOS, max_len=7, beam_size=3, nbest=2)
    typed = beam_search(model.step, init, **kw)
    untyped = beam_search(plain, {"beams": init.beams, "source": init.source}, **kw)
    assert typed.tokens == untyped.tokens and typed.scores == untyped.scores


def test_step_returning_wrong_row_count_is_an_error() -> None:
    model = ToyModel(seed=4)

    def drops_a_row(last: Tensor, state: Any) -> tuple[Tensor, Any, Tensor]:
        lp, st, attn = model.step(last, state)
        return lp[1:], st, attn

    with pytest.raises(ValueError, match="rows"):
        beam_search(drops_a_row, model.init_state(3), batch_size=3, bos_id=BOS, eos_id=EOS, max_len=4, beam_size=2)


def test_beam_bound_and_non_finite_scores_are_clear_errors() -> None:
    from core.errors import ConfigError, DecodingError

    def step(tokens: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        return torch.full((tokens.shape[0], 6), float("nan")), state, None

    state = torch.zeros(2, 1)
    with pytest.raises(ConfigError, match="1 <= beam_size <= 128"):
        beam_search(step, state, batch_size=2, beam_size=10**6)
    for beam_size in (1, 3):
        with pytest.raises(DecodingError, match="input 0 of the batch has no hypothesis.*NaN"):
            beam_search(step, state, batch_size=2, beam_size=beam_size, max_len=4)
