"""Settings dataclasses built from YAML values: unknown keys, wrong types and values outside a
field's choices are errors that name the setting (``prune.mode must be one of ...``)."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, Literal


def build(cls, values: dict | None, where: str):
    """``cls(**values)`` with every value checked against its field's annotation (nested
    dataclasses built the same way); ``where`` names the section in error messages."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ValueError(f"{where} must be a mapping of settings, got {values!r}")
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {unknown}; known: {sorted(known)}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: convert(value, hints[name], f"{where}.{name}") for name, value in values.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:  # a field without a default was not given
        raise ValueError(f"{where}: {err}") from None
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def setting_problems(cls, values, where: str, per_run: bool = True) -> list[tuple[str, str]]:
    """Every (setting, message) that keeps ``values`` from building ``cls``, setting by setting:
    unknown names, wrong types and values outside a field's choices, nested sections walked the
    same way; with ``per_run=False`` (a params file or profile), per-run fields too. The section's
    own checks, across its settings, are left to :func:`build`."""
    if values is None:
        return []
    if not isinstance(values, dict):
        return [(where, f"must be a mapping of settings, got {values!r}")]
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    problems = []
    for key, value in values.items():
        at = f"{where}.{key}"
        if key not in fields:
            problems.append((at, f"unknown setting; {where} has {sorted(fields)}"))
        elif not per_run and fields[key].metadata.get("per_run"):
            problems.append((at, "set per run (by each stage or on the command line), never in a params file"))
        elif dataclasses.is_dataclass(nested := _section_of(hints[key])) and isinstance(value, dict):
            problems += setting_problems(nested, value, at, per_run) or section_problems(nested, value, at)
        else:
            try:
                convert(value, hints[key], at)
            except ValueError as err:
                problems.append(_locate(str(err), at))
    return problems


def section_problems(cls, values: dict, where: str) -> list[tuple[str, str]]:
    """The section's own check, when its settings pass one by one: named after the setting that
    fails it alone over the defaults (``recover.config.kd_alpha``), else after the section."""
    try:
        build(cls, values, where)
        return []
    except ValueError as err:
        message = str(err).removeprefix(f"{where}: ")
    for key, value in values.items():
        try:
            build(cls, {key: value}, where)
        except ValueError as err:
            if str(err).removeprefix(f"{where}: ") == message:
                return [(f"{where}.{key}", message.removeprefix(f"{key} "))]
    return [(where, message)]


def _section_of(hint):
    """The settings dataclass a field holds (``X`` or ``X | None``), else None."""
    if dataclasses.is_dataclass(hint):
        return hint
    options = [a for a in typing.get_args(hint) if a is not type(None)]
    return options[0] if len(options) == 1 and dataclasses.is_dataclass(options[0]) else None


def _locate(message: str, where: str) -> tuple[str, str]:
    """``prune.x must ...`` or ``recover.recipes[2]: loss ...`` as (the setting, the message)."""
    match = re.match(rf"({re.escape(where)}(?:\[\d+\]|\.\w+)*)(?::\s+|\s+)(.*)", message, re.DOTALL)
    return (match[1], match[2]) if match else (where, message)


def convert(value, hint, where: str):
    """``value`` as the type ``hint`` describes, or a ``ValueError`` naming ``where``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise ValueError(f"{where} must not be null")
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return convert(value, option, where)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {options}")
    if value is None:
        raise ValueError(f"{where} must not be null")
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{where} must be one of {args}, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else build(hint, value, where)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ValueError(f"{where} must be a list, got {value!r}")
        return [convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be a mapping, got {value!r}")
        return {convert(k, args[0], where): convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where} must be a number, got {value!r}")
        return value  # an integer stays one: values are written back as they were read
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string, got {value!r}")
        return value
    raise TypeError(f"{where}: unsupported setting type {hint}")


def merge(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` applied: mappings merge key by key, anything else replaces.
    A key ``a.b`` in ``changes`` sets ``b`` inside ``a``."""
    out = dict(base)
    for key, value in changes.items():
        head, dot, rest = key.partition(".")
        if dot:
            value, key = {rest: value}, head
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def as_dict(settings) -> dict:
    """A settings dataclass as plain YAML-ready values (per-run fields left out)."""
    return {f.name: _plain(getattr(settings, f.name)) for f in dataclasses.fields(settings) if f.init and not f.metadata.get("per_run")}


def _plain(value):
    if dataclasses.is_dataclass(value):
        return as_dict(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
