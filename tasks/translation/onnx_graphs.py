"""ONNX Runtime export of a translation network: its encoder/init and one-step decoder graphs.

:func:`write_onnx` writes the two graphs of an RNN (GRU/LSTM, every attention of the RNN decoder) or Transformer
network; :func:`load_onnx` reads them back as a :class:`core.engines.onnx.OnnxStepNetwork`, which ``Translator``
drives with the same beam search as the PyTorch network. The graphs carry the whole decoder state as named
tensors (``core.engines.onnx``):

* RNN: ``beams`` -- every layer's hidden state (and LSTM cell), the input-feeding vector, location attention's
  previous (or cumulative) weights; ``source`` -- the encoder outputs, the source mask, the attention's key
  projections (the keys themselves when they are not the encoder outputs).
* Transformer: ``cache`` -- every decoder layer's self-attention keys and values ``(N, H, t, Dh)``, one position
  longer after each step (reordered to the beams by the wrapper, then extended by the graph); ``source`` -- every
  layer's cross-attention keys and values ``(N, H, S, Dh)`` and the source mask, one row per hypothesis (the
  PyTorch network keeps one per item under ``shared``; the graphs take ``N`` rows).

Nothing here imports ``onnx`` or ``onnxruntime`` at module level (they are imported by the functions that need
them), so the PyTorch inference path does not pay for them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from core.decoding.beam import DecoderState
from core.decoding.fast_paths import eval_mode
from core.engines.folder import EngineFolder
from core.engines.onnx import OnnxStepNetwork, export_graphs, flatten_state, load_graphs, unflatten_state
from core.errors import CheckpointError, ConfigError
from core.text.tokenizers import PAD_ID
from tasks.translation.models import RNNSeq2Seq, TransformerSeq2Seq
from tasks.translation.options import TranslationOptions

__all__ = ["RNN_ATTENTIONS", "load_onnx", "write_onnx"]

#: RNN decoder attentions whose graphs reproduce the PyTorch network (each is checked on export as well)
RNN_ATTENTIONS = ("additive", "location", "dot", "scaled_dot", "general", "multihead", "none")
#: the state parts the graphs carry, in the order of their tensors
PARTS = ("beams", "source", "cache")


class _Init(nn.Module):
    """``(src (N, S), src_lengths (N,))`` -> the decoder's first state as a flat tuple of tensors.

    Args:
        network: the translation network.
        templates: ``{part: template}`` of :func:`core.engines.onnx.flatten_state`, saying where each tensor goes.
    """

    def __init__(self, network: nn.Module, templates: dict[str, Any]) -> None:
        super().__init__()
        self.network = network
        self.templates = templates

    def forward(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, ...]:
        """The state tensors in layout order (``beams``, ``source``, ``cache``)."""
        parts = _state_parts(self.network, src, src_lengths)
        return tuple(t for part in PARTS for t in _flat(parts[part], self.templates[part], part))


def _flat(tree: Any, template: Any, part: str) -> list[Tensor]:
    """The tensors of ``tree`` in the order of ``template``'s names.

    ``source`` tensors are deduplicated (keys that are the encoder outputs are one graph tensor, not two copies);
    the others are not: they change every step, an alias at the first step need not stay one.
    """
    _, named = flatten_state(tree, part, dedupe=part == "source")
    return [named[n] for n in _names(template)]


def _names(template: Any) -> list[str]:
    """The distinct tensor names of a template, in order."""
    out: list[str] = []
    if isinstance(template, str):
        return [template]
    children = template.values() if isinstance(template, dict) else template if template is not None else []
    for child in children:
        out.extend(n for n in _names(child) if n not in out)
    return out


def _state_parts(network: nn.Module, src: Tensor, src_lengths: Tensor) -> dict[str, Any]:
    """The network's first state as the three parts the graphs carry (``shared`` moved to ``source``)."""
    state: DecoderState = network.init_state(src, src_lengths)  # type: ignore[operator]
    if isinstance(network, TransformerSeq2Seq):
        # cross-attention keys/values and mask: one row per source here (N = B at the first step; beam search
        # expands `source` to the beams), fresh empty caches (the network's share one tensor object)
        cache = [(k.clone(), v.clone()) for k, v in state.cache]
        return {"beams": None, "source": state.shared, "cache": cache}
    return {"beams": state.beams, "source": state.source, "cache": None}


class _Step(nn.Module):
    """``(tokens (N,), *state)`` -> ``(log_probs (N, V), *next beams, *next cache, attention (N, S))``.

    Args:
        network: the translation network.
        templates: ``{part: template}`` (see :class:`_Init`).
    """

    def __init__(self, network: nn.Module, templates: dict[str, Any]) -> None:
        super().__init__()
        self.network = network
        self.templates = templates
        self.names = {p: _names(t) for p, t in templates.items()}

    def forward(self, tokens: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        """One decoding step; the attention is always computed (the wrapper drops it when not asked for)."""
        named: dict[str, Tensor] = {}
        it = iter(state)
        for part in PARTS:
            named.update((n, next(it)) for n in self.names[part])
        beams, source, cache = (unflatten_state(self.templates[p], named) for p in PARTS)
        net = self.network
        if isinstance(net, TransformerSeq2Seq):
            t = cache[0][0].shape[2]  # positions already decoded (a graph value: the cache axis is dynamic)
            x = net._embed(net.tgt_embedding, tokens[:, None], offset=t)  # (N,) -> (N, 1, D)
            h, new, weights = net.decoder.step(x, DecoderState(shared=source, cache=cache), need_weights=True)
            # `net.out` itself, not `network.step`'s cached W^T: the graph keeps one copy of a tied weight
            log_probs = torch.log_softmax(net.out(h), dim=-1)  # (N, V)
            out = _flat(new.cache, self.templates["cache"], "cache")
        else:
            assert isinstance(net, RNNSeq2Seq)
            dec = net.decoder
            # `_step` and the output layer rather than `decoder.step`, whose CPU fast path multiplies by a cached
            # W^T (a second copy of the weight in the graph) and writes its log-softmax in place
            feats, nb, weights = dec._step(dec.embedding(tokens), beams, source, True)  # (N, F)
            log_probs = torch.log_softmax(dec.out(dec.pre_out(feats)), dim=-1)  # (N, V)
            out = _flat(nb, self.templates["beams"], "beams")
        assert weights is not None  # asked for
        return (log_probs, *out, weights)


def _examples(vocab: int) -> list[tuple[Tensor, Tensor]]:
    """Init inputs of different sizes: padded rows of different lengths (traced), unpadded rows, one token."""
    g = torch.Generator().manual_seed(0)
    out = []
    for lengths, s in (([5, 3, 2], 5), ([7, 7], 7), ([1], 1)):
        src = torch.randint(3, max(vocab, 4), (len(lengths), s), generator=g)  # (B, S) ids past PAD/BOS/EOS
        for i, n in enumerate(lengths):
            src[i, n:] = PAD_ID
        out.append((src, torch.tensor(lengths)))
    return out


def write_onnx(network: nn.Module, options: TranslationOptions, out_dir: Path, quantize: str) -> dict[str, Any]:
    """Write the init and step graphs of a translation network into ``out_dir`` (created).

    Args:
        network: an ``RNNSeq2Seq`` or ``TransformerSeq2Seq`` (on the CPU; its mode is restored afterwards).
        options: its options (``arch`` and, for the RNN, ``attention``).
        out_dir: the graphs' folder (an engine export's ``onnx/``).
        quantize: ``"float32"``, or ``"int8"`` (dynamic quantization of the weights).

    Returns:
        Plain-data ``engine_info`` entries: graph files and digests, the state layout, opset, versions, the
        quantized node counts, the architecture.

    Raises:
        ConfigError: a Marian network (export it with ``--format ctranslate2``), an unsupported attention,
            ``onnxruntime``/``onnx`` not installed, or graphs that do not reproduce the network.
    """
    if options.arch == "marian" or type(network).__name__ == "MarianSeq2Seq":
        raise ConfigError(
            "ONNX export of a Marian network is not supported (its Hugging Face decoder is not traced here): "
            "export it with --format ctranslate2"
        )
    if isinstance(network, RNNSeq2Seq):
        if options.attention not in RNN_ATTENTIONS:
            raise ConfigError(
                f"ONNX export: the RNN attention {options.attention!r} is not supported (supported: "
                f"{', '.join(RNN_ATTENTIONS)})"
            )
        vocab = network.encoder.embedding.num_embeddings
    elif isinstance(network, TransformerSeq2Seq):
        vocab = network.src_embedding.num_embeddings
    else:
        raise ConfigError(f"ONNX export: no graphs for a {type(network).__name__} (RNN or Transformer networks)")
    if any(p.device.type != "cpu" for p in network.parameters()):
        raise ConfigError("ONNX export: move the network to the CPU first (network.cpu())")
    examples = _examples(vocab)
    with eval_mode(network), torch.no_grad():
        parts = _state_parts(network, *examples[0])
        templates: dict[str, Any] = {}
        names: dict[str, list[str]] = {}
        axes: dict[str, dict[int, str]] = {"src": {1: "S"}}
        for part in PARTS:
            templates[part], named = flatten_state(parts[part], part, dedupe=part == "source")
            names[part] = list(named)
            axes.update((n, _dynamic_axes(n, t, isinstance(network, TransformerSeq2Seq))) for n, t in named.items())
        info = export_graphs(
            _Init(network, templates),
            _Step(network, templates),
            examples,
            ("src", "src_lengths"),
            names,
            axes,
            out_dir,
            quantize,
        )
    info["arch"] = options.arch
    if options.arch == "rnn":
        info["attention"] = options.attention
        info["rnn_type"] = options.rnn_type
    return info


def _dynamic_axes(name: str, t: Tensor, transformer: bool) -> dict[int, str]:
    """The dynamic axes of a state tensor besides the batch: the source axis of everything over the source
    (``(N, S, ...)`` encoder outputs and key projections, ``(N, S)`` masks and weights, ``(N, H, S, Dh)``
    cross-attention keys/values), the cache axis of self-attention caches ``(N, H, t, Dh)``."""
    if name.startswith("cache."):
        return {2: "t"}
    if transformer and name.startswith("source.cross."):
        return {2: "S"}
    if name.startswith("source.pre.") and t.dim() == 4:  # RNN multi-head key/value projections (N, H, S, Dh)
        return {2: "S"}
    if name.startswith("source.") or name == "beams.prev":
        return {1: "S"}
    return {}


def load_onnx(folder: EngineFolder, options: TranslationOptions, threads: int | None = None) -> OnnxStepNetwork:
    """The step network of an ONNX export (its graphs under ``folder.path / "onnx"``).

    Args:
        folder: the export, as ``core.engines.folder.read_engine_folder`` checked it.
        options: its options (the architecture must be the graphs').
        threads: ONNX Runtime intra-op threads (None: its default).

    Raises:
        ConfigError: ``onnxruntime`` is not installed (names ``attn-suite[onnx]``).
        CheckpointError: graphs missing, unloadable, of another model or version, or changed after export.
    """
    info = folder.info
    if info.get("arch") != options.arch:
        raise CheckpointError(
            f"{folder.source}: graphs of a {info.get('arch')!r} network, but its options say {options.arch!r}"
        )
    return load_graphs(folder.path / "onnx", info, threads, folder.source)
