"""Engine replies → engine-neutral values (pure, no I/O).

Both adapters read container lists, inspect documents, events and log streams
here, so the quirks of each engine are handled (and unit-tested) in one place:

- Docker's `GET /containers/json` carries no health, exit code or start time as
  fields, only the human `Status` string ("Up 3 seconds (healthy)", "Exited (1)
  2 seconds ago").  Parsing that string keeps `owned()` to ONE call instead of
  one inspect per container; started_at and finished_at stay None there (use
  `inspect()` when they matter).  The engine restart count is always 0 because
  hostos creates containers with restart policy "no".
- Podman's libpod list has ExitCode, StartedAt and the health status (in
  `Status`), and calls a stopped container "stopped" or "configured"; those are
  mapped onto Docker's state names.
- Health is reported for running containers only: both engines keep the last
  verdict after a container stops, which would read as "unhealthy" or "starting"
  for something that is not running at all.
- Podman names the container exit event "died"; it becomes Docker's "die", and its
  health events become "health_status: <status>" as Docker spells them.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from hostos.engine.base import Observed

_EXITED = re.compile(r"^(?:Exited|Restarting) \((-?\d+)\)")
_HEALTH = re.compile(r"\((healthy|unhealthy|health: starting)\)")

# podman state → docker state
_PODMAN_STATES = {
    "stopped": "exited",
    "configured": "created",
    "initialized": "created",
    "unknown": "dead",
}
_PODMAN_ACTIONS = {"died": "die"}


def parse_docker_status(status: str) -> tuple[str | None, int | None]:
    """(health, exit code) from a Docker list `Status` string."""
    health: str | None = None
    exit_code: int | None = None
    if match := _EXITED.match(status):
        exit_code = int(match.group(1))
    if match := _HEALTH.search(status):
        health = "starting" if match.group(1) == "health: starting" else match.group(1)
    return health, exit_code


def docker_listed(row: Mapping[str, Any]) -> Observed:
    """An Observed from one `GET /containers/json` row."""
    health, exit_code = parse_docker_status(row.get("Status") or "")
    state = row.get("State") or ""
    return Observed(
        id=row["Id"],
        name=_first_name(row.get("Names")),
        labels=dict(row.get("Labels") or {}),
        state=state,
        image_id=row.get("ImageID") or "",
        health=health if state == "running" else None,
        exit_code=exit_code if state in ("exited", "dead", "restarting") else None,
    )


def docker_inspected(doc: Mapping[str, Any]) -> Observed:
    """An Observed from `GET /containers/{id}/json` (podman's libpod inspect is alike)."""
    state = doc.get("State") or {}
    status = _podman_state(state.get("Status") or "")
    health = (state.get("Health") or {}).get("Status") if status == "running" else None
    return Observed(
        id=doc["Id"],
        name=str(doc.get("Name") or "").lstrip("/"),
        labels=dict((doc.get("Config") or {}).get("Labels") or {}),
        state=status,
        image_id=doc.get("Image") or "",
        health=health or None,
        exit_code=state.get("ExitCode") if status in ("exited", "dead", "restarting") else None,
        started_at=_time_or_none(state.get("StartedAt")),
        finished_at=_time_or_none(state.get("FinishedAt")),
        restarts=int(doc.get("RestartCount") or 0),
    )


def libpod_listed(row: Mapping[str, Any]) -> Observed:
    """An Observed from one `GET /libpod/containers/json` row."""
    state = _podman_state(row.get("State") or "")
    return Observed(
        id=row["Id"],
        name=_first_name(row.get("Names")),
        labels=dict(row.get("Labels") or {}),
        state=state,
        image_id=row.get("ImageID") or "",
        health=(row.get("Status") or None) if state == "running" else None,
        exit_code=int(row.get("ExitCode") or 0) if state in ("exited", "dead") else None,
        started_at=_unix_or_none(row.get("StartedAt")),
        finished_at=_unix_or_none(row.get("ExitedAt")),
    )


def normalize_event(raw: Mapping[str, Any]) -> dict[str, Any]:
    """One engine event as {"time", "type", "action", "id", "name", "attributes"}.

    time is in (fractional) seconds; attributes hold the container's labels
    besides name/image/exit code, as both engines report them.
    """
    actor = raw.get("Actor") or {}
    attributes = dict(actor.get("Attributes") or {})
    action = str(raw.get("Action") or raw.get("status") or "")
    action = _PODMAN_ACTIONS.get(action, action)
    if action == "health_status" and raw.get("HealthStatus"):
        action = f"health_status: {raw['HealthStatus']}"
    nanos = raw.get("timeNano")
    return {
        "time": nanos / 1e9 if nanos else float(raw.get("time") or 0),
        "type": raw.get("Type") or "",
        "action": action,
        "id": actor.get("ID") or raw.get("id") or "",
        "name": attributes.get("name", ""),
        "attributes": attributes,
    }


def demux_frames(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Payloads of a multiplexed attach/log stream (8-byte header: stream, 0, 0, 0, size).

    Podman's libpod logs endpoint always frames its output; chunks may split
    frames anywhere, so bytes are buffered until a frame is whole.
    """
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        while len(buffer) >= 8:
            (size,) = struct.unpack(">I", buffer[4:8])
            if len(buffer) < 8 + size:
                break
            yield buffer[8 : 8 + size]
            buffer = buffer[8 + size :]
    if buffer:
        yield buffer  # a truncated tail: better shown than lost


def _first_name(names: Any) -> str:
    if not names:
        return ""
    return str(names[0]).lstrip("/")


def _podman_state(state: str) -> str:
    return _PODMAN_STATES.get(state, state)


def _time_or_none(value: Any) -> str | None:
    if not value or str(value).startswith("0001-01-01"):  # Go's zero time: never
        return None
    return str(value)


def _unix_or_none(value: Any) -> str | None:
    if not value or int(value) <= 0:
        return None
    return datetime.fromtimestamp(int(value), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
