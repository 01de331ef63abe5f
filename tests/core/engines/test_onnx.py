"""The generic ONNX machinery (``core.engines.onnx``) on a toy step decoder with all three kinds of state: ``beams``
(a hidden state), ``source`` (memory and mask) and a ``cache`` that grows by one position per step."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from core.attention import lengths_to_mask
from core.attention.base import masked_softmax
from core.decoding.beam import DecoderState, beam_search
from core.engines.onnx import (
    OnnxStepNetwork,
    StateLayout,
    TensorSpec,
    export_graphs,
    flatten_state,
    load_graphs,
    unflatten_state,
)
from core.errors import CheckpointError, ConfigError

pytest.importorskip("onnxruntime")

V, D = 11, 6


class Toy(nn.Module):
    """A tiny attentional step decoder; its eager ``init_state``/``step`` are the reference."""

    def __init__(self, d: int = D) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(V, d)
        self.cell = nn.GRUCell(d, d)
        self.hist = nn.Linear(d, d)
        self.out = nn.Linear(2 * d, V)
        with torch.no_grad():
            for p in self.parameters():
                p.mul_(2.0)

    def parts(self, src: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``h (N, D)``, ``memory (N, S, D)``, ``mask (N, S)``, empty cache ``(N, 0, D)``."""
        mask = lengths_to_mask(lengths, src.shape[1])  # (N, S)
        memory = self.emb(src) * mask[..., None]  # (N, S, D)
        h = memory.sum(1) / lengths[:, None].clamp_min(1)  # (N, D)
        return h, memory, mask, memory.new_zeros(src.shape[0], 0, memory.shape[2])

    def one(self, tokens: Tensor, h: Tensor, memory: Tensor, mask: Tensor, cache: Tensor) -> tuple[Tensor, ...]:
        """``(log_probs (N, V), h (N, D), cache (N, t + 1, D), attention (N, S))``."""
        h = self.cell(self.emb(tokens), h)  # (N, D)
        w = masked_softmax(torch.einsum("nsd,nd->ns", memory, h), mask)  # (N, S)
        ctx = torch.einsum("ns,nsd->nd", w, memory)  # (N, D)
        cache = torch.cat([cache, h[:, None]], dim=1)  # (N, t + 1, D)
        past = self.hist(cache.mean(1))  # (N, D): the reorder of the cache matters
        return torch.log_softmax(self.out(torch.cat([h + past, ctx], -1)), -1), h, cache, w

    def init_state(self, src: Tensor, lengths: Tensor) -> DecoderState:
        h, memory, mask, cache = self.parts(src, lengths)
        return DecoderState(beams={"h": h}, source={"memory": memory, "mask": mask}, cache={"hist": cache})

    def step(self, tokens: Tensor, state: DecoderState, need_weights: bool = False) -> Any:
        cache = state.cache["hist"]
        if state.reorder is not None:
            cache = cache.index_select(0, state.reorder)
        lp, h, cache, w = self.one(tokens, state.beams["h"], state.source["memory"], state.source["mask"], cache)
        return lp, DecoderState(beams={"h": h}, source=state.source, cache={"hist": cache}), w


class Init(nn.Module):
    def __init__(self, toy: Toy) -> None:
        super().__init__()
        self.toy = toy

    def forward(self, src: Tensor, lengths: Tensor) -> tuple[Tensor, ...]:
        return self.toy.parts(src, lengths)


class Step(nn.Module):
    def __init__(self, toy: Toy) -> None:
        super().__init__()
        self.toy = toy

    def forward(self, tokens: Tensor, h: Tensor, memory: Tensor, mask: Tensor, cache: Tensor) -> tuple[Tensor, ...]:
        return self.toy.one(tokens, h, memory, mask, cache)


PARTS = {"beams": ["h"], "source": ["memory", "mask"], "cache": ["hist"]}
AXES = {"src": {1: "S"}, "memory": {1: "S"}, "mask": {1: "S"}, "hist": {1: "t"}}


def _examples() -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [
        (
            torch.randint(1, V, (3, 5), generator=g) * (torch.arange(5) < torch.tensor([[5], [3], [2]])),
            torch.tensor([5, 3, 2]),
        ),
        (torch.randint(1, V, (2, 8), generator=g), torch.tensor([8, 8])),
    ]


def _export(toy: Toy, out: Path, quantize: str = "float32") -> dict[str, Any]:
    return export_graphs(Init(toy), Step(toy), _examples(), ("src", "lengths"), PARTS, AXES, out, quantize)


def _decode(net: Any, src: Tensor, lengths: Tensor, beam: int) -> Any:
    return beam_search(
        lambda t, s: net.step(t, s, True),
        net.init_state(src, lengths),
        batch_size=src.shape[0],
        bos_id=1,
        eos_id=2,
        max_len=12,
        beam_size=beam,
        nbest=beam,
        suppress=(0, 1),
    )


def test_graphs_decode_as_the_module(tmp_path: Path) -> None:
    toy = Toy().eval()
    info = _export(toy, tmp_path)
    json.dumps(info)  # plain data
    layout = StateLayout.from_info(info["layout"], "here")
    assert [t.name for t in layout.cache] == ["hist"] and layout.cache[0].shape == ("N", "t", D)
    assert layout.source[0] == TensorSpec("memory", "float32", ("N", "S", D))
    net = load_graphs(tmp_path, info, threads=1, where="here")
    assert not list(net.parameters())
    g = torch.Generator().manual_seed(5)
    src = torch.randint(3, V, (4, 9), generator=g)
    lengths = torch.tensor([9, 4, 7, 1])
    src = src * lengths_to_mask(lengths, 9)
    for beam in (1, 3):
        ref, got = _decode(toy, src, lengths, beam), _decode(net, src, lengths, beam)
        assert got.tokens == ref.tokens  # (a reorder of the cache missed would change them)
        assert any(len(h) > 1 for hyps in ref.tokens for h in hyps)
        for rs, gs in zip(ref.scores, got.scores):
            assert gs == pytest.approx(rs, abs=1e-5)
        for ra, ga in zip(ref.attention, got.attention):
            for a, b in zip(ra, ga):
                torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)


def test_state_parts_and_reorder_contract(tmp_path: Path) -> None:
    toy = Toy().eval()
    net = load_graphs(tmp_path, _export(toy, tmp_path), threads=1, where="here")
    src, lengths = _examples()[0]
    state = net.init_state(src, lengths)
    assert state.shared is None and state.cache is not None and state.cache["hist"].shape == (3, 0, D)
    lp, state, att = net.step(torch.tensor([1, 1, 1]), state, need_weights=False)
    assert att is None and lp.shape == (3, V) and state.reorder is None
    state.reorder = torch.tensor([2, 2, 0])
    lp, new, att = net.step(torch.tensor([4, 4, 4]), state, need_weights=True)
    assert new.reorder is None and new.cache is not None and new.cache["hist"].shape == (3, 2, D)
    torch.testing.assert_close(new.cache["hist"][:, 0], state.cache["hist"][[2, 2, 0], 0])
    assert att is not None and att.shape == (3, 5)


def test_int8_export_runs(tmp_path: Path) -> None:
    toy = Toy().eval()
    info = _export(toy, tmp_path, "int8")
    assert info["quantized_nodes"].get("step.onnx:MatMulInteger", 0) >= 1  # the output layer at least
    assert info["quantized_nodes"].get("init.onnx:Gather", 0) == 1  # the embedding
    net = load_graphs(tmp_path, info, threads=1, where="here")
    out = _decode(net, *_examples()[0], beam=2)
    assert len(out.tokens) == 3 and all(len(h) == 2 for h in out.tokens)
    assert all(0 <= t < V for hyps in out.tokens for h in hyps for t in h)


def test_flatten_round_trip() -> None:
    a, b = torch.zeros(2), torch.ones(2)
    tree = {"hidden": [(a, b)], "feed": b, "none": None}
    template, named = flatten_state(tree, "beams")
    assert list(named) == ["beams.hidden.0.0", "beams.hidden.0.1", "beams.feed"]
    back = unflatten_state(template, named)
    assert back["hidden"][0][1] is b and back["feed"] is b and back["none"] is None
    template, named = flatten_state(tree, "source", dedupe=True)
    assert list(named) == ["source.hidden.0.0", "source.hidden.0.1"] and template["feed"] == "source.hidden.0.1"
    with pytest.raises(ConfigError, match="leaf of type int"):
        flatten_state({"x": 1}, "beams")


def test_bad_graphs_and_layouts_are_refused(tmp_path: Path) -> None:
    toy = Toy().eval()
    info = _export(toy, tmp_path / "a")
    _export(Toy(d=4).eval(), tmp_path / "b")  # another model: other sizes
    shutil.copy(tmp_path / "b" / "step.onnx", tmp_path / "a" / "step.onnx")
    expected = r"a/step\.onnx: a graph from another model.*expects.*h float32\['N', 6\]"
    with pytest.raises(CheckpointError, match=expected):
        load_graphs(tmp_path / "a", info, None, "here")
    # same sizes, other weights: the digest
    other = Toy().eval()
    with torch.no_grad():
        other.out.bias.add_(1.0)
    _export(other, tmp_path / "c")
    shutil.copy(tmp_path / "c" / "step.onnx", tmp_path / "a" / "step.onnx")
    with pytest.raises(CheckpointError, match=r"a/step\.onnx: the graph was changed after export"):
        load_graphs(tmp_path / "a", info, None, "here")
    for key, value, message in (
        ("layout", {"inputs": []}, "must have the keys"),
        ("layout", {**info["layout"], "beams": [["h", "float16", ["N", 6]]]}, r"\[name, dtype, shape\]"),
        ("layout", {**info["layout"], "cache": [["tokens", "int64", ["N"]]]}, "not reserved"),
        ("graphs", {"init": "init.onnx"}, "'init' and 'step'"),
        ("graphs", {"init": "/etc/passwd", "step": "step.onnx"}, "file names"),
        ("sha256", None, "digests"),
    ):
        with pytest.raises(CheckpointError, match=message):
            load_graphs(tmp_path / "a", {**info, key: value}, None, "here")


def test_missing_onnxruntime_and_bad_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toy = Toy().eval()
    with pytest.raises(ConfigError, match="quantize must be one of float32, int8"):
        _export(toy, tmp_path, "fp16")
    info = _export(toy, tmp_path)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ConfigError, match=r"pip install 'attn-suite\[onnx\]'"):
        load_graphs(tmp_path, info, None, "here")
    with pytest.raises(ConfigError, match=r"attn-suite\[onnx\]"):
        OnnxStepNetwork(tmp_path / "init.onnx", tmp_path / "step.onnx", StateLayout.from_info(info["layout"], "x"))
    with pytest.raises(ConfigError, match=r"attn-suite\[onnx\]"):
        _export(toy, tmp_path / "again")


def test_graphs_that_differ_from_the_module_are_refused(tmp_path: Path) -> None:
    """A Python branch on a value (fixed at the traced example) gives graphs that are wrong elsewhere: refused."""

    class Branchy(Step):
        def forward(self, tokens: Tensor, h: Tensor, memory: Tensor, mask: Tensor, cache: Tensor) -> tuple[Tensor, ...]:
            lp, h, cache, w = self.toy.one(tokens, h, memory, mask, cache)
            if bool(mask.all()):  # traced on a padded batch: the graph always takes the other branch
                lp = lp * 2
            return lp, h, cache, w

    toy = Toy().eval()
    with pytest.raises(ConfigError, match="differ from the network"):
        export_graphs(Init(toy), Branchy(toy), _examples(), ("src", "lengths"), PARTS, AXES, tmp_path)
