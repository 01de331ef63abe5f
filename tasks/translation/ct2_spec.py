"""Our Transformer as CTranslate2's ``TransformerSpec``: the conversion behind ``attn-translate export --format
ctranslate2`` (PyTorch weights in, CTranslate2's model files out; ``tasks.translation.ct2`` runs them).

Our :class:`~tasks.translation.models.TransformerSeq2Seq` is a standard pre-norm Transformer, so it maps onto
CTranslate2's ``TransformerSpec`` weight for weight (:func:`transformer_spec`), as CTranslate2's own Fairseq and
OpenNMT-py converters do theirs:

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
and come out unchanged; ``<s>`` starts the decoder, as ours does. The alignment output (for ``--plot``) is the last
decoder layer's cross-attention averaged over all heads (``alignment_heads=0``), what our Transformer returns.
The RNN decoders and attention mechanisms other than multi-head have no CTranslate2 spec: they export to ONNX
Runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from core.engines.folder import require
from core.errors import ConfigError
from core.layers import TransformerEncoderLayer, sinusoidal_table
from core.text.tokenizers import BaseTokenizer
from tasks.translation.ct2 import QUANTIZE, SUBDIR, vocabulary
from tasks.translation.models import TransformerSeq2Seq

__all__ = ["transformer_spec", "write_ctranslate2"]

LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default, which our layers use


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
    spec.register_source_vocabulary(vocabulary(src, "source"))
    spec.register_target_vocabulary(vocabulary(tgt, "target"))
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
