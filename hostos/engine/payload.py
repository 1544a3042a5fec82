"""Create payloads: one ContainerSpec, two engine dialects (pure, no I/O).

`docker_create_body` is the Docker Engine API `POST /containers/create` body;
`libpod_create_body` is podman's `POST /libpod/containers/create` SpecGenerator.
Both must yield the same container (tests/integration/test_engines.py compares
`docker inspect` with `podman inspect`), so every choice that an engine would
otherwise default differently is spelled out here:

- the restart policy is always "no": hostos's supervisor restarts units, not the engine;
- a health check is passed in nanoseconds on both sides;
- CPU limits are a CFS quota over the default 100 ms period (what docker's NanoCpus
  means), written as NanoCpus for docker and quota/period for podman;
- an unlimited ulimit is -1 for docker and RLIM_INFINITY for podman, whose rlimits
  are unsigned;
- podman wants the stop signal as a number.

An entrypoint or command of None keeps the image's; an empty one clears it.
A unit without a health check keeps the image's HEALTHCHECK, if any, on both engines.
"""

from __future__ import annotations

import signal
from collections.abc import Iterable
from typing import Any

from hostos.engine.base import ContainerSpec, HealthSpec, MountSpec, PortSpec, UlimitSpec

CPU_PERIOD_US = 100_000  # the CFS period docker uses for NanoCpus
RLIM_INFINITY = 2**64 - 1  # an unsigned "unlimited" for podman's OCI rlimits
NS_PER_S = 1_000_000_000


def docker_create_body(spec: ContainerSpec) -> dict[str, Any]:
    """The Docker Engine API body for `POST /containers/create?name=<spec.name>`."""
    body: dict[str, Any] = {
        "Image": spec.image,
        "Labels": dict(spec.labels),
        "Env": [f"{key}={value}" for key, value in spec.env.items()],
        "StopSignal": spec.stop_signal,
        "StopTimeout": spec.stop_timeout,
        "HostConfig": _docker_host_config(spec),
    }
    _put(body, "Entrypoint", _argv(spec.entrypoint))
    _put(body, "Cmd", _argv(spec.command))
    _put(body, "WorkingDir", spec.working_dir)
    _put(body, "User", spec.user)
    _put(body, "Hostname", spec.hostname)
    if spec.ports:
        body["ExposedPorts"] = {_port_key(p): {} for p in spec.ports}
    if spec.health is not None:
        body["Healthcheck"] = health_config(spec.health)
    return body


def _docker_host_config(spec: ContainerSpec) -> dict[str, Any]:
    host: dict[str, Any] = {
        "NetworkMode": spec.network,
        "Mounts": [_docker_mount(m) for m in spec.mounts],
        "PortBindings": _docker_port_bindings(spec.ports),
        "Devices": [
            {
                "PathOnHost": d.host,
                "PathInContainer": d.container,
                "CgroupPermissions": d.permissions,
            }
            for d in spec.devices
        ],
        "Privileged": spec.privileged,
        "CapAdd": list(spec.cap_add),
        "CapDrop": list(spec.cap_drop),
        "Ulimits": [{"Name": u.name, "Soft": u.soft, "Hard": u.hard} for u in spec.ulimits],
        "RestartPolicy": {"Name": "no"},
    }
    if spec.cpus is not None:
        host["NanoCpus"] = round(spec.cpus * NS_PER_S)
    _put(host, "Memory", spec.memory)
    _put(host, "PidsLimit", spec.pids)
    return host


def _docker_mount(mount: MountSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"Type": mount.type, "Target": mount.target, "ReadOnly": mount.readonly}
    if mount.type == "tmpfs":
        options: dict[str, int] = {}
        _put(options, "SizeBytes", mount.size)
        _put(options, "Mode", mount.mode)
        if options:
            out["TmpfsOptions"] = options
    else:
        out["Source"] = mount.source
    return out


def _docker_port_bindings(ports: Iterable[PortSpec]) -> dict[str, list[dict[str, str]]]:
    """Docker groups host bindings by container port; a port without a host port
    is published on an ephemeral one, as `docker run -p 80` does."""
    bindings: dict[str, list[dict[str, str]]] = {}
    for port in ports:
        bindings.setdefault(_port_key(port), []).append(
            {
                "HostIp": port.host_ip or "",
                "HostPort": str(port.host) if port.host is not None else "",
            }
        )
    return bindings


def libpod_create_body(
    spec: ContainerSpec, default_ulimits: Iterable[UlimitSpec] = ()
) -> dict[str, Any]:
    """Podman's SpecGenerator for `POST /libpod/containers/create` (podman 4.x field names).

    default_ulimits: the engine's own defaults, sent along with the spec's ulimits
    because podman drops its defaults (and raises nofile/nproc to 1048576) as soon as
    one rlimit is given, where docker keeps what the spec does not name.
    """
    body: dict[str, Any] = {
        "name": spec.name,
        "image": spec.image,
        "labels": dict(spec.labels),
        "env": dict(spec.env),
        "mounts": [_libpod_mount(m) for m in spec.mounts if m.type != "volume"],
        "volumes": [_libpod_volume(m) for m in spec.mounts if m.type == "volume"],
        "portmappings": [_libpod_port(p) for p in spec.ports],
        "devices": [{"path": f"{d.host}:{d.container}:{d.permissions}"} for d in spec.devices],
        "privileged": spec.privileged,
        "cap_add": list(spec.cap_add),
        "cap_drop": list(spec.cap_drop),
        "stop_signal": signal_number(spec.stop_signal),
        "stop_timeout": spec.stop_timeout,
        "restart_policy": "no",
        **_libpod_network(spec.network),
    }
    _put(body, "entrypoint", _argv(spec.entrypoint))
    _put(body, "command", _argv(spec.command))
    _put(body, "work_dir", spec.working_dir)
    _put(body, "user", spec.user)
    _put(body, "hostname", spec.hostname)
    if spec.ulimits:
        body["r_limits"] = [
            _libpod_rlimit(u) for u in _merge_ulimits(spec.ulimits, default_ulimits)
        ]
    limits = _libpod_resources(spec)
    if limits:
        body["resource_limits"] = limits
    if spec.health is not None:
        body["healthconfig"] = health_config(spec.health)
    return body


def _libpod_mount(mount: MountSpec) -> dict[str, Any]:
    """An OCI mount: tmpfs size and mode become mount options, as the kernel reads them."""
    options = ["ro" if mount.readonly else "rw"]
    if mount.type == "tmpfs":
        if mount.size is not None:
            options.append(f"size={mount.size}")
        if mount.mode is not None:
            options.append(f"mode={mount.mode:o}")
        return {"type": "tmpfs", "source": "tmpfs", "destination": mount.target, "options": options}
    return {
        "type": "bind",
        "source": mount.source,
        "destination": mount.target,
        "options": ["rbind", *options],
    }


def _libpod_volume(mount: MountSpec) -> dict[str, Any]:
    return {
        "Name": mount.source,
        "Dest": mount.target,
        "Options": ["ro" if mount.readonly else "rw"],
    }


def _libpod_port(port: PortSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"container_port": port.container, "protocol": port.protocol}
    _put(out, "host_port", port.host)
    _put(out, "host_ip", port.host_ip)
    return out


def _libpod_network(network: str) -> dict[str, Any]:
    """host and none are namespaces; "bridge" is the engine's default network
    (docker's `bridge`, podman's `podman`); any other name is a network to join."""
    if network in ("host", "none"):
        return {"netns": {"nsmode": network}}
    if network == "bridge":
        return {"netns": {"nsmode": "bridge"}}
    return {"netns": {"nsmode": "bridge"}, "Networks": {network: {}}}


def _libpod_rlimit(limit: UlimitSpec) -> dict[str, Any]:
    return {
        "type": limit.name,
        "soft": _unsigned_limit(limit.soft),
        "hard": _unsigned_limit(limit.hard),
    }


def _merge_ulimits(own: Iterable[UlimitSpec], defaults: Iterable[UlimitSpec]) -> list[UlimitSpec]:
    merged = {u.name: u for u in defaults}
    merged.update({u.name: u for u in own})
    return [merged[name] for name in sorted(merged)]


def _unsigned_limit(value: int) -> int:
    return RLIM_INFINITY if value < 0 else value


def _libpod_resources(spec: ContainerSpec) -> dict[str, Any]:
    limits: dict[str, Any] = {}
    if spec.cpus is not None:
        limits["cpu"] = {"quota": round(spec.cpus * CPU_PERIOD_US), "period": CPU_PERIOD_US}
    if spec.memory is not None:
        limits["memory"] = {"limit": spec.memory}
    if spec.pids is not None:
        limits["pids"] = {"limit": spec.pids}
    return limits


def health_config(health: HealthSpec) -> dict[str, Any]:
    """The health check in the Docker schema, which libpod's `healthconfig` also uses."""
    return {
        "Test": list(health.test),
        "Interval": _ns(health.interval),
        "Timeout": _ns(health.timeout),
        "Retries": health.retries,
        "StartPeriod": _ns(health.start_period),
    }


def signal_number(name: str) -> int:
    """SIGTERM → 15; libpod's stop_signal is a syscall.Signal, i.e. a number."""
    upper = name.upper()
    try:
        return int(signal.Signals[upper if upper.startswith("SIG") else "SIG" + upper])
    except KeyError:
        raise ValueError(f"unknown signal '{name}'") from None


def _port_key(port: PortSpec) -> str:
    return f"{port.container}/{port.protocol}"


def _argv(argv: tuple[str, ...] | None) -> list[str] | None:
    """None keeps the image's value; an empty argv clears it ([""] is how both engines
    are told to drop an image's entrypoint or command)."""
    if argv is None:
        return None
    return list(argv) if argv else [""]


def _ns(seconds: float) -> int:
    return round(seconds * NS_PER_S)


def _put(target: dict[str, Any], key: str, value: Any) -> None:
    """Set only what the spec sets, so the engine applies its (and the image's) default."""
    if value is not None:
        target[key] = value
