"""Engine exports: a model folder whose network runs on an inference engine (CTranslate2, ONNX Runtime).

An export is a folder of this suite (``core.io.model_folder``) with an ``engine`` in its ``config.json``::

    config.json          library_name, task, architecture, engine, engine_format, quantize, the decoding options
    tokenizer_*.json ... the task's artifact files, exactly as in its PyTorch model folder
    ctranslate2/ or *.onnx
                         what the engine loads (written by the engine's own converter or exporter)
    README.md            a card saying what it is and how to run it

It holds what inference needs and nothing more: it cannot be trained or exported again (reading it as a model
folder says so). :func:`read_engine_folder` checks what a loader needs before the engine sees a byte: the
task, the engine, the export format's version and the options, validated as plain data like a checkpoint's.
Reading needs no PyTorch (an engine that runs without it starts in a fraction of a second);
:func:`core.engines.write.write_engine_folder` writes an export.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from core.errors import CheckpointError, ConfigError
from core.io.checks import RebuildSpec, checked_parts
from core.io.folder_files import ENGINE_KEY, read_folder_config
from core.io.hparams import check_plain

__all__ = [
    "ENGINE_FORMAT",
    "EXTRAS",
    "EngineFolder",
    "read_engine_folder",
    "require",
]

#: version of the engine-export layout; a loader refuses other versions (an export from another release)
ENGINE_FORMAT = 1
#: engine name -> (Python module, the attn-suite extra that installs it)
EXTRAS: dict[str, tuple[str, str]] = {
    "ctranslate2": ("ctranslate2", "ctranslate2"),
    "onnxruntime": ("onnxruntime", "onnx"),
}


def require(engine: str, purpose: str) -> ModuleType:
    """Import an engine's optional package, or say how to install it.

    Args:
        engine: a key of :data:`EXTRAS`.
        purpose: what needs it, for the message (e.g. ``"exporting to CTranslate2"``).

    Raises:
        ConfigError: the package is not installed (names the extra that installs it).
    """
    module, extra = EXTRAS[engine]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"{purpose} needs the optional package {module!r}, which is not installed: "
            f"pip install 'attn-suite[{extra}]'"
        ) from None


@dataclass
class EngineFolder:
    """An engine export as read by :func:`read_engine_folder` (options validated, artifacts not yet rebuilt).

    Attributes:
        path: the folder.
        engine: ``"ctranslate2"`` or ``"onnxruntime"``.
        quantize: the weights' type as exported (``"float32"``, ``"int8"``, ...).
        hparams: the network and decoding options, validated against the loader's options class.
        meta: the task's artifacts (tokenizers, vocabularies) as its model folders store them.
        info: the engine's own entries of ``config.json`` (graph names, state layout, ...), plain data.
        source: ``"model folder PATH"``, for messages.
    """

    path: Path
    engine: str
    quantize: str
    hparams: dict[str, Any]
    meta: dict[str, Any]
    info: dict[str, Any]
    source: str


def read_engine_folder(
    spec: type[RebuildSpec], path: str | os.PathLike[str], options: type, engines: tuple[str, ...]
) -> EngineFolder:
    """An engine export of ``spec``'s task, checked before any engine reads it.

    Args:
        spec: the task's file rules (task name, bounds, artifact files).
        path: the folder.
        options: the class whose constructor types the options (the lean loader's options class).
        engines: the engines this loader runs.

    Raises:
        CheckpointError: not an export of this task, an engine this loader does not run, an export of another
            layout version, or options that are not plain, typed and in bounds (each names the folder).
    """
    folder = Path(path).expanduser()
    config, meta = read_folder_config(spec, folder)
    source = f"model folder {folder}"
    engine = config.get(ENGINE_KEY)
    if engine not in engines:
        raise CheckpointError(
            f"{source} is an export for {engine!r}; this loader runs {' or '.join(map(repr, engines))} exports "
            f"(and PyTorch model folders)"
        )
    version = config.get("engine_format")
    if version != ENGINE_FORMAT:
        raise CheckpointError(
            f"{source}: an export of layout version {version!r}, this release reads version {ENGINE_FORMAT}; "
            f"export it again from its PyTorch model folder with this release"
        )
    info = config.get("engine_info") or {}
    if not isinstance(info, dict):
        raise CheckpointError(f"{source}: 'engine_info' in config.json must be an object")
    check_plain(info, f"{source}: engine_info")
    quantize = config.get("quantize")
    if not isinstance(quantize, str):
        raise CheckpointError(f"{source}: 'quantize' in config.json must be a string")
    hp, meta, _ = checked_parts(spec, config.get("hyper_parameters"), meta, {}, source, options, warn_unknown=False)
    return EngineFolder(folder, str(engine), quantize, hp, meta, info, source)
