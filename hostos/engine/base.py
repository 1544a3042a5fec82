"""The engine protocol and the engine-neutral values that cross it.

`ContainerSpec` is what hostos wants a container to be, rendered by pure code
(`hostos.node.render`); each adapter translates it into its engine's create
payload.  `Observed` is what an adapter reports back about a container.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from hostos.labels import NAMESPACE_LABEL, OWNER, OWNER_LABEL, UNIT_LABEL

NAME_PREFIX = "hostos-"


def owner_labels(namespace: str = "") -> list[str]:
    """Label filters (all must match) for the containers of a hostos instance."""
    labels = [f"{OWNER_LABEL}={OWNER}"]
    return [*labels, f"{NAMESPACE_LABEL}={namespace}"] if namespace else labels


def container_name(unit: str, namespace: str = "") -> str:
    return NAME_PREFIX + (f"{namespace}-" if namespace else "") + unit


def volume_name(volume: str, namespace: str = "") -> str:
    """The engine's name for a unit's named volume: as written, or, in a namespace, the
    namespace's own (hostos-<namespace>-<volume>), so that instances never share one."""
    return container_name(volume, namespace) if namespace else volume


@dataclass(frozen=True)
class MountSpec:
    type: Literal["bind", "volume", "tmpfs"]
    target: str
    source: str | None = None
    readonly: bool = False
    size: int | None = None  # tmpfs only
    mode: int | None = None  # tmpfs only


@dataclass(frozen=True)
class PortSpec:
    container: int
    host: int | None = None
    protocol: str = "tcp"
    host_ip: str | None = None


@dataclass(frozen=True)
class DeviceSpec:
    host: str
    container: str
    permissions: str = "rwm"


@dataclass(frozen=True)
class UlimitSpec:
    name: str
    soft: int
    hard: int


@dataclass(frozen=True)
class HealthSpec:
    test: tuple[str, ...]  # ("CMD", prog, arg…) or ("CMD-SHELL", "script")
    interval: float
    timeout: float
    retries: int
    start_period: float


@dataclass(frozen=True)
class ContainerSpec:
    """One container as hostos wants it, independent of the engine."""

    name: str
    image: str  # an image ID when known, else the reference
    labels: Mapping[str, str]
    entrypoint: tuple[str, ...] | None = None
    command: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    working_dir: str | None = None
    user: str | None = None
    mounts: tuple[MountSpec, ...] = ()
    ports: tuple[PortSpec, ...] = ()
    network: str = "bridge"
    hostname: str | None = None
    devices: tuple[DeviceSpec, ...] = ()
    privileged: bool = False
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    ulimits: tuple[UlimitSpec, ...] = ()
    cpus: float | None = None
    memory: int | None = None
    pids: int | None = None
    health: HealthSpec | None = None
    stop_signal: str = "SIGTERM"
    stop_timeout: int = 10


State = Literal["created", "running", "paused", "restarting", "removing", "exited", "dead"]


@dataclass(frozen=True)
class Observed:
    """A container as the engine reports it."""

    id: str
    name: str
    labels: Mapping[str, str]
    state: str  # one of State, as the engine reports it
    image_id: str
    health: str | None = None  # healthy, unhealthy, starting, or None without a check
    exit_code: int | None = None
    started_at: str | None = None  # RFC 3339
    finished_at: str | None = None
    restarts: int = 0

    @property
    def owned(self) -> bool:
        return self.labels.get(OWNER_LABEL) == OWNER

    @property
    def unit(self) -> str | None:
        return self.labels.get(UNIT_LABEL)

    @property
    def namespace(self) -> str:
        return self.labels.get(NAMESPACE_LABEL, "")

    @property
    def running(self) -> bool:
        return self.state in ("running", "restarting")


class EngineError(Exception):
    """An engine call failed; the message says which call and why."""


class ImageNotFound(EngineError):
    """The image is neither local nor obtainable."""


Progress = Callable[[str], None]


class Engine(Protocol):
    """What hostos needs from a container engine. Adapters raise EngineError."""

    name: str  # "docker" or "podman"

    def ping(self) -> None: ...
    def owned(self, namespace: str = "") -> list[Observed]: ...  # all hostos owns (there)
    def named(self, names: Sequence[str]) -> list[Observed]: ...  # by exact names, one call
    def inspect(self, container: str) -> Observed: ...
    def image_id(self, ref: str) -> str | None: ...  # None when not present locally
    def pull(self, ref: str, progress: Progress) -> str: ...  # returns the image ID
    def build(
        self, context: str, tag: str, dockerfile: str | None, args: Mapping[str, str]
    ) -> str: ...
    def load(self, archive: str) -> str: ...  # oci-archive:/… or docker-archive:/…
    def create(self, spec: ContainerSpec) -> str: ...  # returns the container ID
    def start(self, container: str) -> None: ...
    def stop(self, container: str, timeout: float) -> None: ...
    def remove(self, container: str) -> None: ...  # force, with anonymous volumes
    def rename(self, container: str, name: str) -> None: ...
    def health(self, container: str) -> str | None: ...  # runs the check if the engine won't
    def logs(self, container: str, follow: bool, tail: int | None) -> Iterator[bytes]: ...
    def events(self, since: float, until: float | None) -> Iterator[dict[str, Any]]: ...
    def close(self) -> None: ...
