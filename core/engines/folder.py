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
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from core.errors import CheckpointError, ConfigError
from core.io.checkpoint import FORMAT_VERSION
from core.io.hparams import check_plain
from core.io.model_folder import (
    ENGINE_KEY,
    LIBRARY,
    check_destination,
    read_folder_config,
    split_metadata,
    write_folder,
)
from core.io.rebuild import RebuildSpec, checked_parts

__all__ = [
    "ENGINE_FORMAT",
    "EXTRAS",
    "EngineFolder",
    "read_engine_folder",
    "require",
    "write_engine_folder",
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


def _card(task: str, engine: str, quantize: str, command: str) -> str:
    return (
        f"---\nlibrary_name: {LIBRARY}\ntags:\n- {task}\n- {engine}\n---\n\n"
        f"# {task} model for {engine} ({quantize})\n\n"
        f"An inference-only export of an {LIBRARY} {task} model: the network runs on {engine}, the tokenizers and "
        f"decoding options are those of the PyTorch model it was exported from. It cannot be trained further; "
        f"keep the PyTorch model folder for that.\n\n"
        f"```bash\n{command}\n```\n"
    )


def write_engine_folder(
    out: str | os.PathLike[str],
    spec: type[RebuildSpec],
    engine: str,
    quantize: str,
    hparams: Mapping[str, Any],
    meta: Mapping[str, Any],
    info: Mapping[str, Any],
    payload: Mapping[str, Callable[[Path], Mapping[str, Any] | None]],
    command: str,
    overwrite: bool = False,
) -> Path:
    """Write an engine export, with the same rules as ``save_pretrained`` (never deleting a user's file).

    Args:
        out: the folder: new, empty, or an earlier export (its files are replaced).
        spec: the task's file rules (its ``FOLDER_FILES`` become the artifact files).
        engine: the engine's name (a key of :data:`EXTRAS`).
        quantize: the weights' type (recorded, and shown in the card).
        hparams: the options the loader validates (plain data).
        meta: the task's artifacts as its checkpoints store them (tokenizers, ...).
        info: the engine's own entries (plain data).
        payload: ``{file or sub-folder name: write(path)}``: what the engine loads; a writer may return more
            plain-data ``engine_info`` entries (e.g. its graphs' input names), recorded in ``config.json``.
        command: how to run it, for the card.
        overwrite: also write into a non-empty folder that is not one of ours (adding files only).

    Raises:
        CheckpointError: a destination it may not write, or an OS error while writing.
    """
    if not os.fspath(out).strip():
        raise CheckpointError("the output folder is empty: name the folder to write")
    check_plain(dict(hparams), "hyper-parameters")
    check_plain(dict(info), "engine_info")
    folder = Path(os.path.abspath(Path(out).expanduser()))
    owned, foreign = check_destination(folder, overwrite)
    rest, files = split_metadata(
        {"task": spec.TASK, **meta}, getattr(spec, "FOLDER_FILES", {}), getattr(spec, "FOLDER_RAW_FILES", {})
    )
    config: dict[str, Any] = {
        "library_name": LIBRARY,
        "task": spec.TASK,
        "format": FORMAT_VERSION,
        "architecture": getattr(spec, "ARCHITECTURE", spec.__name__),
        ENGINE_KEY: engine,
        "engine_format": ENGINE_FORMAT,
        "quantize": quantize,
        "engine_info": dict(info),
        "hyper_parameters": dict(hparams),
        "metadata": rest,
        "files": sorted({*files, *payload}),
    }

    def fill(tmp: Path) -> None:
        for name, text in files.items():
            if isinstance(text, bytes):
                (tmp / name).write_bytes(text)
            else:
                (tmp / name).write_text(text, encoding="utf-8")
        for name, write in payload.items():
            more = write(tmp / name)
            if more:
                check_plain(dict(more), "engine_info")
                config["engine_info"].update(more)

    return write_folder(folder, config, _card(spec.TASK, engine, quantize, command), fill, owned, foreign)
