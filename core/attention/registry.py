"""Name -> attention class registry, so a config string picks the mechanism."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from core.attention.additive import AdditiveAttention, LocationAttention
from core.attention.base import Attention
from core.attention.dot import DotAttention, GeneralAttention, ScaledDotAttention
from core.attention.multihead import MultiHeadAttention
from core.attention.none import NoAttention
from core.attention.pooling import PoolingAttention
from core.errors import ConfigError

_REGISTRY: dict[str, type[Attention]] = {}

T = TypeVar("T", bound=type[Attention])


def register_attention(name: str) -> Callable[[T], T]:
    """Class decorator adding an `Attention` subclass to the registry under ``name``."""

    def wrap(cls: T) -> T:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"attention name {name!r} is already registered to {_REGISTRY[name].__name__}")
        _REGISTRY[name] = cls
        return cls

    return wrap


for _name, _cls in (
    ("additive", AdditiveAttention),
    ("dot", DotAttention),
    ("general", GeneralAttention),
    ("scaled_dot", ScaledDotAttention),
    ("multihead", MultiHeadAttention),
    ("location", LocationAttention),
    ("pooling", PoolingAttention),
    ("none", NoAttention),
):
    register_attention(_name)(_cls)


def attention_options(
    name: str, options: Mapping[str, Any] | None, hidden_dim: int, num_heads: int = 4
) -> dict[str, Any]:
    """The options a decoder builds mechanism ``name`` with: the given ones over the shared defaults.

    Defaults: additive and location score with an MLP of ``hidden_dim`` units, multihead uses ``num_heads``
    heads. ``none`` has no options of its own: options written for the mechanism it is compared with (a
    config's ``hidden_dim``) are dropped with a warning, so the baseline can be chosen on top of any config.
    """
    if name == "none":
        if options:
            warnings.warn(f"attention 'none' takes no options: {dict(options)} ignored", stacklevel=2)
        return {}
    opts = dict(options or {})
    if name in ("additive", "location"):
        opts.setdefault("hidden_dim", hidden_dim)
    elif name == "multihead":
        opts.setdefault("num_heads", num_heads)
    return opts


def available_attentions() -> list[str]:
    """Registered mechanism names, sorted."""
    return sorted(_REGISTRY)


def build_attention(name: str, **kwargs: Any) -> Attention:
    """Build an attention module by registry name.

    Args:
        name: one of `available_attentions()`.
        **kwargs: constructor arguments (``query_dim``, ``key_dim``, ``value_dim`` and the
            mechanism's own options).

    Raises:
        ConfigError: (a ``ValueError``) unknown name (the message lists the valid ones) or
            arguments the mechanism does not take (the message lists those it does); a CLI prints it
            as ``error: ...`` without a traceback.
    """
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown attention {name!r}; valid names: {', '.join(available_attentions())}") from None
    params = inspect.signature(cls.__init__).parameters
    unknown = sorted(set(kwargs) - set(params) - {"self"})
    if unknown:
        accepted = [p for p in params if p != "self"]
        raise ConfigError(f"attention {name!r} does not take {unknown}; it accepts {accepted}")
    return cls(**kwargs)
