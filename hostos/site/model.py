"""The site definition's typed, frozen values: units, roles and the inventory.

Validation of single documents happens here (pydantic, `extra="forbid"`);
checks that need several documents at once live in `hostos.site.load`.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from hostos.labels import HOSTOS_PREFIX
from hostos.site.fields import (
    STRICT,
    AbsPath,
    Command,
    Duration,
    ImageRef,
    Invalid,
    Name,
    Size,
    StringMap,
    UserSpec,
    check_abs_path,
    check_choice,
)
from hostos.site.quantity import format_duration
from hostos.site.rollout import RoleRollout

SIGNALS = [
    "SIGHUP",
    "SIGINT",
    "SIGQUIT",
    "SIGKILL",
    "SIGUSR1",
    "SIGUSR2",
    "SIGTERM",
    "SIGCONT",
    "SIGSTOP",
    "SIGWINCH",
    "SIGPWR",
    "SIGABRT",
]
CAPABILITIES = [
    "ALL",
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYSLOG",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "WAKE_ALARM",
]
ULIMITS = [
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
]
VOLUME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class Model(BaseModel):
    model_config = STRICT


# ----------------------------------------------------------------------------- unit parts


class Build(Model):
    context: str = Field(description="build context, relative to the site directory")
    dockerfile: str | None = None
    args: StringMap = {}

    @model_validator(mode="before")
    @classmethod
    def _short(cls, data: Any) -> Any:
        return {"context": data} if isinstance(data, str) else data


class Mount(Model):
    """A container mount: bind, volume, tmpfs, or a reference to one of the role's mounts."""

    type: Literal["bind", "volume", "tmpfs"] | None = None
    mount: Name | None = Field(None, description="name of a mount of the role")
    source: str | None = None
    target: AbsPath | None = None
    readonly: bool = False
    size: Size | None = None
    mode: int | None = None

    @field_validator("source")
    @classmethod
    def _source(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        if info.data.get("type") == "bind":
            return check_abs_path(value)
        if info.data.get("type") == "volume" and not re.match(VOLUME_PATTERN, value):
            raise Invalid(
                f"volume name '{value}' is not valid", hint="letters, digits, '_', '.', '-'"
            )
        return value

    @model_validator(mode="after")
    def _shape(self) -> Mount:
        if self.mount is not None:
            if self.type is not None or self.source is not None:
                raise ValueError("a role mount reference takes only mount, target, readonly")
            return self
        if self.type is None:
            raise ValueError(
                "a mount needs 'type' (bind, volume, tmpfs) or 'mount' (a role mount's name)"
            )
        if self.target is None:
            raise ValueError(f"a {self.type} mount needs 'target'")
        if self.type == "tmpfs":
            if self.source is not None:
                raise Invalid("a tmpfs mount takes no 'source'", key="source")
        elif self.source is None:
            raise ValueError(f"a {self.type} mount needs 'source'")
        if self.type != "tmpfs" and (self.size is not None or self.mode is not None):
            raise Invalid(
                "size and mode apply to tmpfs mounts only",
                key="size" if self.size is not None else "mode",
            )
        return self


class Port(Model):
    container: int = Field(ge=1, le=65535)
    host: int | None = Field(None, ge=1, le=65535)
    protocol: Literal["tcp", "udp"] = "tcp"
    host_ip: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _short(cls, data: Any) -> Any:
        if isinstance(data, int) and not isinstance(data, bool):
            return {"container": data}
        if isinstance(data, str):
            return _parse_port(data)
        return data


def _parse_port(text: str) -> dict[str, Any]:
    match = re.fullmatch(
        r"(?:(?:(\d+\.\d+\.\d+\.\d+|\[[0-9a-fA-F:]+\]):)?(\d+):)?(\d+)"
        r"(?:/(tcp|udp))?",
        text.strip(),
    )
    if not match:
        raise ValueError(f"'{text}' is not a port (write 80, '8080:80', '127.0.0.1:8080:80/udp')")
    host_ip, host, container, proto = match.groups()
    out: dict[str, Any] = {"container": int(container), "protocol": proto or "tcp"}
    if host:
        out["host"] = int(host)
    if host_ip:
        out["host_ip"] = host_ip.strip("[]")
    return out


class Device(Model):
    host: AbsPath
    container: AbsPath | None = None
    permissions: str = "rwm"

    @model_validator(mode="before")
    @classmethod
    def _short(cls, data: Any) -> Any:
        if not isinstance(data, str):
            return data
        parts = data.split(":")
        if len(parts) > 3:
            raise ValueError(f"'{data}' is not a device (write /dev/x or /dev/x:/dev/y:rwm)")
        out: dict[str, Any] = {"host": parts[0]}
        if len(parts) >= 2 and parts[1]:
            out["container"] = parts[1]
        if len(parts) == 3:
            out["permissions"] = parts[2]
        return out

    @field_validator("permissions")
    @classmethod
    def _perms(cls, value: str) -> str:
        if not value or not set(value) <= set("rwm"):
            raise ValueError(f"'{value}' is not a device permission (letters from r, w, m)")
        return value


class Capabilities(Model):
    add: list[str] = []
    drop: list[str] = []

    @field_validator("add", "drop")
    @classmethod
    def _known(cls, values: list[str]) -> list[str]:
        names = [value.upper().removeprefix("CAP_") for value in values]
        for i, name in enumerate(names):
            check_choice(name, CAPABILITIES, "capability", key=i)
        return names


class Ulimit(Model):
    soft: int
    hard: int

    @model_validator(mode="before")
    @classmethod
    def _short(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: _limit(v) for k, v in data.items()}
        value = _limit(data)
        return {"soft": value, "hard": value}

    @model_validator(mode="after")
    def _order(self) -> Ulimit:
        if self.hard != -1 and (self.soft == -1 or self.soft > self.hard):
            raise ValueError(
                f"soft limit {_show_limit(self.soft)} is above the hard limit "
                f"{_show_limit(self.hard)}"
            )
        return self


def _limit(value: Any) -> Any:
    return -1 if value in ("unlimited", "infinity") else value


def _show_limit(value: int) -> str:
    return "unlimited" if value == -1 else str(value)


class Resources(Model):
    cpus: float | None = Field(None, gt=0)
    memory: Size | None = None
    pids: int | None = Field(None, ge=-1)

    @field_validator("memory")
    @classmethod
    def _min_memory(cls, value: int | None) -> int | None:
        if value is not None and value < 6 * 2**20:
            raise Invalid(
                f"memory limit {value} bytes ({value / 2**20:.3g}Mi) is below the engines' "
                "6Mi minimum",
                hint="give at least 6Mi",
            )
        return value


class Backoff(Model):
    initial: Duration = 1.0
    max: Duration = 300.0

    @model_validator(mode="after")
    def _order(self) -> Backoff:
        if self.max < self.initial:
            raise ValueError("backoff max is below initial")
        return self


class Restart(Model):
    policy: Literal["always", "on-failure", "no"] = "always"
    backoff: Backoff = Backoff()

    @model_validator(mode="before")
    @classmethod
    def _short(cls, data: Any) -> Any:
        if data is False:  # YAML reads a bare `no` as false
            return {"policy": "no"}
        return {"policy": data} if isinstance(data, str) else data


class Health(Model):
    command: Command | None = None
    http: str | None = None
    tcp: str | None = None
    interval: Duration = 10.0
    timeout: Duration = 5.0
    retries: int = Field(3, ge=1)
    start_period: Duration = 0.0

    @field_validator("http")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
            raise ValueError(f"'{value}' is not an http(s) URL")
        return value

    @field_validator("tcp")
    @classmethod
    def _tcp(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[^\s:]+:\d{1,5}$", value):
            raise ValueError(f"'{value}' is not host:port")
        return value

    @model_validator(mode="after")
    def _one_probe(self) -> Health:
        probes = [k for k in ("command", "http", "tcp") if getattr(self, k) is not None]
        if len(probes) != 1:
            raise ValueError(
                "a health check has exactly one of command, http, tcp"
                + (f" (found {', '.join(probes)})" if probes else "")
            )
        if self.timeout > self.interval:
            raise Invalid(
                f"timeout {format_duration(self.timeout)} is longer than the interval "
                f"{format_duration(self.interval)}",
                key="timeout",
                hint="a check must end before the next one starts",
            )
        return self


# ----------------------------------------------------------------------------- unit


class Unit(Model):
    """One container unit: what one container of a node runs."""

    name: Name
    description: str = ""
    image: ImageRef | None = None
    build: Build | None = None
    entrypoint: Command | None = None
    command: Command | None = Field(None, description="arguments (the image's CMD); alias: args")
    env: StringMap = {}
    env_files: list[str] = Field([], description="KEY=VALUE files, relative to the site")
    working_dir: AbsPath | None = None
    user: UserSpec | None = None
    mounts: list[Mount] = []
    ports: list[Port] = []
    network: str = "bridge"
    hostname: str | None = None
    devices: list[Device] = []
    privileged: bool = False
    capabilities: Capabilities = Capabilities()
    ulimits: dict[str, Ulimit] = {}
    resources: Resources = Resources()
    restart: Restart = Restart()
    health: Health | None = None
    requires: list[str] = Field([], description="units or role mounts that must be up first")
    after: list[str] = Field([], description="units started before this one (order only)")
    stop_signal: str = "SIGTERM"
    stop_timeout: Duration = 10.0
    labels: StringMap = {}

    @property
    def depends_on(self) -> tuple[str, ...]:
        """What this unit starts after: requires, then after, each name once."""
        return tuple(dict.fromkeys([*self.requires, *self.after]))

    @model_validator(mode="before")
    @classmethod
    def _args_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and "args" in data:
            if "command" in data:
                raise ValueError("'args' and 'command' are the same field: keep one")
            data = {("command" if k == "args" else k): v for k, v in data.items()}
        return data

    @field_validator("network")
    @classmethod
    def _network(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", value):
            raise ValueError(f"'{value}' is not a network (host, none, bridge or a name)")
        return value

    @field_validator("stop_signal")
    @classmethod
    def _signal(cls, value: str) -> str:
        name = value.upper() if value.upper().startswith("SIG") else "SIG" + value.upper()
        return check_choice(name, SIGNALS, "signal")

    @field_validator("ulimits")
    @classmethod
    def _ulimit_names(cls, value: dict[str, Ulimit]) -> dict[str, Ulimit]:
        for name in value:
            check_choice(name, ULIMITS, "ulimit", key=name)
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if key.startswith(HOSTOS_PREFIX):
                raise Invalid(
                    f"the prefix {HOSTOS_PREFIX} is reserved for hostos",
                    key=key,
                    hint="choose another label name",
                )
        return value

    @model_validator(mode="after")
    def _whole(self) -> Unit:
        if self.image is None and self.build is None:
            raise ValueError("a unit needs 'image' or 'build'")
        if self.network in ("host", "none") and self.ports:
            raise Invalid(
                f"ports cannot be published with network: {self.network}",
                key="ports",
                hint="drop the ports or use a bridge network",
            )
        targets = [m.target for m in self.mounts if m.target]
        for i, target in enumerate(targets):
            if target in targets[:i]:
                raise Invalid(f"two mounts share the target {target}", key=("mounts", i))
        return self


# ----------------------------------------------------------------------------- role


class RoleMount(Model):
    """One line of the role's cluster-wide fstab."""

    name: Name
    type: Literal["nfs", "nfs4", "beegfs", "lustre", "cephfs", "tmpfs", "bind"]
    source: str | None = None
    target: AbsPath
    options: list[str] = []
    fallback: str | None = Field(None, description="'skip' or a local absolute path")
    timeout: Duration = 30.0

    @field_validator("fallback")
    @classmethod
    def _fallback(cls, value: str | None) -> str | None:
        if value is not None and value != "skip":
            check_abs_path(value)
        return value

    @model_validator(mode="after")
    def _source(self) -> RoleMount:
        if self.type == "tmpfs":
            if self.source is not None:
                raise Invalid("a tmpfs mount takes no 'source'", key="source")
            return self
        if self.source is None:
            raise ValueError(f"a {self.type} mount needs 'source'")
        if self.type in ("nfs", "nfs4") and not re.match(r"^[^\s:/]+:/\S*$", self.source):
            raise Invalid(
                f"'{self.source}' is not an NFS source", key="source", hint="write server:/export"
            )
        if self.type == "bind":
            check_abs_path(self.source)
        if self.type == "lustre" and ":/" not in self.source:
            raise Invalid(
                f"'{self.source}' is not a Lustre source",
                key="source",
                hint="write mgs@tcp:/fsname",
            )
        return self


class Role(Model):
    """What nodes of one role run: mounts, units and per-role unit overrides."""

    role: Name
    description: str = ""
    image: str | None = Field(
        None, description="host image generation; changing it is a rolling reboot"
    )
    extends: Name | None = None
    mounts: list[RoleMount] = []
    units: list[Name] = []
    overrides: dict[Name, dict[str, Any]] = Field(
        {}, description="per unit, fields merged over the unit (maps merge, lists replace)"
    )
    rollout: RoleRollout | None = Field(
        None, description="how a new host image reaches the role's nodes (hostos rollout)"
    )

    @field_validator("image")
    @classmethod
    def _generation(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", value):
            raise ValueError(f"'{value}' is not an image generation (letters, digits, . _ : -)")
        return value

    @model_validator(mode="after")
    def _unique(self) -> Role:
        for key, label, values in (
            ("mounts", "mount", [m.name for m in self.mounts]),
            ("mounts", "mount target", [m.target for m in self.mounts]),
            ("units", "unit", list(self.units)),
        ):
            for i, value in enumerate(values):
                if value in values[:i]:
                    raise Invalid(f"{label} '{value}' is listed twice", key=(key, i))
        return self


# ----------------------------------------------------------------------------- inventory

MAC_PATTERN = r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$"


class NodeEntry(Model):
    name: str = Field(description="a host name or a hostlist such as cn[001-128]")
    role: Name
    mac: str | None = Field(None, pattern=MAC_PATTERN)
    labels: StringMap = {}

    @field_validator("mac", mode="before")
    @classmethod
    def _mac(cls, value: Any) -> Any:
        if isinstance(value, str) and not re.match(MAC_PATTERN, value):
            raise ValueError(f"'{value}' is not a MAC address (write 52:54:00:12:34:56)")
        return value.lower() if isinstance(value, str) else value


class Inventory(Model):
    nodes: list[NodeEntry]


class Node(Model):
    """One expanded node of the inventory."""

    name: str
    role: str
    mac: str | None = None
    labels: dict[str, str] = {}
