"""Our Transformer on CTranslate2: the converter spec, and the network that searches with it.

CTranslate2 (OpenNMT's C++ engine) runs Transformer encoder–decoders with int8 weights, its own beam search and
little start-up. Our :class:`~tasks.translation.models.TransformerSeq2Seq` is a standard pre-norm Transformer, so
it maps onto CTranslate2's ``TransformerSpec`` weight for weight (:func:`transformer_spec`), as CTranslate2's own
Fairseq and OpenNMT-py converters do theirs:

===================================  ==============================================
ours                                 CTranslate2
===================================  ==============================================
``src_embedding`` / ``tgt_embedding``  ``encoder.embeddings[0]`` / ``decoder.embeddings``, scaled by sqrt(D)
``positions`` (sinusoidal table)     ``position_encodings.encodings`` (the same rows: CTranslate2's own table
                                     puts sin and cos in halves, ours interleaves them)
``layers[i].norm1`` + ``self_attn``  ``self_attention.layer_norm`` + ``linear[0]`` (q, k, v fused), ``linear[1]``
``layers[i].norm2`` + ``cross_attn`` ``attention.layer_norm`` + ``linear[0]`` (q), ``linear[1]`` (k, v fused),
                                     ``linear[2]``
``norm2``/``norm3`` + ``ff`` (GELU)  ``ffn.layer_norm``, ``linear_0``, ``linear_1``, activation GELU
``encoder.norm`` / ``decoder.norm``  ``layer_norm`` of each stack (pre-norm, final norm)
``out``                              ``decoder.projection``
===================================  ==============================================

LayerNorm's epsilon is torch's 1e-5. The vocabularies are our tokenizers' token strings by id, so our ids go in
and come out unchanged; ``<s>`` starts the decoder, as ours does. Attention for ``--plot`` is CTranslate2's
alignment output: the last decoder layer's cross-attention averaged over all heads (``alignment_heads=0``), what
our Transformer returns.

What differs (the parity tests measure it): PAD and BOS are suppressed on the logits (CTranslate2 renormalises
over the other tokens; we set their log-probabilities to -inf after the softmax), so scores can differ in the
last digits where a model gave those tokens any mass; the kernels differ in rounding, so near-tied beams may
rank differently. Greedy output is identical on every test input. The RNN decoders and attention mechanisms
other than multi-head have no CTranslate2 spec: they export to ONNX Runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from core.decoding.beam import DecodeResult
from core.engines.folder import EngineFolder, require
from core.engines.search import EngineSearch
from core.errors import CheckpointError, ConfigError, DecodingError
from core.io.jsonio import read_json
from core.layers import TransformerEncoderLayer, sinusoidal_table
from core.text.tokenizers import BaseTokenizer
from tasks.translation.models import TransformerSeq2Seq

__all__ = ["QUANTIZE", "CTranslate2Network", "load_ctranslate2", "transformer_spec", "write_ctranslate2"]

#: weight types an export may hold (CTranslate2's ``quantization``); int8_float16 and float16 need a GPU to run
QUANTIZE = ("float32", "int8", "int8_float32", "int8_float16", "float16", "int16")
SUBDIR = "ctranslate2"  # CTranslate2 writes its own config.json: its model lives in a sub-folder of the export
LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default, which our layers use


def _vocabulary(tokenizer: BaseTokenizer, side: str) -> list[str]:
    """Token strings by id (CTranslate2 maps strings to ids through them: they must be unique)."""
    tokens = [tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size)]
    if len(set(tokens)) != len(tokens):
        raise ConfigError(f"the {side} tokenizer has repeated token strings: CTranslate2 needs one string per id")
    return tokens


def _np(t: Tensor) -> Any:
    return t.detach().to("cpu", torch.float32).numpy()


def _linear(spec: Any, *modules: object) -> None:
    """One CTranslate2 linear from ours (several stacked on the output axis: fused projections)."""
    layers = [m for m in modules if isinstance(m, nn.Linear)]
    if len(layers) != len(modules):
        raise ConfigError(f"expected linear layers to convert, got {[type(m).__name__ for m in modules]}")
    spec.weight = _np(torch.cat([layer.weight for layer in layers], dim=0))  # (sum out, in)
    if layers[0].bias is not None:
        spec.bias = _np(torch.cat([layer.bias for layer in layers if layer.bias is not None], dim=0))


def _norm(spec: Any, norm: object) -> None:
    if not isinstance(norm, nn.LayerNorm):
        raise ConfigError(f"expected a LayerNorm to convert, got {type(norm).__name__}")
    spec.gamma, spec.beta = _np(norm.weight), _np(norm.bias)


def transformer_spec(network: TransformerSeq2Seq, src: BaseTokenizer, tgt: BaseTokenizer) -> Any:
    """CTranslate2's ``TransformerSpec`` holding ``network``'s weights (see the module docstring for the map).

    Raises:
        ConfigError: CTranslate2 is not installed, or the tokenizers cannot be its vocabularies.
    """
    require("ctranslate2", "exporting to CTranslate2")
    from ctranslate2.specs import common_spec, transformer_spec

    enc_layers = [layer for layer in network.encoder.layers if isinstance(layer, TransformerEncoderLayer)]
    dec_layers = network.decoder.blocks
    spec = transformer_spec.TransformerSpec.from_config(
        (len(enc_layers), len(dec_layers)),
        network.num_heads,
        pre_norm=True,
        activation=common_spec.Activation.GELU,
        alignment_layer=-1,
        alignment_heads=0,  # all heads, averaged: what our --plot shows
    )
    table = network.positions.table
    if table.shape[0] < network.max_positions:  # the module's table grows on demand; export every position
        table = sinusoidal_table(network.max_positions, network.d_model)
    for side, emb, stack in (
        (spec.encoder, network.src_embedding, network.encoder),
        (spec.decoder, network.tgt_embedding, network.decoder),
    ):
        (side.embeddings[0] if isinstance(side.embeddings, list) else side.embeddings).weight = _np(emb.weight)
        side.scale_embeddings = True
        side.position_encodings.encodings = _np(table[: network.max_positions])  # (P, D)
        _norm(side.layer_norm, stack.norm)
    for layer_spec, layer in zip(spec.encoder.layer, enc_layers):
        _norm(layer_spec.self_attention.layer_norm, layer.norm1)
        sa = layer.self_attn
        _linear(layer_spec.self_attention.linear[0], sa.q_proj, sa.k_proj, sa.v_proj)
        _linear(layer_spec.self_attention.linear[1], sa.out_proj)
        _norm(layer_spec.ffn.layer_norm, layer.norm2)
        _linear(layer_spec.ffn.linear_0, layer.ff[0])
        _linear(layer_spec.ffn.linear_1, layer.ff[3])
    for layer_spec, block in zip(spec.decoder.layer, dec_layers):
        sa, ca = block.self_attn, block.cross_attn
        _norm(layer_spec.self_attention.layer_norm, block.norm1)
        _linear(layer_spec.self_attention.linear[0], sa.q_proj, sa.k_proj, sa.v_proj)
        _linear(layer_spec.self_attention.linear[1], sa.out_proj)
        _norm(layer_spec.attention.layer_norm, block.norm2)
        _linear(layer_spec.attention.linear[0], ca.q_proj)
        _linear(layer_spec.attention.linear[1], ca.k_proj, ca.v_proj)
        _linear(layer_spec.attention.linear[2], ca.out_proj)
        _norm(layer_spec.ffn.layer_norm, block.norm3)
        _linear(layer_spec.ffn.linear_0, block.ff[0])
        _linear(layer_spec.ffn.linear_1, block.ff[3])
    _linear(spec.decoder.projection, network.out)
    spec.register_source_vocabulary(_vocabulary(src, "source"))
    spec.register_target_vocabulary(_vocabulary(tgt, "target"))
    spec.config.layer_norm_epsilon = LAYER_NORM_EPS
    return spec


def write_ctranslate2(
    network: nn.Module, src: BaseTokenizer, tgt: BaseTokenizer, out_dir: Path, quantize: str
) -> dict[str, Any]:
    """Convert ``network`` and save CTranslate2's model into ``out_dir``; the ``engine_info`` entries to record.

    Raises:
        ConfigError: a network CTranslate2 cannot hold (RNN: export it to ONNX), an unknown ``quantize``, or
            CTranslate2 missing.
    """
    if not isinstance(network, TransformerSeq2Seq):
        raise ConfigError(
            f"CTranslate2 runs Transformer encoder-decoders; this model is a {type(network).__name__} "
            f"(its attention and recurrence have no CTranslate2 spec): export it with --format onnx"
        )
    if quantize not in QUANTIZE:
        raise ConfigError(f"--quantize for CTranslate2 must be one of {', '.join(QUANTIZE)}, got {quantize!r}")
    import ctranslate2

    spec = transformer_spec(network, src, tgt)
    spec.validate()
    spec.optimize(quantization=None if quantize == "float32" else quantize)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec.save(str(out_dir))
    return {"model_dir": SUBDIR, "ctranslate2_version": ctranslate2.__version__}


def _attention(rows: list[list[float]], t: int, s: int) -> Tensor:
    """CTranslate2's attention of one hypothesis as ``(T, S)``: a row per emitted token (EOS excluded), as
    ``beam_search`` returns it, over the ``S`` source tokens (an empty hypothesis has none)."""
    if not rows:
        return torch.zeros(0, s)
    return torch.tensor(rows, dtype=torch.float32)[:t, :s]  # (T, S)


class CTranslate2Network(EngineSearch):
    """A translation network on CTranslate2: ids in, ids out (through the vocabularies of the export).

    Args:
        translator: the loaded ``ctranslate2.Translator``.
        src_vocab: source token strings by id.
        tgt_vocab: target token strings by id.
    """

    engine = "ctranslate2"

    def __init__(self, translator: Any, src_vocab: list[str], tgt_vocab: list[str]) -> None:
        super().__init__()
        self.translator = translator
        self.src_vocab = src_vocab
        self.tgt_ids = {tok: i for i, tok in enumerate(tgt_vocab)}
        self.tgt_vocab = tgt_vocab

    def search(
        self,
        src: Tensor,
        src_lengths: Tensor,
        beam: int,
        nbest: int,
        need_weights: bool,
        max_len: int,
        length_penalty: float,
        suppress: tuple[int, ...],
    ) -> DecodeResult:
        """See :meth:`core.engines.search.EngineSearch.search`; CTranslate2 decodes the batch in one call."""
        lengths = src_lengths.tolist()
        batch = [[self.src_vocab[i] for i in row[:n]] for row, n in zip(src.tolist(), lengths)]
        results = self.translator.translate_batch(
            batch,
            beam_size=beam,
            num_hypotheses=nbest,
            length_penalty=length_penalty,
            max_decoding_length=max_len,
            min_decoding_length=0,  # CTranslate2 forbids EOS at the first step by default; we allow it
            return_scores=True,
            return_attention=need_weights,
            return_end_token=False,
            suppress_sequences=[[self.tgt_vocab[i]] for i in suppress],
            # CTranslate2 4.8.5's batched beam search returns another sentence's attention for the first
            # token (greedy and single sentences are right; tests/tasks/test_translation_ct2.py checks it against
            # teacher forcing): with attention asked for, each sentence is searched on its own
            max_batch_size=1 if need_weights and beam > 1 else 0,
        )
        out = DecodeResult()
        for n, res in zip(lengths, results):
            if not res.hypotheses:
                raise DecodingError("CTranslate2 returned no hypothesis (non-finite scores?)")
            out.tokens.append([[self.tgt_ids[t] for t in hyp] for hyp in res.hypotheses])
            out.scores.append([float(s) for s in res.scores])
            if need_weights:
                out.attention.append([_attention(a, len(h), n) for a, h in zip(res.attention, res.hypotheses)])
            else:
                out.attention.append([None] * len(res.hypotheses))
        return out


def load_ctranslate2(
    folder: EngineFolder,
    src: BaseTokenizer,
    tgt: BaseTokenizer,
    device: str = "cpu",
    threads: int | None = None,
) -> CTranslate2Network:
    """The export's CTranslate2 model, checked against its tokenizers.

    Args:
        folder: the export, read by ``core.engines.folder.read_engine_folder``.
        src: its source tokenizer.
        tgt: its target tokenizer.
        device: ``"cpu"`` or ``"cuda"``.
        threads: CPU threads per translation (None: CTranslate2's default, 4 or the cores).

    Raises:
        ConfigError: CTranslate2 is not installed.
        CheckpointError: the model is missing or unreadable, or its vocabularies are not the tokenizers' (each
            names the folder).
    """
    ctranslate2 = require("ctranslate2", "translating with a CTranslate2 export")
    model_dir = folder.path / SUBDIR
    if not (model_dir / "model.bin").is_file():
        raise CheckpointError(f"{folder.source}: {SUBDIR}/model.bin is missing (not a complete CTranslate2 export)")
    src_vocab, tgt_vocab = _vocabulary(src, "source"), _vocabulary(tgt, "target")
    try:
        stored = ctranslate2.contains_model(str(model_dir))
        translator = ctranslate2.Translator(
            str(model_dir), device=device, compute_type="default", intra_threads=threads or 0
        )
    except (RuntimeError, ValueError, OSError) as err:
        raise CheckpointError(f"{folder.source}: CTranslate2 cannot load {SUBDIR}/ ({err})") from None
    if not stored:
        raise CheckpointError(f"{folder.source}: {SUBDIR}/ holds no CTranslate2 model")
    for side, vocab in (("source", src_vocab), ("target", tgt_vocab)):
        names = (f"{side}_vocabulary.json", "shared_vocabulary.json")
        path = next((model_dir / n for n in names if (model_dir / n).is_file()), None)
        if path is None:
            raise CheckpointError(f"{folder.source}: {SUBDIR}/ has no {side} vocabulary")
        if read_json(path, f"{folder.source}: {SUBDIR}/{path.name}") != vocab:
            raise CheckpointError(
                f"{folder.source}: {SUBDIR}/{path.name} is not the vocabulary of the export's {side} tokenizer "
                f"(files from different exports?)"
            )
    return CTranslate2Network(translator, src_vocab, tgt_vocab)
