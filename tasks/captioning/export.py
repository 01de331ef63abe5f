"""``attn-caption export --format onnx``: a captioning model written for ONNX Runtime.

The model is read through the lean loader (:func:`tasks.captioning.inference.load_captioning`: no Lightning), its
network exported as graphs (:mod:`tasks.captioning.onnx_graphs`) and written with its vocabulary, image
preprocessing and options as an engine export (``core.engines.folder``), which ``Captioner.from_pretrained`` and
``attn-caption caption --ckpt`` load.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from core.cli.export import EngineExport
from core.engines.write import write_engine_folder
from tasks.captioning.inference import load_captioning
from tasks.captioning.onnx_graphs import write_onnx
from tasks.captioning.stored import CaptioningFiles

__all__ = ["ENGINE_EXPORTS", "export_onnx"]


def export_onnx(ckpt: str, out: str, quantize: str = "float32", overwrite: bool = False) -> Path:
    """Write ``ckpt`` as ONNX graphs (images to the first decoder state, and one decoding step) in ``out``.

    Raises:
        ConfigError: a network the graphs do not cover, or onnxruntime is not installed.
        CheckpointError: an unreadable model or a destination it may not write.
    """
    loaded = load_captioning(ckpt)
    # the options as plain JSON data (tuples as lists), what read_engine_folder validates again
    hparams: dict[str, Any] = json.loads(json.dumps(asdict(loaded.options)))
    payload = {"onnx": lambda path: write_onnx(loaded.network, loaded.options, path, quantize)}
    return write_engine_folder(
        out,
        CaptioningFiles,
        "onnxruntime",
        quantize,
        hparams,
        loaded.meta,
        {"exported_from": loaded.source},
        payload,
        f"attn-caption caption --ckpt {Path(out).name} image.png",
        overwrite,
    )


#: the ``--format`` choices of ``attn-caption export`` beside the PyTorch model folder
ENGINE_EXPORTS: dict[str, EngineExport] = {
    "onnx": EngineExport(
        ("float32", "int8"),
        "float32",
        export_onnx,
        "ONNX Runtime: an image-encoder/first-state graph and a one-step decoder graph (pip install "
        "'attn-suite[onnx]')",
    ),
}
