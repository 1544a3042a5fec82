"""A role's `rollout:` key: how its nodes move to a new host image, and the policy a
published role spec carries to the server.

    rollout:
      max_unavailable: 2        # or "25%": nodes out at once
      canary: 1                 # nodes updated first, alone
      health_timeout: 10m       # from a node's reboot grant until it must be steady and healthy
      auto_rollback: false      # on a failure, the touched nodes get the previous image back
      drain: slurm              # or {command: [...], check: [...], resume: [...]} (drain.py)
      drain_timeout: 24h        # a node still draining after this has failed

Every key may be left out: the server's defaults (or `hostos rollout start`'s options) apply.
`RoleRollout` is the key as a site file writes it (errors with file and line, through
`hostos.site.validation`); `RolloutPolicy` is what `spec_document` puts in a role's resolved
spec (`"rollout"`: durations in seconds, the drain in `Drain.to_json` form, keys not said left
out) and what the server reads back with `rollout_policy(role_spec)`, checked by the same
rules: a stored document is input like any other.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)

from hostos.site.drain import (
    COMMANDS,
    MAX_ARGS,
    SLURM,
    STEPS,
    Drain,
    DrainError,
    check_argv,
    check_required,
    check_timeout,
)
from hostos.site.fields import STRICT, Duration, Invalid
from hostos.site.validation import shown

MAX_COUNT: Final = 100_000  # nodes: max_unavailable and canary are at most this
_PERCENT = re.compile(r"[1-9][0-9]{0,2}%")
COUNT_OR_PERCENT = "a count like 2 or a percentage like '25%' (1-100)"
KEYS = ("max_unavailable", "canary", "health_timeout", "auto_rollback", "drain")
T = TypeVar("T")


# ----------------------------------------------------------------------------- the rules


def check_count(value: object, least: int) -> int:
    """A whole number of nodes from least to MAX_COUNT."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"expected a whole number, found {shown(value)}")
    if not least <= value <= MAX_COUNT:
        raise Invalid(f"must be {least} to {MAX_COUNT}, got {value}")
    return value


def check_max_unavailable(value: object) -> int | str:
    """Nodes out at once: a count (at least 1) or a percentage of the role's nodes."""
    if isinstance(value, str):
        if _PERCENT.fullmatch(value) and int(value[:-1]) <= 100:
            return value
        hint = f"write {value} without quotes" if value.isdigit() else ""
        raise Invalid(f"{shown(value)} is not {COUNT_OR_PERCENT}", hint=hint)
    if isinstance(value, int) and not isinstance(value, bool):
        return check_count(value, 1)
    raise Invalid(f"expected {COUNT_OR_PERCENT}, found {shown(value)}")


def check_canary(value: object) -> int:
    """Canaries: 0 (none) or more."""
    return check_count(value, 0)


def check_seconds(value: object) -> float:
    """A timeout in seconds: finite and positive (drain.check_timeout's rule)."""
    return _drain_rule(check_timeout, value, within="timeout")


def check_flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"expected true or false, found {shown(value)}")
    return value


def _drain_rule(check: Callable[..., T], *args: object, within: str = "") -> T:
    """check(*args), its DrainError an Invalid naming the key below `within` it is about
    (`check: …` becomes the key check), for a site file's `file:line: key: message`."""
    try:
        return check(*args)
    except DrainError as exc:
        key, sep, rest = str(exc).partition(": ")
        if sep and key in (*STEPS, "timeout"):
            raise Invalid(rest, key=() if key == within else key) from None
        raise Invalid(str(exc)) from None


def _argv(value: object, info: ValidationInfo) -> tuple[str, ...]:
    step = info.field_name or ""
    return _drain_rule(check_argv, step, value, within=step)


# ----------------------------------------------------------------------------- the site's key

MaxUnavailable = Annotated[
    int | str,
    BeforeValidator(check_max_unavailable),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": MAX_COUNT},
                {"type": "string", "pattern": r"^([1-9][0-9]?|100)%$"},
            ]
        }
    ),
]
Canary = Annotated[
    int,
    BeforeValidator(check_canary),
    WithJsonSchema({"type": "integer", "minimum": 0, "maximum": MAX_COUNT}),
]
Timeout = Annotated[Duration, AfterValidator(check_seconds)]
Flag = Annotated[bool, BeforeValidator(check_flag)]
Argv = Annotated[
    tuple[str, ...],
    BeforeValidator(_argv),
    WithJsonSchema({"type": "array", "items": {"type": "string"}, "maxItems": MAX_ARGS}),
]


class _Model(BaseModel):
    model_config = STRICT


class DrainCommands(_Model):
    """The generic drain: three commands (argv lists, programs of the server's hooks
    directory), `{node}` and `{image}` filled in."""

    command: Argv = Field((), description="stop giving the node work, e.g. [sched-drain, '{node}']")
    check: Argv = Field((), description="exit 0: nothing runs on the node; 1: work left")
    resume: Argv = Field((), description="give the node back once it is healthy on the new image")

    @model_validator(mode="after")
    def _required(self) -> DrainCommands:
        _drain_rule(check_required, {step: getattr(self, step) for step in STEPS})
        return self


def _drain_form(value: Any) -> str:
    # Tags with a '-' are not keys of the data: validation.py leaves them out of the key path.
    return "built-in" if isinstance(value, str) else "command-form"


DrainForm = Annotated[
    Annotated[Literal["slurm"], Tag("built-in")] | Annotated[DrainCommands, Tag("command-form")],
    Discriminator(_drain_form),
]


class RoleRollout(_Model):
    """The `rollout:` key of a role; a key left out is not said (the server's default)."""

    max_unavailable: MaxUnavailable | None = Field(None, description="nodes out at once: N or 'P%'")
    canary: Canary | None = Field(None, description="nodes updated first, alone")
    health_timeout: Timeout | None = Field(
        None, description="from a node's reboot grant until it must be steady and healthy"
    )
    auto_rollback: Flag | None = Field(
        None, description="on a failure, give every touched node the previous image back"
    )
    drain: DrainForm | None = Field(
        None, description="slurm, or {command, check, resume}: jobs leave a node before it reboots"
    )
    drain_timeout: Timeout | None = Field(
        None, description="a node still draining after this has failed (default 24h)"
    )

    @model_validator(mode="after")
    def _drain_timeout(self) -> RoleRollout:
        if self.drain_timeout is not None and self.drain is None:
            raise Invalid(
                "drain_timeout without drain",
                key="drain_timeout",
                hint=f"add drain: {SLURM} or the command form, or remove drain_timeout",
            )
        return self

    def policy(self) -> RolloutPolicy:
        return RolloutPolicy(
            self.max_unavailable,
            self.canary,
            self.health_timeout,
            self.auto_rollback,
            self._drain(),
        )

    def _drain(self) -> Drain | None:
        if self.drain is None:
            return None
        drain = Drain(SLURM)
        if isinstance(self.drain, DrainCommands):
            form = self.drain
            drain = Drain(COMMANDS, form.command, form.check, form.resume)
        if self.drain_timeout is None:
            return drain
        return dataclasses.replace(drain, timeout=self.drain_timeout)


# ----------------------------------------------------------------------------- the policy


@dataclass(frozen=True)
class RolloutPolicy:
    """A role's rollout policy as published; None = not said, the server's default applies.
    health_timeout in seconds; the drain carries its timeout."""

    max_unavailable: int | str | None = None
    canary: int | None = None
    health_timeout: float | None = None
    auto_rollback: bool | None = None
    drain: Drain | None = None

    def to_json(self) -> dict[str, Any]:
        """The keys said, e.g. {"max_unavailable": "25%", "health_timeout": 600.0,
        "drain": {"kind": "slurm", ..., "timeout": 86400.0}}; {} when nothing is."""
        out: dict[str, Any] = {}
        for key in KEYS:
            value = getattr(self, key)
            if value is not None:
                out[key] = value.to_json() if isinstance(value, Drain) else value
        return out

    @classmethod
    def from_json(cls, data: Any) -> RolloutPolicy:
        """A stored policy read back, checked as strictly as the site's key: ValueError
        (DrainError for the drain) naming the key."""
        if not isinstance(data, Mapping):
            raise ValueError(f"rollout: expected an object, got {type(data).__name__}")
        unknown = sorted(str(key) for key in data if key not in KEYS)
        if unknown:
            raise ValueError(f"rollout: unknown key {unknown[0]!r} (known: {', '.join(KEYS)})")
        checks: dict[str, Callable[[Any], Any]] = {
            "max_unavailable": check_max_unavailable,
            "canary": check_canary,
            "health_timeout": check_seconds,
            "auto_rollback": check_flag,
        }
        said = {k: _checked(k, check, data[k]) for k, check in checks.items() if k in data}
        drain = data.get("drain")
        if drain is not None:
            try:
                said["drain"] = Drain.from_json(drain)
            except DrainError as exc:
                raise DrainError(f"rollout.drain: {exc}") from None
        return cls(**{k: v for k, v in said.items() if v is not None})


def _checked(key: str, check: Callable[[Any], T], value: Any) -> T | None:
    if value is None:
        return None
    try:
        return check(value)
    except Invalid as exc:
        hint = f" ({exc.hint})" if exc.hint else ""
        raise ValueError(f"rollout.{key}: {exc.message}{hint}") from None


def rollout_policy(role_spec: Mapping[str, Any]) -> RolloutPolicy:
    """The rollout policy of a role's resolved spec (one role of a published site); the
    empty policy when it says none.  ValueError (or DrainError) when the spec's is bad."""
    if not isinstance(role_spec, Mapping):
        raise ValueError(f"role spec: expected an object, got {type(role_spec).__name__}")
    data = role_spec.get("rollout")
    return RolloutPolicy() if data is None else RolloutPolicy.from_json(data)
