"""ONNX Runtime graphs of a step decoder, driven by :func:`core.decoding.beam.beam_search`.

A network that decodes step by step is exported as two graphs:

* the **init graph**: the network's inputs (e.g. source ids ``(N, S)`` and lengths ``(N,)``) -> every tensor of
  the decoder's first state, one named output each;
* the **step graph**: ``tokens (N,)`` int64 and the state tensors -> ``log_probs (N, V)``, the next ``beams`` and
  ``cache`` tensors (``next_<name>``) and, when the network attends, ``attention (N, S)``.

Which named tensor follows the beams how is the :class:`StateLayout` (plain data, kept in the export's
``config.json``): ``beams`` tensors are reordered by beam search, ``source`` tensors are expanded to the beams once
and never change (the step graph reads them and returns nothing for them), ``cache`` tensors are reordered by
:class:`OnnxStepNetwork` itself (``state.reorder`` applied with one ``index_select`` before the graph, which then
appends to them). ``DecoderState.shared`` is not used: its row count (one per item) differs from the graph's
``N`` rows, so the task's init graph expands such tensors to one row per hypothesis instead.

:class:`OnnxStepNetwork` holds the two ONNX Runtime sessions and is a ``StepDecoder`` (``init_state`` / ``step``),
so ``beam_search``, n-best lists and attention work on it unchanged.

Exporter: the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``). The ``torch.export``
(dynamo) exporter refuses these networks: the RNN encoder branches on its lengths' values (packed or not) and
packs its input (``pack_padded_sequence`` with host-side lengths), which ``torch.export`` cannot trace; the
tracer records the packed path, which the exporter maps onto ONNX's GRU/LSTM ``sequence_lens`` (exact for padded
and unpadded batches alike), and records tensor sizes as graph values, so the batch ``N``, source length ``S``
and cache length ``t`` axes stay dynamic. Python branches on sizes are fixed at the traced example, which is why
:func:`export_graphs` checks the graphs against the eager network on a second example of other sizes.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from core.decoding.beam import DecoderState
from core.engines.folder import require
from core.errors import CheckpointError, ConfigError

__all__ = [
    "ONNX_OPSET",
    "QUANTIZE",
    "EngineNetwork",
    "OnnxStepNetwork",
    "StateLayout",
    "TensorSpec",
    "check_signature",
    "export_graphs",
    "flatten_state",
    "graph_digest",
    "load_graphs",
    "max_difference",
    "open_session",
    "torch_export",
    "unflatten_state",
]

#: ONNX opset of the exported graphs (17: LayerNormalization as one op; ONNX Runtime >= 1.14 runs it)
ONNX_OPSET = 17
#: the weight types an export may have
QUANTIZE = ("float32", "int8")
#: init and step graph file names (inside the export's ``onnx/`` folder)
INIT_GRAPH, STEP_GRAPH = "init.onnx", "step.onnx"
#: step graph input and outputs that are not state tensors
TOKENS, LOG_PROBS, ATTENTION = "tokens", "log_probs", "attention"
#: ONNX Runtime's type strings -> numpy dtype names
_ORT_TYPES = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(bool)": "bool", "tensor(int32)": "int32"}
#: op types whose weights dynamic int8 quantization may quantize. Measured on the translation graphs: every matrix
#: product with a weight (the exporter's Gemm and MatMul become MatMulInteger; products of two activations, e.g.
#: attention scores, stay float), the embeddings (Gather of int8 rows) and an LSTM encoder (DynamicQuantizeLSTM);
#: a GRU encoder stays float32 (ONNX Runtime has no int8 GRU kernel).
QUANTIZED_OPS = ("MatMul", "Gemm", "Gather", "LSTM")


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output: its name, numpy dtype and shape (an ``int``, or a dynamic axis' name).

    Attributes:
        name: the graph's name for it.
        dtype: ``"float32"``, ``"int64"`` or ``"bool"``.
        shape: per axis a fixed size or a dynamic axis name (``"N"``, ``"S"``, ``"t"``).
    """

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    def to_info(self) -> list[Any]:
        """Plain data: ``[name, dtype, shape]``."""
        return [self.name, self.dtype, list(self.shape)]

    @classmethod
    def from_info(cls, value: Any, where: str) -> TensorSpec:
        """Read :meth:`to_info`'s form; CheckpointError naming ``where`` when it is not that."""
        ok = (
            isinstance(value, list)
            and len(value) == 3
            and isinstance(value[0], str)
            and value[1] in _ORT_TYPES.values()
            and isinstance(value[2], list)
            and all(isinstance(d, (int, str)) and not isinstance(d, bool) for d in value[2])
        )
        if not ok:
            raise CheckpointError(f"{where}: a tensor entry must be [name, dtype, shape], got {str(value)[:200]}")
        return cls(value[0], value[1], tuple(value[2]))


@dataclass(frozen=True)
class StateLayout:
    """The graphs' inputs and outputs and how every state tensor follows the beams (see the module docstring).

    Attributes:
        inputs: the init graph's inputs (the network's, e.g. ``src (N, S)``, ``src_lengths (N,)``).
        beams: state tensors reordered by beam search.
        source: state tensors expanded once and never changed (step inputs only).
        cache: state tensors the step reorders itself (``state.reorder``) and the graph extends.
        attention: whether the step graph returns ``attention (N, S)``.
        vocab: the step's ``log_probs`` width V.
    """

    inputs: tuple[TensorSpec, ...]
    beams: tuple[TensorSpec, ...] = ()
    source: tuple[TensorSpec, ...] = ()
    cache: tuple[TensorSpec, ...] = ()
    attention: bool = True
    vocab: int | str = "V"
    _names: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [t.name for t in (*self.inputs, *self.state)]
        reserved = {TOKENS, LOG_PROBS, ATTENTION} | {f"next_{n}" for n in names}
        if len(set(names)) != len(names) or reserved & set(names):
            raise ConfigError(f"state layout: names must be unique and not reserved, got {names}")
        object.__setattr__(self, "_names", tuple(names))

    @property
    def state(self) -> tuple[TensorSpec, ...]:
        """Every state tensor: ``beams``, then ``source``, then ``cache`` (the init graph's outputs, in order)."""
        return (*self.beams, *self.source, *self.cache)

    def step_inputs(self) -> tuple[TensorSpec, ...]:
        """``tokens (N,)`` then every state tensor."""
        return (TensorSpec(TOKENS, "int64", ("N",)), *self.state)

    def step_outputs(self) -> tuple[TensorSpec, ...]:
        """``log_probs (N, V)``, ``next_<name>`` of every ``beams`` and ``cache`` tensor, ``attention (N, S)``."""
        nxt = tuple(
            TensorSpec(f"next_{t.name}", t.dtype, tuple(_grown(d) for d in t.shape)) for t in (*self.beams, *self.cache)
        )
        att = (TensorSpec(ATTENTION, "float32", ("N", "S")),) if self.attention else ()
        return (TensorSpec(LOG_PROBS, "float32", ("N", self.vocab)), *nxt, *att)

    def to_info(self) -> dict[str, Any]:
        """Plain data for ``config.json``'s ``engine_info``."""
        return {
            "inputs": [t.to_info() for t in self.inputs],
            "beams": [t.to_info() for t in self.beams],
            "source": [t.to_info() for t in self.source],
            "cache": [t.to_info() for t in self.cache],
            "attention": self.attention,
            "vocab": self.vocab,
        }

    @classmethod
    def from_info(cls, info: Any, where: str) -> StateLayout:
        """The layout :meth:`to_info` wrote; CheckpointError naming ``where`` for anything else."""
        keys = ("inputs", "beams", "source", "cache", "attention", "vocab")
        if not isinstance(info, dict) or set(info) != set(keys):
            got = sorted(info) if isinstance(info, dict) else type(info).__name__
            raise CheckpointError(f"{where}: the ONNX state layout must have the keys {list(keys)}, got {got}")
        parts = {}
        for key in keys[:4]:
            if not isinstance(info[key], list):
                raise CheckpointError(f"{where}: layout '{key}' must be a list of tensor entries")
            parts[key] = tuple(TensorSpec.from_info(v, f"{where} layout '{key}'") for v in info[key])
        if not isinstance(info["attention"], bool) or not isinstance(info["vocab"], (int, str)):
            raise CheckpointError(f"{where}: layout 'attention' must be true/false and 'vocab' a size")
        try:
            return cls(**parts, attention=info["attention"], vocab=info["vocab"])
        except ConfigError as e:
            raise CheckpointError(f"{where}: {e}") from None


def _grown(dim: int | str) -> int | str:
    """The name of a step output's dynamic axis: distinct from the input's (a cache is one position longer), except
    the batch ``N`` and the source ``S``, which a step keeps."""
    return dim if isinstance(dim, int) or dim in ("N", "S") else f"{dim}_next"


def _spec(name: str, t: Tensor, axes: Mapping[int, str]) -> TensorSpec:
    """The spec of example tensor ``t``: axis 0 is ``N``, ``axes`` names the other dynamic ones."""
    dtype = {torch.float32: "float32", torch.int64: "int64", torch.bool: "bool"}.get(t.dtype)
    if dtype is None:
        raise ConfigError(f"ONNX export: state tensor {name!r} has dtype {t.dtype}; float32, int64 or bool expected")
    return TensorSpec(name, dtype, tuple("N" if i == 0 else axes.get(i, int(n)) for i, n in enumerate(t.shape)))


def graph_digest(path: Path) -> str:
    """SHA-256 of a graph file (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# state pytrees <-> named tensors
# ----------------------------------------------------------------------------------------------
def flatten_state(tree: Any, prefix: str, dedupe: bool = False) -> tuple[Any, dict[str, Tensor]]:
    """A pytree of tensors (dict / list / tuple nesting, None leaves) as named tensors and a template to rebuild it.

    Args:
        tree: e.g. ``{"hidden": [(h, c)], "feed": f}``.
        prefix: the names' prefix (the state part, e.g. ``"beams"``).
        dedupe: a tensor met again (the same object) is named once and the template refers to that name (for
            parts that never change, e.g. keys that are the values: one graph output, not two copies).

    Returns:
        The template (the tree with every tensor replaced by its name) and ``{name: tensor}`` in tree order:
        names are the paths, e.g. ``"beams.hidden.0.1"``.
    """
    named: dict[str, Tensor] = {}
    seen: dict[int, str] = {}

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, Tensor):
            if dedupe and id(node) in seen:
                return seen[id(node)]
            named[path] = node
            seen[id(node)] = path
            return path
        if isinstance(node, dict):
            return {k: walk(v, f"{path}.{k}") for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return type(node)(walk(v, f"{path}.{i}") for i, v in enumerate(node))
        if node is None:
            return None
        raise ConfigError(f"ONNX export: a state leaf of type {type(node).__name__} at {path} (tensors only)")

    return walk(tree, prefix), named


def unflatten_state(template: Any, tensors: Mapping[str, Tensor]) -> Any:
    """The pytree :func:`flatten_state` flattened, with ``tensors`` (by name) at its leaves."""
    if isinstance(template, str):
        return tensors[template]
    if isinstance(template, dict):
        return {k: unflatten_state(v, tensors) for k, v in template.items()}
    if isinstance(template, (list, tuple)):
        return type(template)(unflatten_state(v, tensors) for v in template)
    return template


# ----------------------------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------------------------
def torch_export(
    module: nn.Module,
    args: tuple[Tensor, ...],
    path: Path,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    opset: int,
) -> None:
    """One module to one ``.onnx`` file with the TorchScript exporter (see the module docstring for why)."""
    dynamic = {
        t.name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str)} for t in (*inputs, *outputs) if t.shape
    }
    with warnings.catch_warnings():
        # The tracer warns at every Python branch on a size (fixed at the example: checked afterwards against a
        # second example) and about the exporter's deprecation; neither is the user's business.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,
            input_names=[t.name for t in inputs],
            output_names=[t.name for t in outputs],
            dynamic_axes=dynamic,
            opset_version=opset,
            do_constant_folding=True,
        )


def quantize_int8(path: Path) -> dict[str, int]:
    """Quantize a graph's weights to int8 in place (ONNX Runtime dynamic quantization: int8 weights, activations
    quantized per call), for the op types of :data:`QUANTIZED_OPS` it has kernels for.

    Returns:
        How many nodes of each type the quantized graph has that run on int8 (``MatMulInteger``,
        ``DynamicQuantizeLSTM``, a ``Gather`` of int8 weights, ...), so an export says what was quantized.
    """
    require("onnxruntime", "int8 quantization of an ONNX export")
    onnx = require_onnx()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = path.with_suffix(".fp32.onnx")
    path.replace(tmp)
    try:
        # The quantizer logs "consider pre-processing" on the root logger (shape inference runs without it): muted
        # for this call, the previous logging state restored.
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            quantize_dynamic(
                tmp, path, weight_type=QuantType.QInt8, op_types_to_quantize=list(QUANTIZED_OPS), per_channel=False
            )
        finally:
            logging.disable(previous)
    finally:
        tmp.unlink(missing_ok=True)
    model = onnx.load(str(path))
    eight_bit = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    int8 = {i.name for i in model.graph.initializer if i.data_type in eight_bit}
    counts: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type in ("MatMulInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM", "QGemm") or (
            node.op_type == "Gather" and any(i in int8 for i in node.input)
        ):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def export_graphs(
    init: nn.Module,
    step: nn.Module,
    examples: Sequence[tuple[Tensor, ...]],
    input_names: Sequence[str],
    state_parts: Mapping[str, Sequence[str]],
    axes: Mapping[str, Mapping[int, str]],
    out_dir: Path,
    quantize: str = "float32",
    opset: int = ONNX_OPSET,
    atol: float = 1e-4,
    rtol: float = 1e-4,
) -> dict[str, Any]:
    """Export an init and a step module as ONNX graphs and check them against the eager modules.

    ``init(*inputs)`` returns the state tensors in the order of ``state_parts`` (``beams``, ``source``, ``cache``);
    ``step(tokens (N,), *state)`` returns ``(log_probs (N, V), *next beams, *next cache[, attention (N, S)])``.

    Args:
        init: the init module (eval mode, no parameters changed by the export).
        step: the step module.
        examples: two or more init input tuples of different sizes (padded and unpadded rows, different ``N``,
            ``S``): the first is traced, every one is run through both graphs and the eager modules (Python
            branches on sizes are fixed at the traced example: a second example of other sizes catches a graph
            that only works for the first).
        input_names: names of the init inputs.
        state_parts: ``{"beams": names, "source": names, "cache": names}`` of the state tensors.
        axes: per tensor name (inputs and state), its dynamic axes other than the batch axis 0 (e.g. ``{1: "S"}``).
        out_dir: folder of the graphs (created).
        quantize: ``"float32"`` or ``"int8"`` (dynamic quantization of the weights, :func:`quantize_int8`).
        opset: ONNX opset.
        atol: largest difference from the eager modules the float32 graphs may have, beyond ``rtol`` times the
            eager value (log-probs of large logits differ relatively: float32 sums in another order).
        rtol: see ``atol``.

    Returns:
        Plain-data ``engine_info`` entries: graph file names and digests, the layout, the opset, versions and, for
        int8, the quantized node counts.

    Raises:
        ConfigError: a bad ``quantize``, ``onnxruntime`` or ``onnx`` missing, or graphs that do not reproduce the
            eager modules (a network this exporter cannot trace faithfully).
    """
    if quantize not in QUANTIZE:
        raise ConfigError(f"ONNX export: quantize must be one of {', '.join(QUANTIZE)}, got {quantize!r}")
    ort = require("onnxruntime", "exporting to ONNX")
    onnx = require_onnx()
    out_dir.mkdir(parents=True, exist_ok=True)
    init.eval()
    step.eval()
    parts = {k: list(state_parts.get(k, ())) for k in ("beams", "source", "cache")}
    names = [*parts["beams"], *parts["source"], *parts["cache"]]
    init_path, step_path = out_dir / INIT_GRAPH, out_dir / STEP_GRAPH
    with torch.no_grad():
        first = _as_tuple(init(*examples[0]))
        if len(first) != len(names):
            raise ConfigError(f"ONNX export: the init module returned {len(first)} tensors for {len(names)} names")
        tokens = torch.full((first[0].shape[0],), 1, dtype=torch.long)
        # One eager step first: the step is traced on a state that has a history (a cache of length 1, not 0).
        out = _as_tuple(step(tokens, *first))
        grown = dict(zip([*parts["beams"], *parts["cache"]], out[1:]))
        state = [grown.get(n, t) for n, t in zip(names, first)]
        specs = {n: _spec(n, t, axes.get(n, {})) for n, t in zip(names, state)}
        full = StateLayout(
            inputs=tuple(_spec(n, t, axes.get(n, {})) for n, t in zip(input_names, examples[0])),
            beams=tuple(specs[n] for n in parts["beams"]),
            source=tuple(specs[n] for n in parts["source"]),
            cache=tuple(specs[n] for n in parts["cache"]),
            attention=len(out) == 2 + len(parts["beams"]) + len(parts["cache"]),
            vocab=int(out[0].shape[1]),
        )
        torch_export(step, (tokens, *state), step_path, full.step_inputs(), full.step_outputs(), opset)
        # The exporter drops inputs the step never reads (e.g. encoder outputs that only multi-head attention's
        # precomputed projections are computed from): those `source` tensors leave the layout and the init graph.
        used = {i.name for i in onnx.load(str(step_path), load_external_data=False).graph.input}
        unused = [n for n in names if n not in used]
        if any(n not in parts["source"] for n in unused):
            raise ConfigError(f"ONNX export: the step ignores state tensors that change every step: {unused}")
        layout = replace(full, source=tuple(t for t in full.source if t.name in used))
        keep = [i for i, n in enumerate(names) if n in used]
        # eval() first: the exporter restores the module's mode afterwards, and a new module is in training mode,
        # which it would hand down to the network (dropout on in the eager reference, and for the caller)
        torch_export(_Select(init, keep).eval(), tuple(examples[0]), init_path, layout.inputs, layout.state, opset)
        network = OnnxStepNetwork(init_path, step_path, layout, threads=1, where=str(out_dir))
        for example in examples:
            _check_against_eager(network, init, step, example, names, parts, atol, rtol)
    quantized: dict[str, int] = {}
    if quantize == "int8":
        for path in (init_path, step_path):
            for op, n in quantize_int8(path).items():
                quantized[f"{path.name}:{op}"] = n
        OnnxStepNetwork(init_path, step_path, layout, threads=1, where=str(out_dir))  # loads, right inputs/outputs
    return {
        "graphs": {"init": INIT_GRAPH, "step": STEP_GRAPH},
        "sha256": {INIT_GRAPH: graph_digest(init_path), STEP_GRAPH: graph_digest(step_path)},
        "layout": layout.to_info(),
        "opset": opset,
        "exporter": "torch.onnx TorchScript (dynamo=False)",
        "quantized_nodes": quantized,
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__},
    }


class _Select(nn.Module):
    """The outputs ``keep`` (indices) of ``module``: the init graph without the state tensors no step reads."""

    def __init__(self, module: nn.Module, keep: Sequence[int]) -> None:
        super().__init__()
        self.module = module
        self.keep = list(keep)

    def forward(self, *args: Tensor) -> tuple[Tensor, ...]:
        out = _as_tuple(self.module(*args))
        return tuple(out[i] for i in self.keep)


def require_onnx() -> Any:
    """The ``onnx`` package (installed with the same extra as ``onnxruntime``), or a ConfigError naming it."""
    try:
        import onnx
    except ImportError:
        raise ConfigError(
            "exporting to ONNX needs the optional package 'onnx', which is not installed: "
            "pip install 'attn-suite[onnx]'"
        ) from None
    return onnx


def _as_tuple(out: Any) -> tuple[Tensor, ...]:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _check_against_eager(
    network: OnnxStepNetwork,
    init: nn.Module,
    step: nn.Module,
    example: tuple[Tensor, ...],
    names: Sequence[str],
    parts: Mapping[str, Sequence[str]],
    atol: float,
    rtol: float,
) -> None:
    """Three steps of the graphs against the eager modules on ``example``; ConfigError if they differ.

    Args:
        network: the graphs.
        init: the eager init module (every state tensor, ``names`` in order).
        step: the eager step module.
        example: init inputs.
        names: the eager modules' state tensor names (the graphs' may be fewer).
        parts: ``{"beams": names, "source": names, "cache": names}``.
        atol: the largest difference allowed beyond ``rtol`` times the eager value.
        rtol: see ``atol``.
    """
    ref = dict(zip(names, _as_tuple(init(*example))))
    state = network.init_state(*example)
    tokens = torch.full((example[0].shape[0],), 1, dtype=torch.long)
    nb = len(parts["beams"])
    for t in range(3):
        got = {**(state.beams or {}), **(state.source or {}), **(state.cache or {})}
        diffs = [max_difference(v, ref[n], rtol) for n, v in got.items()]
        lp, state, att = network.step(tokens, state, need_weights=True)
        eager = _as_tuple(step(tokens, *(ref[n] for n in names)))
        diffs.append(max_difference(lp, eager[0], rtol))
        if att is not None:
            diffs.append(max_difference(att, eager[-1], rtol))
        worst = max(diffs)
        if not worst <= atol:
            raise ConfigError(
                f"ONNX export: the graphs differ from the network by {worst:.3g} (step {t}, input sizes "
                f"{[tuple(x.shape) for x in example]}); this network cannot be exported faithfully"
            )
        ref.update(zip([*parts["beams"], *parts["cache"]], eager[1 : 1 + nb + len(parts["cache"])]))
        tokens = lp.argmax(dim=1)


def max_difference(a: Tensor, b: Tensor, rtol: float) -> float:
    """Largest difference of ``a`` from ``b`` beyond ``rtol * |b|`` (inf for other shapes; bool as 0/1)."""
    if a.shape != b.shape:
        return float("inf")
    if a.numel() == 0:
        return 0.0
    ref = b.detach().cpu().float()
    return float(((a.float() - ref).abs() - rtol * ref.abs()).max().clamp_min(0.0))


# ----------------------------------------------------------------------------------------------
# running
# ----------------------------------------------------------------------------------------------
def open_session(ort: Any, path: Path, options: Any) -> Any:
    """An ONNX Runtime CPU session of ``path``; CheckpointError naming the file when it does not load."""
    if not path.is_file():
        raise CheckpointError(f"{path}: the ONNX graph is missing (export the model again)")
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own exception types (Fail, InvalidGraph, ...), all for a bad file here
        raise CheckpointError(f"{path}: not a loadable ONNX graph ({type(e).__name__}: {str(e)[:300]})") from None


def check_signature(path: Path, got: Sequence[Any], expected: Sequence[TensorSpec], what: str) -> None:
    """CheckpointError naming ``path`` unless the session's ``what`` (inputs/outputs) are ``expected``: the same
    names in the same order, dtypes, ranks and fixed sizes (a graph of another model or version)."""

    def show(specs: Sequence[tuple[str, str, Sequence[Any]]]) -> str:
        return ", ".join(f"{n} {d}{list(s)}" for n, d, s in specs)

    found = [(a.name, _ORT_TYPES.get(a.type, a.type), list(a.shape)) for a in got]
    wanted = [(t.name, t.dtype, list(t.shape)) for t in expected]
    same = len(found) == len(wanted) and all(
        fn == wn
        and fd == wd
        and len(fs) == len(ws)
        and all(not (isinstance(a, int) and isinstance(b, int)) or a == b for a, b in zip(fs, ws))
        for (fn, fd, fs), (wn, wd, ws) in zip(found, wanted)
    )
    if not same:
        raise CheckpointError(
            f"{path}: a graph from another model or version: its {what} are [{show(found)}], the export's "
            f"config.json expects [{show(wanted)}]"
        )


class EngineNetwork(nn.Module):
    """Base class of a network whose steps run on an inference engine (ONNX Runtime): driven by
    ``core.decoding.beam.beam_search`` like a PyTorch network, it has no parameters in PyTorch."""

    #: the engine's name (``"onnxruntime"``), shown to users
    engine: str = ""


class OnnxStepNetwork(EngineNetwork):
    """A step decoder on two ONNX Runtime sessions (CPU): ``init_state`` and ``step`` of ``StepDecoder``.

    No parameters (the weights are in the graphs). The sessions are created once, here. An
    :class:`EngineNetwork` named ``"onnxruntime"``, driven step by step like a PyTorch network
    (not an ``EngineSearch``).

    Args:
        init_path: the init graph.
        step_path: the step graph.
        layout: the state layout the graphs were exported with.
        threads: ONNX Runtime intra-op threads (None: its default, one per core).
        where: the export, for messages.
        sha256: ``{file name: digest}`` recorded at export; a graph whose digest differs is refused.

    Raises:
        ConfigError: ``onnxruntime`` is not installed (names the extra that installs it).
        CheckpointError: a graph is missing, does not load, has other inputs/outputs than ``layout``, or was
            changed after export (each names the file and what was expected).
    """

    engine = "onnxruntime"

    def __init__(
        self,
        init_path: Path,
        step_path: Path,
        layout: StateLayout,
        threads: int | None = None,
        where: str = "",
        sha256: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        ort = require("onnxruntime", "running an ONNX export")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1  # the graphs are chains: no parallel branches to run
        self.layout = layout
        self.init_session = open_session(ort, init_path, options)
        self.step_session = open_session(ort, step_path, options)
        check_signature(init_path, self.init_session.get_inputs(), layout.inputs, "inputs")
        check_signature(init_path, self.init_session.get_outputs(), layout.state, "outputs")
        check_signature(step_path, self.step_session.get_inputs(), layout.step_inputs(), "inputs")
        check_signature(step_path, self.step_session.get_outputs(), layout.step_outputs(), "outputs")
        for path in (init_path, step_path):
            digest = (sha256 or {}).get(path.name)
            if sha256 is not None and digest != graph_digest(path):
                raise CheckpointError(
                    f"{path}: the graph was changed after export (SHA-256 {graph_digest(path)[:16]}..., config.json "
                    f"of {where} records {str(digest)[:16]}...); export the model again"
                )
        self._beams = [t.name for t in layout.beams]
        self._source = [t.name for t in layout.source]
        self._cache = [t.name for t in layout.cache]
        self._state_names = [t.name for t in layout.state]
        self._input_names = [t.name for t in layout.inputs]
        self._step_outputs = [t.name for t in layout.step_outputs()]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Not a teacher-forcing network: decode with :meth:`init_state` and :meth:`step`."""
        raise TypeError("OnnxStepNetwork runs init_state/step only (an inference export has no teacher forcing)")

    def init_state(self, *inputs: Tensor) -> DecoderState:
        """Run the init graph: the network's inputs (e.g. ``src (B, S)``, ``src_lengths (B,)``) -> the first state,
        ``beams`` / ``source`` / ``cache`` dicts of ``(B, ...)`` CPU tensors sharing the graph's output memory."""
        if len(inputs) != len(self._input_names):
            raise TypeError(f"init_state takes {len(self._input_names)} tensors ({', '.join(self._input_names)})")
        feeds = {n: _to_numpy(t) for n, t in zip(self._input_names, inputs)}
        outs = dict(zip(self._state_names, self.init_session.run(self._state_names, feeds)))
        return DecoderState(
            beams={n: torch.from_numpy(outs[n]) for n in self._beams} or None,
            source={n: torch.from_numpy(outs[n]) for n in self._source} or None,
            cache={n: torch.from_numpy(outs[n]) for n in self._cache} or None,
        )

    def step(
        self, tokens: Tensor, state: DecoderState, need_weights: bool = False
    ) -> tuple[Tensor, DecoderState, Tensor | None]:
        """One step of the step graph (the ``core.decoding.beam`` step function).

        Args:
            tokens: ``(N,)`` int64 last tokens.
            state: from :meth:`init_state` or the previous step; ``state.reorder`` ``(N,)`` (beam search's parent
                rows) is applied to the ``cache`` tensors here.
            need_weights: return the attention (the graph computes it either way).

        Returns:
            log-probs ``(N, V)`` float32, the next state (``reorder`` None), attention ``(N, S)`` or None.
        """
        feeds: dict[str, np.ndarray] = {TOKENS: _to_numpy(tokens.long())}
        for part, names in ((state.beams, self._beams), (state.source, self._source)):
            for n in names:
                feeds[n] = _to_numpy(part[n])
        rows = state.reorder
        for n in self._cache:
            t = state.cache[n]
            feeds[n] = _to_numpy(t if rows is None else t.index_select(0, rows.cpu()))  # (M, ...) -> (N, ...)
        outs = [torch.from_numpy(a) for a in self.step_session.run(self._step_outputs, feeds)]
        nb, nc = len(self._beams), len(self._cache)
        new = DecoderState(
            beams=dict(zip(self._beams, outs[1 : 1 + nb])) or None,
            source=state.source,
            cache=dict(zip(self._cache, outs[1 + nb : 1 + nb + nc])) or None,
        )
        att = outs[-1] if need_weights and self.layout.attention else None
        return outs[0], new, att


def _to_numpy(t: Tensor) -> np.ndarray:
    """A CPU numpy view of ``t`` (a copy only when it is on another device or not contiguous)."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    return t.contiguous().numpy()


def load_graphs(directory: Path, info: Mapping[str, Any], threads: int | None, where: str) -> OnnxStepNetwork:
    """The :class:`OnnxStepNetwork` of an export's graphs, as :func:`export_graphs` recorded them in ``info``.

    Args:
        directory: the folder of the graphs.
        info: the export's ``engine_info`` (``graphs``, ``layout``, ``sha256``).
        threads: ONNX Runtime intra-op threads (None: its default).
        where: the export, for messages.

    Raises:
        ConfigError: ``onnxruntime`` is not installed.
        CheckpointError: entries missing or malformed, graphs missing, unloadable, of another layout or changed.
    """
    require("onnxruntime", "running an ONNX export")  # before reading anything: the install hint comes first
    graphs, digests = info.get("graphs"), info.get("sha256")
    if not isinstance(graphs, dict) or set(graphs) != {"init", "step"}:
        raise CheckpointError(f"{where}: engine_info 'graphs' must name the 'init' and 'step' graphs, got {graphs!r}")
    for name in graphs.values():
        # a bare file name inside the folder: config.json cannot point the loader at another file
        if not isinstance(name, str) or Path(name).name != name or not name.endswith(".onnx"):
            raise CheckpointError(f"{where}: engine_info 'graphs' must be .onnx file names, got {name!r}")
    if not isinstance(digests, dict) or not all(isinstance(v, str) for v in digests.values()):
        raise CheckpointError(f"{where}: engine_info 'sha256' must map the graph files to their digests")
    layout = StateLayout.from_info(info.get("layout"), where)
    return OnnxStepNetwork(directory / graphs["init"], directory / graphs["step"], layout, threads, where, digests)
