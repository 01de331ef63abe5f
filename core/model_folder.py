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
initialisation). Reading goes through ``core.task_io.build_task_module``: validated plain data, shapes
checked on the meta device before anything is allocated, nothing named in a file imported.

:func:`load_task_model` is what every ``--ckpt`` option calls: a ``.ckpt`` file, an http(s) URL, a folder
or ``hf://ORG/NAME[@REVISION]`` (downloaded through huggingface_hub and its cache).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch

from core.checkpoint import FORMAT_VERSION
from core.errors import CheckpointError
from core.model_card import model_card

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "file_bytes",
    "file_value",
    "from_pretrained",
    "load_task_model",
    "push_to_hub",
    "resolve_hub",
    "save_pretrained",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
LIBRARY = "attn-suite"
HUB_PREFIX = "hf://"
_MAX_JSON_BYTES = 64 << 20  # a config or tokenizer file larger than this is not ours

M = TypeVar("M")


# ---------------------------------------------------------------------------------------------- writing
def _tokenizer_text(value: Any) -> str:
    """A tokenizer dict as its file: a subword tokenizer as HF ``tokenizer.json``, others as their dict."""
    if isinstance(value, dict) and value.get("type") == "subword" and isinstance(value.get("json"), str):
        return value["json"]
    return json.dumps(value, ensure_ascii=False, indent=1)


def file_value(data: bytes) -> dict[str, str]:
    """A file's bytes as plain metadata (``{"type": "file", "base64": ...}``): checkpoint-safe, and written
    back byte for byte into a model folder (``FOLDER_RAW_FILES``)."""
    import base64

    return {"type": "file", "base64": base64.b64encode(data).decode("ascii")}


def file_bytes(value: Any, what: str) -> bytes:
    """Inverse of :func:`file_value`; ``CheckpointError`` naming ``what`` for anything else."""
    import base64
    import binascii

    if not (isinstance(value, dict) and value.get("type") == "file" and isinstance(value.get("base64"), str)):
        raise CheckpointError(f"{what}: expected a stored file ({{'type': 'file', 'base64': ...}})")
    try:
        return base64.b64decode(value["base64"], validate=True)
    except (binascii.Error, ValueError) as err:
        raise CheckpointError(f"{what}: the stored file is not valid base64 ({err})") from None


def _split_metadata(
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
) -> Path:
    """Write ``model`` (a ``TaskCheckpointMixin`` module) as a model folder.

    The folder is assembled in a temporary sibling and renamed into place, so a crash never leaves a
    half-written folder under ``folder``; an existing folder is replaced.

    Args:
        model: the task module.
        folder: destination.
        metrics: scores for the model card (e.g. ``{"test/bleu": 97.1}``); defaults to those recorded in
            the checkpoint when it was saved.
        figure: an attention figure (PNG) to copy into the folder and show in the card.
        training: ``{"data": ..., "command": ...}`` for the card (defaults to what the checkpoint recorded).

    Returns:
        The folder path.
    """
    from safetensors.torch import save_file

    folder = Path(folder).expanduser()
    meta = {"task": model.TASK, "format": FORMAT_VERSION, **model.task_metadata()}
    rest, files = _split_metadata(meta, getattr(model, "FOLDER_FILES", {}), getattr(model, "FOLDER_RAW_FILES", {}))
    recorded = rest.pop("training", None)
    training = {**(recorded if isinstance(recorded, dict) else {}), **(training or {})}  # a record read from a file
    found = training.pop("metrics", None)
    metrics = dict(metrics if metrics is not None else found if isinstance(found, dict) else {})
    metrics = {
        str(k): float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }
    hparams = {k: v for k, v in dict(model.hparams).items() if not str(k).startswith("_")}
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
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.part-"))
    try:
        save_file(_state_for_safetensors(model), str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        (tmp / CONFIG_NAME).write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")
        for name, text in files.items():
            if isinstance(text, bytes):
                (tmp / name).write_bytes(text)
            else:
                (tmp / name).write_text(text, encoding="utf-8")
        figure_name = None
        if figure is not None and Path(figure).is_file():
            figure_name = "attention.png"
            shutil.copyfile(figure, tmp / figure_name)
        (tmp / "README.md").write_text(model_card(model, config, figure_name), encoding="utf-8")
        if folder.exists():
            old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.old-"))
            os.replace(folder, old / "x")
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


# ---------------------------------------------------------------------------------------------- reading
def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{what}: {path.name} is missing")
    if path.stat().st_size > _MAX_JSON_BYTES:
        raise CheckpointError(f"{what}: {path.name} is larger than {_MAX_JSON_BYTES >> 20} MB")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{what}: {path.name} is not valid JSON ({err})") from None


def _tokenizer_value(path: Path, what: str) -> Any:
    """Inverse of `_tokenizer_text`: a HF tokenizer.json becomes our subword dict, else the JSON as is."""
    value = _read_json(path, what)
    if isinstance(value, dict) and "type" not in value and "model" in value:
        return {"type": "subword", "json": path.read_text(encoding="utf-8")}
    return value


def _raw_value(path: Path, what: str) -> dict[str, str]:
    """A ``FOLDER_RAW_FILES`` file as its metadata value (:func:`file_value`)."""
    if not path.is_file() or path.stat().st_size > _MAX_JSON_BYTES:
        raise CheckpointError(f"{what}: {path.name} is not a file of at most {_MAX_JSON_BYTES >> 20} MB")
    return file_value(path.read_bytes())


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
    from core.task_io import build_task_module

    path = Path(folder).expanduser()
    what = f"model folder {path}"
    if not path.is_dir():
        raise CheckpointError(f"{what}: not a folder")
    config = _read_json(path / CONFIG_NAME, what)
    if not isinstance(config, dict) or config.get("library_name") != LIBRARY:
        raise CheckpointError(
            f"{what}: {CONFIG_NAME} is not an {LIBRARY} model config (no library_name "
            f"'{LIBRARY}'); a transformers model folder is loaded with --model.encoder / "
            f"--model.pretrained instead"
        )
    task = config.get("task")
    if task != cls.TASK:  # type: ignore[attr-defined]
        raise CheckpointError(f"{what} holds a {task!r} model, expected a {cls.TASK!r} model")  # type: ignore[attr-defined]
    if config.get("architecture") not in (None, cls.__name__):
        raise CheckpointError(f"{what} holds a {config.get('architecture')!r}, expected a {cls.__name__}")
    meta = config.get("metadata") or {}
    if not isinstance(meta, dict):
        raise CheckpointError(f"{what}: 'metadata' in {CONFIG_NAME} must be an object")
    meta = {**meta, "task": task, "format": config.get("format", 1)}
    raw = getattr(cls, "FOLDER_RAW_FILES", {})
    for dotted, name in [*getattr(cls, "FOLDER_FILES", {}).items(), *raw.items()]:
        if not (path / name).exists():
            continue
        head, _, tail = dotted.partition(".")
        value = _raw_value(path / name, what) if dotted in raw else _tokenizer_value(path / name, what)
        if tail:
            group = meta.setdefault(head, {})
            if not isinstance(group, dict):
                raise CheckpointError(f"{what}: metadata {head!r} must be an object")
            group[tail] = value
        else:
            meta[head] = value
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{what}: {WEIGHTS_NAME} is missing")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{what}: {WEIGHTS_NAME} is truncated or not a safetensors file ({err})") from None
    return build_task_module(
        cls,
        config.get("hyper_parameters"),
        meta,
        state,
        what,
        map_location=map_location,
        strict=strict,
        overrides=overrides,
    )


# ---------------------------------------------------------------------------------------------- the hub
def resolve_hub(spec: str) -> Path:
    """Local folder of ``hf://ORG/NAME[@REVISION]``, downloaded through huggingface_hub (and its cache).

    With ``HF_HUB_OFFLINE=1`` only the cache is used. Every failure is a ``CheckpointError`` naming the id.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    body = spec[len(HUB_PREFIX) :]
    repo_id, _, revision = body.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise CheckpointError(f"{spec}: expected hf://ORG/NAME or hf://ORG/NAME@REVISION")
    try:
        return Path(snapshot_download(repo_id, revision=revision or None, library_name=LIBRARY))
    except RevisionNotFoundError:
        raise CheckpointError(f"{spec}: revision {revision!r} not found in {repo_id}") from None
    except (RepositoryNotFoundError, GatedRepoError):
        raise CheckpointError(
            f"{spec}: repository {repo_id} not found, private or gated (log in with `hf auth login` if you have access)"
        ) from None
    except LocalEntryNotFoundError:
        raise CheckpointError(
            f"{spec}: not in the local Hugging Face cache and the hub cannot be reached "
            f"(offline, or HF_HUB_OFFLINE=1); download it once with a network, or pass a "
            f"local model folder"
        ) from None
    except HFValidationError as err:
        raise CheckpointError(f"{spec}: not a valid repository id ({err})") from None
    except (HfHubHTTPError, OSError) as err:
        raise CheckpointError(f"{spec}: download failed ({type(err).__name__}: {err})") from None


def push_to_hub(folder: str | os.PathLike[str], repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Upload a model folder to the Hugging Face Hub (creating the repository); returns its URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message="Upload attn-suite model")
    except (HfHubHTTPError, OSError, ValueError) as err:
        raise CheckpointError(f"push to {repo_id} failed ({type(err).__name__}: {err})") from None
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
    from core.checkpoint import _check_hash
    from core.task_io import load_task_module

    text = os.fspath(source)
    folder = resolve_hub(text) if text.startswith(HUB_PREFIX) else Path(text).expanduser()
    if folder.is_dir():
        if sha256 is not None and (folder / WEIGHTS_NAME).is_file():  # a folder's weights are what it pins
            _check_hash(folder / WEIGHTS_NAME, sha256, f"{text} ({WEIGHTS_NAME})")
        return from_pretrained(cls, folder, map_location=map_location, strict=strict, **overrides)
    return load_task_module(cls, text, map_location=map_location, strict=strict, sha256=sha256, **overrides)
