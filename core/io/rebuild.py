"""Rebuilding a task module from untrusted files: one safe path for checkpoints and model folders.

Order of checks (:func:`build_task_module`): the metadata and hyper-parameters are plain data
(``core.io.hparams``), typed and bounded; the module is first built on PyTorch's ``meta`` device (shapes only, no
memory) and its weight shapes and dtype kinds compared with the file's, and non-finite weights refused; only
then is it built for real and the weights loaded. A file edited to ``hidden_dim: 8000`` is refused before a
byte is allocated, and no name read from a file is ever imported.

:func:`load_task_module` reads a ``.ckpt`` (``weights_only=True``) into it; ``core.io.model_folder`` reads a model
folder into it; ``core.train.module.TaskModule`` puts both behind a task module's class methods.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from core.errors import CheckpointError
from core.io.checkpoint import load_checkpoint
from core.io.checks import (
    META_KEY,
    PROVENANCE_ATTR,
    RebuildSpec,
    checked_call,
    checked_parts,
)

__all__ = [
    "StoredModel",
    "build_task_module",
    "construct_checked",
    "load_checked_weights",
    "load_task_module",
    "non_finite_weights",
    "raise_if_mismatch",
    "read_checkpoint",
    "state_dict_mismatches",
]


class Loadable(Protocol):
    """What :func:`load_checked_weights` builds: a module (``nn.Module``'s methods, overloads not repeated)."""

    def state_dict(self, *args: Any, **kwargs: Any) -> Any: ...

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any: ...


class RebuildableModule(RebuildSpec, Protocol):
    """What rebuilding reads off a task's module class (``core.train.module.TaskModule`` has all of it)."""

    def restore_metadata(self, meta: Mapping[str, Any], source: str) -> None: ...

    def check_loaded(self, source: str) -> None: ...

    # nn.Module's, whose overloads need not be repeated here
    def state_dict(self, *args: Any, **kwargs: Any) -> Any: ...

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any: ...

    def to(self, *args: Any, **kwargs: Any) -> Any: ...

    def eval(self) -> Any: ...


M = TypeVar("M", bound=RebuildableModule)  # a task's module class
L = TypeVar("L", bound=Loadable)
T = TypeVar("T")


@dataclass
class StoredModel:
    """A checkpoint's or model folder's parts as read, before any check of their content (untrusted).

    Attributes:
        hparams: the hyper-parameters.
        meta: the ``attn_suite`` metadata.
        state: the state dict.
        source: what they were read from, for messages (``"checkpoint x.ckpt"``, ``"model folder x"``).
        provenance: a folder's training record, metrics and figure (None for a checkpoint: its record is in
            ``meta``).
    """

    hparams: Any
    meta: Any
    state: Any
    source: str
    provenance: dict[str, Any] | None = None


def state_dict_mismatches(expected: Mapping[str, Tensor], got: Mapping[str, Any], strict: bool) -> list[str]:
    """Human-readable differences between a model's state dict and one read from a file.

    Args:
        expected: the model's ``state_dict()`` (real or ``meta`` tensors).
        got: the file's state dict.
        strict: also report missing and unexpected keys.

    Returns:
        One string per problem (shape mismatches first).
    """
    problems = [
        f"{k}: {tuple(v.shape)} in the file, {tuple(expected[k].shape)} in the model"
        for k, v in got.items()
        if k in expected and isinstance(v, Tensor) and v.shape != expected[k].shape
    ]
    problems += [
        f"{k}: {v.dtype} in the file, {expected[k].dtype} in the model"
        for k, v in got.items()
        if k in expected and isinstance(v, Tensor) and _dtype_kind(v.dtype) != _dtype_kind(expected[k].dtype)
    ]
    problems += [f"{k}: a {type(v).__name__}, not a tensor" for k, v in got.items() if not isinstance(v, Tensor)]
    if strict:
        problems += [f"missing {k}" for k in expected if k not in got]
        problems += [f"unexpected {k}" for k in got if k not in expected]
    return problems


def _dtype_kind(dtype: torch.dtype) -> str:
    """float / complex / bool / int: a weight may be stored in another precision (fp16 for an fp32 model), never
    as another kind (int8 or bool weights for float ones would be cast to garbage without a word)."""
    if dtype.is_floating_point:
        return "float"
    if dtype.is_complex:
        return "complex"
    return "bool" if dtype == torch.bool else "int"


def non_finite_weights(state: Mapping[str, Any]) -> list[str]:
    """Names of the floating-point tensors in ``state`` holding NaN or infinity (a diverged or tampered file:
    such a model answers nothing, or garbage)."""
    return [
        k
        for k, v in state.items()
        if isinstance(v, Tensor) and v.is_floating_point() and v.numel() and not bool(torch.isfinite(v).all())
    ]


def raise_if_mismatch(
    expected: Mapping[str, Tensor], got: Mapping[str, Any], strict: bool, source: str, what: str
) -> None:
    """``CheckpointError`` naming ``source`` and the first problems when ``got`` does not fit ``expected``."""
    problems = state_dict_mismatches(expected, got, strict)
    if problems:
        more = f"; ... and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise CheckpointError(f"{source} does not fit {what}: {'; '.join(problems[:3])}{more}")


class _ShapesOnly(TorchFunctionMode):
    """Random and constant fills of ``meta`` tensors do nothing (the probe compares shapes only).

    Besides the time they would take, the meta kernels of ``normal_`` / ``uniform_`` (what ``nn.init`` calls)
    run through ``torch._refs``, whose first call imports ``torch._dynamo``: about 0.85 s of a 2.5 s start-up.
    """

    FILLS = frozenset(
        {"normal_", "uniform_", "fill_", "zero_", "bernoulli_", "exponential_", "geometric_", "log_normal_", "random_"}
    )

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") in self.FILLS:
            # a Tensor method gets the tensor first; nn.init's functions pass it by keyword
            target = args[0] if args else kwargs.get("tensor")
            if isinstance(target, Tensor) and target.is_meta:
                return target
        return func(*args, **kwargs)


def construct_checked(make: Callable[[], T], source: str, what: str, device: str | None) -> T:
    """``make()`` on ``device`` (``"meta"``: shapes only), its errors a ``CheckpointError`` naming ``source``.

    Args:
        make: builds the module from the file's (validated) options and metadata.
        source: the file, for messages.
        what: what is built (``"a TranslationModule"``), for messages.
        device: ``"meta"``, or None for the default device.
    """
    ctx = torch.device(device) if device else contextlib.nullcontext()
    fills = _ShapesOnly() if device == "meta" else contextlib.nullcontext()

    def make_on_device() -> T:
        with ctx, fills:
            return make()

    return checked_call(make_on_device, source, what)


def _construct(cls: type[M], hparams: dict[str, Any], meta: Mapping[str, Any], source: str, device: str | None) -> M:
    """``cls(**hparams)`` plus its metadata, on ``device`` (``"meta"``: shapes only), errors named."""

    def make() -> M:
        model = cls(**hparams)
        model.restore_metadata(meta, source)
        return model

    return construct_checked(make, source, f"a {cls.__name__}", device)


def load_checked_weights(
    build: Callable[[str | None], L], state: Mapping[str, Any], strict: bool, source: str, what: str
) -> L:
    """Build a module and load ``state`` into it, checking before anything is allocated.

    The module is first built on the ``meta`` device (shapes only) and compared with ``state``; non-finite
    weights are refused; only then is it built for real and the weights loaded.

    Args:
        build: builds the module on a device (``"meta"`` or None), e.g. through :func:`construct_checked`.
        state: the file's (upgraded) state dict.
        strict: exact state-dict match.
        source: the file, for messages.
        what: what the weights must fit, for messages.

    Raises:
        CheckpointError: weights that do not fit, non-finite weights, or weights that do not load.
    """
    # Shapes first, on the meta device: a tampered size is refused before anything is allocated.
    probe = build("meta")
    raise_if_mismatch(probe.state_dict(), state, strict, source, what)
    del probe
    bad = non_finite_weights(state)
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise CheckpointError(
            f"{source}: weights hold NaN or infinite values ({', '.join(bad[:3])}{more}); the training run "
            f"that wrote them diverged, or the file was altered: use an earlier checkpoint"
        )
    model = build(None)
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as err:  # anything the shape check did not foresee (e.g. a dtype it cannot cast)
        raise CheckpointError(f"{source}: weights do not load: {' '.join(str(err).split())[:300]}") from None
    return model


def build_task_module(
    cls: type[M],
    hparams: Any,
    meta: Any,
    state: Any,
    source: str,
    map_location: str | torch.device | None = "cpu",
    strict: bool = True,
    overrides: Mapping[str, Any] | None = None,
) -> M:
    """Build ``cls`` from untrusted hyper-parameters, metadata and weights (a checkpoint or a model folder).

    Args:
        cls: the task module class (a ``core.train.module.TaskModule``).
        hparams: the file's hyper-parameters (validated against ``cls.__init__``).
        meta: the file's ``attn_suite`` metadata (plain data; the task restores it).
        state: the file's state dict (name -> tensor).
        source: e.g. ``"checkpoint path/last.ckpt"``, for messages.
        map_location: device to move the module to (``None`` keeps CPU).
        strict: exact state-dict match.
        overrides: hyper-parameters from the caller's code (trusted), applied last.

    Returns:
        The module with the file's weights, in eval mode.

    Raises:
        CheckpointError: bad metadata or hyper-parameters, or weights that do not fit (names ``source``).
    """
    hp, meta, state = checked_parts(cls, hparams, meta, state, source)
    hp.update(overrides or {})
    model = load_checked_weights(
        lambda device: _construct(cls, hp, meta, source, device),
        state,
        strict,
        source,
        f"{cls.__name__} built from its own hyper-parameters",
    )
    model.check_loaded(source)
    training = meta.get("training")
    setattr(model, PROVENANCE_ATTR, {"training": dict(training) if isinstance(training, dict) else {}, "figure": None})
    if map_location is not None and not callable(map_location) and not isinstance(map_location, dict):
        model.to(map_location)  # nn.Module.to moves in place (and returns the module)
    model.eval()
    return model


def read_checkpoint(
    spec: type[RebuildSpec], path_or_url: str | os.PathLike[str], sha256: str | None = None
) -> StoredModel:
    """A ``.ckpt`` file or http(s) URL of ``spec``'s task, read safely (``weights_only=True``), content unchecked.

    Raises:
        CheckpointError: unreadable, unsafe or other-task file (names it).
    """
    ckpt = load_checkpoint(path_or_url, expected_task=spec.TASK, map_location="cpu", sha256=sha256)
    return StoredModel(
        ckpt.get("hyper_parameters"), ckpt.get(META_KEY), ckpt.get("state_dict"), f"checkpoint {os.fspath(path_or_url)}"
    )


def load_task_module(
    cls: type[M],
    path_or_url: str | os.PathLike[str],
    map_location: str | torch.device | None = "cpu",
    strict: bool = True,
    sha256: str | None = None,
    **overrides: Any,
) -> M:
    """Load a task checkpoint safely: ``weights_only=True``, task check, then :func:`build_task_module`.

    Args:
        cls: the task module class.
        path_or_url: file path or http(s) URL (downloaded once into the cache).
        map_location: device for the module.
        strict: exact state-dict match.
        sha256: expected digest (or prefix) of the file.
        **overrides: hyper-parameters to change (e.g. ``beam_size=1``).

    Raises:
        CheckpointError: unreadable, unsafe or other-task file, bad metadata or hyper-parameters, or
            weights that do not fit (the message names the file).
    """
    stored = read_checkpoint(cls, path_or_url, sha256)
    return build_task_module(
        cls,
        stored.hparams,
        stored.meta,
        stored.state,
        stored.source,
        map_location=map_location,
        strict=strict,
        overrides=overrides,
    )
