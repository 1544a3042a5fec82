"""The records the cluster server keeps, as frozen values with a JSON form.

`to_json()` gives plain data (what `keys.encode` stores); `from_json(data)` reads it back and
raises `RecordError` for a value of the wrong shape.  Unknown fields are ignored, so a newer
server's records stay readable by an older one during an upgrade of the replicas.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from hostos.hashing import content_hash
from hostos.image.netboot import INITRD, KERNEL


class RecordError(ValueError):
    """A stored or submitted value does not have the shape of its record."""


# -- field readers: one place words the errors -------------------------------------------


def _str(data: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise RecordError(f"{key}: expected a string, got {type(value).__name__}")
    return value


def _opt_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise RecordError(f"{key}: expected a string or null, got {type(value).__name__}")
    return value


def _int(data: Mapping[str, Any], key: str, default: int | None = None) -> int:
    value = data.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise RecordError(f"{key}: expected an integer, got {type(value).__name__}")
    return value


def _float(data: Mapping[str, Any], key: str, default: float = 0.0) -> float:
    value = data.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise RecordError(f"{key}: expected a number, got {type(value).__name__}")
    return float(value)


def _map(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise RecordError(f"{key}: expected a mapping, got {type(value).__name__}")
    return dict(value)


def _str_map(data: Mapping[str, Any], key: str) -> dict[str, str]:
    value = _map(data, key)
    for name, item in value.items():
        if not isinstance(item, str):
            raise RecordError(f"{key}.{name}: expected a string, got {type(item).__name__}")
    return value


def _object(data: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise RecordError(f"{what}: expected a JSON object, got {type(data).__name__}")
    return data


# -- the records ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeRecord:
    """What the server knows of a node: its heartbeat, and the image it should boot."""

    id: str
    role: str = ""
    mac: str | None = None
    booted_image: str | None = None
    assigned_image: str | None = None
    last_seen: float = 0.0  # wall clock of the last heartbeat; 0 = never
    units: Mapping[str, str] = field(default_factory=dict)  # unit → health
    mounts: Mapping[str, str] = field(default_factory=dict)  # mount → state
    boot_id: str = ""
    generation: int = 0  # the site generation the node last applied
    steady_boot_id: str = ""  # the boot_id of the boot the node last reported steady-state in
    heartbeat_seconds: float = 0.0  # the least heartbeat interval the server last asked (pacing)

    @property
    def steady(self) -> bool:
        """The node reported steady-state (FleetLock) since its current boot."""
        return bool(self.boot_id) and self.steady_boot_id == self.boot_id

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "role": self.role,
            "mac": self.mac,
            "booted_image": self.booted_image,
            "assigned_image": self.assigned_image,
            "last_seen": self.last_seen,
            "units": dict(self.units),
            "mounts": dict(self.mounts),
            "boot_id": self.boot_id,
            "generation": self.generation,
            "steady_boot_id": self.steady_boot_id,
            "heartbeat_seconds": self.heartbeat_seconds,
        }

    @classmethod
    def from_json(cls, data: Any) -> NodeRecord:
        data = _object(data, "node")
        return cls(
            id=_str(data, "id"),
            role=_str(data, "role", ""),
            mac=_opt_str(data, "mac"),
            booted_image=_opt_str(data, "booted_image"),
            assigned_image=_opt_str(data, "assigned_image"),
            last_seen=_float(data, "last_seen"),
            units=_str_map(data, "units"),
            mounts=_str_map(data, "mounts"),
            boot_id=_str(data, "boot_id", ""),
            generation=_int(data, "generation", 0),
            steady_boot_id=_str(data, "steady_boot_id", ""),
            heartbeat_seconds=_float(data, "heartbeat_seconds"),
        )


@dataclass(frozen=True)
class Heartbeat:
    """What a node's agent reports (`PUT /v1/nodes/<id>/status`)."""

    booted_image: str | None = None
    units: Mapping[str, str] = field(default_factory=dict)
    mounts: Mapping[str, str] = field(default_factory=dict)
    boot_id: str = ""
    generation: int = 0
    interval: float = 0.0  # not the agent's: the pace the server answers with (pacing.py)

    @classmethod
    def from_json(cls, data: Any) -> Heartbeat:
        data = _object(data, "status")
        return cls(
            booted_image=_opt_str(data, "booted_image"),
            units=_str_map(data, "units"),
            mounts=_str_map(data, "mounts"),
            boot_id=_str(data, "boot_id", ""),
            generation=_int(data, "generation", 0),
        )

    def applied_to(self, node: NodeRecord, now: float) -> NodeRecord:
        """The node record after this heartbeat (role, MAC, assignment and the steady-state
        mark stay)."""
        return replace(
            node,
            booted_image=self.booted_image,
            last_seen=now,
            units=dict(self.units),
            mounts=dict(self.mounts),
            boot_id=self.boot_id,
            generation=self.generation,
            heartbeat_seconds=self.interval,
        )


@dataclass(frozen=True)
class SiteDocument:
    """A resolved site as the operator publishes it: roles (each role's resolved spec, kept
    as given) and the inventory (node → {"role", "mac"?, "labels"?})."""

    roles: Mapping[str, Any]
    nodes: Mapping[str, Mapping[str, Any]]

    @classmethod
    def from_json(cls, data: Any) -> SiteDocument:
        data = _object(data, "site")
        roles = _map(data, "roles")
        nodes = _map(data, "nodes")
        for name, entry in nodes.items():
            entry = _object(entry, f"nodes.{name}")
            role = _str(entry, "role", "")
            if role not in roles:
                raise RecordError(f"nodes.{name}.role: unknown role '{role}'")
            _opt_str(entry, "mac")
        return cls(roles=roles, nodes=nodes)

    def to_json(self) -> dict[str, Any]:
        return {"roles": dict(self.roles), "nodes": dict(self.nodes)}

    def hash(self) -> str:
        return content_hash(self.to_json())

    def diff(self, old: SiteDocument | None) -> dict[str, dict[str, list[str]]]:
        """What publishing this site over old changes: names added, removed and changed,
        of roles and of nodes."""
        before = old or SiteDocument({}, {})
        return {
            "roles": _changes(before.roles, self.roles),
            "nodes": _changes(before.nodes, self.nodes),
        }


def _changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, list[str]]:
    return {
        "added": sorted(set(new) - set(old)),
        "removed": sorted(set(old) - set(new)),
        "changed": sorted(n for n in set(old) & set(new) if old[n] != new[n]),
    }


@dataclass(frozen=True)
class Generation:
    """One published site: numbered from 1, with the content hash it was published for."""

    generation: int
    hash: str
    published_at: float
    roles: Mapping[str, Any]
    nodes: Mapping[str, Mapping[str, Any]]

    @classmethod
    def of(cls, number: int, site: SiteDocument, now: float) -> Generation:
        return cls(number, site.hash(), now, site.roles, site.nodes)

    def summary(self) -> dict[str, Any]:
        return {"generation": self.generation, "hash": self.hash, "published_at": self.published_at}

    @property
    def site(self) -> SiteDocument:
        return SiteDocument(self.roles, self.nodes)

    def to_json(self) -> dict[str, Any]:
        return {**self.summary(), **self.site.to_json()}

    @classmethod
    def from_json(cls, data: Any) -> Generation:
        data = _object(data, "generation")
        site = SiteDocument.from_json(data)
        return cls(
            _int(data, "generation"),
            _str(data, "hash"),
            _float(data, "published_at"),
            site.roles,
            site.nodes,
        )


@dataclass(frozen=True)
class ImageRecord:
    """A host image the server hands out: files under `<images>/<name>/`."""

    name: str
    kernel: str = KERNEL
    initrd: str = INITRD
    cmdline: str = ""  # the image's own kernel arguments
    sha256: Mapping[str, str] = field(default_factory=dict)  # file → hex digest

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kernel": self.kernel,
            "initrd": self.initrd,
            "cmdline": self.cmdline,
            "sha256": dict(self.sha256),
        }

    @classmethod
    def from_json(cls, data: Any) -> ImageRecord:
        data = _object(data, "image")
        return cls(
            name=_str(data, "name"),
            kernel=_str(data, "kernel", KERNEL),
            initrd=_str(data, "initrd", INITRD),
            cmdline=_str(data, "cmdline", ""),
            sha256=_str_map(data, "sha256"),
        )


@dataclass(frozen=True)
class SlotTable:
    """The reboot slots of one FleetLock group: who holds one, and how many there are."""

    holders: tuple[str, ...] = ()
    max: int = 1

    def to_json(self) -> dict[str, Any]:
        return {"holders": list(self.holders), "max": self.max}

    @classmethod
    def from_json(cls, data: Any) -> SlotTable:
        data = _object(data, "slots")
        holders = data.get("holders", [])
        if not isinstance(holders, list) or not all(isinstance(h, str) for h in holders):
            raise RecordError("holders: expected a list of strings")
        return cls(tuple(holders), _int(data, "max", 1))
