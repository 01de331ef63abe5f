"""Hyper-parameters read from a file are data: validated against the module's typed signature.

A checkpoint, a model folder's ``config.json`` or a downloaded file may have been edited by anyone.
Before anything else reads their hyper-parameters (the model constructor, LightningCLI's parser, which
would import and instantiate a ``{"class_path": ...}`` dict found in an ``Any``-typed option), they go
through :func:`validate_hparams`:

* only names of the constructor's parameters are kept (LightningCLI bookkeeping such as ``_instantiator``
  or ``_class_path`` is dropped unread; old names are mapped through the task's ``renames``);
* every value must be plain data (None, bool, int, float, str, and lists/tuples/dicts of those with
  string keys, at most a few levels deep) and must match the parameter's type annotation
  (``int``, ``float``, ``Literal[...]``, ``X | None``, ``tuple[float, float, float]``, ``dict[str, ...]``);
* no dict anywhere may hold a key that an instantiating parser would act on (``class_path``,
  ``init_args``, ``dict_kwargs``, ``__path__``, ``_target_``);
* numbers must be finite and inside the task's bounds (sizes capped, so a tampered file cannot make the
  program allocate gigabytes before the weights are compared).

Nothing named in a file is ever imported: the constructor is the caller's class, chosen by code.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

from core.errors import CheckpointError

__all__ = [
    "BEAM",
    "FORBIDDEN_KEYS",
    "FRACTION",
    "LAYERS",
    "LENGTH",
    "RATE",
    "SIZE",
    "STEPS",
    "Bounds",
    "check_plain",
    "validate_hparams",
]

#: Keys an instantiating parser (jsonargparse, Hydra) turns into an import: never accepted from a file.
FORBIDDEN_KEYS = frozenset({"class_path", "init_args", "dict_kwargs", "__path__", "_target_"})

#: ``{name: (low, high)}`` inclusive bounds of numeric hyper-parameters.
Bounds = Mapping[str, tuple[float, float]]

# Common bounds: generous for real use, small enough that no value can make the program allocate
# gigabytes before the weights are compared (the tasks' HPARAM_BOUNDS use them).
SIZE = (1, 16_384)  #: a width (embedding, hidden, feed-forward)
LAYERS = (1, 128)  #: layers, heads
FRACTION = (0.0, 0.999)  #: dropout, label smoothing
RATE = (0.0, 10.0)  #: learning rate, weight decay
STEPS = (0, 10**9)  #: step counts
BEAM = (1, 128)  #: beam sizes
LENGTH = (1, 10_000)  #: token / step limits

_MAX_DEPTH = 6
_MAX_ITEMS = 100_000
_MAX_STR = 10_000_000  # a tokenizer's JSON may be a few MB


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_plain(value: Any, where: str, depth: int = 0) -> None:
    """Raise ``CheckpointError`` unless ``value`` is plain data without instantiation keys.

    Args:
        value: the value read from a file.
        where: what it is (file and field), for the message.
        depth: nesting level (internal).
    """
    if depth > _MAX_DEPTH:
        raise CheckpointError(f"{where}: nested more than {_MAX_DEPTH} levels deep")
    if value is None or isinstance(value, (bool, int)):
        return
    if isinstance(value, float):
        return
    if isinstance(value, str):
        if len(value) > _MAX_STR:
            raise CheckpointError(f"{where}: a string of {len(value):,} characters (at most {_MAX_STR:,})")
        return
    if isinstance(value, (list, tuple)):
        if len(value) > _MAX_ITEMS:
            raise CheckpointError(f"{where}: a list of {len(value):,} items (at most {_MAX_ITEMS:,})")
        for i, v in enumerate(value):
            check_plain(v, f"{where}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        if len(value) > _MAX_ITEMS:
            raise CheckpointError(f"{where}: a dict of {len(value):,} keys (at most {_MAX_ITEMS:,})")
        for k, v in value.items():
            if not isinstance(k, str):
                raise CheckpointError(f"{where}: key {_short(k)} is not a string")
            if k in FORBIDDEN_KEYS:
                raise CheckpointError(
                    f"{where}: holds {k!r}, which would name Python code to import; a checkpoint or model "
                    f"folder may hold plain data only (refused, nothing was imported)"
                )
            check_plain(v, f"{where}.{k}", depth + 1)
        return
    raise CheckpointError(f"{where}: a {type(value).__name__}, expected plain data (numbers, strings, lists, dicts)")


def _type_name(hint: Any) -> str:
    if hint is type(None):
        return "None"
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


def _matches(value: Any, hint: Any) -> bool:
    """Whether plain ``value`` fits the annotation ``hint`` (the subset of types our modules use)."""
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if hint is type(None) or hint is None:
        return value is None
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
    if origin is list or hint is list:
        return isinstance(value, list) and (not args or all(_matches(v, args[0]) for v in value))
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            return False
        return not args or all(_matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items())
    return False  # a class or anything else: never built from a file


def _check_numbers(value: Any, where: str, bounds: tuple[float, float] | None) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise CheckpointError(f"{where} = {value}: expected a finite number")
        if bounds is not None and not bounds[0] <= value <= bounds[1]:
            raise CheckpointError(f"{where} = {_short(value)}: expected a value in [{bounds[0]:g}, {bounds[1]:g}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_numbers(v, f"{where}[{i}]", bounds)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_numbers(v, f"{where}.{k}", bounds)


def validate_hparams(
    cls: type,
    hparams: Any,
    source: str,
    bounds: Bounds | None = None,
    renames: Mapping[str, str] | None = None,
    warn_unknown: bool = True,
) -> dict[str, Any]:
    """Constructor arguments of ``cls`` from untrusted ``hparams``, or a ``CheckpointError``.

    Args:
        cls: the class whose ``__init__`` signature and annotations decide what is accepted.
        hparams: the mapping read from a file (anything: it is checked).
        source: the file (and section) it came from, for messages.
        bounds: inclusive ``(low, high)`` per parameter name, for numbers (nested ones included).
        renames: old parameter name -> current name (checkpoints of earlier versions).
        warn_unknown: warn about names ``cls`` does not take (they are dropped either way).

    Returns:
        ``{name: value}`` for the parameters ``cls`` takes, in file order.

    Raises:
        CheckpointError: not a mapping, a value that is not plain data, holds an instantiation key,
            has the wrong type, is not finite or is out of bounds (the message names file and field).
    """
    if hparams is None:
        return {}
    if not isinstance(hparams, Mapping):
        raise CheckpointError(f"{source}: hyper-parameters are a {type(hparams).__name__}, expected a mapping")
    try:  # the constructor's signature, its string annotations (``from __future__ import annotations``) resolved
        sig = inspect.signature(cls, eval_str=True)
    except (NameError, TypeError):  # an annotation this module cannot resolve: types unchecked, values plain
        sig = inspect.signature(cls)
    hints = {name: p.annotation for name, p in sig.parameters.items() if not isinstance(p.annotation, str)}
    bounds = bounds or {}
    renames = renames or {}
    out: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in hparams.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{source}: hyper-parameter name {_short(key)} is not a string")
        if key.startswith("_"):
            continue  # LightningCLI bookkeeping (_instantiator, _class_path): never read, never imported
        name = renames.get(key, key)
        where = f"{source}: hyper-parameter {name!r}"
        check_plain(value, where)
        param = sig.parameters.get(name)
        if param is None or name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            unknown.append(key)
            continue
        hint = hints.get(name, param.annotation)
        if not _matches(value, hint):
            raise CheckpointError(f"{where} = {_short(value)}: expected {_type_name(hint)}")
        _check_numbers(value, where, bounds.get(name))
        out[name] = value
    if unknown and warn_unknown:
        import warnings

        warnings.warn(
            f"{source}: ignoring hyper-parameters this version of {cls.__name__} does not take: "
            f"{', '.join(sorted(unknown))}",
            stacklevel=2,
        )
    return out
