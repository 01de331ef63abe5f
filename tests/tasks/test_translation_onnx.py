"""ONNX Runtime export of translation networks (``tasks.translation.onnx_graphs``): the graphs, driven by the same
beam search, translate as the PyTorch network does; int8 graphs run; bad graphs and a missing runtime are refused."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from core.engines.folder import EngineFolder
from core.errors import CheckpointError, ConfigError
from core.text.tokenizers import CharTokenizer
from tasks.translation.inference import Translation, Translator
from tasks.translation.networks import build_network
from tasks.translation.onnx_graphs import load_onnx, write_onnx
from tasks.translation.options import TranslationOptions

pytest.importorskip("onnxruntime")

PAIRS = ["I love you", "te quiero", "the red car", "el coche rojo", "the small dog", "el perro pequeño"]
# short and long, padded in a batch with others, empty, characters never seen in training (the unknown id)
SENTENCES = ["I love you", "the red car is small", "", "zebra blue ñ", "you", "the small dog loves the red car"]
#: score tolerance of n-best lists: float32 sums in another order (ONNX Runtime's kernels) move a log-prob by
#: ~1e-6 per step; a difference this small can only swap hypotheses whose scores tie to that precision
SCORE_TOL = 1e-4

NETWORKS: dict[str, dict[str, Any]] = {
    "rnn-additive-gru": {"embed_dim": 16, "hidden_dim": 16},
    "rnn-additive-lstm": {"embed_dim": 12, "hidden_dim": 16, "rnn_type": "lstm", "encoder_layers": 2},
    "rnn-location-gru": {"embed_dim": 16, "hidden_dim": 16, "attention": "location"},
    "rnn-location-lstm": {
        "embed_dim": 16,
        "hidden_dim": 16,
        "attention": "location",
        "rnn_type": "lstm",
        "attention_options": {"cumulative": True},
    },
    "rnn-none-gru": {"embed_dim": 16, "hidden_dim": 16, "attention": "none"},
    "rnn-none-lstm": {"embed_dim": 16, "hidden_dim": 16, "attention": "none", "rnn_type": "lstm", "decoder_layers": 2},
    "transformer": {"arch": "transformer", "hidden_dim": 16, "num_heads": 2, "ffn_dim": 32, "decoder_layers": 2},
}
#: the other attentions of the RNN decoder: exported and checked greedily (the full matrix above covers the state
#: kinds: hidden, LSTM cell, input feed, previous and cumulative weights, KV caches)
MORE_ATTENTIONS: dict[str, dict[str, Any]] = {
    "dot": {"attention": "dot"},
    "scaled_dot": {"attention": "scaled_dot"},
    "general": {"attention": "general", "tie_embeddings": True},
    "multihead": {"attention": "multihead", "attention_options": {"num_heads": 2}},
}


def _translator(options: dict[str, Any]) -> tuple[Translator, TranslationOptions]:
    """A tiny random network (weights scaled up so outputs depend on the input) with character tokenizers."""
    torch.manual_seed(0)
    src, tgt = CharTokenizer.train(PAIRS[::2]), CharTokenizer.train(PAIRS[1::2])
    opts = TranslationOptions(dropout=0.0, max_len=30, **options)
    net = build_network(opts, src.vocab_size, tgt.vocab_size)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0)
    net.eval()
    return Translator(net, src, tgt, max_len=opts.max_len, length_penalty=opts.length_penalty), opts


def _folder(path: Path, info: dict[str, Any], quantize: str = "float32") -> EngineFolder:
    """An engine folder as ``read_engine_folder`` returns it (graphs under ``path / "onnx"``)."""
    return EngineFolder(path, "onnxruntime", quantize, {}, {}, info, f"model folder {path}")


def _export(translator: Translator, options: TranslationOptions, path: Path, quantize: str = "float32") -> Translator:
    """Export the translator's network into ``path / "onnx"`` and return a Translator over the loaded graphs."""
    info = write_onnx(translator.network, options, path / "onnx", quantize)
    json.dumps(info)  # plain data: goes into config.json as it is
    onnx_net = load_onnx(_folder(path, info, quantize), options, threads=1)
    return Translator(
        onnx_net,
        translator.src_tokenizer,
        translator.tgt_tokenizer,
        max_len=translator.max_len,
        length_penalty=translator.length_penalty,
    )


def _same_nbest(eager: list[list[Translation]], graphs: list[list[Translation]]) -> None:
    """n-best lists equal, scores within SCORE_TOL; a rank may differ only where eager scores tie within it."""
    for e, g in zip(eager, graphs, strict=True):
        assert len(e) == len(g)
        for k, (a, b) in enumerate(zip(e, g)):
            assert b.score == pytest.approx(a.score, abs=SCORE_TOL)
            if a.text != b.text:
                neighbours = [e[j].score for j in (k - 1, k + 1) if 0 <= j < len(e)]
                assert any(abs(s - a.score) < SCORE_TOL for s in neighbours), (k, a.text, b.text)


@pytest.mark.parametrize("name", list(NETWORKS))
def test_graphs_translate_as_the_network(name: str, tmp_path: Path) -> None:
    eager, options = _translator(NETWORKS[name])
    graphs = _export(eager, options, tmp_path)
    assert graphs.device == torch.device("cpu") and graphs.engine == "onnxruntime"
    assert not list(graphs.network.parameters())
    # greedy: identical outputs on every input
    greedy = eager.translate(SENTENCES, beam=1)
    assert graphs.translate(SENTENCES, beam=1) == greedy
    assert len(set(greedy)) > 2  # the inputs give different outputs: equality says something
    # beam 4, 3-best: the same hypotheses, scores within float32 rounding
    e4 = eager.translate(SENTENCES, beam=4, nbest=3, return_attention=True)
    g4 = graphs.translate(SENTENCES, beam=4, nbest=3, return_attention=True)
    _same_nbest(e4, g4)
    # attention (T, S) of the greedy translations, close to the network's
    ea = eager.translate(SENTENCES, beam=1, return_attention=True)
    ga = graphs.translate(SENTENCES, beam=1, return_attention=True)
    for a, b in zip(ea, ga, strict=True):
        assert a.text == b.text and a.tgt_tokens == b.tgt_tokens
        assert a.attention is not None and b.attention is not None
        assert b.attention.shape == a.attention.shape == (len(a.tgt_tokens), max(1, len(a.src_tokens)))
        # float32 rounding of other kernels, carried through up to 30 steps of a network with weights scaled up
        # (the Transformer's largest difference measured 7e-5, the RNNs' under 1e-5)
        torch.testing.assert_close(b.attention, a.attention, atol=2e-4, rtol=1e-3)
        assert b.score == pytest.approx(a.score, abs=SCORE_TOL)


@pytest.mark.parametrize("name", list(MORE_ATTENTIONS))
def test_other_rnn_attentions_export(name: str, tmp_path: Path) -> None:
    eager, options = _translator({"embed_dim": 16, "hidden_dim": 16, **MORE_ATTENTIONS[name]})
    graphs = _export(eager, options, tmp_path)
    assert graphs.translate(SENTENCES, beam=1) == eager.translate(SENTENCES, beam=1)
    _same_nbest(
        eager.translate(SENTENCES[:3], beam=3, nbest=2, return_attention=True),
        graphs.translate(SENTENCES[:3], beam=3, nbest=2, return_attention=True),
    )


@pytest.mark.parametrize("name", ["rnn-location-lstm", "transformer"])
def test_int8_graphs_run(name: str, tmp_path: Path) -> None:
    eager, options = _translator(NETWORKS[name])
    info = write_onnx(eager.network, options, tmp_path / "onnx", "int8")
    # what was quantized: the matrix products of both graphs and the embeddings (int8 Gather)
    assert info["quantized_nodes"].get("step.onnx:MatMulInteger", 0) > 0
    assert info["quantized_nodes"].get("init.onnx:MatMulInteger", 0) > 0
    assert info["quantized_nodes"].get("step.onnx:Gather", 0) == 1  # the target embedding
    graphs = Translator(
        load_onnx(_folder(tmp_path, info, "int8"), options), eager.src_tokenizer, eager.tgt_tokenizer, max_len=30
    )
    # outputs may differ from float32: valid translations of the right shape
    out = graphs.translate(SENTENCES, beam=3, nbest=2, return_attention=True)
    assert len(out) == len(SENTENCES) and all(len(h) == 2 for h in out)
    vocab = set(eager.tgt_tokenizer.decode([i]) for i in range(4, eager.tgt_tokenizer.vocab_size))
    for text, hyps in zip(SENTENCES, out):
        for h in hyps:
            assert h.attention is not None and h.attention.shape == (len(h.tgt_tokens), max(1, len(text)))
            assert torch.isfinite(h.attention).all() and h.score <= 0.0
            assert set(h.text) <= vocab | {" "}
    # (no size check: at these sizes the quantization's scales and nodes outweigh the int8 weights they save)


def test_graph_from_another_model_is_refused(tmp_path: Path) -> None:
    eager, options = _translator(NETWORKS["rnn-additive-gru"])
    info = write_onnx(eager.network, options, tmp_path / "a" / "onnx", "float32")
    other, other_options = _translator({**NETWORKS["rnn-additive-gru"], "hidden_dim": 12})
    write_onnx(other.network, other_options, tmp_path / "b" / "onnx", "float32")
    shutil.copy(tmp_path / "b" / "onnx" / "step.onnx", tmp_path / "a" / "onnx" / "step.onnx")
    with pytest.raises(CheckpointError, match=r"step\.onnx.*another model or version.*expects.*beams\.hidden\.0"):
        load_onnx(_folder(tmp_path / "a", info), options)
    # the Transformer's init graph where the RNN's belongs
    shutil.copy(tmp_path / "b" / "onnx" / "step.onnx", tmp_path / "a" / "onnx" / "step.onnx")
    t, t_options = _translator(NETWORKS["transformer"])
    write_onnx(t.network, t_options, tmp_path / "c" / "onnx", "float32")
    shutil.copy(tmp_path / "c" / "onnx" / "init.onnx", tmp_path / "a" / "onnx" / "init.onnx")
    with pytest.raises(CheckpointError, match=r"init\.onnx.*another model or version"):
        load_onnx(_folder(tmp_path / "a", info), options)


def test_tampered_layout_and_files_are_refused(tmp_path: Path) -> None:
    eager, options = _translator(NETWORKS["rnn-location-gru"])
    info = write_onnx(eager.network, options, tmp_path / "onnx", "float32")
    load_onnx(_folder(tmp_path, info), options)  # as written: loads
    bad = json.loads(json.dumps(info))
    bad["layout"]["beams"][0][2][1] = 99  # a hidden size the graphs do not have
    with pytest.raises(CheckpointError, match=r"init\.onnx.*expects.*beams\.hidden\.0 float32\['N', 99\]"):
        load_onnx(_folder(tmp_path, bad), options)
    bad = json.loads(json.dumps(info))
    bad["layout"]["beams"] = bad["layout"]["beams"][::-1]  # another order
    with pytest.raises(CheckpointError, match=r"init\.onnx.*another model or version"):
        load_onnx(_folder(tmp_path, bad), options)
    bad = json.loads(json.dumps(info))
    bad["graphs"]["step"] = "../other.onnx"  # config.json must not point outside the folder
    with pytest.raises(CheckpointError, match="file names"):
        load_onnx(_folder(tmp_path, bad), options)
    with pytest.raises(CheckpointError, match="'transformer'"):
        load_onnx(_folder(tmp_path, info), TranslationOptions(arch="transformer"))
    (tmp_path / "onnx" / "step.onnx").write_bytes(b"not a graph")
    with pytest.raises(CheckpointError, match=r"step\.onnx: not a loadable ONNX graph"):
        load_onnx(_folder(tmp_path, info), options)
    (tmp_path / "onnx" / "step.onnx").unlink()
    with pytest.raises(CheckpointError, match=r"step\.onnx: the ONNX graph is missing"):
        load_onnx(_folder(tmp_path, info), options)


def test_same_layout_other_weights_is_refused(tmp_path: Path) -> None:
    """A graph with the right inputs and outputs but other weights: the recorded digest refuses it."""
    eager, options = _translator(NETWORKS["rnn-none-gru"])
    info = write_onnx(eager.network, options, tmp_path / "a" / "onnx", "float32")
    with torch.no_grad():
        for p in eager.network.parameters():
            p.add_(0.5)
    write_onnx(eager.network, options, tmp_path / "b" / "onnx", "float32")
    shutil.copy(tmp_path / "b" / "onnx" / "step.onnx", tmp_path / "a" / "onnx" / "step.onnx")
    with pytest.raises(CheckpointError, match=r"step\.onnx: the graph was changed after export"):
        load_onnx(_folder(tmp_path / "a", info), options)


def test_missing_onnxruntime_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    eager, options = _translator(NETWORKS["rnn-additive-gru"])
    info = write_onnx(eager.network, options, tmp_path / "onnx", "float32")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    with pytest.raises(ConfigError, match=r"attn-suite\[onnx\]"):
        load_onnx(_folder(tmp_path, info), options)
    with pytest.raises(ConfigError, match=r"attn-suite\[onnx\]"):
        write_onnx(eager.network, options, tmp_path / "again", "float32")


def test_unsupported_networks_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--format ctranslate2"):
        write_onnx(nn.Linear(2, 2), TranslationOptions(arch="marian"), tmp_path, "float32")
    eager, options = _translator(NETWORKS["rnn-additive-gru"])
    with pytest.raises(ConfigError, match="quantize"):
        write_onnx(eager.network, options, tmp_path, "int4")
    with pytest.raises(ConfigError, match="'pooling' is not supported"):
        write_onnx(eager.network, TranslationOptions(attention="pooling"), tmp_path, "float32")


def test_lean_import_does_not_load_onnx() -> None:
    """Importing the export module (as the Translator's loader does) imports neither onnx nor onnxruntime."""
    import subprocess

    code = (
        "import sys, tasks.translation.onnx_graphs, core.engines.onnx; "
        "print(sorted(m for m in ('onnx', 'onnxruntime') if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
