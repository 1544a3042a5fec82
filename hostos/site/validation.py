"""Turn located raw data into a frozen model, or into problems that name file and line."""

from __future__ import annotations

import re
import types
import typing
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from hostos.errors import Path_, Problem, did_you_mean, key_path
from hostos.site.fields import Invalid
from hostos.site.merge import Located

M = TypeVar("M", bound=BaseModel)
ALIASES = {"args": "command"}
EXPECTED = {  # pydantic error type → what the key takes
    "list_type": "a list",
    "dict_type": "a mapping of keys",
    "model_type": "a mapping of keys",
    "string_type": "a string",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
}


def build(model: type[M], raw: Located, prefix: Path_ = ()) -> tuple[M | None, list[Problem]]:
    """model(**raw.data), or None and one problem per validation error."""
    if not isinstance(raw.data, dict):
        kind = type(raw.data).__name__
        return None, [
            Problem(
                raw.where(()), key_path(prefix), f"expected a mapping of keys, found {_kind(kind)}"
            )
        ]
    try:
        return model.model_validate(raw.data), []
    except ValidationError as exc:
        return None, [_problem(model, raw, err, prefix) for err in exc.errors()]


def name_from_file(raw: Located, key: str, stem: str, what: str, problems: list[Problem]) -> None:
    """A document's name (key) defaults to its file name, and must match it when given."""
    if not isinstance(raw.data, dict):
        return
    name = raw.data.setdefault(key, stem)
    if isinstance(name, str) and name != stem:
        problems.append(
            Problem(
                raw.where((key,)),
                key,
                f"{what} '{name}' is in a file named {stem}",
                f"rename the file to {name}.yaml or the {what} to '{stem}'",
            )
        )


def named_by_file(problems: list[Problem], key: str, stem: str, what: str) -> list[Problem]:
    """Problems with a name that the file name gave, reworded to say so."""
    return [
        Problem(
            p.where,
            "",
            f"file name '{stem}' is not a valid {what} name",
            f"rename the file: {p.hint}",
        )
        if p.key == key
        else p
        for p in problems
    ]


def _kind(name: str) -> str:
    return {
        "list": "a list",
        "str": "a string",
        "int": "a number",
        "float": "a number",
        "bool": "a boolean",
        "dict": "a mapping",
        "NoneType": "an empty value",
    }.get(name, name)


def shown(value: Any) -> str:
    """A value as a message names it: `the number 2.5`, `'text'`, `a list`."""
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str) and len(value) <= 40:
        return f"'{value}'"
    return _kind(type(value).__name__)


def _wrong_type(kind: str, value: Any) -> tuple[str, str]:
    """Message and hint for a value of the wrong type."""
    found = shown(value)
    hint = ""
    if kind == "list_type" and isinstance(value, str):
        hint = f"write [{value}]"
    elif kind == "string_type" and isinstance(value, int | float) and not isinstance(value, bool):
        hint = f"quote it: '{value}'"
    return f"expected {EXPECTED[kind]}, found {found}", hint


def _problem(model: type[BaseModel], raw: Located, err: ErrorDetails, prefix: Path_) -> Problem:
    path = _data_path(raw.data, tuple(err["loc"]))
    message = err["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
    hint = ""
    cause = (err.get("ctx") or {}).get("error")
    kind = err["type"]
    if isinstance(cause, Invalid):
        path, message, hint = (*path, *cause.key), cause.message, cause.hint
    elif kind == "extra_forbidden":
        message = "unknown key"
        hint = did_you_mean(str(path[-1]), _fields_at(model, path[:-1]))
    elif kind == "missing":
        message = "required key is missing"
    elif kind in EXPECTED:
        message, hint = _wrong_type(kind, err["input"])
    elif kind == "literal_error":
        choices = re.findall(r"'([^']*)'", (err.get("ctx") or {}).get("expected", ""))
        message = f"'{err['input']}' is not one of {', '.join(choices)}"
        hint = did_you_mean(str(err["input"]), choices)
    where = raw.where(path)
    if kind == "missing":
        where = raw.where(path[:-1])
    return Problem(where, key_path((*prefix, *path)), message, hint)


def _data_path(data: Any, loc: tuple[Any, ...]) -> Path_:
    """The part of a pydantic location that indexes into the raw data."""
    path: list[str | int] = []
    node = data
    for part in loc:
        part = ALIASES.get(part, part) if isinstance(node, dict) and part not in node else part
        if _indexes(node, part):
            path.append(part)
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and not re.search(r"[\[\]()-]", part):
            path.append(part)  # a key the data lacks (missing); not one beyond a short form
            node = None
    return tuple(path)


def _fields_at(model: type[BaseModel], path: Path_) -> list[str]:
    """The field names valid at path inside model, for did-you-mean hints."""
    current: Any = model
    for part in path:
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return []
            current = field.annotation
        else:
            current = _element(current)
        current = _unwrap(current)
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        names = list(current.model_fields)
        return names + [alias for alias, name in ALIASES.items() if name in names]
    return []


def _unwrap(annotation: Any) -> Any:
    """The model class inside Optional[...] / Annotated[...], or the one model of a union
    with short forms (`slurm | {command, ...}`); else the annotation."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            inner = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(inner) != 1:
                models = [m for m in map(_unwrap, inner) if _is_model(m)]
                return models[0] if len(models) == 1 else annotation
            annotation = inner[0]
        else:
            return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _element(annotation: Any) -> Any:
    args = typing.get_args(annotation)
    return args[-1] if args else None


def _indexes(node: Any, part: Any) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
