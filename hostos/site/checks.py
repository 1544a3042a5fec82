"""Checks across documents: dependency cycles, port clashes, and the inventory."""

from __future__ import annotations

from collections.abc import Mapping

from hostos.errors import Problem, did_you_mean
from hostos.site.graph import find_cycle
from hostos.site.hostlist import expand
from hostos.site.model import Inventory, Node, Unit
from hostos.site.roles import RoleDef
from hostos.site.source import Document


def check_role_graph(roledef: RoleDef, units: Mapping[str, Unit], problems: list[Problem]) -> None:
    """Dependency cycles and host port clashes among the units of one role."""
    cycle = find_cycle(dependency_graph(units))
    if cycle:
        problems.append(
            Problem(
                roledef.raw.where(("units",)),
                "units",
                f"dependency cycle: {' → '.join(cycle)}",
                "remove one of these requires/after entries",
            )
        )
    _check_ports(roledef, units, problems)


def dependency_graph(units: Mapping[str, Unit]) -> dict[str, list[str]]:
    """unit → the units it starts after (requires and after), within these units only
    (a hostos.site.graph graph)."""
    return {
        name: [d for d in u.depends_on if d in units and d != name] for name, u in units.items()
    }


def _check_ports(roledef: RoleDef, units: Mapping[str, Unit], problems: list[Problem]) -> None:
    taken: dict[tuple[str, int, str], str] = {}
    for name in roledef.role.units:
        unit = units.get(name)
        if unit is None:
            continue
        for port in unit.ports:
            if port.host is None:
                continue
            key = (port.host_ip or "0.0.0.0", port.host, port.protocol)
            wild = ("0.0.0.0", port.host, port.protocol)
            other = (
                taken.get(key)
                or taken.get(wild)
                or next(
                    (
                        u
                        for (ip, p, pr), u in taken.items()
                        if key[0] == "0.0.0.0" and (p, pr) == key[1:]
                    ),
                    None,
                )
            )
            if other is not None and other != name:
                problems.append(
                    Problem(
                        roledef.raw.where(("units",)),
                        "units",
                        f"units '{other}' and '{name}' both publish host port "
                        f"{port.host}/{port.protocol}",
                        "change one of the host ports",
                    )
                )
            taken.setdefault(key, name)


def check_inventory(
    inventory: Inventory, doc: Document, roles: Mapping[str, object], problems: list[Problem]
) -> tuple[Node, ...]:
    """Expand hostlists; refuse unknown roles, overlapping names and shared MACs."""
    nodes: list[Node] = []
    owner: dict[str, int] = {}
    macs: dict[str, int] = {}
    for i, entry in enumerate(inventory.nodes):
        try:
            names = expand(entry.name)
        except ValueError as exc:
            problems.append(Problem(doc.where(("nodes", i, "name")), f"nodes[{i}].name", str(exc)))
            continue
        if entry.role not in roles:
            problems.append(
                Problem(
                    doc.where(("nodes", i, "role")),
                    f"nodes[{i}].role",
                    f"unknown role '{entry.role}'",
                    did_you_mean(entry.role, roles) or "roles live in roles/<name>.yaml",
                )
            )
        clash = [n for n in names if n in owner]
        if clash:
            first = owner[clash[0]]
            line = doc.where(("nodes", first, "name")).line
            problems.append(
                Problem(
                    doc.where(("nodes", i, "name")),
                    f"nodes[{i}].name",
                    f"'{clash[0]}' is already defined at line {line}"
                    + (f", and {len(clash) - 1} more names" if len(clash) > 1 else ""),
                    "each node belongs to one entry",
                )
            )
        if entry.mac is not None:
            _check_mac(i, entry.mac, len(names), macs, doc, problems)
        for name in names:
            owner.setdefault(name, i)
            nodes.append(Node(name=name, role=entry.role, mac=entry.mac, labels=entry.labels))
    return tuple(nodes)


def _check_mac(
    i: int, mac: str, count: int, macs: dict[str, int], doc: Document, problems: list[Problem]
) -> None:
    where = doc.where(("nodes", i, "mac"))
    if count > 1:
        problems.append(
            Problem(
                where,
                f"nodes[{i}].mac",
                f"one MAC for {count} nodes",
                "give a MAC only to an entry that names a single node",
            )
        )
    if mac in macs:
        line = doc.where(("nodes", macs[mac], "mac")).line
        problems.append(
            Problem(where, f"nodes[{i}].mac", f"MAC {mac} is already used at line {line}")
        )
    macs.setdefault(mac, i)
