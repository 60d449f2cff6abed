"""Reading a baseline's ``method.options`` (an untyped mapping in the config) into typed values:
one key (:func:`option`) or a method's typed options dataclass (:func:`read_options`)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

from tctseg.errors import ConfigError

T = TypeVar("T")


def option(options: dict[str, Any], key: str, default: Any, kind: type = float) -> Any:
    """``method.options[key]`` as ``kind`` (default when absent); ConfigError naming the key."""
    value = options.get(key, default)
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"method.options.{key}: expected {kind.__name__}, got {value!r}") from None


def read_options(cls: type[T], options: dict[str, Any]) -> T:
    """The typed options dataclass ``cls`` (every field with a default) from ``method.options``:
    each field read by :func:`option` as the type of its default; keys ``cls`` has no field
    for are left to other readers (e.g. CLIP-Driven's embedding source)."""
    return cls(**{f.name: option(options, f.name, f.default, type(f.default)) for f in fields(cls)})
