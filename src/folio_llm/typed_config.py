"""Typed settings from plain YAML values: dataclass fields with help text, and conversion that
refuses an unknown key or a wrong type with a message naming the key (``params: train.epochs:
expected a number, got 'two'``). The sections themselves are in :mod:`folio_llm.sections`."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import field
from typing import Any, Literal


class ParamsError(ValueError):
    """A params.yaml that cannot be used; the message names the key."""


def setting(text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING):
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"a mapping to {_type_name(typing.get_args(tp)[1])}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against type ``tp``; return it converted (dataclasses built)."""
    origin = typing.get_origin(tp)
    wrong = ParamsError(f"params: {key}: expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise wrong
        return build(tp, value, key)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise wrong
        return value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return convert(value, option, key)
            except ParamsError:
                continue
        raise wrong
    if origin is list:
        if not isinstance(value, list):
            raise wrong
        (item_tp,) = typing.get_args(tp)
        return [convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise wrong
        _, value_tp = typing.get_args(tp)
        return {str(k): convert(v, value_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is type(None):
        if value is not None:
            raise wrong
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise wrong
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise wrong
        return value
    raise TypeError(f"unsupported params type {tp}")


def build(cls: type, values: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in known:
            where = f"{prefix}.{key}" if prefix else str(key)
            raise ParamsError(f"params: unknown key '{where}' (known: {', '.join(sorted(known))})")
    kwargs = {}
    for name in known:
        if name in values:
            kwargs[name] = convert(values[name], hints[name], f"{prefix}.{name}" if prefix else name)
    return cls(**kwargs)
