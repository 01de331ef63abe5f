"""Tests for core.decoding.fast_paths.vocab_projection: same logits as the layer, cache follows weight changes."""

from __future__ import annotations

import torch
from torch import nn

from core.decoding import fast_paths as inference
from core.decoding.fast_paths import append_to_cache, clear_vocab_projection_cache, step_log_probs, vocab_projection


def _layer(bias: bool = True) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(16, 50, bias=bias)


def test_matches_layer_with_and_without_bias() -> None:
    x = torch.randn(7, 16)
    for bias in (True, False):
        layer = _layer(bias)
        with torch.no_grad():
            torch.testing.assert_close(vocab_projection(layer, x), layer(x))
        assert layer in inference._CACHE  # the cached path ran
        assert set(layer.state_dict()) == ({"weight", "bias"} if bias else {"weight"})


def test_cache_follows_optimizer_steps_and_loaded_weights() -> None:
    layer = _layer()
    x = torch.randn(4, 16)
    with torch.no_grad():
        before = vocab_projection(layer, x)
    opt = torch.optim.SGD(layer.parameters(), lr=1.0)
    layer(x).sum().backward()
    opt.step()  # in-place update: the cached transpose is stale
    with torch.no_grad():
        after = vocab_projection(layer, x)
        torch.testing.assert_close(after, layer(x))
        assert not torch.allclose(after, before)
        other = _layer()
        other.weight.mul_(2)
        layer.load_state_dict(other.state_dict())
        torch.testing.assert_close(vocab_projection(layer, x), other(x))


def test_tied_embedding_updates_are_seen() -> None:
    emb = nn.Embedding(50, 16)
    layer = nn.Linear(16, 50, bias=False)
    layer.weight = emb.weight
    x = torch.randn(3, 16)
    with torch.no_grad():
        vocab_projection(layer, x)
        emb.weight[5].fill_(3.0)  # written through the embedding
        torch.testing.assert_close(vocab_projection(layer, x), layer(x))


def test_autograd_and_other_shapes_use_the_layer() -> None:
    layer = _layer()
    x = torch.randn(2, 16)
    y = vocab_projection(layer, x)  # grad enabled: plain layer, gradients flow
    y.sum().backward()
    assert layer.weight.grad is not None
    assert layer not in inference._CACHE
    with torch.no_grad():
        x3 = torch.randn(2, 3, 16)
        torch.testing.assert_close(vocab_projection(layer, x3), layer(x3))
        torch.testing.assert_close(vocab_projection(layer.double(), x.double()), layer(x.double()))


def test_step_log_probs_in_place_is_exact() -> None:
    torch.manual_seed(1)
    logits = torch.randn(80, 8000) * 16  # decoder-sized, wide range (exp underflows for many entries)
    ref = torch.log_softmax(logits, dim=-1)
    with torch.no_grad():
        out = step_log_probs(logits)
    assert out.data_ptr() == logits.data_ptr()  # written over the logits
    assert torch.equal(out, ref)


def test_step_log_probs_allocates_when_it_must() -> None:
    half = torch.randn(4, 10).to(torch.bfloat16)
    out = step_log_probs(half)
    assert out.dtype == torch.float32 and out.data_ptr() != half.data_ptr()
    x = torch.randn(4, 10, requires_grad=True)
    y = step_log_probs(x * 2)  # autograd on: out-of-place, differentiable
    y[:, 0].sum().backward()
    assert x.grad is not None
    strided = torch.randn(10, 4).t()
    torch.testing.assert_close(step_log_probs(strided), torch.log_softmax(strided, -1))


def test_replaced_weight_is_never_served_from_the_cache() -> None:
    layer = _layer()
    x = torch.randn(3, 16)
    with torch.no_grad():
        vocab_projection(layer, x)
        for scale in (2.0, 3.0):  # new Parameter objects, never modified in place (version 0)
            layer.weight = nn.Parameter(torch.randn(50, 16) * scale)
            torch.testing.assert_close(vocab_projection(layer, x), layer(x))
        layer.weight.data = torch.randn(50, 16)  # same object, new storage
        torch.testing.assert_close(vocab_projection(layer, x), layer(x))


def test_modules_still_pickle_and_inference_mode_weights_work() -> None:
    import io
    import pickle

    layer = _layer()
    x = torch.randn(3, 16)
    with torch.no_grad():
        vocab_projection(layer, x)
    buf = io.BytesIO()
    torch.save(layer, buf)  # no cache object inside the module
    assert isinstance(pickle.loads(pickle.dumps(layer)), nn.Linear)
    with torch.inference_mode():
        fresh = _layer()  # inference tensors: no version counter, plain layer(x)
        torch.testing.assert_close(vocab_projection(fresh, x), fresh(x))


def test_writes_through_data_need_clear_vocab_projection_cache() -> None:
    layer = _layer()
    x = torch.randn(3, 16)
    with torch.no_grad():
        vocab_projection(layer, x)
        layer.weight.data.mul_(2)  # bypasses the version counter (documented)
        clear_vocab_projection_cache()
        torch.testing.assert_close(vocab_projection(layer, x), layer(x))


def test_append_to_cache_matches_reorder_then_cat() -> None:
    torch.manual_seed(2)
    cache, new = torch.randn(6, 2, 5, 4), torch.randn(6, 2, 1, 4)
    rows = torch.tensor([2, 2, 0, 5, 1, 3])
    with torch.no_grad():
        torch.testing.assert_close(append_to_cache(cache, new, rows), torch.cat([cache[rows], new], 2), rtol=0, atol=0)
        torch.testing.assert_close(append_to_cache(cache, new, None), torch.cat([cache, new], 2), rtol=0, atol=0)
        empty = torch.zeros(3, 2, 0, 4)  # first step: nothing cached yet
        torch.testing.assert_close(append_to_cache(empty, new[:3], None), new[:3], rtol=0, atol=0)
    leaf = cache.clone().requires_grad_()
    out = append_to_cache(leaf, new, rows)  # autograd on: differentiable path
    out.sum().backward()
    assert leaf.grad is not None and float(leaf.grad[4].sum()) == 0.0  # row 4 was never continued


def test_append_to_cache_mixed_dtypes_and_device_rows() -> None:
    cache, new = torch.randn(4, 2, 3, 4), torch.randn(4, 2, 1, 4).to(torch.bfloat16)
    rows = torch.tensor([1, 0, 3, 2])
    with torch.no_grad():
        out = append_to_cache(cache, new, rows)  # cat promotes, as before the one-copy path
    torch.testing.assert_close(out, torch.cat([cache[rows], new.float()], 2), rtol=0, atol=0)
