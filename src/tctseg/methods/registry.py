"""Name → method class. ``@register_method`` adds one; ``build_method(config)`` builds it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tctseg.errors import ConfigError
from tctseg.settings import check_method_options

if TYPE_CHECKING:
    from tctseg.config import Config
    from tctseg.methods.base import Method

_METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _METHODS[cls.name] = cls
    return cls


def available_methods() -> dict[str, str]:
    """Registered method names with their one-line descriptions."""
    return {name: cls.description for name, cls in sorted(_METHODS.items())}


def method_class(name: str) -> type[Method]:
    try:
        return _METHODS[name]
    except KeyError:
        raise ConfigError(f"method.name: unknown method {name!r}; available: {', '.join(sorted(_METHODS))}") from None


def build_method(config: Config) -> Method:
    """Build the method named by ``config.method.name`` (with its network) from the config.

    A ``method.options`` key that no method reads (:data:`tctseg.settings.METHOD_OPTIONS`) is
    a ConfigError naming it, also for a config changed after it was read."""
    cls = method_class(config.method.name)
    check_method_options(config.method.name, config.method.options)
    return cls.from_config(config)
