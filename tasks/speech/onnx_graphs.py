"""ONNX Runtime export of a speech network: an encoder graph, and the attention decoder's init and step graphs.

:func:`write_onnx` writes three graphs; :func:`load_onnx` reads them back as an :class:`OnnxSpeechNetwork`, which
``Transcriber`` runs through the same ``decode_features`` / ``transcribe`` code as the PyTorch network:

* the **encoder graph** ``encoder.onnx``: the *unnormalised* log-mel features ``feats (N, T, F)`` float32 and their
  lengths ``lens (N,)`` int64 (an ``hf:`` encoder: the waveforms ``wavs (N, samples)`` and ``wav_lens (N,)``) ->
  ``enc (N, S, D)``, ``mask (N, S)`` bool and the CTC log-probabilities ``ctc_log_probs (N, S, V)``: the feature
  statistics' normalisation, the encoder and the CTC head;
* the **init graph** (``core.engines.onnx``): ``enc``, ``mask`` -> the attention decoder's first state;
* the **step graph**: one decoder step; ``beams`` -- the LSTM's hidden and cell state, the input feed (the previous
  context), location attention's previous weights ``(N, S)``; ``source`` -- the encoder states, their mask and the
  attention's key projections.

What runs where: the log-mel front end (an STFT and a mel filterbank, no weights) stays in PyTorch, on the waveform
chunks ``transcribe`` cuts, exactly as for the PyTorch network; the graphs run everything with weights. The CTC
prefix scorer of joint decoding (``tasks.speech.ctc_prefix``, float64 cumulative sums over all frames) and the
n-best rescoring with ``ctc_loss`` stay in PyTorch too, on the encoder graph's ``ctc_log_probs``: beam search
combines them with the step graph's log-probabilities as it does with the PyTorch decoder's.

Two encoder details are adapted for tracing (the results are the same):

* Transformer and Conformer encoders add sinusoidal positions from a table that grows in Python when a longer input
  comes; the graph computes the table from the input's length instead (same float32 operations), so no chunk
  length is fixed at export.
* The pyramidal BiLSTM pairs frames and pads an odd count in Python (a branch the tracer would fix); the features
  are padded with zero frames to a multiple of 4 before the graph instead, which changes no valid output (the
  frames past each length are zeroed at each pyramid layer, and ``ceil(ceil(T / 2) / 2) = ceil(T / 4)`` frames
  come out either way).

Nothing here imports ``onnx`` or ``onnxruntime`` at module level.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.decoding.beam import DecoderState
from core.decoding.fast_paths import eval_mode
from core.engines.folder import EngineFolder, require
from core.engines.onnx import (
    EngineNetwork,
    OnnxStepNetwork,
    TensorSpec,
    check_signature,
    export_graphs,
    flatten_state,
    graph_digest,
    load_graphs,
    max_difference,
    open_session,
    quantize_int8,
    require_onnx,
    torch_export,
    unflatten_state,
)
from core.errors import CheckpointError, ConfigError
from tasks.speech.features import FeatureConfig, FeatureStats, LogMel
from tasks.speech.network import SpeechNetwork
from tasks.speech.stored import StoredOptions

__all__ = ["ENCODER_GRAPH", "OnnxSpeechNetwork", "load_onnx", "write_onnx"]

#: the encoder graph's file name (the init and step graphs are ``core.engines.onnx``'s)
ENCODER_GRAPH = "encoder.onnx"
#: the state parts the decoder graphs carry, in the order of their tensors
PARTS = ("beams", "source", "cache")
#: frames the pyramidal BiLSTM's input is padded to a multiple of (two pyramid layers halve it)
PYRAMID = 4


# ----------------------------------------------------------------------------------------------
# the encoder graph
# ----------------------------------------------------------------------------------------------
class _Positions(nn.Module):
    """``core.layers.SinusoidalPositions`` with its table computed from the input's length in the graph.

    ``table[p, c] = sin(p * div[c // 2])`` on even channels, ``cos(...)`` on odd ones: the same float32 products
    as ``sinusoidal_table``, without the Python-grown buffer.

    Args:
        dim: the model width D.
    """

    div: Tensor  # (D,) the buffers registered in __init__
    even: Tensor  # (D,)

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))  # (ceil(D/2),)
        channels = torch.arange(dim)
        self.register_buffer("div", div[channels // 2], persistent=False)  # (D,): each channel's frequency
        self.register_buffer("even", channels % 2 == 0, persistent=False)  # (D,)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """x ``(B, T, D)`` -> ``x * sqrt(D) + table[offset : offset + T]``."""
        pos = torch.arange(offset, offset + x.shape[1], dtype=torch.float32, device=x.device)[:, None]  # (T, 1)
        angle = pos * self.div  # (T, D)
        table = torch.where(self.even, torch.sin(angle), torch.cos(angle))  # (T, D)
        return x * math.sqrt(self.dim) + table.to(x.dtype)


@contextmanager
def _traceable(network: SpeechNetwork) -> Iterator[None]:
    """The encoder's sinusoidal positions swapped for :class:`_Positions` while exporting (restored after)."""
    encoder = network.encoder
    old = getattr(encoder, "pos", None)
    if old is None or getattr(encoder, "kind", None) not in ("transformer", "conformer"):
        yield
        return
    encoder.pos = _Positions(old.dim)
    try:
        yield
    finally:
        encoder.pos = old


class _Encoder(nn.Module):
    """``(feats (N, T, F) unnormalised, lens (N,))`` -> ``(enc (N, S, D), mask (N, S), ctc_log_probs (N, S, V))``
    (``(wavs (N, samples), wav_lens (N,))`` for an encoder that reads waveforms)."""

    def __init__(self, network: SpeechNetwork) -> None:
        super().__init__()
        self.network = network

    def forward(self, inputs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The network's ``encode_batch`` (eval mode: no SpecAugment)."""
        net = self.network
        if net.reads_waveforms:
            return net.encode(inputs, lengths)
        return net.encode(net.stats(inputs), lengths)


def _encoder_specs(network: SpeechNetwork, vocab: int) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The encoder graph's inputs and outputs."""
    if network.reads_waveforms:
        inputs = (TensorSpec("wavs", "float32", ("N", "samples")), TensorSpec("wav_lens", "int64", ("N",)))
    else:
        n_mels = network.feature_cfg.n_mels
        inputs = (TensorSpec("feats", "float32", ("N", "T", n_mels)), TensorSpec("lens", "int64", ("N",)))
    dim = int(network.ctc_head.in_features)
    outputs = (
        TensorSpec("enc", "float32", ("N", "S", dim)),
        TensorSpec("mask", "bool", ("N", "S")),
        TensorSpec("ctc_log_probs", "float32", ("N", "S", vocab)),
    )
    return inputs, outputs


def _encoder_examples(network: SpeechNetwork) -> list[tuple[Tensor, Tensor]]:
    """Encoder inputs of different sizes (the first is traced): padded rows of different lengths, unpadded rows,
    one short row. Frame counts are multiples of :data:`PYRAMID` (what :class:`OnnxSpeechNetwork` feeds a
    pyramidal encoder) and, for an ``hf:`` encoder, waveforms of 0.2-0.6 s."""
    g = torch.Generator().manual_seed(0)
    out = []
    if network.reads_waveforms:
        sizes: Sequence[tuple[list[int], int]] = (([9600, 6400, 4800], 9600), ([8000, 8000], 8000), ([3200], 3200))
    else:
        sizes = (([36, 23, 14], 36), ([48, 48], 48), ([8], 8))
    for lengths, t in sizes:
        if network.reads_waveforms:
            x = 0.1 * torch.randn(len(lengths), t, generator=g)  # (N, samples)
        else:
            x = network.stats.mean + network.stats.std * torch.randn(
                len(lengths), t, network.feature_cfg.n_mels, generator=g
            )  # (N, T, F): log-mel-like values around the training statistics
        for i, n in enumerate(lengths):
            x[i, n:] = 0.0
        out.append((x, torch.tensor(lengths)))
    return out


def _export_encoder(
    network: SpeechNetwork, vocab: int, path: Path, atol: float = 1e-4, rtol: float = 1e-4
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Export the encoder graph to ``path`` and check it against the eager encoder on every example.

    Returns:
        Its input and output specs.

    Raises:
        ConfigError: the graph differs from the eager encoder (an encoder the exporter cannot trace faithfully).
    """
    ort = require("onnxruntime", "exporting to ONNX")
    # eval mode on the wrapper too: the exporter restores the wrapper's mode afterwards, recursively (a new module
    # is in training mode, which would switch the network's BatchNorm to batch statistics)
    module = _Encoder(network).eval()
    inputs, outputs = _encoder_specs(network, vocab)
    examples = _encoder_examples(network)
    torch_export(module, examples[0], path, inputs, outputs, opset=17)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = open_session(ort, path, options)
    for example in examples:
        got = session.run([t.name for t in outputs], {t.name: x.numpy() for t, x in zip(inputs, example)})
        eager = module(*example)
        worst = max(max_difference(torch.from_numpy(g), e, rtol) for g, e in zip(got, eager))
        if not worst <= atol:
            raise ConfigError(
                f"ONNX export: the encoder graph differs from the network by {worst:.3g} (input sizes "
                f"{[tuple(x.shape) for x in example]}); this encoder cannot be exported faithfully"
            )
    return inputs, outputs


# ----------------------------------------------------------------------------------------------
# the decoder graphs
# ----------------------------------------------------------------------------------------------
def _names(template: Any) -> list[str]:
    """The distinct tensor names of a :func:`core.engines.onnx.flatten_state` template, in order."""
    if isinstance(template, str):
        return [template]
    out: list[str] = []
    children = template.values() if isinstance(template, dict) else template if template is not None else []
    for child in children:
        out.extend(n for n in _names(child) if n not in out)
    return out


def _flat(tree: Any, template: Any, part: str) -> list[Tensor]:
    """The tensors of ``tree`` in the order of ``template``'s names (``source`` deduplicated: keys that are the
    encoder states are one graph tensor, not two copies; the others change every step)."""
    _, named = flatten_state(tree, part, dedupe=part == "source")
    return [named[n] for n in _names(template)]


class _Init(nn.Module):
    """``(enc (N, S, D), mask (N, S))`` -> the decoder's first state as a flat tuple of tensors (layout order)."""

    def __init__(self, network: SpeechNetwork, templates: dict[str, Any]) -> None:
        super().__init__()
        self.network = network
        self.templates = templates

    def forward(self, enc: Tensor, mask: Tensor) -> tuple[Tensor, ...]:
        """The state tensors in layout order (``beams``, ``source``)."""
        state = self.network.init_state(enc, mask)
        parts = {"beams": state.beams, "source": state.source, "cache": None}
        return tuple(t for part in PARTS for t in _flat(parts[part], self.templates[part], part))


class _Step(nn.Module):
    """``(tokens (N,), *state)`` -> ``(log_probs (N, V), *next beams, attention (N, S))``."""

    def __init__(self, network: SpeechNetwork, templates: dict[str, Any]) -> None:
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
        beams, source = (unflatten_state(self.templates[p], named) for p in PARTS[:2])
        dec = self.network.decoder
        # `_step` and the output layer rather than `step`, whose CPU fast path multiplies by a cached W^T (a second
        # copy of the weight in the graph) and writes its log-softmax in place
        feats, nb, weights = dec._step(dec.embedding(tokens), beams, source, True)  # (N, F)
        log_probs = torch.log_softmax(dec.out(dec.pre_out(feats)), dim=-1)  # (N, V)
        assert weights is not None  # asked for
        return (log_probs, *_flat(nb, self.templates["beams"], "beams"), weights)


def _dynamic_axes(name: str, t: Tensor) -> dict[int, str]:
    """The frame axis ``S`` of a state tensor over the encoder frames: ``(N, S, ...)`` states, keys, mask and
    location weights, ``(N, H, S, Dh)`` multi-head key/value projections."""
    if name.startswith("source.pre.") and t.dim() == 4:
        return {2: "S"}
    if name.startswith("source.") or name == "beams.prev":
        return {1: "S"}
    return {}


def write_onnx(network: SpeechNetwork, options: StoredOptions, out_dir: Path, quantize: str) -> dict[str, Any]:
    """Write the encoder, init and step graphs of a speech network into ``out_dir`` (created).

    Args:
        network: the network (on the CPU; its mode is restored afterwards).
        options: its options (recorded: the encoder and attention).
        out_dir: the graphs' folder (an engine export's ``onnx/``).
        quantize: ``"float32"``, or ``"int8"`` (dynamic quantization of every graph's weights: the matrix
            products, embeddings and LSTMs; convolutions stay float32).

    Returns:
        Plain-data ``engine_info`` entries: graph files and digests, the encoder graph's inputs and outputs, the
        decoder's state layout, opset, versions, the quantized node counts, the encoder, the feature statistics.

    Raises:
        ConfigError: an encoder the exporter cannot trace faithfully (named), ``onnxruntime``/``onnx`` not
            installed, a network on another device, or graphs that do not reproduce the network.
    """
    if any(p.device.type != "cpu" for p in network.parameters()):
        raise ConfigError("ONNX export: move the network to the CPU first (network.cpu())")
    require_onnx()
    vocab = int(network.ctc_head.out_features)
    out_dir.mkdir(parents=True, exist_ok=True)
    encoder_path = out_dir / ENCODER_GRAPH
    with eval_mode(network), torch.no_grad(), _traceable(network):
        try:
            enc_inputs, enc_outputs = _export_encoder(network, vocab, encoder_path)
        except (ConfigError, CheckpointError):
            raise
        except Exception as e:  # the exporter's or the runtime's own errors (an op with no ONNX form, ...)
            raise ConfigError(
                f"ONNX export: the {options.encoder!r} encoder does not export to ONNX ({type(e).__name__}: "
                f"{str(e)[:300]}); transcribe with the PyTorch model folder"
            ) from None
        memory = [_Encoder(network).eval()(*x)[:2] for x in _encoder_examples(network)]  # (enc, mask) per example
        state = network.init_state(*memory[0])
        parts = {"beams": state.beams, "source": state.source, "cache": None}
        templates: dict[str, Any] = {}
        names: dict[str, list[str]] = {}
        axes: dict[str, dict[int, str]] = {"enc": {1: "S"}, "mask": {1: "S"}}
        for part in PARTS:
            templates[part], named = flatten_state(parts[part], part, dedupe=part == "source")
            names[part] = list(named)
            axes.update((n, _dynamic_axes(n, t)) for n, t in named.items())
        info = export_graphs(
            _Init(network, templates),
            _Step(network, templates),
            [tuple(m) for m in memory],
            ("enc", "mask"),
            names,
            axes,
            out_dir,
            quantize,
        )
    if quantize == "int8":
        for op, n in quantize_int8(encoder_path).items():
            info["quantized_nodes"][f"{ENCODER_GRAPH}:{op}"] = n
    info["graphs"]["encoder"] = ENCODER_GRAPH
    info["sha256"][ENCODER_GRAPH] = graph_digest(encoder_path)
    info["encoder_graph"] = {
        "inputs": [t.to_info() for t in enc_inputs],
        "outputs": [t.to_info() for t in enc_outputs],
    }
    info["encoder"] = options.encoder
    info["attention"] = options.attention
    info["pad_frames_to"] = PYRAMID if getattr(network.encoder, "kind", None) == "pblstm" else 1
    info["feature_stats"] = {"mean": network.stats.mean.tolist(), "std": network.stats.std.tolist()}
    return info


# ----------------------------------------------------------------------------------------------
# running
# ----------------------------------------------------------------------------------------------
class OnnxSpeechNetwork(EngineNetwork):
    """A speech network on ONNX Runtime, with what ``tasks.speech.inference`` reads of a :class:`SpeechNetwork`.

    ``logmel`` (no weights) runs in PyTorch; ``encode_batch`` runs the encoder graph; ``init_state`` / ``step``
    the decoder graphs (``core.decoding.beam``'s contract). The CTC prefix scorer reads ``encode_batch``'s CTC
    log-probabilities in PyTorch, as for the PyTorch network.

    Args:
        encoder: the encoder graph's ONNX Runtime session.
        inputs: its input specs; outputs: its output specs.
        graphs: the decoder's init and step graphs.
        feature_cfg: the log-mel front end's settings.
        stats: the feature statistics the encoder graph normalises with (kept for ``Transcriber.stats``).
        pad_frames_to: the encoder graph's frame count must be a multiple of it (the pyramidal BiLSTM's 4).
    """

    engine = "onnxruntime"

    def __init__(
        self,
        encoder: Any,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        graphs: OnnxStepNetwork,
        feature_cfg: FeatureConfig,
        stats: FeatureStats,
        pad_frames_to: int = 1,
    ) -> None:
        super().__init__()
        self.encoder_session = encoder
        self.input_names = [t.name for t in inputs]
        self.output_names = [t.name for t in outputs]
        self.graphs = graphs
        self.feature_cfg = feature_cfg
        self.logmel = LogMel(feature_cfg)
        self.stats = stats
        self.pad_frames_to = pad_frames_to
        #: whether the encoder reads raw 16 kHz audio (an ``hf:`` encoder) instead of log-mel features
        self.reads_waveforms = self.input_names[0] == "wavs"

    @property
    def device(self) -> torch.device:
        """The CPU (ONNX Runtime's CPU provider)."""
        return torch.device("cpu")

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Not a teacher-forcing network: encode with :meth:`encode_batch`, decode with ``init_state``/``step``."""
        raise TypeError("OnnxSpeechNetwork runs encode_batch/init_state/step only (an inference export)")

    def encode_batch(
        self, feats: Tensor, lens: Tensor, wavs: Tensor | None = None, wav_lens: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Encoder states ``(B, S, D)``, their mask ``(B, S)`` and CTC log-probs ``(B, S, V)`` of a batch (the
        encoder graph; ``SpeechNetwork.encode_batch`` documents the arguments).

        Raises:
            ValueError: the encoder reads waveforms and none were given.
        """
        if self.reads_waveforms:
            if wavs is None or wav_lens is None:
                raise ValueError("this model's encoder reads waveforms: pass wavs and wav_lens")
            x, n = wavs.float(), wav_lens
        else:
            x, n = feats.float(), lens
            extra = -x.shape[1] % self.pad_frames_to
            if extra:  # zero frames past every length: no valid output changes (see the module docstring)
                x = F.pad(x, (0, 0, 0, extra))  # (B, T, F) -> (B, T + extra, F)
        feeds = {self.input_names[0]: x.detach().cpu().contiguous().numpy()}
        feeds[self.input_names[1]] = n.detach().cpu().long().contiguous().numpy()
        enc, mask, ctc = (torch.from_numpy(a) for a in self.encoder_session.run(self.output_names, feeds))
        return enc, mask, ctc

    def init_state(self, memory: Tensor, mask: Tensor) -> DecoderState:
        """The attention decoder's first state over encoder states ``(B, S, D)`` and their mask ``(B, S)``."""
        return self.graphs.init_state(memory, mask)

    def step(
        self, tokens: Tensor, state: DecoderState, need_weights: bool = True
    ) -> tuple[Tensor, DecoderState, Tensor | None]:
        """One attention-decoder step: ``tokens (N,)`` -> log-probabilities ``(N, V)``, state, attention ``(N, S)``."""
        return self.graphs.step(tokens, state, need_weights)


def _stats(value: Any, n_mels: int, where: str) -> FeatureStats:
    """The feature statistics recorded in ``engine_info``; CheckpointError naming ``where`` unless they are
    ``n_mels`` finite means and positive spreads."""
    ok = isinstance(value, Mapping) and all(
        isinstance(value.get(k), list)
        and len(value[k]) == n_mels
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value[k])
        for k in ("mean", "std")
    )
    if not ok:
        raise CheckpointError(f"{where}: engine_info 'feature_stats' must hold {n_mels} means and spreads")
    stats = FeatureStats(n_mels)
    stats.mean.copy_(torch.tensor(value["mean"], dtype=torch.float32))
    stats.std.copy_(torch.tensor(value["std"], dtype=torch.float32))
    if not (bool(torch.isfinite(stats.mean).all()) and bool((stats.std > 0).all())):
        raise CheckpointError(f"{where}: engine_info 'feature_stats' are not finite or have a non-positive spread")
    return stats


def load_onnx(
    folder: EngineFolder, options: StoredOptions, feature_cfg: FeatureConfig, threads: int | None = None
) -> OnnxSpeechNetwork:
    """The network of an ONNX export (its graphs under ``folder.path / "onnx"``).

    Args:
        folder: the export, as ``core.engines.folder.read_engine_folder`` checked it.
        options: its options (the encoder must be the graphs').
        feature_cfg: its log-mel front end (from the folder's ``preprocessor_config.json``).
        threads: ONNX Runtime intra-op threads (None: its default).

    Raises:
        ConfigError: ``onnxruntime`` is not installed (names ``attn-suite[onnx]``).
        CheckpointError: graphs missing, unloadable, of another model or version, or changed after export.
    """
    ort = require("onnxruntime", "running an ONNX export")  # before reading anything: the install hint comes first
    info, where = folder.info, folder.source
    if info.get("encoder") != options.encoder:
        raise CheckpointError(
            f"{where}: graphs of a {info.get('encoder')!r} encoder, but its options say {options.encoder!r}"
        )
    graphs = dict(info.get("graphs") or {})
    name = graphs.pop("encoder", None)
    if not isinstance(name, str) or Path(name).name != name or not name.endswith(".onnx"):
        raise CheckpointError(f"{where}: engine_info 'graphs' must name the 'encoder' graph file, got {name!r}")
    spec = info.get("encoder_graph")
    if not isinstance(spec, dict) or set(spec) != {"inputs", "outputs"}:
        raise CheckpointError(f"{where}: engine_info 'encoder_graph' must list the encoder graph's inputs and outputs")
    inputs = tuple(TensorSpec.from_info(v, f"{where} encoder_graph") for v in spec["inputs"])
    outputs = tuple(TensorSpec.from_info(v, f"{where} encoder_graph") for v in spec["outputs"])
    pad = info.get("pad_frames_to")
    if pad not in (1, PYRAMID):
        raise CheckpointError(f"{where}: engine_info 'pad_frames_to' must be 1 or {PYRAMID}, got {pad!r}")
    stats = _stats(info.get("feature_stats"), feature_cfg.n_mels, where)
    path = folder.path / "onnx" / name
    session_options = ort.SessionOptions()
    if threads is not None:
        session_options.intra_op_num_threads = threads
    session_options.inter_op_num_threads = 1
    session = open_session(ort, path, session_options)
    check_signature(path, session.get_inputs(), inputs, "inputs")
    check_signature(path, session.get_outputs(), outputs, "outputs")
    digest = (info.get("sha256") or {}).get(name)
    if digest != graph_digest(path):
        raise CheckpointError(
            f"{path}: the graph was changed after export (SHA-256 {graph_digest(path)[:16]}..., config.json of "
            f"{where} records {str(digest)[:16]}...); export the model again"
        )
    decoder = load_graphs(folder.path / "onnx", {**info, "graphs": graphs}, threads, where)
    return OnnxSpeechNetwork(session, inputs, outputs, decoder, feature_cfg, stats, int(pad))
