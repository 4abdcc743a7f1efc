"""Typed configuration: dataclasses filled strictly from YAML mappings, with dotted overrides.

``load_dataclass(TrainConfig, mapping, source="args.yaml")`` checks every key against the dataclass
fields (nested dataclasses recurse), converts values to the annotated types (``int``, ``float``, ``bool``,
``str``, ``Path``, ``Literal[...]``, ``Optional``, ``tuple[...]``, ``list[...]``, ``dict[str, ...]``) and raises
:class:`ConfigError` naming the file and the dotted key, with a suggestion for misspelt keys::

    args.yaml: unknown key 'optimizer.lr' (did you mean 'optimizer.learning_rate'?)

``apply_overrides(mapping, ["train.epochs=3", "data.names=[a,b]"])`` sets dotted keys, parsing each value
as YAML. ``to_dict`` turns a dataclass back into plain data for ``yaml.safe_dump``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import yaml

if TYPE_CHECKING:
    from _typeshed import DataclassInstance  # what dataclasses.fields accepts (typeshed only, not at run time)

T = TypeVar("T", bound="DataclassInstance")


class ConfigError(ValueError):
    """A configuration value or key that does not fit the dataclass; the message names file and key."""


def show_value(value: Any) -> str:
    """``repr(value)``, also for an integer too long for Python to print (``sys.get_int_max_str_digits``)."""
    try:
        return repr(value)
    except ValueError:
        if isinstance(value, int):
            return f"an integer of {value.bit_length():,} bits"
        return f"a {type(value).__name__} holding an integer too long to print"


def _name(key: Any) -> str:
    """A mapping key as text (YAML keys may be numbers, dates, ...)."""
    return key if isinstance(key, str) else show_value(key)


def _fail(source: str, key: str, message: str) -> ConfigError:
    return ConfigError(f"{source}: {key}: {message}" if key else f"{source}: {message}")


def _convert(value: Any, annotation: Any, source: str, key: str) -> Any:
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in arguments:
            return None
        for option in (argument for argument in arguments if argument is not type(None)):
            try:
                return _convert(value, option, source, key)
            except ConfigError:
                continue
        raise _fail(source, key, f"{show_value(value)} fits none of {annotation}")
    if origin is Literal:
        if value not in arguments:
            hint = difflib.get_close_matches(_name(value), [str(a) for a in arguments], n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise _fail(source, key, f"{show_value(value)} is not one of {', '.join(map(repr, arguments))}{suggestion}")
        return value
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise _fail(source, key, f"expected a mapping of {annotation.__name__} fields, got {show_value(value)}")
        return load_dataclass(annotation, value, source, prefix=f"{key}.")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _fail(source, key, f"expected a list, got {show_value(value)}")
        if origin is tuple and arguments and arguments[-1] is not Ellipsis:
            if len(value) != len(arguments):
                raise _fail(source, key, f"expected {len(arguments)} values, got {len(value)}: {show_value(value)}")
            items = [
                _convert(v, a, source, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, arguments, strict=True))
            ]
        else:
            item_type = arguments[0] if arguments else Any
            items = [_convert(v, item_type, source, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise _fail(source, key, f"expected a mapping, got {show_value(value)}")
        value_type = arguments[1] if arguments else Any
        return {_name(k): _convert(v, value_type, source, f"{key}.{_name(k)}") for k, v in value.items()}
    if annotation is bool:
        if not isinstance(value, bool):
            raise _fail(source, key, f"expected true or false, got {show_value(value)}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(source, key, f"expected an integer, got {show_value(value)}")
        if not -(2**63) <= value < 2**63:  # PyTorch, NumPy and the checkpoint take 64-bit integers
            raise _fail(source, key, f"expected a 64-bit integer, got {show_value(value)}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(source, key, f"expected a number, got {show_value(value)}")
        try:
            return float(value)
        except OverflowError:  # an integer beyond float's range
            raise _fail(source, key, f"expected a number, got {show_value(value)}, too large") from None
    if annotation is str:
        if not isinstance(value, str):
            raise _fail(source, key, f"expected a string, got {show_value(value)}")
        return value
    if annotation is Path:
        if not isinstance(value, (str, os.PathLike)):
            raise _fail(source, key, f"expected a path, got {show_value(value)}")
        return Path(value)
    raise _fail(source, key, f"unsupported field type {annotation!r}")  # pragma: no cover - a programming error


def load_dataclass(cls: type[T], mapping: dict[str, Any] | None, source: str = "<config>", prefix: str = "") -> T:
    """Build ``cls`` from ``mapping``; missing keys take their defaults, unknown keys are errors."""
    mapping = mapping or {}
    if not isinstance(mapping, dict):
        raise _fail(source, prefix.rstrip("."), f"expected a mapping, got {show_value(mapping)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in mapping.items():
        if key not in fields:
            hint = difflib.get_close_matches(_name(key), list(fields), n=1)
            suggestion = f" (did you mean '{prefix}{hint[0]}'?)" if hint else ""
            raise ConfigError(
                f"{source}: unknown key '{prefix}{_name(key)}'{suggestion}; allowed here: {', '.join(fields)}"
            )
        values[key] = _convert(value, hints[key], source, f"{prefix}{key}")
    missing = [
        f"{prefix}{name}"
        for name, f in fields.items()
        if name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise _fail(source, "", f"missing required key(s): {', '.join(missing)}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        raise _fail(source, prefix.rstrip("."), str(error)) from error


def apply_overrides(mapping: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``mapping`` with ``a.b.c=value`` overrides applied (values parsed as YAML)."""
    result = copy.deepcopy(mapping)
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override {override!r} must look like key.subkey=value")
        dotted, text = override.split("=", 1)
        node = result
        *parents, last = dotted.strip().split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {override!r}: {part!r} is not a section")
            node = child
        try:
            node[last] = yaml.safe_load(text) if text.strip() else None
        except (yaml.YAMLError, ValueError, RecursionError) as error:
            raise ConfigError(f"override {override!r}: the value is not valid YAML ({error})") from error
    return result


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping with ``yaml.safe_load``; errors name the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read ({error.strerror or error})") from error
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not a UTF-8 text file ({error})") from error
    except (yaml.YAMLError, ValueError, RecursionError) as error:  # an integer too long, nesting too deep
        raise ConfigError(f"{path}: not valid YAML ({error})") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def to_dict(instance: Any) -> Any:
    """A dataclass (recursively) as plain YAML-safe data: tuples become lists, paths strings."""
    if dataclasses.is_dataclass(instance):
        return {f.name: to_dict(getattr(instance, f.name)) for f in dataclasses.fields(instance) if f.init}
    if isinstance(instance, (list, tuple)):
        return [to_dict(item) for item in instance]
    if isinstance(instance, dict):
        return {key: to_dict(value) for key, value in instance.items()}
    if isinstance(instance, Path):
        return str(instance)
    return instance
