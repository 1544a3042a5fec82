"""Render a resolved unit into the engine-neutral ContainerSpec (pure code).

The spec's hash, image ID included, goes on the container's labels; the
planner compares it with what it observes.  The hashed body also goes on a
label as canonical JSON, so a recreate can say precisely what changed.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from hostos.engine.base import (
    ContainerSpec,
    DeviceSpec,
    HealthSpec,
    MountSpec,
    PortSpec,
    UlimitSpec,
    container_name,
    volume_name,
)
from hostos.hashing import canonical_json, content_hash
from hostos.labels import (
    DEPS_LABEL,
    HASH_LABEL,
    HOSTOS_PREFIX,
    NAMESPACE_LABEL,
    OWNER,
    OWNER_LABEL,
    ROLE_LABEL,
    SPEC_LABEL,
    UNIT_HASH_LABEL,
    UNIT_LABEL,
)
from hostos.site.model import Health, Mount, Unit
from hostos.site.resolve import ResolvedUnit

NODE_ENV = "HOSTOS_NODE"  # the node's inventory name, in every container of a node


def image_ref(unit: Unit) -> str:
    """The image a unit runs: its `image`, or the tag hostos gives a `build` of it."""
    return unit.image or f"localhost/hostos-build/{unit.name}:latest"


def render(
    unit: ResolvedUnit,
    image_id: str | None,
    mount_sources: Mapping[str, str] | None = None,
    namespace: str = "",
    node: str | None = None,
) -> ContainerSpec:
    """The container for a unit. mount_sources maps a role mount's name to the host path
    to bind (its target when mounted, its fallback while it is down); a namespace keeps
    several hostos instances on one engine apart (tests, a demo beside a real role), their
    named volumes included. On a node, HOSTOS_NODE carries its inventory name (Slurm's
    NodeName, say); a unit's own env may set it otherwise."""
    u = unit.unit
    env = {NODE_ENV: node, **u.env} if node else dict(u.env)
    sources = {m.name: m.target for m in unit.mounts}
    sources.update(mount_sources or {})
    spec = ContainerSpec(
        name=container_name(u.name, namespace),
        image=image_id or image_ref(u),
        labels=dict(sorted(u.labels.items())),
        entrypoint=tuple(u.entrypoint) if u.entrypoint is not None else None,
        command=tuple(u.command) if u.command is not None else None,
        env=dict(sorted(env.items())),
        working_dir=u.working_dir,
        user=u.user,
        mounts=tuple(_mount(m, sources, namespace) for m in u.mounts),
        ports=tuple(PortSpec(p.container, p.host, p.protocol, p.host_ip) for p in u.ports),
        network=u.network,
        hostname=u.hostname,
        devices=tuple(DeviceSpec(d.host, d.container or d.host, d.permissions) for d in u.devices),
        privileged=u.privileged,
        cap_add=tuple(u.capabilities.add),
        cap_drop=tuple(u.capabilities.drop),
        ulimits=tuple(UlimitSpec(n, lim.soft, lim.hard) for n, lim in sorted(u.ulimits.items())),
        cpus=u.resources.cpus,
        memory=u.resources.memory,
        pids=u.resources.pids,
        health=_health(u.health) if u.health else None,
        stop_signal=u.stop_signal,
        stop_timeout=max(1, round(u.stop_timeout)),
    )
    body = spec_body(spec, image_ref(u), unit.role)
    labels = {
        **spec.labels,
        OWNER_LABEL: OWNER,
        ROLE_LABEL: unit.role,
        UNIT_LABEL: u.name,
        UNIT_HASH_LABEL: unit.hash,
        DEPS_LABEL: ",".join(u.depends_on),
        HASH_LABEL: content_hash(body),
        SPEC_LABEL: canonical_json(body),
    }
    if namespace:
        labels[NAMESPACE_LABEL] = namespace
    return dataclasses.replace(spec, labels=labels)


def spec_body(spec: ContainerSpec, ref: str, role: str) -> dict[str, Any]:
    """What the hash covers: the whole spec with the unit's own labels, the image reference
    and the role (a node that changes role recreates its containers, so labels stay true)."""
    body = dataclasses.asdict(spec)
    body["labels"] = {k: v for k, v in spec.labels.items() if not k.startswith(HOSTOS_PREFIX)}
    body["image_ref"] = ref
    body["role"] = role
    plain: dict[str, Any] = json.loads(canonical_json(body))  # tuples → lists, as on a label
    return plain


def spec_of(labels: Mapping[str, str]) -> dict[str, Any] | None:
    """The hashed body stored on an observed container, if it carries one."""
    try:
        value = json.loads(labels.get(SPEC_LABEL, ""))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def image_ref_of(labels: Mapping[str, str]) -> str | None:
    """The image reference (as the unit names it) an observed container was made from."""
    ref = (spec_of(labels) or {}).get("image_ref")
    return ref if isinstance(ref, str) else None


def _mount(mount: Mount, sources: Mapping[str, str], namespace: str) -> MountSpec:
    if mount.mount is not None:
        source = sources[mount.mount]
        return MountSpec("bind", mount.target or source, source, mount.readonly)
    assert mount.type is not None and mount.target is not None  # checked by the model
    if mount.type == "volume" and mount.source is not None:
        source = volume_name(mount.source, namespace)
        return MountSpec("volume", mount.target, source, mount.readonly)
    return MountSpec(mount.type, mount.target, mount.source, mount.readonly, mount.size, mount.mode)


def _health(health: Health) -> HealthSpec:
    return HealthSpec(
        probe(health), health.interval, health.timeout, health.retries, health.start_period
    )


def probe(health: Health) -> tuple[str, ...]:
    """The engine test of a health check. http and tcp probes run inside the container
    with whichever of curl, wget or nc it has (busybox images have nc)."""
    if health.command is not None:
        return ("CMD", *health.command)
    if health.http is not None:
        url = health.http
        return ("CMD-SHELL", f"curl -fsS -o /dev/null '{url}' || wget -q -O /dev/null '{url}'")
    host, port = str(health.tcp).rsplit(":", 1)
    wait = max(1, round(health.timeout))
    # busybox nc has no -z: connecting with an empty stdin tells the same
    return (
        "CMD-SHELL",
        f"nc -z -w {wait} {host} {port} 2>/dev/null || "
        f"nc -w {wait} {host} {port} </dev/null >/dev/null 2>&1 || "
        f"(exec 3<>/dev/tcp/{host}/{port}) 2>/dev/null",
    )
