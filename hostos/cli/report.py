"""Text and JSON views of plans, outcomes and status, for the CLI."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hostos.engine.base import ROLE_LABEL, Observed
from hostos.node.execute import Outcome
from hostos.node.plan import Action


def plan_lines(actions: Sequence[Action]) -> list[str]:
    changing = [a for a in actions if a.changes]
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


def status_rows(containers: Sequence[Observed]) -> list[dict[str, Any]]:
    rows = [
        {
            "unit": c.unit or c.name,
            "role": c.labels.get(ROLE_LABEL),
            "state": c.state,
            "health": c.health,
            "restarts": c.restarts,
            "exit_code": c.exit_code,
            "since": c.started_at if c.running else c.finished_at,
            "image": c.image_id,
            "container_id": c.id,
            "name": c.name,
        }
        for c in containers
    ]
    return sorted(rows, key=lambda r: (str(r["role"]), str(r["unit"]), str(r["name"])))


def status_table(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    header = ["UNIT", "ROLE", "STATE", "HEALTH", "RESTARTS", "SINCE", "IMAGE", "CONTAINER"]
    body = [
        [
            str(r["unit"]),
            str(r["role"] or "-"),
            _state(r),
            str(r["health"] or "-"),
            str(r["restarts"]),
            str(r["since"] or "-")[:19],
            _short(str(r["image"] or "-")),
            str(r["container_id"] or "-")[:12],
        ]
        for r in rows
    ]
    return header, body


def _state(row: dict[str, Any]) -> str:
    code = row.get("exit_code", row.get("last_exit"))
    if row["state"] == "exited" and code is not None:
        return f"exited({code})"
    return str(row["state"])


def _short(image: str) -> str:
    return image.removeprefix("sha256:")[:12]
