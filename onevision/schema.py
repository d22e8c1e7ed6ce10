"""Strict, typed construction of configuration dataclasses from plain data (JSON / YAML), naming the bad field.

One implementation for every schema of the project (model configs, the visual policy, training recipes):
:func:`from_dict` checks every key against the dataclass fields (an unknown key names the closest valid one),
converts each value to the field's type (``bool``, ``int``, ``float``, ``str``, ``Literal``, unions, lists,
tuples, mappings and nested dataclasses) and raises a typed error naming the dotted key. :func:`fingerprint` is
the hashing view of a dataclass: fields added to a schema later (``metadata=OMIT_AT_DEFAULT``) are left out while
they hold their default, so fingerprints of unchanged configurations stay stable.

This module imports neither torch nor transformers.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar

from onevision.errors import ConfigError

T = TypeVar("T")

#: ``field(metadata=OMIT_AT_DEFAULT)``: a field left out of :func:`fingerprint` while it holds its default
OMIT_AT_DEFAULT: Mapping[str, bool] = types.MappingProxyType({"omit_at_default": True})

#: ``(dotted key or None, message) -> exception``: how a caller's errors are made (recipes name their file)
ErrorFactory = Callable[[str | None, str], Exception]


class FieldError(ConfigError):
    """A configuration value that does not fit its schema; ``key`` is the dotted field."""

    def __init__(self, key: str | None, message: str):
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


def from_dict(cls: type[T], data: Any, *, prefix: str = "", error: ErrorFactory = FieldError) -> T:
    """Build dataclass ``cls`` from ``data`` (a mapping), strictly: unknown keys and mistyped values raise
    ``error(dotted_key, message)`` (default :class:`FieldError`). ``prefix`` starts every dotted key
    (``"vision."``). Fields marked ``metadata={"internal": True}`` are not accepted from data."""
    where = prefix.rstrip(".") or None
    if not isinstance(data, Mapping):
        raise error(where, f"expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and not f.metadata.get("internal")}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
            hint = (
                f"; did you mean {prefix}{close[0]!s}?"
                if close
                else f"; valid keys here: {', '.join(fields)}"
            )
            raise error(dotted, f"unknown key{hint}")
        kwargs[key] = convert(hints[key], value, dotted, error)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:  # the dataclass's own validation (__post_init__)
        raise error(where, str(exc)) from None


def convert(tp: Any, value: Any, key: str, error: ErrorFactory = FieldError) -> Any:
    """``value`` converted to type ``tp`` (see :func:`from_dict`); ``key`` names it in errors."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def fail(expected: str) -> Exception:
        return error(key, f"expected {expected}, got {value!r}")

    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert(arg, value, key, error)
            except Exception as exc:  # the caller's error type; the next member may fit
                errors.append(exc)
        raise errors[0] if len(errors) == 1 else fail(describe(tp))
    if origin is Literal:
        if value in args:
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise error(key, f"must be one of {list(args)}, got {value!r}{hint}")
    if dataclasses.is_dataclass(tp):
        if value is None:
            raise fail(f"a mapping for {tp.__name__}")
        if isinstance(value, tp):
            return value
        return from_dict(tp, value, prefix=f"{key}.", error=error)
    if tp is Any:
        return value
    if origin in (list, Sequence) or tp is list:
        if not isinstance(value, (list, tuple)):
            raise fail("a list")
        inner = args[0] if args else Any
        return [convert(inner, v, f"{key}[{i}]", error) for i, v in enumerate(value)]
    if origin is tuple or tp is tuple:
        if not isinstance(value, (list, tuple)):
            raise fail("a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(convert(args[0], v, f"{key}[{i}]", error) for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise fail(f"a list of {len(args)} values")
        inner = args or (Any,) * len(value)
        return tuple(convert(t, v, f"{key}[{i}]", error) for i, (t, v) in enumerate(zip(inner, value)))
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise fail("a mapping")
        return {str(k): v for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise fail("true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value)
                if f.is_integer():
                    return int(f)
            except ValueError:
                pass
        raise fail("an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads 1e-5 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise fail("a number")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise fail("a string")
    raise fail(describe(tp))  # pragma: no cover - schemas use only the types above


def describe(tp: Any) -> str:
    """A short human name for a type annotation."""
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def fingerprint(obj: Any) -> Any:
    """``dataclasses.asdict(obj)`` without the ``OMIT_AT_DEFAULT`` fields that hold their default (and without
    ``internal`` fields): the stable view of a configuration that hashes are computed from."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in dataclasses.fields(obj):
            if f.metadata.get("internal"):
                continue
            value = getattr(obj, f.name)
            if f.metadata.get("omit_at_default") and value == _default(f):
                continue
            out[f.name] = fingerprint(value)
        return out
    if isinstance(obj, Mapping):
        return {k: fingerprint(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [fingerprint(v) for v in obj]
    return obj


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING
