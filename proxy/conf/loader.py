"""Read a YAML configuration into a validated :class:`~proxy.conf.schema.Config`, or report every error.

Theory of operation:

1. libyaml (``yaml.CSafeLoader``) *composes* the text into nodes instead of constructing Python objects,
   so every value keeps its mark (line and column).  A syntax error stops here, reported at its mark.
2. :class:`_Reader` turns the nodes into plain data and records, for every path such as
   ``("pools", 0, "servers", 1, "address")``, where its value (and, for a mapping entry, its key)
   starts.  Duplicate keys are caught here: PyYAML itself silently keeps the last one.  Scalars are
   typed by the YAML 1.1 core schema (``7000`` is an int, ``true`` a bool, ``~`` null); dates stay text.
3. pydantic validates the data against the models; :func:`~proxy.conf.schema.cross_check` checks names
   and references across sections on the same raw data, so both kinds of error come out together.
4. Every error is mapped back to a position, its message rewritten in plain English, and the lot is
   sorted in file order.

Nothing here prints or exits: callers get :class:`ConfigInvalid` with the errors as values.
"""

from __future__ import annotations

import binascii
import difflib
import os
import types
from collections.abc import Mapping
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from proxy.conf.errors import ROOT_PATH, ConfigError, ConfigInvalid, format_path
from proxy.conf.schema import PATTERN_MESSAGES, Config, Loc, cross_check

Position = tuple[int, int]  # 1-based line, column

# Bounds on the work a file can cause: aliases can expand a small file exponentially ("billion
# laughs"), and an alias can even refer to the node that contains it.
MAX_DEPTH = 32
MAX_VALUES = 100_000

_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_TAG + t for t in ("str", "int", "float", "bool", "null"))
_TIMESTAMP, _MAP, _SEQ, _MERGE = (_TAG + t for t in ("timestamp", "map", "seq", "merge"))
_BINARY = _TAG + "binary"


def _is_plain_match_value(loc: Loc) -> bool:
    """``pools[i].plain_rules[j].match.<field>`` or anything inside it: the only place bytes belong."""
    return len(loc) >= 6 and loc[0] == "pools" and loc[2] == "plain_rules" and loc[4] == "match"

# The core-schema scalar constructors are pure functions of the node; one instance serves all threads.
_CONSTRUCTOR = yaml.constructor.SafeConstructor()
_SCALARS = {
    _INT: (_CONSTRUCTOR.construct_yaml_int, "integer"),
    _FLOAT: (_CONSTRUCTOR.construct_yaml_float, "number"),
    _BOOL: (_CONSTRUCTOR.construct_yaml_bool, "boolean"),
    _NULL: (_CONSTRUCTOR.construct_yaml_null, "null"),
}


class _Unreadable:
    """Stands in for a value that could not be read; its error is already reported."""

    def __repr__(self) -> str:
        return "<unreadable>"


UNREADABLE = _Unreadable()


class _TooLarge(Exception):
    pass


def _position(node: yaml.Node) -> Position:
    mark = node.start_mark
    return mark.line + 1, mark.column + 1


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag


class _Reader:
    """YAML nodes -> plain data, remembering where each path starts."""

    def __init__(self) -> None:
        self.values: dict[Loc, Position] = {}
        self.keys: dict[Loc, Position] = {}
        self.problems: list[tuple[Position, Loc, str]] = []
        self.count = 0

    def position(self, loc: Loc) -> Position:
        """Where ``loc`` starts, or its nearest enclosing value that the file spells out."""
        for n in range(len(loc), -1, -1):
            found = self.values.get(loc[:n])
            if found is not None:
                return found
        return 1, 1

    def key_position(self, loc: Loc) -> Position:
        return self.keys.get(loc) or self.position(loc)

    def read(self, node: yaml.Node, loc: Loc, depth: int) -> Any:
        self.values[loc] = _position(node)
        self.count += 1
        if self.count > MAX_VALUES:
            raise _TooLarge
        if depth > MAX_DEPTH:
            self.problems.append((_position(node), loc, f"nested more than {MAX_DEPTH} levels deep"))
            return UNREADABLE
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, loc)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ:
                return self._unsupported(node, loc)
            return [self.read(child, (*loc, i), depth + 1) for i, child in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            if node.tag != _MAP:
                return self._unsupported(node, loc)
            return self._mapping(node, loc, depth)
        return self._unsupported(node, loc)  # pragma: no cover - libyaml makes only the three kinds

    def _unsupported(self, node: yaml.Node, loc: Loc) -> _Unreadable:
        self.problems.append((_position(node), loc, f"unsupported YAML tag {_short_tag(node.tag)}"))
        return UNREADABLE

    def _scalar(self, node: yaml.ScalarNode, loc: Loc) -> Any:
        if node.tag in (_STR, _TIMESTAMP):
            # A date-like value can only be meant as text here (a path or a name).
            return node.value
        if node.tag == _BINARY and _is_plain_match_value(loc):
            # A plain rule compares msgpack values: !!binary is how YAML spells a msgpack bin.
            try:
                return binascii.a2b_base64(node.value.encode("ascii"))
            except (ValueError, UnicodeEncodeError):
                self.problems.append((_position(node), loc, f"{node.value!r} is not valid base64"))
                return UNREADABLE
        known = _SCALARS.get(node.tag)
        if known is None:
            return self._unsupported(node, loc)
        construct, kind = known
        try:
            return construct(node)
        except (ValueError, yaml.YAMLError):  # only an explicit tag can force bad text here: !!int x
            self.problems.append((_position(node), loc, f"{node.value!r} is not a valid {kind}"))
            return UNREADABLE

    def _mapping(self, node: yaml.MappingNode, loc: Loc, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        seen: dict[str, Position] = {}
        pairs: list[tuple[str, yaml.Node, yaml.Node]] = []
        merges: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.problems.append(
                    (_position(key_node), loc, "a key must be a plain string, not a list or mapping")
                )
                continue
            key = key_node.value
            if key in seen:
                line, column = seen[key]
                self.problems.append(
                    (
                        _position(key_node),
                        (*loc, key),
                        f"duplicate key {key!r} (first defined at line {line}, column {column})",
                    )
                )
                continue
            seen[key] = _position(key_node)
            if key_node.tag == _MERGE:
                merges.append(value_node)
            else:
                pairs.append((key, key_node, value_node))
        # YAML 1.1 merge keys ("<<: *defaults"): within a list of sources the earlier wins, and the
        # mapping's own keys win over all of them, so read the sources first, last to first.
        for value_node in merges:
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for source in reversed(sources):
                merged = self.read(source, loc, depth + 1) if isinstance(source, yaml.MappingNode) else None
                if isinstance(merged, dict):
                    out.update(merged)
                elif merged is None:
                    self.problems.append(
                        (_position(source), loc, "'<<' merges only a mapping or a list of mappings")
                    )
        self.values[loc] = _position(node)
        for key, key_node, value_node in pairs:
            self.keys[(*loc, key)] = _position(key_node)
            out[key] = self.read(value_node, (*loc, key), depth + 1)
        return out


# -- messages ---------------------------------------------------------------------------------------

_EXPECTED = {
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "finite_number": "must be a finite number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected a string",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "dict_type": "expected a mapping",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
}
_BOUNDS = {
    "greater_than": ("gt", "must be greater than {}"),
    "greater_than_equal": ("ge", "must be at least {}"),
    "less_than": ("lt", "must be less than {}"),
    "less_than_equal": ("le", "must be at most {}"),
}


def _show(value: Any) -> str:
    """A value as the operator wrote it in YAML, kept short."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, Mapping):
        return "a mapping" if value else "an empty mapping"
    if isinstance(value, list | tuple):
        return "a list" if value else "an empty list"
    return type(value).__name__


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


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The model class whose mapping sits at ``loc`` (used to suggest keys)."""
    current: Any = Config
    for segment in loc:
        current = _unwrap(current)
        if isinstance(segment, int):
            if get_origin(current) is not tuple:
                return None
            current = get_args(current)[0]
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        for name, field in current.model_fields.items():
            if (field.alias or name) == segment:
                current = field.annotation
                break
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unknown_key(loc: Loc) -> str:
    key = str(loc[-1])
    message = f"unknown key {key!r}"
    model = _model_at(loc[:-1])
    if model is not None:
        known = [field.alias or name for name, field in model.model_fields.items()]
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        if close:
            message += f" (did you mean {close[0]!r}?)"
    return message


def _message(error: Mapping[str, Any], loc: Loc) -> str:
    """pydantic's error, in the words an operator expects."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    got = f" (got {_show(error.get('input'))})"
    if kind == "missing":
        return f"required key {loc[-1]!r} is missing"
    if kind == "extra_forbidden":
        return _unknown_key(loc)
    if kind in _EXPECTED:
        return _EXPECTED[kind] + got
    if kind in _BOUNDS:
        name, template = _BOUNDS[kind]
        bound = ctx.get(name)
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)  # pydantic turns gt=0 on a float field into 0.0; say what the operator wrote
        return template.format(bound) + got
    if kind == "too_short":
        n = ctx.get("min_length")
        return f"must have at least {n} item{'' if n == 1 else 's'}" + got
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_pattern_mismatch":
        pattern = ctx.get("pattern", "")
        return PATTERN_MESSAGES.get(pattern, f"must match the pattern {pattern}") + got
    if kind == "literal_error":
        return f"must be {ctx.get('expected')}" + got
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    if kind == "ferryman":
        return str(error["msg"])
    text = str(error["msg"])
    if text.startswith("Input should be "):
        text = "must be " + text[len("Input should be ") :]
    return text[:1].lower() + text[1:] + got


def _from_validation(exc: ValidationError, reader: _Reader) -> list[tuple[Position, Loc, str]]:
    out = []
    for error in exc.errors(include_url=False):
        value = error.get("input")
        if value is UNREADABLE and error["type"] != "extra_forbidden":
            continue  # already reported when it could not be read
        if (
            error["type"] == "too_short"
            and isinstance(value, list)
            and len(value) >= error["ctx"]["min_length"]
        ):
            continue  # pydantic counts only the items that validated; their own errors say why
        loc: Loc = tuple(error["loc"])
        if error["type"] == "missing":
            where = reader.position(loc[:-1])  # the mapping that lacks the key
        elif error["type"] == "extra_forbidden":
            where = reader.key_position(loc)
        else:
            where = reader.position(loc)
        out.append((where, loc, _message(error, loc)))
    return out


# -- entry points -----------------------------------------------------------------------------------


def _syntax_error(exc: yaml.MarkedYAMLError, filename: str) -> ConfigError:
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    message = exc.problem or exc.context or "invalid YAML"
    if exc.problem and exc.context:
        if exc.problem.startswith("but "):  # "expected a single document in the stream" / "but found ..."
            message = f"{exc.context}, {exc.problem}"
        elif exc.context_mark is not None:
            cm = exc.context_mark
            message = f"{exc.problem} ({exc.context} started at line {cm.line + 1}, column {cm.column + 1})"
        else:
            message = f"{exc.problem} ({exc.context})"
    return ConfigError(filename, line, column, ROOT_PATH, f"YAML syntax error: {message}")


def _text_position(text: str, index: int) -> Position:
    index = max(0, min(index, len(text)))
    line_start = text.rfind("\n", 0, index) + 1
    return text.count("\n", 0, index) + 1, index - line_start + 1


def _compose(text: str, filename: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=yaml.CSafeLoader)
    except yaml.MarkedYAMLError as exc:
        raise ConfigInvalid([_syntax_error(exc, filename)]) from None
    except yaml.reader.ReaderError as exc:
        # libyaml counts the position in bytes of the UTF-8 encoding.
        prefix = text.encode("utf-8", "surrogatepass")[: exc.position].decode("utf-8", "replace")
        line, column = _text_position(prefix, len(prefix))
        character = f"U+{exc.character:04X}" if isinstance(exc.character, int) else repr(exc.character)
        message = f"YAML syntax error: {exc.reason} ({character})"
        raise ConfigInvalid([ConfigError(filename, line, column, ROOT_PATH, message)]) from None
    except yaml.YAMLError as exc:
        raise ConfigInvalid([ConfigError(filename, 1, 1, ROOT_PATH, f"YAML error: {exc}")]) from None
    except UnicodeEncodeError as exc:  # a str with lone surrogates cannot be handed to libyaml
        line, column = _text_position(text, exc.start)
        message = f"YAML syntax error: not valid Unicode text (U+{ord(text[exc.start]):04X})"
        raise ConfigInvalid([ConfigError(filename, line, column, ROOT_PATH, message)]) from None


def load_config_text(text: str, filename: str = "<string>") -> Config:
    """Validate ``text`` as a configuration file named ``filename`` (used in error positions).

    Raises :class:`ConfigInvalid` listing every error, in file order."""
    root = _compose(text, filename)
    if root is None:
        raise ConfigInvalid(
            [
                ConfigError(
                    filename,
                    1,
                    1,
                    ROOT_PATH,
                    "the file is empty: expected a mapping with 'listeners' and 'pools'",
                )
            ]
        )
    if not isinstance(root, yaml.MappingNode):
        kind = "a list" if isinstance(root, yaml.SequenceNode) else f"the value {root.value!r}"
        line, column = _position(root)
        message = f"the top level must be a mapping with 'listeners' and 'pools', not {kind}"
        raise ConfigInvalid([ConfigError(filename, line, column, ROOT_PATH, message)])
    reader = _Reader()
    try:
        data = reader.read(root, (), 0)
    except _TooLarge:
        message = f"the document expands to more than {MAX_VALUES} values (check its aliases)"
        raise ConfigInvalid([ConfigError(filename, 1, 1, ROOT_PATH, message)]) from None
    problems = list(reader.problems)
    config: Config | None = None
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems.extend(_from_validation(exc, reader))
    problems.extend((reader.position(loc), loc, message) for loc, message in cross_check(data))
    if problems:
        unique = dict.fromkeys((where, format_path(loc), message) for where, loc, message in problems)
        ordered = sorted(unique, key=lambda p: p[0])  # stable: same position keeps discovery order
        raise ConfigInvalid(ConfigError(filename, line, col, path, msg) for (line, col), path, msg in ordered)
    assert config is not None
    config._source = filename
    return config


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate the configuration file at ``path``.

    Raises :class:`ConfigInvalid` listing every error, and ``OSError`` if the file cannot be read."""
    filename = os.fsdecode(path)
    with open(filename, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        prefix = raw[: exc.start].decode("utf-8", "replace")
        line, column = _text_position(prefix, len(prefix))
        message = f"not UTF-8 text (byte 0x{raw[exc.start]:02x})"
        raise ConfigInvalid([ConfigError(filename, line, column, ROOT_PATH, message)]) from None
    return load_config_text(text, filename)
