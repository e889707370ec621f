"""Names as shortcuts for configured objects, with errors that list the valid names and options.

Every solver and estimator is a frozen dataclass. :func:`resolve` turns a name and a mapping of
options (what a config file or a command line gives) into the configured object, checking each
option against the dataclass's fields and their annotated types before the object's own
``__post_init__`` checks the values. :func:`parse_spec` reads the compact form
``"name:option=value:option=value"`` that the scripts accept in their lists of estimators.
"""

from __future__ import annotations

import ast
import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, Union

Converters = Mapping[type, Callable[..., Any]]


def resolve(
    value: Any,
    registry: Mapping[str, Callable[..., Any]],
    base: type,
    option: str,
    example: str,
    options: Mapping[str, Any] | None = None,
    converters: Converters | None = None,
) -> Any:
    """``value`` if it is a configured ``base`` object, else ``registry[value](**options)``; ValueError otherwise.

    ``options`` are checked by :func:`configure`; they apply to names only (a configured
    object already holds its options). ``converters`` turn a string option into an object for
    fields annotated with that object's class (a solver name for a solver field, say).
    """
    if isinstance(value, base):
        if options:
            raise ValueError(f"{option} options {dict(options)} apply to a name only; {value!r} is already configured.")
        return value
    if isinstance(value, str) and value in registry:
        return configure(value, registry[value], options or {}, option, converters or {})
    raise ValueError(
        f"unknown {option} {value!r}; valid names are {sorted(registry)}, or pass a configured object such as {example}."
    )


def option_fields(cls: Callable[..., Any]) -> dict[str, dataclasses.Field]:
    """The options of a configurable class: its dataclass fields that ``__init__`` takes."""
    return {field.name: field for field in dataclasses.fields(cls) if field.init}  # type: ignore[arg-type]  # registered classes are dataclasses


def describe_options(cls: Callable[..., Any]) -> str:
    """``"k=5, damping=0.5"``: each option with its default, for error messages."""
    parts = []
    for name, field in option_fields(cls).items():
        default = field.default if field.default is not dataclasses.MISSING else "<required>"
        parts.append(f"{name}={default!r}")
    return ", ".join(parts) if parts else "(no options)"


def configure(name: str, cls: Callable[..., Any], options: Mapping[str, Any], option: str, converters: Converters) -> Any:
    """``cls(**options)`` after checking every option's name and type; one ValueError listing all problems."""
    fields = option_fields(cls)
    hints = typing.get_type_hints(cls)
    problems, kwargs = [], {}
    for key, raw in options.items():
        if key not in fields:
            problems.append(f"{option} {name!r} has no option {key!r}")
            continue
        hint = hints.get(key, Any)
        ok, value = _coerce(raw, hint, converters)
        if not ok:
            problems.append(f"{option} {name!r}: {key}={raw!r} has the wrong type (expected {_type_name(hint, converters)})")
        kwargs[key] = value
    if not problems:
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as error:
            problems.append(f"{option} {name!r}: {str(error).rstrip('.')}")
    raise ValueError("; ".join(problems) + f". Options of {name!r} (with defaults): {describe_options(cls)}.")


def _coerce(value: Any, hint: Any, converters: Converters) -> tuple[bool, Any]:
    """``(matches, value)``: whether ``value`` fits the annotation ``hint``, and the value to pass (converted)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True, value
    if origin in (Union, types.UnionType):
        members = typing.get_args(hint)
        for member in members:  # exact matches first, so "gmres" stays a string where strings are allowed
            if member is not float and _coerce(value, member, {})[0]:
                return _coerce(value, member, {})
        for member in members:
            ok, converted = _coerce(value, member, converters)
            if ok:
                return True, converted
        return False, value
    if origin is Literal:
        return value in typing.get_args(hint), value
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if isinstance(hint, type):
        if isinstance(value, hint):
            return True, value
        if isinstance(value, str) and hint in converters:
            try:
                return True, converters[hint](value)
            except ValueError:
                return False, value
        return False, value
    return True, value  # an annotation this check does not model: the class's own checks decide


def _type_name(hint: Any, converters: Converters) -> str:
    """A reader's name for an annotation: ``int``, ``one of ['good', 'bad']``, ``GMRES name or object | None``."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(member, converters) for member in typing.get_args(hint))
    if origin is Literal:
        return f"value in {list(typing.get_args(hint))}"
    if hint is type(None):
        return "None"
    if isinstance(hint, type) and hint in converters:
        return f"{hint.__name__} (or its name)"
    return getattr(hint, "__name__", str(hint))


def parse_value(text: str) -> Any:
    """A command-line value: a Python literal (``3``, ``0.8``, ``True``, ``None``) or else the string itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"phantom_unroll:k=3:damping=0.8"`` -> ``("phantom_unroll", {"k": 3, "damping": 0.8})``."""
    name, *items = spec.strip().split(":")
    options = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{spec!r}: expected NAME:OPTION=VALUE:..., got {item!r} after the name")
        options[key.strip()] = parse_value(text.strip())
    return name, options
