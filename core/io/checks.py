"""A stored model's plain data checked before anything is built: metadata, format version, hyper-parameters.

Everything here is plain Python (no PyTorch), so an export that runs on an engine without PyTorch
(``attn-translate export --format ctranslate2``) is read with exactly the checks of a checkpoint or model
folder, and starts in a fraction of a second. ``core.io.rebuild`` adds what needs PyTorch: the weights' shapes
on the ``meta`` device, then the weights themselves.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol, TypeVar

from core.errors import CheckpointError, UserError
from core.io.hparams import check_plain, validate_hparams

__all__ = [
    "FORMAT_VERSION",
    "META_KEY",
    "PROVENANCE_ATTR",
    "RebuildSpec",
    "check_sha256_arg",
    "checked_call",
    "checked_parts",
    "format_version",
]

#: the key of a checkpoint's ``attn_suite`` metadata (``{"task": ..., "format": ..., ...}``)
META_KEY = "attn_suite"
#: The attribute where a model loaded from a checkpoint or a model folder keeps how it was made
#: (``{"training": {...}, "figure": PNG bytes or None}``), so that exporting it again keeps its training
#: record, metrics and attention figure.
PROVENANCE_ATTR = "provenance"
FORMAT_VERSION = 2  # 2: one vocabulary of hyper-parameter names, shared decoder layers (1 still loads)

T = TypeVar("T")


def check_sha256_arg(sha256: str | None) -> str | None:
    """``sha256`` lower-cased, or a ``CheckpointError`` unless it is 8 to 64 hex digits (an empty or tiny
    prefix would match almost any file, silently turning the check off)."""
    if sha256 is None:
        return None
    if not re.fullmatch(r"[0-9a-fA-F]{8,64}", sha256):
        raise CheckpointError(f"--sha256 {sha256!r}: expected 8 to 64 hexadecimal digits of the file's SHA-256")
    return sha256.lower()


class RebuildSpec(Protocol):
    """What reading a task's file needs: its task name, the bounds and old names of its options, the upgrades of
    earlier formats. A task's module class has all of it; so may a plain class of a lean loader that builds only
    the network (e.g. ``tasks.translation.options.TranslationFiles``), which then also names the
    ``ARCHITECTURE`` its model folders record (a module class's own name otherwise)."""

    TASK: ClassVar[str]
    HPARAM_RENAMES: ClassVar[Mapping[str, str]]

    @classmethod
    def hparam_bounds(cls) -> dict[str, tuple[float, float]]: ...

    @classmethod
    def upgrade_hparams(cls, hparams: dict[str, Any], version: int) -> dict[str, Any]: ...

    @classmethod
    def upgrade_state_dict(cls, state: dict[str, Any], version: int) -> dict[str, Any]: ...

    @classmethod
    def hparams_from_metadata(cls, meta: Mapping[str, Any], source: str) -> dict[str, Any]: ...


def format_version(meta: Mapping[str, Any], source: str) -> int:
    """The file's format version (``meta["format"]``, 1 when absent), refused when newer than this release's."""
    version = meta.get("format", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{source}: metadata 'format' = {version!r}, expected a positive integer")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{source} was written by a newer attn-suite (checkpoint format {version}; this "
            f"version reads formats 1 to {FORMAT_VERSION}): upgrade attn-suite to load it"
        )
    return version


def checked_call(make: Callable[[], T], source: str, what: str) -> T:
    """``make()``, its errors a ``CheckpointError`` naming ``source`` (the file's options did not build it).

    Args:
        make: builds something from the file's (validated) options and metadata.
        source: the file, for messages.
        what: what is built (``"a TranslationModule"``), for messages.
    """
    try:
        return make()
    except CheckpointError:
        raise
    except UserError as err:  # e.g. a ConfigError of the constructor: an option out of its range
        raise CheckpointError(f"{source}: its hyper-parameters do not build {what}: {err}") from None
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as err:
        raise CheckpointError(
            f"{source}: its hyper-parameters do not build {what} ({type(err).__name__}: {err})"
        ) from None


def checked_parts(
    spec: type[RebuildSpec],
    hparams: Any,
    meta: Any,
    state: Any,
    source: str,
    options: type | None = None,
    warn_unknown: bool = True,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A file's hyper-parameters, metadata and weights, checked as plain data and upgraded to today's names.

    Args:
        spec: the task's module class, or a lean loader's spec (:class:`RebuildSpec`).
        hparams: the file's hyper-parameters (validated against ``options``' signature, bounded by the spec's).
        meta: the file's ``attn_suite`` metadata.
        state: the file's state dict (name -> tensor), not yet compared with any model.
        source: the file, for messages.
        options: the class whose constructor types the hyper-parameters (default ``spec``): a lean loader
            passes its network's options class, which takes a subset of the module's.
        warn_unknown: warn about hyper-parameters ``options`` does not take (dropped either way).

    Returns:
        ``(hparams, meta, state)``: the validated constructor arguments, the metadata and the upgraded weights.

    Raises:
        CheckpointError: bad metadata or format, a value that is not plain data, has the wrong type or is out of
            bounds (names ``source``).
    """
    if not isinstance(meta, dict):
        raise CheckpointError(f"{source}: no '{META_KEY}' metadata (not written by attn-suite)")
    check_plain(meta, f"{source}: metadata")
    version = format_version(meta, source)
    if not isinstance(state, dict):
        raise CheckpointError(f"{source} has no 'state_dict' (not a Lightning checkpoint)")
    if hparams is None:
        hparams = {}
    if not isinstance(hparams, Mapping):
        raise CheckpointError(f"{source}: hyper-parameters are a {type(hparams).__name__}, expected a mapping")
    check_plain(dict(hparams), f"{source}: hyper-parameters")
    raw = spec.upgrade_hparams(dict(hparams), version)
    raw.update(spec.hparams_from_metadata(meta, source))
    hp = validate_hparams(
        options or spec,
        raw,
        source,
        bounds=spec.hparam_bounds(),
        renames=spec.HPARAM_RENAMES,
        warn_unknown=warn_unknown,
    )
    return hp, meta, spec.upgrade_state_dict(dict(state), version)
