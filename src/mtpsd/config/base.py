"""Generic machinery for the config dataclasses: build from nested dicts with
errors that name the key, deep-merge overlays, dump back to plain dicts.

Section dataclasses (``DataConfig`` ...) live in sibling modules; each field has a
``help`` in its metadata and range checks live in ``__post_init__`` (TRL style).
Raise ``ConfigError`` there with the key name; ``from_dict`` prefixes the path.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Union

from mtpsd.errors import MtpsdError


class ConfigError(MtpsdError):
    """A bad key or value in a config; the message names the key."""


def field(default: Any = dataclasses.MISSING, *, help: str, default_factory: Any = dataclasses.MISSING):
    """A dataclass field with a ``help`` string (shown in docs and errors)."""
    kw: dict[str, Any] = {"metadata": {"help": help}}
    if default_factory is not dataclasses.MISSING:
        kw["default_factory"] = default_factory
    else:
        kw["default"] = default
    return dataclasses.field(**kw)


def check(cond: bool, key: str, msg: str) -> None:
    """Raise ``ConfigError`` for ``key`` unless ``cond`` holds (for ``__post_init__``)."""
    if not cond:
        raise ConfigError(f"{key}: {msg}")


def deep_merge(base: dict, overlay: dict) -> dict:
    """Merge ``overlay`` into a copy of ``base``: dicts merge, everything else replaces
    (the same rule Snakemake applies to ``--configfile`` overlays)."""
    out = dict(base)
    for k, v in overlay.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    if origin in (list, tuple):
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            return False
        inner = args[0] if args else Any
        return all(_type_ok(v, inner) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types name the key."""
    where = path.rstrip(".") or "config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        k = unknown[0]
        close = difflib.get_close_matches(str(k), fields, n=1)
        hint = f" (did you mean '{path}{close[0]}'?)" if close else ""
        raise ConfigError(f"unknown config key '{path}{k}'{hint}; known keys here: {', '.join(fields)}")
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = from_dict(tp, value, f"{path}{name}.")
            continue
        if not _type_ok(value, tp):
            raise ConfigError(
                f"{path}{name}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})"
            )
        if tp is float and isinstance(value, int):
            value = float(value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{path}{e}") from None


def to_dict(obj: Any) -> Any:
    """Plain nested dicts/lists for JSON and YAML."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
