"""How a raw settings value (from YAML, JSON or an environment variable)
becomes the typed value a setting declares, or a :class:`SettingsError`
that names the key and says what was expected."""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import field
from typing import Any, Mapping


class SettingsError(ValueError):
    """A settings file or variable is missing, unreadable or has a wrong value."""


def setting(default: Any, doc: str, **extra: Any) -> Any:
    """A dataclass field that is a setting: its default, its ``doc`` for
    docs/configuration.md, and checks of :func:`convert` (``minimum``, ``choices``)
    or of the log (``secret``)."""
    meta = {"doc": doc, **extra}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def parse_bool(text: str) -> bool | None:
    """``1/true/yes/on`` or ``0/false/no/off/""`` (any case); None for anything else."""
    word = text.strip().lower()
    if word in {"1", "true", "yes", "on"}:
        return True
    if word in {"0", "false", "no", "off", ""}:
        return False
    return None


def optional(kind: Any) -> Any:
    """``X`` for ``X | None`` (a key that may be left out: None keeps the default)."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        given = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        if len(given) == 1:
            return given[0]
    return kind


def convert(key: str, raw: Any, kind: Any, meta: Mapping[str, Any], from_env: bool) -> Any:
    """Check one value against its declared type; return it converted."""
    where = f"environment variable for {key!r}" if from_env else f"setting {key!r}"
    kind = optional(kind)
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        return _section(key, raw, kind, where)
    if origin is list and dataclasses.is_dataclass(typing.get_args(kind)[0]):
        if not isinstance(raw, list):
            raise SettingsError(f"{where} must be a list, got {raw!r}")
        return [_item(f"{key}[{i}]", item, typing.get_args(kind)[0], meta, from_env)
                for i, item in enumerate(raw)]
    if origin is dict:  # dict[str, X]: names chosen by the user, each value an X
        if not isinstance(raw, Mapping):
            raise SettingsError(f"{where} must be a mapping of names to values, got {raw!r}")
        return {str(name): convert(f"{key}.{name}", item, typing.get_args(kind)[1], {}, from_env)
                for name, item in raw.items()}
    if kind is bool:
        value: Any = raw if isinstance(raw, bool) else (
            parse_bool(raw) if isinstance(raw, str) else None)
        if value is None:
            raise SettingsError(f"{where} must be true or false, got {raw!r}")
    elif kind in (int, float):
        try:
            if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
                raise ValueError
            number = float(raw)
            if not math.isfinite(number) or (kind is int and not number.is_integer()):
                raise ValueError
        except ValueError:
            noun = "a whole number" if kind is int else "a number"
            raise SettingsError(f"{where} must be {noun}, got {raw!r}") from None
        value = kind(number)
        if "minimum" in meta and value < meta["minimum"]:
            raise SettingsError(f"{where} must be at least {meta['minimum']}, got {raw!r}")
    elif kind is str:
        if isinstance(raw, (dict, list)) or raw is None:
            raise SettingsError(f"{where} must be text, got {raw!r}")
        value = str(raw)
        choices = meta.get("choices")
        if choices:  # in any case, as the choice is spelt
            chosen = [choice for choice in choices if choice.lower() == value.lower()]
            if not chosen:
                raise SettingsError(f"{where} must be one of {', '.join(choices)}, got {raw!r}")
            value = chosen[0]
    elif origin is list:
        if isinstance(raw, str):
            raw = [part for part in re.split(r"[,\n]", raw) if part.strip()]
        if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
            raise SettingsError(f"{where} must be a list of text, got {raw!r}")
        value = [v.strip() for v in raw]
    else:  # pragma: no cover - every declared type is handled above
        raise TypeError(f"unsupported settings type {kind!r}")
    return value


def _item(key: str, raw: Any, kind: Any, meta: Mapping[str, Any], from_env: bool) -> Any:
    """One entry of a list of sections; an error also gives the entry's own name
    (or folder), which says more than its place in the list."""
    try:
        return convert(key, raw, kind, meta, from_env)
    except SettingsError as exc:
        name = (raw.get("name") or raw.get("folder")) if isinstance(raw, Mapping) else None
        if name:
            raise SettingsError(f"{exc} ({key} is {name!r})") from None
        raise


def _section(key: str, raw: Any, kind: Any, where: str) -> Any:
    """A mapping of settings (such as ``notify:``) checked against its dataclass,
    whose ``__post_init__`` checks what concerns several keys (ValueError)."""
    if not isinstance(raw, Mapping):
        raise SettingsError(f"{where} must be a mapping of keys to values, got {raw!r}")
    kinds = typing.get_type_hints(kind)
    metas = {f.name: f.metadata for f in dataclasses.fields(kind) if f.init}  # the rest: derived
    values = {}
    for name, item in raw.items():
        if name not in metas:
            nearest = difflib.get_close_matches(str(name), list(metas), n=1)
            raise SettingsError(f"unknown setting {key}.{name}; " + (
                f"did you mean {key}.{nearest[0]}?" if nearest else
                f"known: {', '.join(metas)}"))
        if item is not None:
            values[name] = convert(f"{key}.{name}", item, kinds[name], metas[name], False)
    try:
        return kind(**values)
    except ValueError as exc:
        raise SettingsError(f"{where}: {exc}") from None
