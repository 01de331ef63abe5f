"""What a model folder's plain files say, read without PyTorch: ``config.json``, the task's artifact files
(tokenizers, vocabularies) and ``hf://`` models fetched from the Hugging Face Hub.

``core.io.model_folder`` writes folders and reads their weights (PyTorch, safetensors); everything here is plain
data, so an engine export (``core.engines.folder``) is found and read without importing PyTorch: a CTranslate2
model starts in a fraction of a second.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import CheckpointError, UserError
from core.io.jsonio import MAX_JSON_BYTES, read_json

if TYPE_CHECKING:
    from core.io.checks import RebuildSpec

__all__ = [
    "CONFIG_NAME",
    "ENGINE_KEY",
    "HUB_PATTERNS",
    "HUB_PREFIX",
    "LIBRARY",
    "file_bytes",
    "file_value",
    "folder_engine",
    "read_folder_config",
    "read_folder_json",
    "resolve_hub",
    "transport_errors",
]

CONFIG_NAME = "config.json"
LIBRARY = "attn-suite"
HUB_PREFIX = "hf://"
ENGINE_KEY = "engine"  # config.json of an engine export: which engine runs it


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


def read_folder_json(path: Path, what: str) -> Any:
    """A folder's JSON file (``what`` names the folder), every failure a ``CheckpointError``."""
    if not path.is_file():
        raise CheckpointError(f"{what}: {path.name} is missing")
    try:
        return read_json(path, f"{what}: {path.name}")
    except CheckpointError:
        raise
    except UserError as err:  # too large, too deep, not JSON: a folder's file is a checkpoint problem
        raise CheckpointError(str(err)) from None


def _tokenizer_value(path: Path, what: str) -> Any:
    """Inverse of `_tokenizer_text`: a HF tokenizer.json becomes our subword dict, else the JSON as is."""
    value = read_folder_json(path, what)
    if isinstance(value, dict) and "type" not in value and "model" in value:
        return {"type": "subword", "json": path.read_text(encoding="utf-8")}
    return value


def _raw_value(path: Path, what: str) -> dict[str, str]:
    """A ``FOLDER_RAW_FILES`` file as its metadata value (:func:`file_value`)."""
    if not path.is_file() or path.stat().st_size > MAX_JSON_BYTES:
        raise CheckpointError(f"{what}: {path.name} is not a file of at most {MAX_JSON_BYTES >> 20} MB")
    return file_value(path.read_bytes())


def read_folder_config(
    spec: type[RebuildSpec], folder: str | os.PathLike[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A folder of ``spec``'s task (a model folder or an engine export): its ``config.json`` and its metadata with
    the artifact files (tokenizers, vocabularies) read in, their content not yet checked.

    Raises:
        CheckpointError: not a folder of this suite, another task's folder, or unreadable files.
    """
    path = Path(folder).expanduser()
    what = f"model folder {path}"
    if not path.is_dir():
        raise CheckpointError(f"{what}: not a folder")
    config = read_folder_json(path / CONFIG_NAME, what)
    if not isinstance(config, dict) or config.get("library_name") != LIBRARY:
        raise CheckpointError(
            f"{what}: {CONFIG_NAME} is not an {LIBRARY} model config (no library_name "
            f"'{LIBRARY}'); a transformers model folder is loaded with --model.encoder / "
            f"--model.pretrained instead"
        )
    task = config.get("task")
    if task != spec.TASK:
        raise CheckpointError(f"{what} holds a {task!r} model, expected a {spec.TASK!r} model")
    architecture = getattr(spec, "ARCHITECTURE", spec.__name__)
    if config.get("architecture") not in (None, architecture):
        raise CheckpointError(f"{what} holds a {config.get('architecture')!r}, expected a {architecture}")
    meta = config.get("metadata") or {}
    if not isinstance(meta, dict):
        raise CheckpointError(f"{what}: 'metadata' in {CONFIG_NAME} must be an object")
    meta = {**meta, "task": task, "format": config.get("format", 1)}
    listed = config.get("files")
    if listed is not None and not (isinstance(listed, list) and all(isinstance(n, str) for n in listed)):
        raise CheckpointError(f"{what}: 'files' in {CONFIG_NAME} must be a list of file names")
    raw = getattr(spec, "FOLDER_RAW_FILES", {})
    for dotted, name in [*getattr(spec, "FOLDER_FILES", {}).items(), *raw.items()]:
        # Only the files its config lists: a stray file of the same name (left by hand, or by an older
        # export) is not part of this model.
        if not (path / name).exists() or (listed is not None and name not in listed):
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
    return config, meta


def folder_engine(path: str | os.PathLike[str]) -> str | None:
    """The inference engine a folder was exported for (``config.json``'s ``engine``: ``"ctranslate2"``,
    ``"onnxruntime"``), or None for a PyTorch model folder and anything that is not a folder of this suite."""
    folder = Path(path).expanduser()
    if not (folder / CONFIG_NAME).is_file():
        return None
    try:
        config = read_json(folder / CONFIG_NAME, f"{folder / CONFIG_NAME}")
    except UserError:
        return None  # reading it as a model folder names the problem
    if not isinstance(config, dict) or config.get("library_name") != LIBRARY:
        return None
    engine = config.get(ENGINE_KEY)
    return engine if isinstance(engine, str) else None


# ---------------------------------------------------------------------------------------------- the hub
#: What a model folder can hold (config, weights, tokenizer files, card, figure): a repository's other files
#: (checkpoints of other formats, data, anything large) are never downloaded.
HUB_PATTERNS = ("*.json", "*.safetensors", "*.spm", "*.model", "*.txt", "README.md", "*.png")


def _check_hub_size(spec: str, repo_id: str, revision: str | None) -> None:
    """Refuse a repository whose files to download exceed ``ATTN_SUITE_MAX_DOWNLOAD_MB`` (asked of the hub
    before anything is downloaded). Offline, or when the hub cannot answer, ``snapshot_download`` decides and
    reports (cache only, not found, gated)."""
    import fnmatch

    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError

    from core.io.checkpoint import max_download_bytes

    if constants.HF_HUB_OFFLINE:
        return
    errors: tuple[type[BaseException], ...] = (HfHubHTTPError, OSError, ValueError, *transport_errors())
    try:
        info = HfApi().model_info(repo_id, revision=revision, files_metadata=True)
    except errors:
        return
    sizes = [
        int(f.size or 0)
        for f in info.siblings or []
        if any(fnmatch.fnmatch(f.rfilename.rsplit("/", 1)[-1], p) for p in HUB_PATTERNS)
    ]
    limit = max_download_bytes()
    if sum(sizes) > limit:
        raise CheckpointError(
            f"{spec}: its files take {sum(sizes) / 1e9:.1f} GB, more than the {limit / 1e9:.1f} GB allowed "
            f"(ATTN_SUITE_MAX_DOWNLOAD_MB); nothing was downloaded"
        )


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
    _check_hub_size(spec, repo_id, revision or None)
    download_errors: tuple[type[BaseException], ...] = (HfHubHTTPError, OSError, *transport_errors())
    try:
        return Path(
            snapshot_download(
                repo_id, revision=revision or None, allow_patterns=list(HUB_PATTERNS), library_name=LIBRARY
            )
        )
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
    except download_errors as err:
        raise CheckpointError(f"{spec}: download failed ({type(err).__name__}: {err})") from None


def transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client errors huggingface_hub lets through (unreachable host, reset connection): its client
    moved from requests to httpx to httpx2, so each one installed is named (fixed names, never read from a
    file)."""
    import importlib
    import importlib.util

    found: list[type[BaseException]] = []
    for module, name in (("requests", "RequestException"), ("httpx", "HTTPError"), ("httpx2", "HTTPError")):
        if importlib.util.find_spec(module) is not None:
            err = getattr(importlib.import_module(module), name, None)
            if isinstance(err, type) and issubclass(err, BaseException):
                found.append(err)
    return tuple(found)
