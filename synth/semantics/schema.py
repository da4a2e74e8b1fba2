"""Checking what a language model returns for the extractor: parse, repair, validate.

A reply is first read as JSON as it is. If that fails, a few mechanical repairs are tried
(code fences, text around the object, trailing commas, typographic quotes, Python literals,
key spelling, null or list values), and the result must still pass the JSON schema in
``data/components.schema.json``. Whatever fails raises :class:`ReplyError` with a message that
is sent back to the model on its one retry.
"""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from functools import cache

from . import resources

COMPONENTS = ("pose", "action", "hand_action", "environment")


class ReplyError(ValueError):
    """A model reply that is not a valid components object; the message says why."""


@dataclass(frozen=True)
class Parsed:
    components: dict[str, str]
    repaired: bool


@cache
def _validator():
    from jsonschema import Draft202012Validator

    schema = resources.load_json("components.schema.json")
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def validate(obj: object) -> dict[str, str]:
    """`obj` if it matches the components schema, else ReplyError naming the first problem."""
    errors = sorted(_validator().iter_errors(obj), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path)
        raise ReplyError(f"{where + ': ' if where else ''}{err.message}")
    return dict(obj)  # type: ignore[arg-type]


_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"})


def _object_text(text: str) -> str:
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1)
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise ReplyError("no JSON object found in the reply")
    return text[start : end + 1]


def _loads_lenient(text: str) -> object:
    text = _TRAILING_COMMA.sub(r"\1", text.translate(_QUOTES))
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        try:  # single quotes, True/None: a Python dict literal
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise ReplyError(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def _normalise(obj: object) -> object:
    if not isinstance(obj, dict):
        return obj
    out = {}
    for key, value in obj.items():
        key = re.sub(r"[\s\-]+", "_", str(key).strip().lower())
        if value is None:
            value = ""
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = ", ".join(value)
        out[key] = value.strip() if isinstance(value, str) else value
    return out


def parse_components(reply: str) -> Parsed:
    """The components in a model reply; ``repaired`` says whether a repair was needed."""
    try:
        return Parsed(validate(json.loads(reply)), repaired=False)
    except (json.JSONDecodeError, ReplyError):
        pass
    obj = _normalise(_loads_lenient(_object_text(reply)))
    return Parsed(validate(obj), repaired=True)


__all__ = ["COMPONENTS", "Parsed", "ReplyError", "parse_components", "validate"]
