"""``attn-translate export --format ctranslate2|onnx``: a translation model written for an inference engine.

The model is read through the lean loader (:func:`tasks.translation.loading.load_translation`: no Lightning),
its network converted by the engine's code (:mod:`tasks.translation.ct2`, :mod:`tasks.translation.onnx_graphs`)
and written with its tokenizers, training words and decoding options as an engine export
(``core.engines.folder``), which ``Translator.from_pretrained`` and ``attn-translate translate --ckpt`` load.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from core.cli.export import EngineExport
from core.engines.write import write_engine_folder
from core.errors import ConfigError
from tasks.translation.ct2 import QUANTIZE
from tasks.translation.ct2_spec import write_ctranslate2
from tasks.translation.loading import LoadedTranslation, load_translation
from tasks.translation.onnx_graphs import write_onnx
from tasks.translation.options import TranslationFiles

__all__ = ["ENGINE_EXPORTS", "export_ctranslate2", "export_onnx"]

#: what an export keeps of a checkpoint's metadata (the weights go to the engine; the rest is training history)
_KEPT = ("tokenizers", "known_words", "pretrained", "hf_tokenizer")


def _write(loaded: LoadedTranslation, out: str, engine: str, quantize: str, payload: dict, overwrite: bool) -> Path:
    meta = {k: v for k, v in loaded.meta.items() if k in _KEPT}
    return write_engine_folder(
        out,
        TranslationFiles,
        engine,
        quantize,
        asdict(loaded.options),
        meta,
        {"exported_from": loaded.source},
        payload,
        f'attn-translate translate --ckpt {Path(out).name} "I love you"',
        overwrite,
    )


def export_ctranslate2(ckpt: str, out: str, quantize: str = "int8", overwrite: bool = False) -> Path:
    """Write ``ckpt`` (a Transformer) as a CTranslate2 export in ``out``.

    Raises:
        ConfigError: not a Transformer (RNN models export to ONNX), or CTranslate2 is not installed.
        CheckpointError: an unreadable model or a destination it may not write.
    """
    loaded = load_translation(ckpt)
    if loaded.options.arch == "marian":
        raise ConfigError(
            f"{loaded.source} is a fine-tuned Marian model: CTranslate2's own converter takes those "
            f"(ct2-transformers-converter on a transformers folder); this export takes our Transformer"
        )
    src, tgt = loaded.tokenizers
    payload = {"ctranslate2": lambda path: write_ctranslate2(loaded.network, src, tgt, path, quantize)}
    return _write(loaded, out, "ctranslate2", quantize, payload, overwrite)


def export_onnx(ckpt: str, out: str, quantize: str = "float32", overwrite: bool = False) -> Path:
    """Write ``ckpt`` as ONNX graphs (an encoder and one decoding step) in ``out``.

    Raises:
        ConfigError: a network the graphs do not cover, or onnxruntime is not installed.
        CheckpointError: an unreadable model or a destination it may not write.
    """
    loaded = load_translation(ckpt)
    payload = {"onnx": lambda path: write_onnx(loaded.network, loaded.options, path, quantize)}
    return _write(loaded, out, "onnxruntime", quantize, payload, overwrite)


#: the ``--format`` choices of ``attn-translate export`` beside the PyTorch model folder
ENGINE_EXPORTS: dict[str, EngineExport] = {
    "ctranslate2": EngineExport(
        QUANTIZE,
        "int8",
        export_ctranslate2,
        "CTranslate2, for Transformer models (pip install 'attn-suite[ctranslate2]')",
    ),
    "onnx": EngineExport(
        ("float32", "int8"),
        "float32",
        export_onnx,
        "ONNX Runtime: an encoder and a one-step decoder graph (pip install 'attn-suite[onnx]')",
    ),
}
