"""The resolved spec of a role or node: units in start order, each with its content hash.

The hash covers every field that shapes the container, and the role mounts
the unit binds.  Fields that only steer the supervisor (start order, restart
backoff, description) are left out, so changing them never recreates a
container.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hostos.errors import Location, Problem, SiteError, did_you_mean
from hostos.hashing import content_hash
from hostos.site.checks import dependency_graph
from hostos.site.fields import AS_WRITTEN
from hostos.site.graph import start_order as graph_start_order
from hostos.site.load import Site
from hostos.site.model import Role, RoleMount, Unit
from hostos.site.rollout import RoleRollout

NOT_HASHED = frozenset({"description", "requires", "after"})
MOUNT_FIELDS = frozenset({"name", "type", "source", "target", "options"})


@dataclass(frozen=True)
class ResolvedUnit:
    role: str
    unit: Unit
    mounts: tuple[RoleMount, ...]  # the role mounts this unit uses
    hash: str

    @property
    def name(self) -> str:
        return self.unit.name


@dataclass(frozen=True)
class RoleSpec:
    role: Role
    units: tuple[ResolvedUnit, ...]  # in start order
    node: str | None = None

    def unit(self, name: str) -> ResolvedUnit:
        return next(u for u in self.units if u.name == name)


def unit_hash(unit: Unit, mounts: tuple[RoleMount, ...]) -> str:
    """sha256 of the canonical JSON of what shapes the container."""
    body = unit.model_dump(mode="json", exclude=set(NOT_HASHED))
    body["restart"] = unit.restart.policy  # the backoff is the supervisor's, not the engine's
    body["role_mounts"] = [m.model_dump(mode="json", include=set(MOUNT_FIELDS)) for m in mounts]
    return content_hash(body)


def start_order(units: dict[str, Unit], listed: list[str]) -> list[str]:
    """Units sorted so that each comes after what it requires or follows; ties keep the
    role's listed order.  ValueError on a cycle (load_site has refused them already)."""
    graph = dependency_graph(units)
    return graph_start_order({n: graph[n] for n in listed if n in units})


def resolve_role(site: Site, role_name: str, node: str | None = None) -> RoleSpec:
    if role_name not in site.roles:
        raise SiteError(
            [
                Problem(
                    Location(site.root),
                    "--role",
                    f"unknown role '{role_name}'",
                    did_you_mean(role_name, site.roles)
                    or f"roles: {', '.join(sorted(site.roles))}",
                )
            ]
        )
    role = site.roles[role_name]
    units = dict(site.role_units[role_name])
    return RoleSpec(role, _resolved(role, units, start_order(units, list(role.units))), node)


def _resolved(role: Role, units: dict[str, Unit], order: list[str]) -> tuple[ResolvedUnit, ...]:
    """The role's units in order, each with the role mounts it uses and its hash."""
    by_name = {m.name: m for m in role.mounts}
    resolved = []
    for name in order:
        unit = units[name]
        used = tuple(by_name[m.mount] for m in unit.mounts if m.mount in by_name)
        used += tuple(by_name[r] for r in unit.requires if r in by_name and by_name[r] not in used)
        resolved.append(ResolvedUnit(role.role, unit, used, unit_hash(unit, used)))
    return tuple(resolved)


def resolve_node(site: Site, node_name: str) -> RoleSpec:
    for node in site.nodes:
        if node.name == node_name:
            return resolve_role(site, node.role, node_name)
    raise SiteError(
        [
            Problem(
                Location(site.root),
                "--node",
                f"unknown node '{node_name}'",
                did_you_mean(node_name, [n.name for n in site.nodes]) or "see hostos nodes",
            )
        ]
    )


def spec_document(spec: RoleSpec) -> dict[str, Any]:
    """The resolved spec as plain data, every field, durations in seconds and sizes in
    bytes: what the cluster server hands out and `render -o json|yaml` prints."""
    return {
        "node": spec.node,
        "role": spec.role.role,
        "image": spec.role.image,
        "mounts": [m.model_dump(mode="json") for m in spec.role.mounts],
        "units": [{**u.unit.model_dump(mode="json"), "hash": u.hash} for u in spec.units],
        **rollout_document(spec.role),
    }


def rollout_document(role: Role) -> dict[str, Any]:
    """{"rollout": the role's policy in RolloutPolicy.to_json form} when the role says one,
    read back by `hostos.site.rollout.rollout_policy`; {} when it says nothing, so a site
    without the key publishes the same document as before the key existed."""
    policy = role.rollout.policy().to_json() if role.rollout is not None else {}
    return {"rollout": policy} if policy else {}


def spec_view(spec: RoleSpec, full: bool = False) -> dict[str, Any]:
    """The resolved spec for a person to read (`hostos render`): durations and sizes as
    written (`30s`, `256Mi`), and, unless full, only the fields the site sets."""

    def dump(model: Unit | RoleMount | RoleRollout) -> dict[str, Any]:
        return model.model_dump(mode="json", context={AS_WRITTEN: True}, exclude_unset=not full)

    node = {"node": spec.node} if full or spec.node is not None else {}
    return {
        **node,
        "role": spec.role.role,
        "image": spec.role.image,
        "mounts": [dump(m) for m in spec.role.mounts],
        "units": [{**dump(u.unit), "hash": u.hash} for u in spec.units],
        **({"rollout": dump(spec.role.rollout)} if spec.role.rollout is not None else {}),
    }


def spec_from_document(document: Any, where: str = "server") -> RoleSpec:
    """The RoleSpec of a `spec_document` (a role's spec as the cluster server hands it out):
    units and mounts validated by the site's own models, hashes and start order computed as
    `resolve_role` computes them; SiteError (its location: where) when it is not one."""
    from pydantic import ValidationError

    from hostos.errors import key_path
    from hostos.site.fields import FROM_DOCUMENT

    def problem(key: str, message: str) -> SiteError:
        return SiteError([Problem(Location(where), key, message)])

    raws = document.get("units", []) if isinstance(document, dict) else None
    if not isinstance(raws, list) or not all(isinstance(r, dict) for r in raws):
        raise problem("spec", "expected a resolved spec: {role, image, mounts, units: [...]}")
    context = {FROM_DOCUMENT: True}
    at: tuple[str | int, ...] = ()
    try:
        listed = []
        for index, raw in enumerate(raws):
            at = ("units", index)
            listed.append(
                Unit.model_validate({k: v for k, v in raw.items() if k != "hash"}, context=context)
            )
        at = ()
        role = Role.model_validate(
            {
                "role": document.get("role"),
                "image": document.get("image"),
                "mounts": document.get("mounts", []),
                "units": [u.name for u in listed],
            },
            context=context,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise problem(key_path(("spec", *at, *first["loc"])), first["msg"]) from None
    units = {u.name: u for u in listed}
    missing = sorted(
        {d for u in listed for d in u.depends_on} - set(units) - {m.name for m in role.mounts}
    )
    if missing:
        raise problem(
            "spec.units", f"requires or follows what the spec lacks: {', '.join(missing)}"
        )
    try:
        order = start_order(units, list(units))
    except ValueError as exc:
        raise problem("spec.units", str(exc)) from None
    node = document.get("node")
    return RoleSpec(role, _resolved(role, units, order), node if isinstance(node, str) else None)
