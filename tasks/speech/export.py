"""``attn-asr export --format onnx``: a speech model written for ONNX Runtime.

The model is read through the lean loader (:func:`tasks.speech.inference.load_speech`: no Lightning), its network
exported as graphs (:mod:`tasks.speech.onnx_graphs`) and written with its units, front end, chunking range and
options as an engine export (``core.engines.folder``), which ``Transcriber.from_pretrained`` and
``attn-asr transcribe --ckpt`` load.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from core.cli.export import EngineExport
from core.engines.write import write_engine_folder
from tasks.speech.inference import load_speech
from tasks.speech.onnx_graphs import write_onnx
from tasks.speech.stored import SpeechFiles

__all__ = ["ENGINE_EXPORTS", "export_onnx"]


def export_onnx(ckpt: str, out: str, quantize: str = "float32", overwrite: bool = False) -> Path:
    """Write ``ckpt`` as ONNX graphs (the encoder with its CTC head, the decoder's start and one step) in ``out``.

    Raises:
        ConfigError: an encoder the graphs do not reproduce, or onnxruntime is not installed.
        CheckpointError: an unreadable model or a destination it may not write.
    """
    loaded = load_speech(ckpt)
    hparams: dict[str, Any] = json.loads(json.dumps(asdict(loaded.options)))  # plain JSON data, validated on reading
    payload = {"onnx": lambda path: write_onnx(loaded.network, loaded.options, path, quantize)}
    return write_engine_folder(
        out,
        SpeechFiles,
        "onnxruntime",
        quantize,
        hparams,
        loaded.meta,
        {"exported_from": loaded.source},
        payload,
        f"attn-asr transcribe --ckpt {Path(out).name} audio.wav",
        overwrite,
    )


#: the ``--format`` choices of ``attn-asr export`` beside the PyTorch model folder
ENGINE_EXPORTS: dict[str, EngineExport] = {
    "onnx": EngineExport(
        ("float32", "int8"),
        "float32",
        export_onnx,
        "ONNX Runtime: an encoder graph (log-mel features to encoder states and CTC log-probabilities) and the "
        "attention decoder's first-state and one-step graphs (pip install 'attn-suite[onnx]')",
    ),
}
