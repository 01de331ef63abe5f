"""ONNX Runtime export of a captioning network: an image-to-first-state graph and a one-step decoder graph.

:func:`write_onnx` writes the two graphs of ``core.engines.onnx`` for a
:class:`~tasks.captioning.network.CaptionNetwork`; :func:`load_onnx` reads them back as an :class:`OnnxCaptionNetwork`,
which ``Captioner`` drives with the same beam search as the PyTorch network.

* The **init graph** takes the images after the inference transform, ``images (N, 3, H, W)`` float32 (``H = W =``
  the model's ``image_size``, fixed), and runs the encoder (the tiny CNN, a torchvision backbone or an ``hf:``
  backbone, its grid pooling and projection) and the decoder's ``init_state``: every tensor of the first state.
* The **step graph** is one decoder step, its state as named tensors:

  - RNN decoder (Show-Attend-Tell): ``beams`` -- every layer's hidden state (and LSTM cell), location attention's
    previous (or cumulative) weights ``(N, g*g)``; ``source`` -- the grid features ``(N, g*g, D)`` and the
    attention's key projections (the keys themselves when they are not the features);
  - Transformer decoder: ``cache`` -- every layer's self-attention keys and values ``(N, H, t, Dh)``, one position
    longer after each step; ``source`` -- every layer's cross-attention keys and values ``(N, H, g*g, Dh)`` (one row
    per hypothesis: the PyTorch decoder keeps one per image under ``shared``).

The grid has no padding (every image fills all ``g*g`` cells), so no mask is carried. A grid that does not divide
the CNN's feature map is pooled by a fixed matrix in the graph (:class:`_FixedPool`: the exporter has no adaptive
pooling to such sizes). Nothing here imports ``onnx``
or ``onnxruntime`` at module level (``core.engines.onnx`` imports them when exporting or loading).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from core.decoding.beam import DecoderState
from core.decoding.fast_paths import eval_mode
from core.engines.folder import EngineFolder
from core.engines.onnx import EngineNetwork, OnnxStepNetwork, export_graphs, flatten_state, load_graphs, unflatten_state
from core.errors import CheckpointError, ConfigError
from core.io.pretrained import is_hf_spec
from core.layers import AttentionalRNNDecoder
from tasks.captioning.decoder import TransformerCaptionDecoder
from tasks.captioning.encoder import ImageEncoder
from tasks.captioning.network import CaptionNetwork
from tasks.captioning.stored import StoredOptions

__all__ = ["RNN_ATTENTIONS", "OnnxCaptionNetwork", "load_onnx", "write_onnx"]

#: RNN decoder attentions whose graphs reproduce the PyTorch network (each is checked on export as well). Not
#: ``none`` and ``pooling``: with the Show-Attend-Tell order (the context joins the LSTM cell's input) the exporter
#: loses the rank of their context and cannot split the cell's gates ("unsafe_chunk, unknown dimension size").
RNN_ATTENTIONS = ("additive", "location", "dot", "scaled_dot", "general", "multihead")

#: the state parts the graphs carry, in the order of their tensors
PARTS = ("beams", "source", "cache")
#: the init graph's input
IMAGES = "images"


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
    grid features are one graph tensor, not two copies; the others change every step)."""
    _, named = flatten_state(tree, part, dedupe=part == "source")
    return [named[n] for n in _names(template)]


def _state_parts(network: CaptionNetwork, images: Tensor) -> dict[str, Any]:
    """The network's first state for ``images (N, 3, H, W)`` as the three parts the graphs carry."""
    state = network.init_state(network.encode(images))
    if isinstance(network.decoder, TransformerCaptionDecoder):
        # cross-attention keys/values: one row per image here (beam search expands `source` to the beams); fresh
        # empty caches (the decoder's layers share one tensor object); the mask is None (no padding in a grid)
        cache = [(k.clone(), v.clone()) for k, v in state.cache]
        return {"beams": None, "source": state.shared, "cache": cache}
    return {"beams": state.beams, "source": state.source, "cache": None}


class _Init(nn.Module):
    """``images (N, 3, H, W)`` -> the decoder's first state as a flat tuple of tensors (layout order).

    Args:
        network: the captioning network.
        templates: ``{part: template}`` of :func:`core.engines.onnx.flatten_state`.
    """

    def __init__(self, network: CaptionNetwork, templates: dict[str, Any]) -> None:
        super().__init__()
        self.network = network
        self.templates = templates

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        """The state tensors in layout order (``beams``, ``source``, ``cache``)."""
        parts = _state_parts(self.network, images)
        return tuple(t for part in PARTS for t in _flat(parts[part], self.templates[part], part))


class _Step(nn.Module):
    """``(tokens (N,), *state)`` -> ``(log_probs (N, V), *next beams, *next cache, attention (N, g*g))``.

    Args:
        network: the captioning network.
        templates: ``{part: template}`` (see :class:`_Init`).
    """

    def __init__(self, network: CaptionNetwork, templates: dict[str, Any]) -> None:
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
        dec = self.network.decoder
        if isinstance(dec, TransformerCaptionDecoder):
            k = cache[0][0]  # (N, H, t, Dh): t tokens decoded so far (a graph value: the cache axis is dynamic)
            # The position of this token as a tensor op, clamped as `step` clamps it: the decoder's own
            # `min(t, max_len - 1)` is a Python branch the tracer would fix at the traced length.
            pos = torch.arange(k.shape[2], k.shape[2] + 1, device=tokens.device).clamp(max=dec.max_len - 1)  # (1,)
            x = dec.embed(tokens)[:, None] * dec.d_model**0.5 + dec.pos(pos)[None]  # (N, 1, d)
            h, new, weights = dec.stack.step(x, DecoderState(shared=source, cache=cache), need_weights=True)
            # `dec.out` itself, not `step`'s cached W^T: the graph keeps one copy of the weight
            log_probs = torch.log_softmax(dec.out(h), dim=-1)  # (N, V)
            out = _flat(new.cache, self.templates["cache"], "cache")
        else:
            assert isinstance(dec, AttentionalRNNDecoder)
            # `_step` and the output layer rather than `step`, whose CPU fast path multiplies by a cached W^T (a
            # second copy of the weight in the graph) and writes its log-softmax in place
            feats, nb, weights = dec._step(dec.embedding(tokens), beams, source, True)  # (N, F)
            log_probs = torch.log_softmax(dec.out(dec.pre_out(feats)), dim=-1)  # (N, V)
            out = _flat(nb, self.templates["beams"], "beams")
        assert weights is not None  # asked for
        return (log_probs, *out, weights)


class _FixedPool(nn.Module):
    """``nn.AdaptiveAvgPool2d(g)`` over a feature map of a fixed ``(h, w)``, as one matrix product.

    The exporter has no ONNX form of adaptive pooling to a size that does not divide the input's (e.g. a 3x3 grid
    of a 2x2 or 4x4 map); the images' size is fixed, so the map's is, and each grid cell is the mean of a fixed
    window (the windows of ``AdaptiveAvgPool2d``: rows ``floor(i h / g)`` to ``ceil((i + 1) h / g)``).

    Args:
        h: the feature map's height.
        w: its width.
        g: the grid side.
    """

    weights: Tensor  # (g*g, h*w) the buffer registered in __init__

    def __init__(self, h: int, w: int, g: int) -> None:
        super().__init__()
        self.g = g

        def windows(n: int) -> Tensor:  # (g, n): row i averages positions floor(i n / g) .. ceil((i + 1) n / g) - 1
            m = torch.zeros(g, n)
            for i in range(g):
                lo, hi = (i * n) // g, -((-(i + 1) * n) // g)
                m[i, lo:hi] = 1.0 / (hi - lo)
            return m

        rows, cols = windows(h), windows(w)  # (g, h), (g, w)
        self.register_buffer("weights", torch.einsum("ih,jw->ijhw", rows, cols).reshape(g * g, h * w))

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, h, w)`` -> ``(B, C, g, g)``."""
        b, c = x.shape[0], x.shape[1]
        pooled = x.flatten(2) @ self.weights.T  # (B, C, h*w) @ (h*w, g*g) -> (B, C, g*g)
        return pooled.view(b, c, self.g, self.g)  # (B, C, g*g) -> (B, C, g, g)


@contextmanager
def _traceable(network: CaptionNetwork, image_size: int) -> Iterator[None]:
    """A CNN encoder's adaptive pooling swapped for :class:`_FixedPool` while exporting (restored after) when the
    grid does not divide the backbone's feature map."""
    encoder = network.encoder
    if not isinstance(encoder, ImageEncoder):
        yield
        return
    fmap = encoder.backbone(torch.zeros(1, 3, image_size, image_size))  # (1, C, h, w)
    h, w = int(fmap.shape[2]), int(fmap.shape[3])
    if h % encoder.grid_size == 0 and w % encoder.grid_size == 0:
        yield
        return
    old = encoder.pool
    encoder.pool = _FixedPool(h, w, encoder.grid_size)  # type: ignore[assignment]  # the same contract
    try:
        yield
    finally:
        encoder.pool = old


def _examples(image_size: int) -> list[tuple[Tensor]]:
    """Init inputs of different batch sizes (the first is traced): normalised-looking random images."""
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(n, 3, image_size, image_size, generator=g),) for n in (2, 3, 1)]


def _dynamic_axes(name: str) -> dict[int, str]:
    """The dynamic axes of a state tensor besides the batch: the self-attention caches' length ``(N, H, t, Dh)``
    (the grid's ``g*g`` cells are a fixed size)."""
    return {2: "t"} if name.startswith("cache.") else {}


def write_onnx(network: CaptionNetwork, options: StoredOptions, out_dir: Path, quantize: str) -> dict[str, Any]:
    """Write the init and step graphs of a captioning network into ``out_dir`` (created).

    Args:
        network: the network (on the CPU; its mode is restored afterwards).
        options: its options (``image_size``, the decoder and attention, recorded).
        out_dir: the graphs' folder (an engine export's ``onnx/``).
        quantize: ``"float32"``, or ``"int8"`` (dynamic quantization of the weights; the encoder's convolutions
            stay float32: ``core.engines.onnx.QUANTIZED_OPS``).

    Returns:
        Plain-data ``engine_info`` entries: graph files and digests, the state layout, opset, versions, the
        quantized node counts, the decoder, attention and feature grid side.

    Raises:
        ConfigError: an RNN attention not in :data:`RNN_ATTENTIONS`, an ``hf:`` backbone the exporter cannot
            trace faithfully, ``onnxruntime``/``onnx`` not
            installed, a network on another device, or graphs that do not reproduce the network.
    """
    if options.decoder == "rnn" and options.attention not in RNN_ATTENTIONS:
        raise ConfigError(
            f"ONNX export: the RNN decoder's attention {options.attention!r} is not supported (supported: "
            f"{', '.join(RNN_ATTENTIONS)}, and the Transformer decoder)"
        )
    if any(p.device.type != "cpu" for p in network.parameters()):
        raise ConfigError("ONNX export: move the network to the CPU first (network.cpu())")
    examples = _examples(options.image_size)
    with eval_mode(network), torch.no_grad(), _traceable(network, options.image_size):
        parts = _state_parts(network, *examples[0])
        templates: dict[str, Any] = {}
        names: dict[str, list[str]] = {}
        axes: dict[str, dict[int, str]] = {}
        for part in PARTS:
            templates[part], named = flatten_state(parts[part], part, dedupe=part == "source")
            names[part] = list(named)
            axes.update((n, _dynamic_axes(n)) for n in named)
        try:
            info = export_graphs(
                _Init(network, templates),
                _Step(network, templates),
                examples,
                (IMAGES,),
                names,
                axes,
                out_dir,
                quantize,
            )
        except (ConfigError, CheckpointError):
            raise
        except Exception as e:  # the exporter's own errors (an op it has no ONNX form for, ...)
            if not is_hf_spec(options.encoder):
                raise
            raise ConfigError(
                f"ONNX export: the {options.encoder} backbone does not export to ONNX ({type(e).__name__}: "
                f"{str(e)[:300]}); caption with the PyTorch model folder"
            ) from None
    info["decoder"] = options.decoder
    info["attention"] = options.attention if options.decoder == "rnn" else "multihead"
    info["grid_size"] = network.grid_size
    return info


class OnnxCaptionNetwork(EngineNetwork):
    """The captioning network on ONNX Runtime: ``init_state(images)`` and ``step`` of ``core.decoding.beam``.

    Unlike :class:`~tasks.captioning.network.CaptionNetwork`, the first state is computed from the images in one
    graph (encoder and decoder start), so there is no separate ``encode``.

    Args:
        graphs: the init and step graphs.
        grid_size: side ``g`` of the feature grid attended over.
    """

    engine = "onnxruntime"

    def __init__(self, graphs: OnnxStepNetwork, grid_size: int) -> None:
        super().__init__()
        self.graphs = graphs
        self.grid_size = grid_size

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Not a teacher-forcing network: decode with :meth:`init_state` and :meth:`step`."""
        raise TypeError("OnnxCaptionNetwork runs init_state/step only (an inference export has no teacher forcing)")

    def init_state(self, images: Tensor) -> DecoderState:
        """``images (B, 3, H, W)`` normalised -> the decoder's first state (``(B, ...)`` CPU tensors)."""
        return self.graphs.init_state(images.float())

    def step(
        self, tokens: Tensor, state: DecoderState, need_weights: bool = True
    ) -> tuple[Tensor, DecoderState, Tensor | None]:
        """One decoding step: ``tokens (N,)`` -> ``(log_probs (N, V), state, attention (N, g*g) or None)``."""
        return self.graphs.step(tokens, state, need_weights)


def load_onnx(folder: EngineFolder, options: StoredOptions, threads: int | None = None) -> OnnxCaptionNetwork:
    """The network of an ONNX export (its graphs under ``folder.path / "onnx"``).

    Args:
        folder: the export, as ``core.engines.folder.read_engine_folder`` checked it.
        options: its options (the decoder must be the graphs').
        threads: ONNX Runtime intra-op threads (None: its default).

    Raises:
        ConfigError: ``onnxruntime`` is not installed (names ``attn-suite[onnx]``).
        CheckpointError: graphs missing, unloadable, of another model or version, or changed after export.
    """
    info = folder.info
    if info.get("decoder") != options.decoder:
        raise CheckpointError(
            f"{folder.source}: graphs of a {info.get('decoder')!r} decoder, but its options say {options.decoder!r}"
        )
    grid = info.get("grid_size")
    if isinstance(grid, bool) or not isinstance(grid, int) or not 1 <= grid <= 64:
        raise CheckpointError(f"{folder.source}: engine_info 'grid_size' must be a grid side in [1, 64], got {grid!r}")
    return OnnxCaptionNetwork(load_graphs(folder.path / "onnx", info, threads, folder.source), grid)
