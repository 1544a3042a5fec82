"""The supervisor's status: typed values, their one JSON form, and the local API serving it.

`NodeStatus` is what `Supervisor.snapshot()` returns.  The status API (HTTP over a unix
socket) serves its JSON form; `hostos status`, `hostos plan` and `apply` read it back with
`read_status`; the cluster agent heartbeats what it says of units and mounts.  Without a
supervisor, `hostos status` makes the same `UnitStatus` rows from the engine's containers.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from hostos.engine.base import Observed
from hostos.labels import ROLE_LABEL
from hostos.node.holds import Holds
from hostos.transport import UnixHTTPConnection

STATUS_PATH = "/v1/status"  # served on hostos.node.status_socket.socket_path


T = TypeVar("T")


@dataclass(frozen=True)
class UnitStatus:
    """A unit as the supervisor sees it, or (without one) its container as the engine does."""

    unit: str
    role: str | None = None
    state: str = "absent"  # the container's state; absent: there is no container
    health: str | None = None  # healthy, unhealthy, starting; None without a check
    restarts: int = 0  # the supervisor's restarts after an exit (else the engine's count)
    exit_code: int | None = None  # the container's, once it has exited
    since: str | None = None  # RFC 3339: when the container entered its state
    image: str | None = None  # the image ID
    image_ref: str | None = None  # the image as the unit names it (hostos/busybox:latest)
    container_id: str | None = None
    name: str | None = None  # the container's name
    # what only the supervisor knows
    last_exit: int | None = None  # the exit code its crash accounting saw last
    next_retry: float | None = None  # seconds to the next start after a crash
    waiting: str | None = None  # why the unit's action waits (a mount, a crash, a dependency)
    stopped: str | None = None  # why the crash backoff or the restart policy keeps it stopped
    last_error: str | None = None

    @classmethod
    def of(cls, container: Observed, image_ref: str | None = None) -> UnitStatus:
        """What the engine says of a unit's container (made from image_ref)."""
        return cls(
            unit=container.unit or container.name,
            role=container.labels.get(ROLE_LABEL),
            state=container.state,
            health=container.health,
            restarts=container.restarts,
            exit_code=container.exit_code,
            since=container.started_at if container.running else container.finished_at,
            image=container.image_id,
            image_ref=image_ref,
            container_id=container.id,
            name=container.name,
        )

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> UnitStatus:
        return _from_json(cls, data)


@dataclass(frozen=True)
class MountStatus:
    """A role mount as the supervisor's mount manager sees it (hostos.mounts.state)."""

    name: str
    state: str  # pending, mounted, failed, fallback, skipped
    source: str | None = None  # the host path units bind; None while the mount is not ready
    attempts: int = 0  # failed mount attempts since it was last up
    last_error: str | None = None
    since: float = 0.0  # wall time the state was entered
    next_retry: float | None = None  # wall time of the next mount attempt
    owned: bool = False  # hostos mounted it

    @property
    def ready(self) -> bool:
        """Units that bind it may start: the manager gives a source for ready mounts only."""
        return self.source is not None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> MountStatus:
        return _from_json(cls, data)


@dataclass(frozen=True)
class NodeStatus:
    """The supervisor's answer: its spec's generations, the engine, units, mounts, errors."""

    role: str | None = None
    node: str | None = None
    generation: int = 0  # specs loaded since the supervisor started
    reconciled: int = 0  # the generation the last reconcile that went through applied
    engine: str | None = None  # docker or podman; None while disconnected
    engine_error: str = ""
    site_error: str = ""  # the last bad edit (the last good spec stays in force)
    units: tuple[UnitStatus, ...] = ()
    mounts: tuple[MountStatus, ...] = ()

    def holds(self) -> Holds:
        """What the supervisor plans with: role mounts not ready, units kept stopped."""
        return Holds(
            frozenset(m.name for m in self.mounts if not m.ready),
            {u.unit: u.stopped for u in self.units if u.stopped},
        )

    def sources(self) -> dict[str, str] | None:
        """Role mount → the host path the supervisor binds (ready mounts only); None when
        the role has no mounts."""
        if not self.mounts:
            return None
        return {m.name: m.source for m in self.mounts if m.source is not None}

    def to_json(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self),
            "units": [u.to_json() for u in self.units],
            "mounts": [m.to_json() for m in self.mounts],
        }

    @classmethod
    def from_json(cls, data: Any) -> NodeStatus:
        """ValueError when data is not a node status."""
        if not isinstance(data, Mapping):
            raise ValueError("a node status is a JSON object")
        units = _list(data, "units")
        mounts = _list(data, "mounts")
        return dataclasses.replace(
            _from_json(cls, {k: v for k, v in data.items() if k not in ("units", "mounts")}),
            units=tuple(UnitStatus.from_json(u) for u in units),
            mounts=tuple(MountStatus.from_json(m) for m in mounts),
        )


def _list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise ValueError(f"{key}: expected a list")
    return value


def _from_json(cls: type[T], data: Any) -> T:
    """An instance of the dataclass cls from its JSON object: keys it does not know are
    left out (a newer supervisor), those it lacks take their defaults."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{cls.__name__}: expected a JSON object")
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    try:
        return cls(**{k: v for k, v in data.items() if k in known})
    except TypeError as exc:
        raise ValueError(f"{cls.__name__}: {exc}") from None


def read_status(path: str, timeout: float = 2.0) -> NodeStatus | None:
    """The running supervisor's status, or None when no supervisor answers on path."""
    if not os.path.exists(path):
        return None
    conn = UnixHTTPConnection(path, timeout)
    try:
        conn.request("GET", STATUS_PATH)
        response = conn.getresponse()
        if response.status != 200:
            return None
        return NodeStatus.from_json(json.loads(response.read()))
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        conn.close()
