"""Reading a baseline's ``method.options`` (an untyped mapping in the config) into typed values."""

from __future__ import annotations

from typing import Any

from tctseg.errors import ConfigError


def option(options: dict[str, Any], key: str, default: Any, kind: type = float) -> Any:
    """``method.options[key]`` as ``kind`` (default when absent); ConfigError naming the key."""
    value = options.get(key, default)
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"method.options.{key}: expected {kind.__name__}, got {value!r}") from None
