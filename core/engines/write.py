"""Writing an engine export (``core.engines.folder`` says what one holds and reads it).

The export is written with the rules of ``save_pretrained`` (``core.io.model_folder``): into a temporary folder
first, never over a user's files, the task's artifact files exactly as a PyTorch model folder holds them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from core.engines.folder import ENGINE_FORMAT
from core.errors import CheckpointError
from core.io.checks import FORMAT_VERSION, RebuildSpec
from core.io.folder_files import ENGINE_KEY, LIBRARY
from core.io.hparams import check_plain
from core.io.model_folder import check_destination, split_metadata, write_folder

__all__ = ["write_engine_folder"]


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
