"""The toolkit's single config system: typed dataclass schemas, YAML files, ``--set`` overrides.

A schema is a (possibly frozen) dataclass whose sections are nested dataclasses. Supported field
types: ``int``, ``float``, ``bool``, ``str``, ``pathlib.Path``, ``Enum`` subclasses, ``Literal[...]``,
``Optional[X]`` / ``X | None`` (and other unions of supported types, tried in order), ``list[X]``,
``tuple[X, ...]``, ``tuple[X, Y]``, ``dict[str, Section]`` (named sections: ``data.sources``; a
dotted ``--set`` adds or changes one, ``NAME=null`` drops one) and ``dict[str, X]`` (a whole mapping replaces the field's
value; a dotted key such as ``--set data.ratios.synth=0.3`` sets one entry, at any depth). ``Any``
takes any YAML value unchecked: a ``dict[str, Any]`` field holds options that a schema chosen by
another field checks in ``__post_init__`` with :func:`build_section` (``model.options``, checked by
the architecture ``model.name`` names). A field may restrict its values with
``field(default="cpu", metadata={"choices": ("cpu", "cuda", "auto")})``. A field without a default
is required. ``__post_init__`` checks value ranges with :func:`check_fields` (or raises
:class:`FieldError` for a check of its own), which the loader reports under the field's full dotted
key (``data.batch_size must be >= 1, got -4``, or ``experiment.data.batch_size ...`` where the
section is nested deeper); any other ``ValueError`` it raises is reported with its section.
``field(..., metadata={"resolved": fn})`` makes ``--print-config`` list ``fn(section)`` (a
dataclass instance, e.g. an architecture's full config) as comments below the field. A schema's
``__moved_keys__`` class attribute maps keys of an older form to a one-line hint of the new form.

Config values are layered: schema defaults, then the YAML file (a plain mapping, no Hydra
``defaults``), then ``--set a.b=value`` overrides in order. Every layer is type-checked as it is
merged, so errors name their source (file and line, or the ``--set`` item), the full dotted key,
the offending value and what was expected. All failures raise :class:`ConfigError`.

There is no global config object: :func:`load_config` returns a new dataclass instance that
callers pass on explicitly.

Example::

    @dataclass
    class TrainConfig:
        lr: float = 1e-3
        steps: int = 1000

    @dataclass
    class Config:
        train: TrainConfig = field(default_factory=TrainConfig)
        device: str = field(default="auto", metadata={"choices": ("cpu", "cuda", "auto")})

    cfg = load_config(Config, "configs/train.yaml", ["train.lr=1e-4", "device=cuda"])
"""

from __future__ import annotations

import contextvars
import dataclasses
import difflib
import enum
import functools
import hashlib
import inspect
import json
import math
import re
import textwrap
import tokenize
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, Literal, TypeVar, Union

import yaml

from handrecon.errors import UserError
from handrecon.io import atomic_write_text

__all__ = [
    "ConfigError",
    "FieldError",
    "UserError",
    "build_section",
    "check_fields",
    "config_hash",
    "config_to_dict",
    "load_config",
    "save_config",
    "to_yaml",
]

T = TypeVar("T")


class ConfigError(UserError, ValueError):
    """A config file or override is missing, malformed, or does not match the schema."""


# --------------------------------------------------------------------------------------------
# YAML dialect. PyYAML implements YAML 1.1, which reads `1e-4` as a *string* and `2024-01-01` as a
# date. Configs want `1e-4` to be a float and dates to stay strings, so loader and dumper share
# an adjusted resolver table (the dumper must agree, or a str "1e-4" would be written unquoted
# and read back as a float).

_FLOAT_RE = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_FLOAT_TAG = "tag:yaml.org,2002:float"
_DROPPED_TAGS = (_FLOAT_TAG, "tag:yaml.org,2002:timestamp")


def _resolvers() -> dict[Any, list[tuple[str, re.Pattern[str]]]]:
    table = {
        first: [(tag, rx) for tag, rx in entries if tag not in _DROPPED_TAGS]
        for first, entries in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    for first in "-+0123456789.":
        table.setdefault(first, []).append((_FLOAT_TAG, _FLOAT_RE))
    return table


class _Loader(yaml.SafeLoader):
    """SafeLoader with the resolver fixes above that also rejects duplicate keys."""

    yaml_implicit_resolvers = _resolvers()

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        # PyYAML silently keeps the last duplicate; in a config that hides a typo or a merge mistake.
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


class _Dumper(yaml.SafeDumper):
    yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers


# --------------------------------------------------------------------------------------------
# Validation. `_merge` checks one layer against the schema and raises `_Invalid` carrying the
# key path; the caller adds the source (file + line, or the --set item) to the message.

_Path = tuple[Union[str, int], ...]


class _Invalid(Exception):
    def __init__(self, path: _Path, message: str) -> None:
        super().__init__(message)
        self.path = path


@dataclasses.dataclass(frozen=True)
class _Override:
    """A --set value: the parsed YAML scalar plus its raw text (str fields keep the raw text). In an
    ``Any`` value it is kept until the schema that checks the value (see :func:`build_section`)
    coerces it, so ``--set model.options.backbone=007`` reaches a str option as "007"."""

    value: Any
    text: str


def _unwrap(value: Any) -> tuple[Any, str | None]:
    """(value, raw --set text) of a possibly wrapped override value."""
    return (value.value, value.text) if isinstance(value, _Override) else (value, None)


def _has_override(value: Any) -> bool:
    """Whether the mapping `value` holds a --set value at some depth: it is the tail of a dotted
    --set key (``data.ratios.synth=0.3``), which sets one entry instead of the whole mapping."""
    return isinstance(value, Mapping) and any(isinstance(v, _Override) or _has_override(v) for v in value.values())


def _merge_entries(base: Any, update: Mapping[str, Any]) -> dict[str, Any]:
    """`update` (the tail of a dotted --set key) merged into the mapping `base`, at any depth."""
    base = _unwrap(base)[0]
    out = dict(base) if isinstance(base, Mapping) else {}
    for key, value in update.items():
        out[key] = _merge_entries(out.get(key), value) if _has_override(value) else value
    return out


def _plain(value: Any) -> Any:
    """`value` with every --set wrapper replaced by its parsed value (the same object if it has none)."""
    if isinstance(value, _Override):
        return value.value
    if isinstance(value, Mapping):
        out = {k: _plain(v) for k, v in value.items()}
        return value if all(out[k] is v for k, v in value.items()) else out
    if isinstance(value, (list, tuple)):
        items = [_plain(v) for v in value]
        return value if all(a is b for a, b in zip(items, value)) else type(value)(items)
    return value


def _dotted(path: _Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a mapping"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@functools.lru_cache(maxsize=None)
def _schema_fields(schema: type) -> dict[str, tuple[dataclasses.Field[Any], Any]]:
    """Init fields of a dataclass with their resolved types (handles `from __future__` strings)."""
    if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
        raise TypeError(f"config schema must be a dataclass type, got {schema!r}")
    hints = typing.get_type_hints(schema)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(schema) if f.init}


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _section_type(tp: Any) -> type | None:
    """The dataclass behind a section field (`Section` or `Optional[Section]`), else None."""
    if _is_union(tp):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _section_type(args[0]) if len(args) == 1 else None
    return tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None


def _entry_section_type(tp: Any) -> type | None:
    """The dataclass of the entries of a `dict[str, Section]` field, else None."""
    if typing.get_origin(tp) is dict:
        entry = typing.get_args(tp)[1]
        return entry if isinstance(entry, type) and dataclasses.is_dataclass(entry) else None
    return None


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if _is_union(tp):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin is dict:
        return "mapping" if args[1] is Any else f"mapping of {_type_name(args[1])}"
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        return f"list of {len(args)} values ({', '.join(_type_name(a) for a in args)})"
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(str(_enum_plain(m)) for m in tp)
    if tp is Path:
        return "path"
    return getattr(tp, "__name__", str(tp))


def _enum_plain(member: enum.Enum) -> Any:
    """How an Enum member is written in YAML: its value if that is a scalar, else its name."""
    return member.value if isinstance(member.value, (str, int, float, bool)) else member.name


def _coerce(tp: Any, value: Any, path: _Path, raw: str | None = None) -> Any:
    """Check `value` against type `tp` and convert it (int->float, list->tuple, str->Path, ...).

    `raw` is the original --set text, used for str-like targets so `--set name=007` gives "007".
    """

    def fail() -> typing.NoReturn:
        key = _dotted(path)
        note = f" ('{key}' is not a section)" if isinstance(value, Mapping) else ""
        raise _Invalid(path, f"expected {_type_name(tp)} for '{key}', got {_show(value)}{note}")

    if tp is Any:  # checked later by whoever reads it; a --set value keeps its raw text until then
        return value if raw is None else _Override(value, raw)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if _is_union(tp):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is not type(None):
                try:
                    return _coerce(arg, value, path, raw)
                except _Invalid as exc:
                    if len(args) == 2 and type(None) in args and exc.path != path:
                        raise  # Optional[list[int]]: keep the precise item-level message
        fail()
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            fail()
        if origin is list:
            return [_coerce(args[0], v, (*path, i)) for i, v in enumerate(value)]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, (*path, i)) for i, v in enumerate(value))
        if len(value) != len(args):
            fail()
        return tuple(_coerce(a, v, (*path, i)) for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            fail()
        return {k: _coerce(args[1], _unwrap(v)[0], (*path, k), _unwrap(v)[1]) for k, v in value.items()}
    if origin is Literal:
        for choice in args:
            for candidate in (value, raw):
                if type(candidate) is type(choice) and candidate == choice:
                    return choice
        raise _Invalid(path, _choices_message(path, value, args))
    if tp is bool:
        if isinstance(value, bool):
            return value
        fail()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        fail()
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        fail()
    if tp is str:
        if isinstance(value, str):
            return value
        if raw is not None and isinstance(value, (int, float, bool)):
            return raw
        fail()
    if tp in (Path, PurePath):
        if isinstance(value, PurePath):
            return Path(value)
        if raw is not None and isinstance(value, (int, float, bool)):
            value = raw
        if isinstance(value, str) and value:
            return Path(value)
        fail()
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        for member in tp:  # by value first (what we write), then by name
            if type(member.value) is type(value) and member.value == value:
                return member
        for member in tp:
            if value == member.name or (raw is not None and raw == member.name):
                return member
        raise _Invalid(path, _choices_message(path, value, [_enum_plain(m) for m in tp]))
    raise TypeError(f"unsupported type {tp!r} for config field '{_dotted(path)}'")


def _choices_message(path: _Path, value: Any, choices: Sequence[Any]) -> str:
    listed = ", ".join(str(c) for c in choices)
    return f"invalid value {_show(value)} for '{_dotted(path)}' (choices: {listed})"


def _check_choices(field: dataclasses.Field[Any], value: Any, path: _Path) -> None:
    choices = field.metadata.get("choices")
    if choices is None or value is None:
        return
    items = list(enumerate(value)) if isinstance(value, (list, tuple)) else [(None, value)]
    for i, item in items:  # for list/tuple fields the choices apply to each item
        if item not in choices:
            item_path = path if i is None else (*path, i)
            raise _Invalid(item_path, _choices_message(item_path, item, choices))


def _unknown_key(schema: type, path: _Path, key: Any) -> _Invalid:
    moved = getattr(schema, "__moved_keys__", {})  # keys of an older form of the schema -> how to write them now
    if key in moved:
        return _Invalid((*path, str(key)), f"'{_dotted((*path, str(key)))}': {moved[key]}")
    valid = sorted(_schema_fields(schema))
    where = f"under '{_dotted(path)}'" if path else "at top level"
    message = f"unknown key '{_dotted((*path, str(key)))}' (valid keys {where}: {', '.join(valid)}"
    close = difflib.get_close_matches(str(key), valid, n=1)
    if close:
        message += f"; did you mean '{_dotted((*path, close[0]))}'?"
    return _Invalid((*path, str(key)), message + ")")


def _merge(schema: type, base: dict[str, Any], update: Mapping[Any, Any], path: _Path = ()) -> None:
    """Validate `update` against `schema` and merge it into `base` (a checked plain dict), in place."""
    fields = _schema_fields(schema)
    for key, value in update.items():
        if key not in fields:
            if not isinstance(key, str):
                raise _Invalid(path, f"key {key!r} under '{_dotted(path) or 'top level'}' is not a string")
            raise _unknown_key(schema, path, key)
        field, tp = fields[key]
        key_path = (*path, key)
        raw = None
        if isinstance(value, _Override):
            value, raw = value.value, value.text
        entry_schema = _entry_section_type(tp)
        if entry_schema is not None:
            base[key] = _merge_entry_sections(entry_schema, base.get(key), value, key_path)
            continue
        section = _section_type(tp)
        if section is not None:
            if isinstance(value, Mapping):
                if not isinstance(base.get(key), dict):  # section was null (or absent): start from its defaults
                    base[key] = {}
                    _merge(section, base[key], _defaults(section), key_path)
                _merge(section, base[key], value, key_path)
            elif value is None and tp is not section:
                base[key] = None
            else:
                kind = "a mapping or null" if tp is not section else "a mapping"
                raise _Invalid(key_path, f"expected {kind} for section '{_dotted(key_path)}', got {_show(value)}")
            continue
        if typing.get_origin(tp) is dict and _has_override(value):
            # `--set data.ratios.synth=0.3` sets one entry (`model.options.loss_weights.verts=0` one
            # nested entry); a whole mapping replaces the field
            value = _merge_entries(base.get(key), value)
        value = _coerce(tp, value, key_path, raw)
        _check_choices(field, value, key_path)
        base[key] = value


def _merge_entry_sections(schema: type, base: dict[str, Any] | None, value: Any, path: _Path) -> dict[str, Any]:
    """A `dict[str, Section]` field: named entries, each checked and merged as a section. A whole
    mapping replaces the entries; a dotted --set key adds or changes one entry (from the section's
    defaults when new) and ``NAME=null`` drops it."""
    if not isinstance(value, Mapping):
        raise _Invalid(path, f"expected a mapping of named sections for '{_dotted(path)}', got {_show(value)}")
    out = dict(base or {}) if _has_override(value) else {}
    for name, item in value.items():
        if not isinstance(name, str):
            raise _Invalid(path, f"key {name!r} under '{_dotted(path)}' is not a string")
        item_path = (*path, name)
        whole = not isinstance(item, Mapping)  # a value given for the entry itself replaces it
        item = _unwrap(item)[0]
        if item is None:
            out.pop(name, None)
            continue
        if not isinstance(item, Mapping):
            raise _Invalid(item_path, f"expected a mapping or null for section '{_dotted(item_path)}', got {_show(item)}")
        if whole or name not in out:
            out[name] = {}
            _merge(schema, out[name], _defaults(schema), item_path)
        else:
            out[name] = dict(out[name])
        _merge(schema, out[name], item, item_path)
    return out


def _as_dict(obj: Any, leaf: Callable[[Any], Any] = lambda value: value) -> Any:
    """Dataclass instance -> nested dict of lists and dicts, each leaf passed through `leaf` (by
    default kept as it is: Path, Enum, for `_coerce` to check)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {name: _as_dict(getattr(obj, name), leaf) for name in _schema_fields(type(obj))}
    if isinstance(obj, (list, tuple)):
        return [_as_dict(v, leaf) for v in obj]
    if isinstance(obj, Mapping):
        return {k: _as_dict(v, leaf) for k, v in obj.items()}
    return leaf(obj)


def _plain_leaf(value: Any) -> Any:
    if isinstance(value, PurePath):
        return str(value)
    return _enum_plain(value) if isinstance(value, enum.Enum) else value


def _defaults(schema: type) -> dict[str, Any]:
    """The schema's defaults as a nested dict; required fields are left out."""
    out: dict[str, Any] = {}
    for name, (field, tp) in _schema_fields(schema).items():
        if field.default is not dataclasses.MISSING:
            out[name] = _as_dict(field.default)
        elif field.default_factory is not dataclasses.MISSING:
            out[name] = _as_dict(field.default_factory())
        elif _section_type(tp) is tp:  # a section without a default starts from its own defaults
            out[name] = _defaults(tp)
    return out


# --------------------------------------------------------------------------------------------
# Range checks, called from the schemas' own __post_init__ (so they also guard direct construction).


class FieldError(ValueError):
    """A config value outside its range, raised from a schema's ``__post_init__`` (see
    :func:`check_fields`). `key` is the field's path inside its dataclass: a name, or a tuple
    such as ``("output_size", 0)``; :func:`load_config` reports it under its full dotted key."""

    def __init__(self, key: str | _Path, rule: str, value: Any) -> None:
        self.key: _Path = (key,) if isinstance(key, str) else tuple(key)
        self.rule, self.value = rule, value
        super().__init__(self.message())

    def message(self, section: _Path = ()) -> str:
        """``<key> must be <rule>, got <value>``, the key prefixed with its `section`'s path."""
        shown = repr(dict(self.value)) if isinstance(self.value, Mapping) else _show(self.value)
        return f"{_dotted((*section, *self.key))} must be {self.rule}, got {shown}"


_INTERVAL_RE = re.compile(r"in ([\[(])(\S+), (\S+)([\])])")


@functools.lru_cache(maxsize=None)
def _rule_test(rule: str) -> Callable[[Any], bool]:
    if rule == "finite":
        return lambda v: True
    if rule == "lo <= hi":
        return lambda v: v[0] <= v[1]
    op, _, bound = rule.partition(" ")
    if op in (">=", ">"):
        b = float(bound)
        return (lambda v: v >= b) if op == ">=" else (lambda v: v > b)
    match = _INTERVAL_RE.fullmatch(rule)
    if match is None:
        raise TypeError(f"unknown range rule {rule!r}")  # a code bug, not a config error
    left, lo_text, hi_text, right = match.groups()
    lo, hi = float(lo_text), float(hi_text)
    return lambda v: (lo <= v if left == "[" else lo < v) and (v <= hi if right == "]" else v < hi)


def check_fields(obj: Any, rule: str, *names: str) -> None:
    """Check the fields `names` of the dataclass instance `obj` against `rule`; raise
    :class:`FieldError` for the first value that breaks it. Call it from ``__post_init__``.

    Rules: ``">= 1"``, ``"> 0"`` (any bound), intervals ``"in [0, 1]"``, ``"in [0, 1)"``,
    ``"in (0, 1]"``, ``"finite"`` (any finite number), and ``"lo <= hi"`` for a (lo, hi) pair.
    Every float must also be finite. A list, tuple or mapping is checked item by item (except
    by ``"lo <= hi"``) and the error names the item (``output_size[0]``, ``loss_weights.verts``).
    None passes: an optional field is checked when set (its message adds "or null").
    """
    test = _rule_test(rule)
    for name in names:
        value = getattr(obj, name)
        if value is None:
            continue
        if rule != "lo <= hi" and isinstance(value, Mapping):
            items: list[tuple[_Path, Any]] = [((name, k), v) for k, v in value.items()]
        elif rule != "lo <= hi" and isinstance(value, (list, tuple)):
            items = [((name, i), v) for i, v in enumerate(value)]
        else:
            items = [((name,), value)]
        for key, item in items:
            if isinstance(item, float) and not math.isfinite(item):
                raise FieldError(key, "finite", item)
            if not test(item):
                tp = _schema_fields(type(obj))[name][1]
                optional = len(key) == 1 and _is_union(tp) and type(None) in typing.get_args(tp)
                raise FieldError(key, f"{rule} or null" if optional else rule, item)


# The path of the section whose dataclass is being constructed by `_build`: a `build_section` call
# from its __post_init__ reports under it, as a FieldError's key is reported under it.
_SECTION: contextvars.ContextVar[_Path] = contextvars.ContextVar("_SECTION", default=())


def _build(schema: type[T], data: dict[str, Any], path: _Path = ()) -> T:
    kwargs: dict[str, Any] = {}
    for name, (_, tp) in _schema_fields(schema).items():
        key_path = (*path, name)
        if name not in data:
            key = _dotted(key_path)
            raise ConfigError(f"missing required key '{key}' (set it in the config file or with --set {key}=VALUE)")
        section, entry_schema = _section_type(tp), _entry_section_type(tp)
        value = data[name]
        if entry_schema is not None:
            kwargs[name] = {k: _build(entry_schema, v, (*key_path, k)) for k, v in value.items()}
        else:
            kwargs[name] = _build(section, value, key_path) if section is not None and value is not None else value
    section_token = _SECTION.set(path)
    try:
        obj = schema(**kwargs)
    except ConfigError:
        raise
    except FieldError as exc:  # a range check in a schema's __post_init__: name the full key
        raise ConfigError(exc.message(path)) from exc
    except ValueError as exc:  # raised by a schema's __post_init__ check
        where = f"section '{_dotted(path)}'" if path else "config"
        raise ConfigError(f"invalid {where}: {exc}") from exc
    finally:
        _SECTION.reset(section_token)
    for name in kwargs:  # --set values in `Any` fields that __post_init__ left as they came: unwrap them
        value = getattr(obj, name)
        plain = _plain(value)
        if plain is not value:
            object.__setattr__(obj, name, plain)  # also for frozen schemas, as their own __init__ does
    return obj


# --------------------------------------------------------------------------------------------
# Sources: YAML files and --set overrides.


def _yaml_error(path: str, exc: yaml.YAMLError) -> ConfigError:
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else path
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    detail = f"{context}, {problem}" if context else problem
    return ConfigError(f"{where}: invalid YAML: {' '.join(str(detail).split())}")


def _locate(text: str, path: _Path) -> int | None:
    """1-based line of the deepest node of `path` found in the YAML `text` (for error messages)."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError:
        return None
    line = None
    for part in path:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            match = next((kv for kv in node.value if kv[0].value == part), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _merge_file(schema: type, data: dict[str, Any], file: str | Path) -> None:
    name = str(file)
    try:
        text = Path(file).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{name}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{name}: is a directory, expected a YAML config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{name}: cannot read config file: {exc}") from None
    try:
        content = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise _yaml_error(name, exc) from None
    if content is None:  # an empty file means "all defaults"
        return
    if not isinstance(content, Mapping):
        raise ConfigError(f"{name}: expected a mapping of config keys at top level, got {type(content).__name__}")
    try:
        _merge(schema, data, content)
    except _Invalid as exc:
        line = _locate(text, exc.path)
        raise ConfigError(f"{name}{f':{line}' if line else ''}: {exc}") from None


def _parse_override(item: str) -> tuple[list[str], _Override]:
    key, sep, text = item.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not sep or not all(parts):
        hint = ""
        if not sep and item.endswith((".yaml", ".yml")):
            hint = " (if this is the config file, put it before --set)"
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE with a dotted KEY such as optim.lr=1e-4{hint}")
    if not text.strip():
        return parts, _Override("", text)  # `--set name=` means the empty string; use `null` for None
    try:
        value = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        value = text  # not YAML (e.g. `a: b: c`); the type check decides whether a string is fine
    return parts, _Override(value, text)


def _merge_override(schema: type, data: dict[str, Any], item: str) -> None:
    parts, value = _parse_override(item)
    nested: Any = value
    for part in reversed(parts):
        nested = {part: nested}
    try:
        _merge(schema, data, nested)
    except _Invalid as exc:
        raise ConfigError(f"--set {item}: {exc}") from None


# --------------------------------------------------------------------------------------------
# Public API.


def build_section(schema: type[T], values: Mapping[str, Any], prefix: str = "", base: Mapping[str, Any] | None = None) -> T:
    """An instance of `schema` from `values` merged over `base` (e.g. a preset) over the schema's
    defaults, with the checks :func:`load_config` applies (types, choices, ranges, unknown keys
    with a did-you-mean), errors reported under the dotted key `prefix`.

    Called from a schema's ``__post_init__`` while :func:`load_config` builds that schema,
    `prefix` is relative to its section, like a :class:`FieldError` key: ``ModelConfig`` checks
    its options with ``build_section(schema, self.options, "options")`` and an error reads
    ``model.options.hand_size must be >= 1, got 0`` (``experiment.model.options...`` in a sweep).
    `values` may hold ``--set`` values in their raw form (a str field keeps ``007`` as "007").

    Raises:
        ConfigError: `values` is not a mapping or does not match the schema.
        TypeError: `schema` is not a dataclass, or its defaults or `base` do not match it (a code bug).
    """
    path: _Path = (*_SECTION.get(), *(prefix.split(".") if prefix else ()))
    data: dict[str, Any] = {}
    for layer, what in ((_defaults(schema), "defaults"), (base or {}, "base values")):
        try:
            _merge(schema, data, layer, path)
        except _Invalid as exc:
            raise TypeError(f"{what} of {schema.__qualname__}: {exc}") from None
    values, _ = _unwrap(values)
    if not isinstance(values, Mapping):
        raise ConfigError(f"expected a mapping for '{_dotted(path)}', got {_show(values)}")
    try:
        _merge(schema, data, values, path)
    except _Invalid as exc:
        raise ConfigError(str(exc)) from None
    return _build(schema, data, path)


def load_config(schema: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Build a validated config: `schema` defaults, then the YAML file at `path`, then `overrides`.

    Args:
        schema: the dataclass type describing the config.
        path: optional YAML file holding a (possibly partial) nested mapping of values.
        overrides: ``"a.b=value"`` items applied in order; values are parsed as YAML scalars
            (``true``, ``3``, ``1e-4``, ``[1, 2]``, ``null``) and then checked against the schema.
            A ``str`` field keeps the raw text (``name=007`` gives ``"007"``).

    Returns:
        A new instance of `schema` (nested sections are instances of their dataclasses).

    Raises:
        ConfigError: missing/unreadable/invalid file, unknown key, wrong type, invalid choice,
            missing required key, or a failed ``__post_init__`` check.
        TypeError: `schema` is not a dataclass or uses an unsupported field type (a code bug).
    """
    if isinstance(overrides, str):
        raise TypeError("overrides must be a sequence of 'KEY=VALUE' strings, not a single string")
    data: dict[str, Any] = {}
    try:
        _merge(schema, data, _defaults(schema))
    except _Invalid as exc:  # a schema whose own defaults do not type-check is a code bug
        raise TypeError(f"defaults of {schema.__qualname__}: {exc}") from None
    if path is not None:
        _merge_file(schema, data, path)
    for item in overrides:
        _merge_override(schema, data, item)
    return _build(schema, data)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A plain nested dict of `cfg` (YAML/JSON types only: tuples become lists, Paths strings,
    Enums their value), e.g. for TensorBoard hparams or provenance records."""
    if not (dataclasses.is_dataclass(cfg) and not isinstance(cfg, type)):
        raise TypeError(f"expected a config dataclass instance, got {type(cfg).__name__}")

    return _as_dict(cfg, _plain_leaf)


def to_yaml(cfg: Any) -> str:
    """`cfg` as YAML text (schema field order) that :func:`load_config` reads back to an equal config."""
    return yaml.dump(
        config_to_dict(cfg), Dumper=_Dumper, sort_keys=False, default_flow_style=None, allow_unicode=True
    )


@functools.lru_cache(maxsize=None)
def field_comments(schema: type) -> dict[str, str]:
    """The comment written after each field of a dataclass schema in its source
    (``batch_size: int = 32  # per rank; >= 1`` -> {'batch_size': 'per rank; >= 1'}), inherited
    fields with their base class's comment unless the subclass declares them again; fields
    without one, or a class whose source is not available, give no entry unless the field's
    ``metadata`` has a ``"comment"`` (a schema made in code, e.g. with ``dataclasses.make_dataclass``)."""
    out: dict[str, str] = {}
    for klass in reversed(schema.__mro__):
        if dataclasses.is_dataclass(klass):
            out.update(_own_field_comments(klass))
    return out


def _own_field_comments(schema: type) -> dict[str, str]:
    given = {name: f.metadata["comment"] for name, (f, _) in _schema_fields(schema).items() if "comment" in f.metadata}
    try:
        lines, _ = inspect.getsourcelines(schema)
    except (OSError, TypeError):
        return given
    names = set(_schema_fields(schema))
    out: dict[str, str] = {}
    current, depth = None, None
    tokens = tokenize.generate_tokens(iter(textwrap.dedent("".join(lines)).splitlines(keepends=True)).__next__)
    for tok in tokens:
        if tok.type == tokenize.INDENT and depth is None:
            depth = tok.end[1]  # the class body's indentation
        elif tok.type == tokenize.NAME and tok.start[1] == depth and tok.string in names and current is None:
            current = tok.string
        elif tok.type == tokenize.COMMENT and current is not None and current not in out:
            out[current] = tok.string.lstrip("#").strip()
        elif tok.type == tokenize.NEWLINE:
            current = None
    return given | out


def commented_yaml(cfg: Any) -> str:
    """`cfg` as YAML with each field's source comment beside it (what ``--print-config`` shows);
    :func:`load_config` reads it back to an equal config. A field with ``metadata={"resolved": fn}``
    is followed by ``fn(section)`` (a dataclass instance) as commented-out lines, e.g. every option
    of the model's architecture with the value it gets."""
    data = config_to_dict(cfg)
    out: list[str] = []

    def scalar(value: Any) -> str:
        text = yaml.dump(value, Dumper=_Dumper, default_flow_style=True, width=1 << 16, allow_unicode=True).strip()
        return text.removesuffix("\n...").removesuffix("...").strip()

    def emit(obj: Any, values: dict[str, Any], indent: str) -> None:
        comments = field_comments(type(obj))
        field_types = {name: tp for name, (_, tp) in _schema_fields(type(obj)).items()}
        for name, (field, _) in _schema_fields(type(obj)).items():
            note = f"  # {comments[name]}" if name in comments else ""
            child = getattr(obj, name)
            if dataclasses.is_dataclass(child) and not isinstance(child, type):
                out.append(f"{indent}{name}:{note}")
                emit(child, values[name], indent + "  ")
            elif _entry_section_type(field_types[name]) is not None and child:
                out.append(f"{indent}{name}:{note}")
                for key, entry in child.items():
                    out.append(f"{indent}  {key}:")
                    emit(entry, values[name][key], indent + "    ")
            else:
                out.append(f"{indent}{name}: {scalar(values[name])}{note}")
            resolve = field.metadata.get("resolved")
            if resolve is not None:
                shown = resolve(obj)
                out.append(f"{indent}# {name}, resolved ({type(shown).__name__}):")
                emit(shown, config_to_dict(shown), f"{indent}#   ")

    emit(cfg, data, "")
    return "\n".join(out) + "\n"


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write ``to_yaml(cfg)`` to `path` atomically (:func:`handrecon.io.atomic_write_text`), so a
    crash never leaves a half-written record of a run's config. Creates missing parent folders.
    Returns the path written."""
    return atomic_write_text(path, to_yaml(cfg))


def config_hash(cfg: Any) -> str:
    """Stable short id of a config's values: sha256 of canonical JSON (sorted keys), first 16 hex
    chars. Equal configs hash equal regardless of YAML key order; used to refuse mixing caches."""
    canonical = json.dumps(config_to_dict(cfg), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]
