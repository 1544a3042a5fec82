"""Text and JSON views of plans, outcomes and status, for the CLI."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from hostos.engine.base import Observed
from hostos.node.execute import Outcome
from hostos.node.plan import Action, Kind
from hostos.node.render import image_ref_of

if TYPE_CHECKING:
    from hostos.node.status import UnitStatus


def plan_lines(actions: Sequence[Action]) -> list[str]:
    """One line per action that changes something or waits, with its reason."""
    changing = [a for a in actions if a.kind is not Kind.NOOP]
    if not changing:
        return ["0 changes"]
    width = max(len(a.unit) for a in changing)
    return [f"{a.kind.value:<9} {a.unit:<{width}}  {a.reason}" for a in changing]


def outcome_line(outcome: Outcome) -> str:
    mark = "ok  " if outcome.ok else "FAIL"
    took = f"{outcome.seconds:.2f}s"
    return f"{mark} {outcome.kind.value:<9} {outcome.unit}: {outcome.message} ({took})"


def plan_json(actions: Sequence[Action]) -> list[dict[str, Any]]:
    return [
        {
            "unit": a.unit,
            "action": a.kind.value,
            "reason": a.reason,
            "container": a.current.id if a.current else None,
        }
        for a in actions
    ]


def outcomes_json(outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    return [
        {
            "unit": o.unit,
            "action": o.kind.value,
            "ok": o.ok,
            "message": o.message,
            "seconds": o.seconds,
            "container": o.container,
        }
        for o in outcomes
    ]


def status_rows(containers: Sequence[Observed]) -> list[UnitStatus]:
    """The status of the units the engine runs here, without a supervisor to ask."""
    from hostos.node.status import UnitStatus  # only `hostos status` needs the status types

    rows = [UnitStatus.of(c, image_ref_of(c.labels)) for c in containers]
    return sorted(rows, key=lambda r: (str(r.role), r.unit, str(r.name)))


def status_table(rows: Sequence[UnitStatus]) -> tuple[list[str], list[list[str]]]:
    header = ["UNIT", "ROLE", "STATE", "HEALTH", "RESTARTS", "SINCE", "IMAGE", "CONTAINER"]
    body = [
        [
            r.unit,
            r.role or "-",
            _state(r),
            r.health or "-",
            str(r.restarts),
            when(r.since),
            _image(r),
            (r.container_id or "-")[:12],
        ]
        for r in rows
    ]
    return header, body


def _state(row: UnitStatus) -> str:
    code = row.exit_code if row.exit_code is not None else row.last_exit
    if row.state == "exited" and code is not None:
        return f"exited({code})"
    return row.state


def _image(row: UnitStatus) -> str:
    """The image as the unit names it, with the ID it resolved to (ref@id), as plans say."""
    short = (row.image or "").removeprefix("sha256:")[:12]
    if row.image_ref and short and row.image_ref != row.image:
        return f"{row.image_ref}@{short}"
    return row.image_ref or short or "-"


def when(rfc3339: str | None) -> str:
    """An engine's RFC 3339 time in this machine's zone, to the second, with the zone."""
    if not rfc3339:
        return "-"
    try:
        moment = datetime.fromisoformat(rfc3339)
    except ValueError:
        return rfc3339
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone().isoformat(sep=" ", timespec="seconds")
