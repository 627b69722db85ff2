"""Pydantic's validation errors, said the way a person fixing a job file needs them.

Pydantic writes "Input should be a valid integer, unable to parse string as an
integer" and "Extra inputs are not permitted"; a job file's author wants
"expected an integer, got 'abc'" and "unknown field 'comand' (did you mean
'command'?)".  This module owns that wording, in one place, so the CLI, the API
and the tests all see the same sentences.  It also finds the model a path leads
to, which is what the "did you mean" hints are drawn from.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

_VALUE_PREFIXES = ("Value error, ", "Assertion failed, ")
_QUOTED = re.compile(r"'((?:[^'\\]|\\.)*)'")


@dataclass
class Explained:
    """An error in words: the message, an optional hint, and a suggested name."""

    message: str
    hint: str | None = None
    suggestion: str | None = None


def describe(value: object) -> str:
    """A short rendering of a bad value for "got ..." (YAML spelling of scalars)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a value of type {type(value).__name__}"


def suggest(word: str, choices: list[str]) -> str | None:
    """The closest of ``choices`` to a misspelled ``word``, if one is close enough."""
    matches = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if not matches:  # case slips ("Command") are not typos but still deserve a hint
        lowered = {c.lower(): c for c in choices}
        return lowered.get(word.lower())
    return matches[0]


def model_at(root: type[BaseModel], path: tuple[object, ...]) -> type[BaseModel] | None:
    """The model class the mapping at ``path`` (relative to ``root``) is validated as.

    Follows field annotations through ``dict[str, X]``, ``list[X]`` and
    ``X | None``; ``None`` where the path leaves the models (a free-form dict).
    """
    tp: Any = root
    for part in path:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            info = _field(tp, part)
            if info is None:
                return None
            tp = info
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        elif get_origin(tp) is list:
            tp = get_args(tp)[0]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def field_names(model: type[BaseModel]) -> list[str]:
    """The keys a mapping of ``model`` accepts, in declaration order."""
    return [info.alias or name for name, info in model.model_fields.items()]


def _field(model: type[BaseModel], key: object) -> Any:
    for name, info in model.model_fields.items():
        if key in (name, info.alias):
            return info.annotation
    return None


def _unwrap(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def explain(
    error: Mapping[str, Any],
    *,
    field: object,
    model: type[BaseModel] | None,
    siblings: Collection[object] = (),
) -> Explained:
    """Word one pydantic error (an item of ``ValidationError.errors()``).

    ``field`` is the key the error is about (the missing or unknown one, or the
    one whose value is wrong); ``model`` is the model of the mapping that holds
    it and ``siblings`` the keys that mapping has, used to suggest field names.
    """
    kind = error["type"]
    value = error.get("input")
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    got = describe(value)
    if kind == "missing":
        return Explained(f"required field {_name(field)} is missing")
    if kind == "extra_forbidden":
        return _unknown_field(field, model, siblings)
    if kind in ("value_error", "assertion_error"):
        message = error["msg"]
        for prefix in _VALUE_PREFIXES:
            message = message.removeprefix(prefix)
        return Explained(message)
    if kind in ("enum", "literal_error"):
        allowed = _QUOTED.findall(str(ctx.get("expected", "")))
        hint = None
        if isinstance(value, str) and allowed:
            close = suggest(value, allowed)
            hint = f"did you mean {close!r}?" if close else None
        return Explained(
            f"expected {ctx.get('expected', 'one of the allowed values')}, got {got}", hint
        )
    if kind == "string_type":
        hint = None
        if isinstance(value, int | float | bool):
            hint = "write it in quotes to make it a string"
        return Explained(f"expected a string, got {got}", hint)
    simple = _SIMPLE.get(kind)
    if simple is not None:
        try:
            return Explained(simple.format(got=got, **ctx))
        except (KeyError, IndexError):
            return Explained(error["msg"])
    if kind == "string_too_short":
        if ctx.get("min_length") == 1:
            return Explained("must not be empty")
        return Explained(f"must be at least {ctx.get('min_length')} characters long, got {got}")
    if kind == "string_too_long":
        return Explained(f"must be at most {ctx.get('max_length')} characters long")
    return Explained(error["msg"])


_SIMPLE = {
    "int_type": "expected an integer, got {got}",
    "int_parsing": "expected an integer, got {got}",
    "int_parsing_size": "the integer {got} is too large",
    "int_from_float": "expected a whole number, got {got}",
    "float_type": "expected a number, got {got}",
    "float_parsing": "expected a number, got {got}",
    "finite_number": "expected a finite number, got {got}",
    "bool_type": "expected true or false, got {got}",
    "bool_parsing": "expected true or false, got {got}",
    "dict_type": "expected a mapping, got {got}",
    "model_type": "expected a mapping, got {got}",
    "model_attributes_type": "expected a mapping, got {got}",
    "list_type": "expected a list, got {got}",
    "greater_than": "must be greater than {gt}, got {got}",
    "greater_than_equal": "must be at least {ge}, got {got}",
    "less_than": "must be less than {lt}, got {got}",
    "less_than_equal": "must be at most {le}, got {got}",
    "too_short": "must have at least {min_length} items",
    "too_long": "must have at most {max_length} items",
}


def _name(field: object) -> str:
    return repr(field) if isinstance(field, str) else str(field)


def _unknown_field(
    field: object, model: type[BaseModel] | None, siblings: Collection[object]
) -> Explained:
    message = f"unknown field {_name(field)}"
    if model is None:
        return Explained(message)
    allowed = field_names(model)
    # A field already given is not what a misspelling meant.
    candidates = [name for name in allowed if name not in siblings]
    close = suggest(str(field), candidates) if candidates else None
    if close is not None:
        return Explained(message, f"did you mean {close!r}?", suggestion=close)
    return Explained(message, "allowed fields: " + ", ".join(allowed))
