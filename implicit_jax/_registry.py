"""Names as shortcuts for default-configured objects, with errors that list the valid names."""

from __future__ import annotations

from typing import Any, Callable, Mapping


def resolve(value: Any, registry: Mapping[str, Callable[[], Any]], base: type, option: str, example: str) -> Any:
    """``value`` if it is a configured ``base`` object, else ``registry[value]()``; ValueError otherwise."""
    if isinstance(value, base):
        return value
    if isinstance(value, str) and value in registry:
        return registry[value]()
    raise ValueError(f"unknown {option} {value!r}; valid names are {sorted(registry)}, or pass a configured object such as {example}.")
