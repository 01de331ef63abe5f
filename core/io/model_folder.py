"""Model folders: the Hugging Face layout for a trained task model, written and read without pickle.

A folder holds::

    model.safetensors        the weights (safetensors: no code can run when it is read)
    config.json              task, format, architecture, the hyper-parameters it is rebuilt from, metadata
    tokenizer_*.json, vocab.json, units.json, preprocessor_config.json, ...
                             the task's tokenizers / vocabularies / front end, each in its own format
                             (a subword tokenizer is a HF ``tokenizers`` tokenizer.json; the files of a
                             pretrained model's own tokenizer, e.g. Marian's ``source.spm``, byte for byte)
    README.md                a model card: task, architecture, attention, data, command, metrics, figure
    attention.png            an attention figure, when one was given

``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` follow huggingface_hub's ``ModelHubMixin``
names, with one difference on purpose: loading is strict (a missing weight is an error, never a random
initialisation). Reading goes through ``core.io.rebuild.build_task_module``: validated plain data, shapes
checked on the meta device before anything is allocated, nothing named in a file imported.

:func:`load_task_model` is what every ``--ckpt`` option calls: a ``.ckpt`` file, an http(s) URL, a folder
or ``hf://ORG/NAME[@REVISION]`` (downloaded through huggingface_hub and its cache).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch

from core.errors import CheckpointError, UserError
from core.io.checks import FORMAT_VERSION, PROVENANCE_ATTR, RebuildSpec
from core.io.folder_files import (
    CONFIG_NAME,
    ENGINE_KEY,
    HUB_PREFIX,
    LIBRARY,
    file_bytes,
    read_folder_config,
    resolve_hub,
    transport_errors,
)
from core.io.jsonio import read_json
from core.io.model_card import model_card
from core.io.rebuild import RebuildableModule, StoredModel, build_task_module, read_checkpoint

__all__ = [
    "WEIGHTS_NAME",
    "check_destination",
    "from_pretrained",
    "load_task_model",
    "push_to_hub",
    "read_model_folder",
    "read_task_files",
    "save_pretrained",
    "split_metadata",
    "write_folder",
]

WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
FIGURE_NAME = "attention.png"
_MAX_FIGURE_BYTES = 16 << 20
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # a file name in a folder: no path, no dot file

M = TypeVar("M", bound=RebuildableModule)  # a task's module class


# ---------------------------------------------------------------------------------------------- writing
def _tokenizer_text(value: Any) -> str:
    """A tokenizer dict as its file: a subword tokenizer as HF ``tokenizer.json``, others as their dict."""
    if isinstance(value, dict) and value.get("type") == "subword" and isinstance(value.get("json"), str):
        return value["json"]
    return json.dumps(value, ensure_ascii=False, indent=1)


def split_metadata(
    meta: Mapping[str, Any], files: Mapping[str, str], raw: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], dict[str, str | bytes]]:
    """``(metadata left for config.json, {file name: text or bytes})`` for the task's ``FOLDER_FILES`` (and
    ``FOLDER_RAW_FILES``, written byte for byte)."""
    rest = {k: v for k, v in meta.items() if k not in ("task", "format")}
    out: dict[str, str | bytes] = {}
    entries = [(d, n, False) for d, n in files.items()] + [(d, n, True) for d, n in (raw or {}).items()]
    for dotted, name, is_raw in entries:
        head, _, tail = dotted.partition(".")
        if head not in rest:
            continue
        if tail:
            group = dict(rest[head])
            if tail in group:
                value = group.pop(tail)
                out[name] = file_bytes(value, f"metadata {dotted}") if is_raw else _tokenizer_text(value)
            rest[head] = group
            if not group:
                del rest[head]
        else:
            value = rest.pop(head)
            out[name] = file_bytes(value, f"metadata {dotted}") if is_raw else _tokenizer_text(value)
    return rest, out


def _state_for_safetensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as contiguous CPU tensors; tied weights are stored under each name (safetensors
    refuses tensors that share memory), so strict loading finds every key."""
    state: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for k, v in model.state_dict().items():
        t = v.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        state[k] = t.clone() if ptr in seen else t
        seen.add(ptr)
    return state


def save_pretrained(
    model: Any,
    folder: str | os.PathLike[str],
    metrics: Mapping[str, float] | None = None,
    figure: str | os.PathLike[str] | None = None,
    training: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` (a ``core.train.module.TaskModule``) as a model folder, never deleting a user's file.

    Where it may write (:func:`check_destination`): a new or empty folder, or an existing model folder of
    this suite, whose own files are replaced (files someone added beside them stay). A file, or a non-empty
    folder that is not a model folder, is refused; with ``overwrite=True`` the model's files are added to
    such a folder, but a file of the same name as one of them is still refused, never replaced. A new
    folder is assembled in a temporary sibling and renamed into place; an existing one gets each file by an
    atomic rename, ``config.json`` last.

    A model read from a checkpoint or a model folder keeps its provenance (:data:`PROVENANCE_ATTR`): the
    training record, the metrics and the attention figure it came with are written again unless given here.

    Args:
        model: the task module.
        folder: destination.
        metrics: scores for the model card (e.g. ``{"test/bleu": 97.1}``); defaults to those recorded with
            the model (its checkpoint or its folder).
        figure: an attention figure (PNG) to copy into the folder and show in the card; defaults to the
            figure of the folder the model was read from.
        training: ``{"data": ..., "command": ...}`` for the card (updates what was recorded with the model).
        overwrite: also write into a non-empty folder that is not a model folder (adding files only).

    Returns:
        The folder path.

    Raises:
        CheckpointError: a destination it may not write (named, with what to do), or an OS error while
            writing (the destination is left as it was, or with whole files only).
    """
    from safetensors.torch import save_file

    if not os.fspath(folder).strip():
        raise CheckpointError("the output folder is empty: name the model folder to write")
    folder = Path(os.path.abspath(Path(folder).expanduser()))  # "." and "a/.." get a real name
    owned, foreign = check_destination(folder, overwrite)
    meta = {"task": model.TASK, "format": FORMAT_VERSION, **model.task_metadata()}
    rest, files = split_metadata(meta, getattr(model, "FOLDER_FILES", {}), getattr(model, "FOLDER_RAW_FILES", {}))
    rest.pop("training", None)
    provenance = getattr(model, PROVENANCE_ATTR, None) or {}
    recorded = provenance.get("training")
    training = {**(recorded if isinstance(recorded, dict) else {}), **(training or {})}  # a record read from a file
    found = training.pop("metrics", None)
    metrics = dict(metrics if metrics is not None else found if isinstance(found, dict) else {})
    metrics = {
        str(k): float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }
    hparams = {k: v for k, v in dict(model.hparams).items() if not str(k).startswith("_")}
    figure_bytes = _figure_bytes(figure) if figure is not None else provenance.get("figure")
    config = {
        "library_name": LIBRARY,
        "task": model.TASK,
        "format": FORMAT_VERSION,
        "architecture": type(model).__name__,
        "hyper_parameters": hparams,
        "metadata": rest,
        "files": sorted(files),
        "training": training,
        "metrics": metrics,
    }
    figure_name = FIGURE_NAME if figure_bytes else None
    state = _state_for_safetensors(model)

    def fill(tmp: Path) -> None:
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        for name, text in files.items():
            if isinstance(text, bytes):
                (tmp / name).write_bytes(text)
            else:
                (tmp / name).write_text(text, encoding="utf-8")
        if figure_bytes:
            (tmp / FIGURE_NAME).write_bytes(figure_bytes)

    return write_folder(folder, config, model_card(model, config, figure_name), fill, owned, foreign)


def write_folder(
    folder: Path,
    config: Mapping[str, Any],
    card: str,
    fill: Callable[[Path], None],
    owned: set[str],
    foreign: set[str],
) -> Path:
    """Write a folder of this suite: ``fill(tmp)`` writes its files into a temporary sibling, then the card and
    ``config.json`` are added and everything is moved into ``folder`` (see :func:`save_pretrained`).

    Args:
        folder: the destination, absolute, already checked by :func:`check_destination`.
        config: the ``config.json`` content; its ``files`` lists the names ``fill`` writes beyond the standard
            ones (weights, card, figure), so a later export knows them as its own.
        card: the ``README.md`` model card.
        fill: writes the folder's files (and sub-folders) into the directory it is given.
        owned: the names an earlier export wrote there (replaced, or removed when not written again).
        foreign: every other name there (never touched: a clash is refused).

    Raises:
        CheckpointError: a clash with a file of the user's, or an OS error while writing (the destination is
            left as it was, or with whole files only).
    """
    names = {WEIGHTS_NAME, CONFIG_NAME, CARD_NAME, FIGURE_NAME, *config.get("files", [])}
    clash = sorted(names & foreign)
    if clash:  # a file of the user's with one of our names: never replaced
        raise CheckpointError(
            f"{folder} already holds {', '.join(clash)}, not written by an attn-suite export; refusing to "
            f"replace {'it' if len(clash) == 1 else 'them'} (even with overwrite): choose an empty or new folder"
        )
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        build_in = folder if folder.is_dir() else folder.parent
        tmp = Path(tempfile.mkdtemp(dir=build_in, prefix=".attn-export-"))
    except OSError as err:
        raise CheckpointError(f"cannot write the model folder {folder}: {err.strerror or err}") from None
    try:
        fill(tmp)
        (tmp / CARD_NAME).write_text(card, encoding="utf-8")
        (tmp / CONFIG_NAME).write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")
        if build_in == folder:
            _move_into(tmp, folder, owned, stale=owned - set(os.listdir(tmp)))
        else:
            os.replace(tmp, folder)  # a new folder appears whole or not at all
    except OSError as err:
        raise CheckpointError(f"cannot write the model folder {folder}: {err.strerror or err}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def check_destination(folder: Path, overwrite: bool) -> tuple[set[str], set[str]]:
    """Whether ``folder`` may receive a model folder (see :func:`save_pretrained`), and what is in it.

    Returns:
        ``(owned, foreign)``: the files an earlier export wrote there (replaced, or removed when this
        export does not write them again) and every other name there (never touched).

    Raises:
        CheckpointError: a file, a path below a file, or a non-empty foreign folder without ``overwrite``.
    """
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(
            f"{folder} is a file, not a folder; a model is written as a folder: choose another output path "
            f"(the file is never replaced, even with overwrite)"
        )
    if not folder.is_dir():
        for parent in folder.parents:  # "below a file": name the file instead of an OS error
            if parent.exists() and not parent.is_dir():
                raise CheckpointError(f"cannot write the model folder {folder}: {parent} is a file, not a folder")
        return set(), set()
    try:
        names = {n for n in os.listdir(folder) if not n.startswith(".attn-export-")}
    except OSError as err:
        raise CheckpointError(f"cannot read the output folder {folder}: {err.strerror or err}") from None
    written = _own_files(folder) if names else set()
    if written is None and not overwrite:
        shown = ", ".join(sorted(names)[:3]) + (", ..." if len(names) > 3 else "")
        raise CheckpointError(
            f"{folder} is not empty and is not an attn-suite model folder (it holds {shown}); refusing to "
            f"write into it: choose a new or empty folder, or pass --overwrite to add the model's files beside "
            f"what is there (nothing there is deleted)"
        )
    owned = (written or set()) & names
    return owned, names - owned


def _own_files(folder: Path) -> set[str] | None:
    """The files an earlier export wrote into ``folder``, or ``None`` if it is not one of our model folders."""
    try:
        config = read_json(folder / CONFIG_NAME, f"{folder / CONFIG_NAME}")
    except UserError:
        return None
    if not isinstance(config, dict) or config.get("library_name") != LIBRARY:
        return None
    listed = config.get("files")
    listed = [n for n in listed if isinstance(n, str) and _PLAIN_NAME.fullmatch(n)] if isinstance(listed, list) else []
    return {WEIGHTS_NAME, CONFIG_NAME, CARD_NAME, FIGURE_NAME, *listed}


def _move_into(tmp: Path, folder: Path, owned: set[str], stale: set[str]) -> None:
    """Rename each new file from ``tmp`` into ``folder`` (``config.json`` last), then drop ``stale`` files
    that an earlier export of this folder wrote and this one does not.

    A sub-folder an earlier export wrote (an engine's model, e.g. ``ctranslate2/``) is renamed aside into ``tmp``
    (deleted with it) before the new one takes its name; any other folder in the way is refused.
    """
    names = sorted(os.listdir(tmp), key=lambda n: n == CONFIG_NAME)
    for name in names:
        target = folder / name
        if target.is_dir() and not target.is_symlink():
            if name not in owned:
                raise CheckpointError(f"cannot write {target}: a folder of that name is in the way")
            os.replace(target, tmp / f".old-{name}")
        os.replace(tmp / name, target)
    for name in stale:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _figure_bytes(figure: str | os.PathLike[str]) -> bytes:
    path = Path(figure)
    if not path.is_file():
        raise CheckpointError(f"figure {path}: file not found")
    data = path.read_bytes()
    if not data.startswith(_PNG_MAGIC):
        raise CheckpointError(f"figure {path}: not a PNG image")
    return data


# ---------------------------------------------------------------------------------------------- reading
def read_model_folder(spec: type[RebuildSpec], folder: str | os.PathLike[str]) -> StoredModel:
    """A model folder of ``spec``'s task read without pickle: its config, artifact files and weights, their content
    not yet checked (``core.io.checks.checked_parts`` does that).

    Raises:
        CheckpointError: not a model folder, another task's folder, an engine export, or unreadable files.
    """
    path = Path(folder).expanduser()
    what = f"model folder {path}"
    config, meta = read_folder_config(spec, path)
    engine = config.get(ENGINE_KEY)
    if engine is not None:
        raise CheckpointError(
            f"{what} is an export for the {engine} inference engine: it translates, captions or transcribes "
            f"(the task's inference subcommand, or its lean loader's from_pretrained) but cannot be trained, "
            f"evaluated or exported again; use the PyTorch model folder or checkpoint it was exported from"
        )
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{what}: {WEIGHTS_NAME} is missing")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{what}: {WEIGHTS_NAME} is truncated or not a safetensors file ({err})") from None
    return StoredModel(config.get("hyper_parameters"), meta, state, what, _folder_provenance(path, config))


def read_task_files(spec: type[RebuildSpec], source: str | os.PathLike[str], sha256: str | None = None) -> StoredModel:
    """What a ``--ckpt`` value holds: a ``.ckpt`` file, an http(s) URL, a model folder or ``hf://...``.

    Raises:
        CheckpointError: anything unreadable, with a message naming the source.
    """
    from core.io.checkpoint import _check_hash

    text = os.fspath(source)
    folder = resolve_hub(text) if text.startswith(HUB_PREFIX) else Path(text).expanduser()
    if folder.is_dir():
        if sha256 is not None and (folder / WEIGHTS_NAME).is_file():  # a folder's weights are what it pins
            _check_hash(folder / WEIGHTS_NAME, sha256, f"{text} ({WEIGHTS_NAME})")
        return read_model_folder(spec, folder)
    return read_checkpoint(spec, text, sha256)


def from_pretrained(
    cls: type[M],
    folder: str | os.PathLike[str],
    map_location: str | torch.device | None = "cpu",
    strict: bool = True,
    **overrides: Any,
) -> M:
    """Rebuild a task module from a model folder (no pickle; validated; strict by default).

    Raises:
        CheckpointError: not a model folder, another task's folder, bad files, or weights that do not fit.
    """
    return _build(cls, read_model_folder(cls, folder), map_location, strict, overrides)


def _build(
    cls: type[M],
    stored: StoredModel,
    map_location: str | torch.device | None,
    strict: bool,
    overrides: Mapping[str, Any],
) -> M:
    model = build_task_module(
        cls,
        stored.hparams,
        stored.meta,
        stored.state,
        stored.source,
        map_location=map_location,
        strict=strict,
        overrides=overrides,
    )
    if stored.provenance is not None:
        setattr(model, PROVENANCE_ATTR, stored.provenance)
    return model


def _folder_provenance(path: Path, config: Mapping[str, Any]) -> dict[str, Any]:
    """The training record, metrics and figure a model folder holds (plain data; kept when re-exported)."""
    training = config.get("training")
    training = dict(training) if isinstance(training, dict) else {}
    metrics = config.get("metrics")
    if isinstance(metrics, dict):
        training["metrics"] = metrics
    figure = path / FIGURE_NAME
    data = None
    if figure.is_file() and not figure.is_symlink() and figure.stat().st_size <= _MAX_FIGURE_BYTES:
        data = figure.read_bytes()
        data = data if data.startswith(_PNG_MAGIC) else None
    return {"training": training, "figure": data}


# ---------------------------------------------------------------------------------------------- the hub
def push_to_hub(folder: str | os.PathLike[str], repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Upload a model folder to the Hugging Face Hub (creating the repository); returns its URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    own = _own_files(Path(folder))
    if own is None:
        raise CheckpointError(f"push to {repo_id}: {folder} is not an attn-suite model folder (export it first)")
    # Only the model's own files: anything else a user keeps in the folder stays private.
    files = sorted(n for n in own if (Path(folder) / n).is_file())
    api = HfApi(token=token)
    push_errors: tuple[type[BaseException], ...] = (HfHubHTTPError, OSError, ValueError, *transport_errors())
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, allow_patterns=files, commit_message="Upload attn-suite model"
        )
    except push_errors as err:
        raise CheckpointError(
            f"push of {folder} to {repo_id} failed ({type(err).__name__}: {err}); the model folder is written "
            f"and can be pushed later"
        ) from None
    return str(url)


def load_task_model(
    cls: type[M],
    source: str | os.PathLike[str],
    map_location: str | torch.device | None = "cpu",
    sha256: str | None = None,
    strict: bool = True,
    **overrides: Any,
) -> M:
    """The module behind a ``--ckpt`` value: a ``.ckpt`` file, an http(s) URL, a model folder or ``hf://...``.

    Raises:
        CheckpointError: anything unusable, with a message naming the source.
    """
    return _build(cls, read_task_files(cls, source, sha256), map_location, strict, overrides)
