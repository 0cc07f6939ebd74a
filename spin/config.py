"""Configuration: nested dataclasses, filled from YAML and ``key=value`` overrides.

Defaults live on the dataclasses. A YAML file and command-line overrides (``a.b.c=value``,
the value parsed as YAML: ``3``, ``1e-4``, ``true``, ``[1, 2]``, ``null``) replace fields;
unknown keys are errors that name the valid ones. Frozen dataclasses, tuples of dataclasses
and optional fields are supported, and :func:`config_to_dict` turns a config back into plain
data (saved next to every checkpoint, so a checkpoint alone rebuilds its model).
"""

from __future__ import annotations

import dataclasses
import reprlib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

__all__ = ["ConfigError", "apply_overrides", "build_config", "config_to_dict", "load_config"]

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value or key is wrong; the message says which and what is allowed."""


MAX_CONFIG_BYTES = 1 << 20
"""Largest config file read (a YAML config is a few kB; this refuses /dev/zero and the like)."""

_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict = 3, 6, 6
_SHORT.maxstring = _SHORT.maxother = 80


def _show(value: Any) -> str:
    """A bounded repr for messages (a YAML alias bomb expands to a huge value)."""
    return _SHORT.repr(value)


def _read_config_file(path: Path) -> Any:
    """The YAML of a regular file of at most MAX_CONFIG_BYTES, as plain data."""
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    if not path.is_file():
        raise ConfigError(f"config file {path} is not a regular file")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is {size} bytes; a config is at most 1 MiB")
    try:
        return yaml.safe_load(path.read_text())
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not text (UTF-8)") from None
    except yaml.YAMLError as error:
        problem = " ".join(str(error).split())[:300]
        raise ConfigError(f"config file {path} is not valid plain YAML: {problem}") from None


def config_to_dict(config: Any) -> Any:
    """Plain dicts/lists/scalars of a (nested) dataclass config."""
    if dataclasses.is_dataclass(config):
        return {f.name: config_to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (list, tuple)):
        return [config_to_dict(v) for v in config]
    if isinstance(config, Mapping):
        return {k: config_to_dict(v) for k, v in config.items()}
    if isinstance(config, Path):
        return str(config)
    return config


def _merge(base: dict, update: Mapping, path: str) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value, f"{path}{key}.")
        else:
            merged[key] = value
    return merged


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[keys[-1]] = value


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """Apply ``a.b=value`` strings to a plain config dict (values parsed as YAML)."""
    data = _merge({}, data, "")
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override {_show(override)} is not of the form key=value")
        key, raw = override.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as error:
            raise ConfigError(
                f"override {_show(override)}: cannot parse {_show(raw)}: {error}"
            ) from None
        _set_dotted(data, key.strip(), value)
    return data


def _strip_optional(annotation):
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
        return annotation, True
    return annotation, False


def _convert(value: Any, annotation: Any, path: str) -> Any:
    annotation, optional = _strip_optional(annotation)
    if value is None:
        if optional or annotation is Any:
            return None
        raise ConfigError(f"{path}: null is not allowed here")
    if dataclasses.is_dataclass(annotation):
        if dataclasses.is_dataclass(value):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"{path}: expected a mapping for {annotation.__name__}, got {_show(value)}"
            )
        return build_config(annotation, value, path=path)
    origin = typing.get_origin(annotation)
    if origin in (tuple, list, Sequence):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {_show(value)}")
        args = typing.get_args(annotation)
        item = args[0] if args else Any
        items = [_convert(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {_show(value)}")
        return dict(value)
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        if value not in choices:
            raise ConfigError(f"{path}: {_show(value)} is not one of {list(choices)}")
        return value
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-4" (no dot) as a string
            return float(value)
        except ValueError:
            raise ConfigError(f"{path}: expected float, got {_show(value)}") from None
    if annotation is int and isinstance(value, bool):
        raise ConfigError(f"{path}: expected an integer, got {_show(value)}")
    if annotation in (int, float, str, bool) and not isinstance(value, annotation):
        raise ConfigError(f"{path}: expected {annotation.__name__}, got {_show(value)}")
    return value


def build_config(cls: type[T], data: Mapping | None = None, path: str = "") -> T:
    """Instantiate dataclass ``cls`` from a plain mapping, recursively, with checks."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{path or cls.__name__}: unknown key(s) {unknown}; valid keys: {sorted(fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(value, hints[name], f"{path}{'.' if path else ''}{name}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{path or cls.__name__}: {error}") from None


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Config of type ``cls`` from an optional YAML file plus ``key=value`` overrides."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        loaded = _read_config_file(path) or {}
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{path}: the top level must be a mapping")
        data = dict(loaded)
    data = apply_overrides(data, overrides)
    return build_config(cls, data)
