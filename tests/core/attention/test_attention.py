"""Tests for `core.attention`: parity, masking/NaN safety, gradients, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from core.attention import (
    AdditiveAttention,
    MultiHeadAttention,
    additive_scores,
    available_attentions,
    build_attention,
    lengths_to_mask,
)

NAMES = ["additive", "dot", "general", "scaled_dot", "multihead", "location", "pooling", "none"]


def make(name: str, d: int = 8, dtype: torch.dtype = torch.float32, **kw) -> torch.nn.Module:
    if name == "multihead":
        kw.setdefault("num_heads", 2)
    torch.manual_seed(0)
    return build_attention(name, query_dim=d, key_dim=d, **kw).to(dtype)


def test_registry_lists_all_seven_and_none() -> None:
    assert available_attentions() == sorted(NAMES)


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError) as err:
        build_attention("bahdanau", query_dim=4, key_dim=4)
    for name in NAMES:
        assert name in str(err.value)


def test_bad_kwargs_name_accepted_ones() -> None:
    with pytest.raises(ValueError, match="num_heads"):
        build_attention("additive", query_dim=4, key_dim=4, num_heads=2)


@pytest.mark.parametrize("name", NAMES)
def test_output_shapes_3d_and_single_step(name: str) -> None:
    attn = make(name)
    q, k = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    out = attn(q, k, k)
    heads = (2,) if name == "multihead" else ()
    assert out.context.shape == (2, 3, attn.output_dim)
    assert out.weights.shape == (2, *heads, 3, 5)
    step = attn(q[:, 0], k, k)
    assert step.context.shape == (2, attn.output_dim)
    assert step.weights.shape == (2, *heads, 5)
    torch.testing.assert_close(out.weights.sum(-1), torch.ones_like(out.weights.sum(-1)))


def test_scaled_dot_matches_sdpa_and_fast_path() -> None:
    attn = make("scaled_dot")
    q, k, v = torch.randn(3, 4, 8), torch.randn(3, 6, 8), torch.randn(3, 6, 8)
    mask = lengths_to_mask(torch.tensor([6, 3, 1]), 6)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, :])
    explicit = attn(q, k, v, mask)
    fast = attn(q, k, v, mask, need_weights=False)
    assert fast.weights is None
    torch.testing.assert_close(explicit.context, ref)
    torch.testing.assert_close(fast.context, ref)


def test_multihead_matches_torch_multiheadattention() -> None:
    e, h = 16, 4
    torch.manual_seed(1)
    ours = MultiHeadAttention(e, e, num_heads=h)
    ref = torch.nn.MultiheadAttention(e, h, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
    q, kv = torch.randn(2, 5, e), torch.randn(2, 7, e)
    mask = lengths_to_mask(torch.tensor([7, 4]), 7)
    ref_out, ref_w = ref(q, kv, kv, key_padding_mask=~mask, average_attn_weights=False)
    out = ours(q, kv, kv, mask)
    torch.testing.assert_close(out.context, ref_out)
    torch.testing.assert_close(out.weights, ref_w)
    torch.testing.assert_close(ours(q, kv, kv, mask, need_weights=False).context, ref_out)
    # Causal self-attention: SDPA's is_causal path and the explicit path agree with torch.
    causal = torch.triu(torch.ones(5, 5, dtype=torch.bool), 1)
    ref_c, _ = ref(q, q, q, attn_mask=causal)
    torch.testing.assert_close(ours(q, q, q, causal=True, need_weights=False).context, ref_c)
    torch.testing.assert_close(ours(q, q, q, causal=True).context, ref_c)


def test_multihead_kv_cache_matches_full_causal() -> None:
    attn = make("multihead", d=8)
    x = torch.randn(2, 6, 8)
    full = attn(x, x, x, causal=True).context
    cache_k = cache_v = None
    steps = []
    for t in range(6):
        k_t, v_t = attn.precompute(x[:, t : t + 1], x[:, t : t + 1])  # (B, H, 1, Dh)
        cache_k = k_t if cache_k is None else torch.cat([cache_k, k_t], dim=2)
        cache_v = v_t if cache_v is None else torch.cat([cache_v, v_t], dim=2)
        steps.append(attn(x[:, t], None, None, precomputed=(cache_k, cache_v), need_weights=False).context)
    torch.testing.assert_close(torch.stack(steps, dim=1), full)


def naive_additive(attn: AdditiveAttention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Per-element reference: e[b,t,s] = v . tanh(Wq q[b,t] + Wk k[b,s] + bk)."""
    b, t, _ = q.shape
    s = k.shape[1]
    ctx = torch.zeros(b, t, v.shape[-1], dtype=q.dtype)
    for i in range(b):
        for j in range(t):
            e = torch.stack(
                [
                    attn.energy.weight[0] @ torch.tanh(attn.query_proj(q[i, j]) + attn.key_proj(k[i, m]))
                    for m in range(s)
                ]
            )
            w = torch.softmax(e, 0)
            ctx[i, j] = w @ v[i]
    return ctx


def test_additive_matches_naive_reference() -> None:
    attn = make("additive", d=6)
    q, k, v = torch.randn(2, 3, 6), torch.randn(2, 4, 6), torch.randn(2, 4, 6)
    torch.testing.assert_close(attn(q, k, v).context, naive_additive(attn, q, k, v), atol=1e-5, rtol=1e-5)


def test_additive_precompute_equals_recompute() -> None:
    attn = make("additive")
    q, k = torch.randn(2, 8), torch.randn(2, 5, 8)
    torch.testing.assert_close(attn(q, k, k, precomputed=attn.precompute(k)).context, attn(q, k, k).context)


def test_additive_chunked_scores_match_unchunked(monkeypatch: pytest.MonkeyPatch) -> None:
    import core.attention.additive as additive

    qh, kh, v = torch.randn(2, 9, 4, requires_grad=True), torch.randn(2, 5, 4, requires_grad=True), torch.randn(4)
    naive = torch.tanh(qh[:, :, None] + kh[:, None]) @ v  # (B, T, S)
    monkeypatch.setattr(additive, "CHUNK_ELEMENTS", 2 * 5 * 4 * 2)  # two query steps per chunk
    chunked = additive_scores(qh, kh, v)
    torch.testing.assert_close(chunked, naive)
    g = torch.randn_like(naive)
    torch.testing.assert_close(torch.autograd.grad(chunked, (qh, kh), g), torch.autograd.grad(naive, (qh, kh), g))


def test_location_step_by_step_equals_sequence() -> None:
    attn = make("location", kernel_size=3, conv_channels=4, cumulative=True)
    q, k = torch.randn(2, 4, 8), torch.randn(2, 6, 8)
    mask = lengths_to_mask(torch.tensor([6, 4]), 6)
    seq = attn(q, k, k, mask)
    prev, ctxs = None, []
    for t in range(4):
        out = attn(q[:, t], k, k, mask, prev_weights=prev, precomputed=attn.precompute(k))
        prev = attn.accumulate(prev, out.weights)
        ctxs.append(out.context)
    torch.testing.assert_close(torch.stack(ctxs, 1), seq.context)
    torch.testing.assert_close(prev, seq.weights.sum(1))


def test_location_uses_previous_weights() -> None:
    attn = make("location", kernel_size=3)
    q, k = torch.randn(1, 8), torch.randn(1, 6, 8)
    a = attn(q, k, k, prev_weights=torch.eye(6)[:1]).weights
    b = attn(q, k, k, prev_weights=torch.eye(6)[5:]).weights
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("need_weights", [True, False])
def test_masking_and_fully_masked_rows(name: str, dtype: torch.dtype, need_weights: bool) -> None:
    attn = make(name, dtype=dtype)
    q, k = torch.randn(3, 2, 8, dtype=dtype), torch.randn(3, 5, 8, dtype=dtype)
    mask = lengths_to_mask(torch.tensor([5, 2, 0]), 5)  # third item: nothing to attend to
    q.requires_grad_(True)
    k.requires_grad_(True)
    out = attn(q, k, k, mask, need_weights=need_weights)
    assert torch.isfinite(out.context).all()
    assert (out.context[2] == 0).all()
    if out.weights is not None:
        w = out.weights if name != "multihead" else out.weights[:, 0]
        assert (w[1, :, 2:] == 0).all()
        assert (w[2] == 0).all()
        torch.testing.assert_close(w[:2].float().sum(-1), torch.ones(2, 2), atol=1e-2, rtol=0)
    out.context.float().sum().backward()
    assert torch.isfinite(k.grad).all()
    # pooling and none do not use the query: no gradient reaches it
    assert name in ("pooling", "none") or torch.isfinite(q.grad).all()


@pytest.mark.parametrize("name", NAMES)
def test_masked_keys_do_not_change_context(name: str) -> None:
    attn = make(name)
    q, k = torch.randn(1, 3, 8), torch.randn(1, 5, 8)
    mask = lengths_to_mask(torch.tensor([3]), 5)
    k2 = k.clone()
    k2[:, 3:] = 100.0
    torch.testing.assert_close(attn(q, k, k, mask).context, attn(q, k2, k2, mask).context)


@pytest.mark.parametrize("name", NAMES)
def test_autocast_bf16_cpu(name: str) -> None:
    attn = make(name)
    q, k = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    mask = lengths_to_mask(torch.tensor([5, 0]), 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attn(q, k, k, mask)
    assert torch.isfinite(out.context.float()).all()
    assert (out.context[1] == 0).all()


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_float64(name: str) -> None:
    kw = {"kernel_size": 3, "conv_channels": 2} if name == "location" else {}
    attn = make(name, d=4, dtype=torch.float64, **kw)
    q = torch.randn(2, 2, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    mask = lengths_to_mask(torch.tensor([3, 2]), 3)
    assert torch.autograd.gradcheck(lambda q, k, v: attn(q, k, v, mask).context, (q, k, v))


def test_gradcheck_additive_scores_with_location_features() -> None:
    args = [
        torch.randn(*s, dtype=torch.float64, requires_grad=True)
        for s in [(2, 3, 4), (2, 5, 4), (4,), (2, 5, 2), (4, 2)]
    ]
    assert torch.autograd.gradcheck(additive_scores, tuple(args))


@pytest.mark.parametrize(
    "q_shape,k_shape,v_shape,match",
    [
        ((2, 3, 8, 1), (2, 5, 8), (2, 5, 8), "query must be"),
        ((2, 3, 8), (2, 5), (2, 5, 8), "keys must be"),
        ((3, 3, 8), (2, 5, 8), (2, 5, 8), "batch"),
        ((2, 3, 7), (2, 5, 8), (2, 5, 8), "query_dim"),
        ((2, 3, 8), (2, 5, 8), (2, 4, 8), "share"),
    ],
)
@pytest.mark.parametrize("name", NAMES)
def test_bad_shapes_raise_valueerror_naming_shapes(name, q_shape, k_shape, v_shape, match) -> None:
    attn = make(name)
    with pytest.raises(ValueError, match=match):
        attn(torch.randn(*q_shape), torch.randn(*k_shape), torch.randn(*v_shape))


def test_bad_mask_raises() -> None:
    attn = make("dot")
    q, k = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    with pytest.raises(ValueError, match="bool"):
        attn(q, k, k, torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"\(B, S\)"):
        attn(q, k, k, torch.ones(2, 4, dtype=torch.bool))


def test_dot_requires_equal_dims() -> None:
    with pytest.raises(ValueError, match="general"):
        build_attention("dot", query_dim=4, key_dim=6)


def test_causal_masking() -> None:
    attn = make("scaled_dot")
    x = torch.randn(1, 4, 8)
    w = attn(x, x, x, causal=True).weights
    assert (torch.triu(w[0], 1) == 0).all()
    # incremental step: the last query sees every key
    assert (attn(x[:, -1:], x, x, causal=True).weights > 0).all()


def test_additive_single_step_memory_is_bounded() -> None:
    """Autograd keeps no (B, S, H) energy slice per step: only qh and the shared kh."""
    attn = AdditiveAttention(16, 16, hidden_dim=32)
    q, k = torch.randn(4, 16, requires_grad=True), torch.randn(4, 50, 16)
    kh = attn.precompute(k)
    saved: list[torch.Size] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.shape)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        attn(q, k, k, precomputed=kh)
    assert torch.Size([4, 50, 32]) in saved  # kh itself (shared across steps)
    assert all(math.prod(s) < 4 * 50 * 32 for s in saved if s != torch.Size([4, 50, 32]))


def test_fusable_chunk_kernels_match_eager() -> None:
    """The kernels compiled on CUDA compute the same values as the eager CPU ones."""
    from core.attention import additive

    args = [torch.randn(*s, dtype=torch.float64) for s in [(2, 3, 8), (2, 5, 8), (8,)]]
    g = torch.randn(2, 3, 5, dtype=torch.float64)
    torch.testing.assert_close(additive._fwd_chunk_fusable(*args), additive._fwd_chunk(*args))
    for a, b in zip(additive._bwd_chunk_fusable(*args, g), additive._bwd_chunk(*args, g)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", ["additive", "location"])
def test_memory_efficient_flag_same_values_and_grads(name: str) -> None:
    kw = {"kernel_size": 3, "conv_channels": 2} if name == "location" else {}
    lean = make(name, d=6, **kw)
    plain = make(name, d=6, memory_efficient=False, **kw)
    plain.load_state_dict(lean.state_dict())
    q = torch.randn(2, 3, 6, requires_grad=True)
    k = torch.randn(2, 4, 6)
    mask = lengths_to_mask(torch.tensor([4, 2]), 4)
    a, b = lean(q, k, k, mask).context, plain(q, k, k, mask).context
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(torch.autograd.grad(a.sum(), q)[0], torch.autograd.grad(b.sum(), q)[0])


@pytest.mark.parametrize("name", ["additive", "location"])
def test_auto_memory_efficient_picks_by_size_and_matches(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """memory_efficient=None: plain up to AUTO_*_ELEMENTS, recompute above; same values and grads."""
    import core.attention.additive as additive

    kw = {"kernel_size": 3, "conv_channels": 2} if name == "location" else {}
    calls: list[int] = []
    real = additive.additive_scores
    monkeypatch.setattr(additive, "additive_scores", lambda *a: calls.append(1) or real(*a))
    ref = make(name, d=6, memory_efficient=True, **kw)
    auto = make(name, d=6, memory_efficient=None, **kw)
    auto.load_state_dict(ref.state_dict())
    k = torch.randn(3, 4, 6, requires_grad=True)
    mask = lengths_to_mask(torch.tensor([4, 2, 0]), 4)  # a fully masked row too
    q = torch.randn(3, 6, requires_grad=True)  # one decoder step, budgeted as a loop: B*S*S*H = 3*4*4*6
    expected = ref(q, k, k, mask)
    g_ref = torch.autograd.grad(expected.context.sum(), (q, k))
    calls.clear()
    for bound, uses_recompute in [(3 * 4 * 4 * 6, False), (3 * 4 * 4 * 6 - 1, True)]:
        monkeypatch.setattr(additive, "AUTO_CPU_ELEMENTS", bound)
        with torch.no_grad():  # no autograd: only the step's own (B, 1, S, H) counts, plain here
            auto(q, k, k, mask)
        assert not calls
        out = auto(q, k, k, mask)
        assert bool(calls) == uses_recompute
        calls.clear()
        torch.testing.assert_close(out.context, expected.context)
        torch.testing.assert_close(out.weights, expected.weights)
        assert (out.weights[2] == 0).all() and (out.context[2] == 0).all()
        torch.testing.assert_close(torch.autograd.grad(out.context.sum(), (q, k)), g_ref)


def test_auto_memory_efficient_rule() -> None:
    from core.attention.additive import AUTO_CPU_ELEMENTS, AUTO_CUDA_ELEMENTS, auto_memory_efficient

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not auto_memory_efficient(128, 1, 12, 256, cpu)  # the translation benchmark's decoder step
    for s in (30, 100):  # token-capped GPU sentence batches (16384 tokens, H 512) keep the plain form
        assert not auto_memory_efficient(16384 // s, 1, s, 512, cuda)
    # A training decoder step is budgeted as its loop, (B, S, S, H): 1,000-frame speech (batch 4 on
    # CPU, 32 on GPU) and 500-token sources never keep the loop's tanh, though one step is small.
    assert auto_memory_efficient(4, 1, 1000, 128, cpu)
    assert auto_memory_efficient(32, 1, 1000, 128, cuda)
    assert auto_memory_efficient(32, 1, 500, 256, cpu)
    assert not auto_memory_efficient(32, 1, 500, 256, cpu, training=False)  # decoding keeps nothing
    assert auto_memory_efficient(32, 100, 400, 256, cpu)  # a full (B, T, S, H) sequence call
    for dev, bound in ((cpu, AUTO_CPU_ELEMENTS), (cuda, AUTO_CUDA_ELEMENTS)):  # sequence call: its own size
        assert not auto_memory_efficient(1, 2, 1, bound // 2, dev)
        assert auto_memory_efficient(1, 2, 1, bound // 2 + 1, dev)
    assert AUTO_CPU_ELEMENTS < AUTO_CUDA_ELEMENTS


def test_masked_softmax_single_kernel_fills_match_masked_fill() -> None:
    """The where-based masked_softmax equals the masked_fill formulation, values and grads."""
    from core.attention import masked_softmax

    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        scores = torch.randn(3, 2, 5).to(dtype).requires_grad_(True)
        mask = lengths_to_mask(torch.tensor([5, 2, 0]), 5)[:, None, :]
        ref = scores.masked_fill(~mask, torch.finfo(dtype).min).softmax(-1).masked_fill(~mask, 0.0)
        out = masked_softmax(scores, mask)
        assert out.dtype == dtype
        torch.testing.assert_close(out, ref, atol=0, rtol=0)
        g = torch.randn(3, 2, 5).to(dtype)
        torch.testing.assert_close(torch.autograd.grad(out, scores, g)[0], torch.autograd.grad(ref, scores, g)[0])


def test_pooling_is_the_articles_layer() -> None:
    """weights = softmax(Dense(1)(h)) over the sequence, context = the weighted sum; no query needed."""
    torch.manual_seed(0)
    attn = build_attention("pooling", query_dim=6, key_dim=6)
    h = torch.randn(2, 5, 6)
    out = attn(None, h, h)
    dense = attn.score  # the Dense(1) layer
    expected_w = torch.softmax(dense(h).squeeze(-1), dim=-1)  # (B, S)
    torch.testing.assert_close(out.weights, expected_w)
    torch.testing.assert_close(out.context, (expected_w[..., None] * h).sum(1))
    # a query only repeats the same pooling; precomputed scores give the same result
    rep = attn(torch.randn(2, 3, 6), h, h, precomputed=attn.precompute(h))
    torch.testing.assert_close(rep.weights, expected_w[:, None].expand(2, 3, 5))


def test_pooling_hidden_layer_masks_and_empty_rows() -> None:
    torch.manual_seed(0)
    attn = build_attention("pooling", query_dim=4, key_dim=4, hidden_dim=7)
    h = torch.randn(3, 5, 4)
    mask = lengths_to_mask(torch.tensor([5, 2, 0]), 5)
    out = attn(None, h, h, mask)
    assert torch.all(out.weights[1, 2:] == 0) and torch.allclose(out.weights[1].sum(), torch.tensor(1.0))
    assert torch.all(out.weights[2] == 0) and torch.all(out.context[2] == 0)  # nothing to attend: zeros, not NaN
    scores = attn.score(torch.tanh(attn.hidden(h))).squeeze(-1)  # w . tanh(W h)
    torch.testing.assert_close(out.weights[0], torch.softmax(scores[0], -1))


def test_none_is_a_fixed_masked_mean_without_parameters() -> None:
    attn = make("none")
    assert sum(p.numel() for p in attn.parameters()) == 0
    v = torch.randn(2, 5, 8)
    mask = lengths_to_mask(torch.tensor([5, 2]), 5)
    a = attn(torch.randn(2, 3, 8), v, v, mask)
    b = attn(torch.randn(2, 3, 8), v, v, mask)  # other queries: the same context
    torch.testing.assert_close(a.context, b.context)
    torch.testing.assert_close(a.context[1, 0], v[1, :2].mean(0))
    assert torch.equal(a.weights[1, 0], torch.tensor([0.5, 0.5, 0.0, 0.0, 0.0]))
    empty = attn(torch.randn(1, 8), v[:1], v[:1], torch.zeros(1, 5, dtype=torch.bool))
    assert torch.equal(empty.context, torch.zeros(1, 8)) and torch.equal(empty.weights, torch.zeros(1, 5))


def test_attention_options_give_shared_defaults_and_none_takes_none() -> None:
    from core.attention import attention_options

    assert attention_options("additive", None, hidden_dim=64) == {"hidden_dim": 64}
    assert attention_options("location", {"hidden_dim": 8, "kernel_size": 5}, 64) == {"hidden_dim": 8, "kernel_size": 5}
    assert attention_options("multihead", {}, 64) == {"num_heads": 4}
    assert attention_options("dot", None, 64) == {}
    with pytest.warns(UserWarning, match=r"attention 'none' takes no options: \{'hidden_dim': 8\} ignored"):
        assert attention_options("none", {"hidden_dim": 8}, 64) == {}


def test_translation_none_on_a_config_written_for_additive() -> None:
    """The same on every task: translation's RNN takes ``none`` with another mechanism's options too."""
    from core.text.tokenizers import CharTokenizer
    from tasks.translation.module import TranslationModule

    with pytest.warns(UserWarning, match=r"attention 'none' takes no options: \{'hidden_dim': 64\} ignored"):
        m = TranslationModule(embed_dim=8, hidden_dim=8, attention="none", attention_options={"hidden_dim": 64})
    m.set_tokenizers(CharTokenizer.train(["i love you"]), CharTokenizer.train(["te quiero"]))
    m.build_model()
    assert sum(p.numel() for p in m.model.decoder.attention.parameters()) == 0
    assert isinstance(m.translate("i love you", beam=2), str)
    assert m.hparams.attention_options is None  # what was built: a reloaded checkpoint does not warn again
