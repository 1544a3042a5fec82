"""The pure planner: desired units, observed containers and holds in, actions out.

`plan()` calls nothing: the shell observes the engine, renders the desired
containers, learns what holds units back (the supervisor's mounts and crash
backoff), then hands all three here.  Every action carries a reason a person
can read; a unit that must wait gets a WAIT action saying why, and so does
every unit that depends on it.  `hostos plan` and `--dry-run` print exactly
these actions, and the executor runs all but the WAITs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from hostos.engine.base import ContainerSpec, Observed
from hostos.labels import HASH_LABEL, ROLE_LABEL
from hostos.node.holds import NO_HOLDS, Holds
from hostos.node.render import image_ref, spec_body, spec_of
from hostos.site.graph import blocked
from hostos.site.resolve import ResolvedUnit


class Kind(StrEnum):
    CREATE = "create"
    RECREATE = "recreate"
    START = "start"
    STOP = "stop"
    REMOVE = "remove"
    CONFLICT = "conflict"  # a container hostos does not own holds the name
    WAIT = "wait"  # would change, but is held back (a mount down, crash backoff): not run
    NOOP = "noop"


@dataclass(frozen=True)
class Desired:
    unit: ResolvedUnit
    spec: ContainerSpec
    image_present: bool = True
    image_error: str | None = None  # why the image could not be had, when it could not

    @property
    def name(self) -> str:
        return self.unit.name

    @property
    def hash(self) -> str:
        return self.spec.labels[HASH_LABEL]


@dataclass(frozen=True)
class Action:
    kind: Kind
    unit: str
    reason: str
    desired: Desired | None = None
    current: Observed | None = None  # the container acted on, or replaced

    @property
    def changes(self) -> bool:
        """Whether running this action changes something (a WAIT runs nothing)."""
        return self.kind not in (Kind.NOOP, Kind.WAIT)


def plan(
    desired: Sequence[Desired], observed: Sequence[Observed], holds: Holds = NO_HOLDS
) -> list[Action]:
    """Actions that make observed match desired: removals first, then units in order;
    those holds keep back, and their dependents, wait."""
    owned: dict[str, list[Observed]] = {}
    foreign: dict[str, Observed] = {}
    for container in observed:
        if container.owned and container.unit:
            owned.setdefault(container.unit, []).append(container)
        elif not container.owned:
            foreign[container.name] = container
    removals: list[Action] = []
    actions: list[Action] = []
    wanted = {d.name for d in desired}
    for unit, containers in sorted(owned.items()):
        if unit not in wanted:
            removals += [
                Action(Kind.REMOVE, unit, _gone_reason(c, desired), current=c) for c in containers
            ]
    for want in desired:
        containers = owned.get(want.name, [])
        primary = _primary(want.spec.name, containers)
        removals += [
            Action(Kind.REMOVE, want.name, f"leftover container {c.name}", current=c)
            for c in containers
            if c is not primary
        ]
        actions.append(_unit_action(want, primary, foreign.get(want.spec.name)))
    return removals + _held(actions, holds)


def _held(actions: Sequence[Action], holds: Holds) -> list[Action]:
    """The unit actions, those that must wait turned into WAIT actions with the reason."""
    reasons = {a.unit: reason for a in actions if (reason := _hold_reason(a, holds))}
    changing = {
        a.unit: a.desired.unit.unit.depends_on
        for a in actions
        if a.desired is not None and a.kind is not Kind.NOOP
    }
    for unit, dep in blocked(changing, reasons).items():
        reasons[unit] = f"waiting for {dep}"
    return [
        Action(Kind.WAIT, a.unit, reasons[a.unit], a.desired, a.current) if a.unit in reasons else a
        for a in actions
    ]


def _hold_reason(action: Action, holds: Holds) -> str:
    """Why this unit's action must wait, or "" when it may run now."""
    if action.desired is None or action.kind is Kind.NOOP:
        return ""
    for mount in action.desired.unit.mounts:  # a unit never starts on an empty mount point
        if mount.name in holds.mounts:
            return f"waiting for mount {mount.name}"
    current = action.current
    if action.kind is Kind.START and current is not None and not current.running:
        return holds.stopped.get(action.unit, "")
    return ""


def _primary(name: str, containers: list[Observed]) -> Observed | None:
    named = [c for c in containers if c.name == name]
    candidates = named or containers
    return candidates[0] if candidates else None


def _gone_reason(container: Observed, desired: Sequence[Desired]) -> str:
    role = container.labels.get(ROLE_LABEL)
    new_roles = {d.unit.role for d in desired}
    if role and new_roles and role not in new_roles:
        return f"role changed {role}→{'/'.join(sorted(new_roles))}"
    return "unit no longer in role"


def _unit_action(want: Desired, current: Observed | None, foreign: Observed | None) -> Action:
    if current is None:
        if foreign is not None:
            return Action(
                Kind.CONFLICT,
                want.name,
                f"a container named {foreign.name} exists that hostos does not own "
                "(remove or rename it)",
                want,
                foreign,
            )
        image = "" if want.image_present else f" (image {want.spec.image} to fetch)"
        return Action(Kind.CREATE, want.name, "new unit" + image, want)
    if current.labels.get(HASH_LABEL) != want.hash:
        return Action(Kind.RECREATE, want.name, change_reason(current, want), want, current)
    if not current.running:
        return Action(Kind.START, want.name, _stopped_reason(current), want, current)
    return Action(Kind.NOOP, want.name, "up to date", want, current)


def _stopped_reason(current: Observed) -> str:
    if current.state == "created":
        return "container created but never started"
    if current.exit_code is not None:
        return f"container {current.state} (exit code {current.exit_code})"
    return f"container {current.state}"


def change_reason(current: Observed, want: Desired) -> str:
    """Why a container must be recreated, from the spec it carries and the one wanted."""
    role = current.labels.get(ROLE_LABEL)
    parts = [] if role == want.unit.role else [f"role changed {role}→{want.unit.role}"]
    old = spec_of(current.labels)
    if old is None:
        parts.append("created by another hostos version")
    else:
        parts += differences(old, spec_body(want.spec, image_ref(want.unit.unit), want.unit.role))
    if not parts:
        return "spec changed"
    more = f" and {len(parts) - 4} more" if len(parts) > 4 else ""
    return ", ".join(parts[:4]) + more


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Readable differences between two hashed spec bodies."""
    out: list[str] = []
    for key in sorted(set(old) | set(new), key=_key_order):
        a, b = old.get(key), new.get(key)
        if a == b or key in ("image_ref", "role"):
            continue
        if key == "image":
            out.append(f"image changed {_image(old)}→{_image(new)}")
        elif isinstance(a, dict) and isinstance(b, dict):
            out += _map_changes(key, a, b)
        else:
            out.append(f"{key} changed")
    return out


def _key_order(key: str) -> tuple[int, str]:
    return (0 if key == "image" else 1, key)


def _image(body: Mapping[str, Any]) -> str:
    ident = str(body.get("image", ""))
    short = ident.removeprefix("sha256:")[:12]
    ref = body.get("image_ref")
    return f"{ref}@{short}" if ref and ref != ident else short


def _map_changes(key: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    out = []
    for name in sorted(set(a) | set(b)):
        if name not in a:
            out.append(f"{key} {name} added")
        elif name not in b:
            out.append(f"{key} {name} removed")
        elif a[name] != b[name]:
            out.append(f"{key} {name} changed")
    return out
