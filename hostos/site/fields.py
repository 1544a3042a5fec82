"""Field types shared by the site model: names, paths, durations, sizes, images.

Each is an `Annotated` type with a validator that raises ValueError with a
message a person can act on, and a JSON Schema that editors understand.
"""

from __future__ import annotations

import re
import shlex
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    SerializationInfo,
    ValidationInfo,
    WithJsonSchema,
)

from hostos.site.imageref import check_reference
from hostos.site.quantity import (
    DURATION_PATTERN,
    SIZE_PATTERN,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
# Every model of a site file: frozen, and a key it does not know is an error.
STRICT = ConfigDict(frozen=True, extra="forbid")


class Invalid(ValueError):
    """A validation failure that can name a key below the validated value and give a hint."""

    def __init__(
        self, message: str, *, key: str | int | tuple[str | int, ...] = (), hint: str = ""
    ) -> None:
        super().__init__(message)
        self.message = message
        self.key: tuple[str | int, ...] = key if isinstance(key, tuple) else (key,)
        self.hint = hint


def check_choice(
    value: str,
    choices: list[str] | tuple[str, ...],
    what: str,
    key: str | int | tuple[str | int, ...] = (),
) -> str:
    if value not in choices:
        from hostos.errors import did_you_mean

        raise Invalid(f"unknown {what} '{value}'", key=key, hint=did_you_mean(value, choices))
    return value


def check_name(value: str) -> str:
    if not re.match(NAME_PATTERN, value):
        raise Invalid(
            f"'{value}' is not a valid name",
            hint="lowercase letters, digits, '.', '_', '-'; starting with a letter or "
            "digit; at most 63 characters",
        )
    return value


def check_abs_path(value: str) -> str:
    if not value.startswith("/"):
        raise Invalid(
            f"'{value}' is a relative path", hint="write an absolute path starting with '/'"
        )
    if ".." in value.split("/"):
        raise Invalid(f"'{value}' contains '..'", hint="write the path without '..'")
    return value


def split_command(value: Any) -> Any:
    """A command given as one string is split like a shell would (no expansion)."""
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot split command: {exc}") from None
    if isinstance(value, list):
        for item in value:
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                raise ValueError("command items are strings")
        return [str(item) for item in value]
    return value


def string_map(value: Any) -> Any:
    """Env and label values: strings, or numbers turned into strings; booleans refused."""
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, bool):
            raise Invalid(
                "value is a boolean, not text",
                key=key,
                hint="quote it: YAML reads unquoted yes/no, true/false, on/off as booleans",
            )
        if item is None:
            raise Invalid("value is empty", key=key, hint='write "" for an empty string')
        out[key] = str(item) if isinstance(item, int | float) else item
    return out


Name = Annotated[
    str, AfterValidator(check_name), WithJsonSchema({"type": "string", "pattern": NAME_PATTERN})
]
AbsPath = Annotated[
    str, AfterValidator(check_abs_path), WithJsonSchema({"type": "string", "pattern": "^/"})
]
ImageRef = Annotated[str, AfterValidator(check_reference), WithJsonSchema({"type": "string"})]
# Validation context key: the values come from `spec_document` (the API's resolved spec), whose
# durations are plain seconds, not what a person writes.
FROM_DOCUMENT = "from-document"


def duration(value: Any, info: ValidationInfo) -> float:
    """A duration as written (`10s`), or, in a resolved document, its seconds."""
    from_document = isinstance(info.context, dict) and info.context.get(FROM_DOCUMENT)
    if from_document and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return parse_duration(value)


# Serialization context key: durations and sizes as a person writes them (`30s`, `256Mi`)
# rather than seconds and bytes, for `hostos render`'s view; what goes on the wire and into
# hashes asks for no context and stays numbers.
AS_WRITTEN = "as-written"


def _as_written(info: SerializationInfo) -> bool:
    return isinstance(info.context, dict) and bool(info.context.get(AS_WRITTEN))


def _duration_out(value: float, info: SerializationInfo) -> float | str:
    return format_duration(value) if _as_written(info) else value


def _size_out(value: int, info: SerializationInfo) -> int | str:
    return format_size(value) if _as_written(info) else value


Duration = Annotated[
    float,
    BeforeValidator(duration),
    PlainSerializer(_duration_out),
    WithJsonSchema({"anyOf": [{"type": "string", "pattern": DURATION_PATTERN}, {"const": 0}]}),
]
Size = Annotated[
    int,
    BeforeValidator(parse_size),
    PlainSerializer(_size_out),
    WithJsonSchema(
        {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": SIZE_PATTERN}]}
    ),
]


def number_to_text(value: Any) -> Any:
    """A user given as a number (1000, or 1000:1000 read as text) stays text."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


UserSpec = Annotated[
    str,
    BeforeValidator(number_to_text),
    WithJsonSchema({"type": ["string", "integer"], "description": "name, uid or uid:gid"}),
]
Command = Annotated[
    list[str],
    BeforeValidator(split_command),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}),
]
StringMap = Annotated[
    dict[str, str],
    BeforeValidator(string_map),
    WithJsonSchema({"type": "object", "additionalProperties": {"type": ["string", "number"]}}),
]
