"""Load a site directory: read every file, validate each, then check them together.

A site is a directory holding unit files (`*.yaml` at its top), role files
(`roles/*.yaml`) and the inventory (`nodes.yaml`).  `load_site` returns a
frozen `Site` or raises `SiteError` with every problem found, never only the
first.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from hostos.errors import Location, Problem, SiteError
from hostos.site.checks import check_inventory, check_role_graph
from hostos.site.model import Inventory, Node, Role, Unit
from hostos.site.roles import effective_roles, role_units, validate_unit
from hostos.site.source import Document, load_document
from hostos.site.validation import build, name_from_file, named_by_file

INVENTORY = "nodes.yaml"
ROLES_DIR = "roles"
YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Site:
    """A validated site: units as written, effective roles, and the expanded inventory."""

    root: str
    units: Mapping[str, Unit]
    roles: Mapping[str, Role]
    role_units: Mapping[str, Mapping[str, Unit]]  # role → unit name → unit with overrides
    nodes: tuple[Node, ...] = ()
    files: Mapping[str, str] = field(default_factory=dict)  # "unit:x" / "role:y" → file


def load_site(root: str) -> Site:
    """The validated site at root; SiteError listing every problem otherwise."""
    if not os.path.isdir(root):
        raise SiteError(
            [
                Problem(
                    Location(root),
                    "",
                    "site directory not found",
                    "give the directory that holds the unit files and roles/",
                )
            ]
        )
    problems: list[Problem] = []
    unit_docs = _read_all(_yaml_files(root), problems)
    role_docs = _read_all(_yaml_files(os.path.join(root, ROLES_DIR)), problems)
    units = _units(root, unit_docs, problems)
    roledefs = effective_roles(role_docs, problems)
    per_role = {
        name: role_units(root, rd, units, unit_docs, problems) for name, rd in roledefs.items()
    }
    for name, rd in roledefs.items():
        check_role_graph(rd, per_role[name], problems)
    roles = {name: rd.role for name, rd in roledefs.items()}
    nodes = _inventory(root, roles, problems)
    if problems:
        raise SiteError(problems)
    files = {f"unit:{n}": d.file for n, d in unit_docs.items()}
    files.update({f"role:{n}": d.file for n, d in role_docs.items()})
    return Site(
        root,
        MappingProxyType(units),
        MappingProxyType(roles),
        MappingProxyType({k: MappingProxyType(v) for k, v in per_role.items()}),
        nodes,
        MappingProxyType(files),
    )


def _yaml_files(directory: str) -> list[str]:
    if not os.path.isdir(directory):
        return []
    names = sorted(os.listdir(directory))
    return [
        os.path.join(directory, n)
        for n in names
        if n.endswith(YAML_SUFFIXES)
        and not n.startswith(".")
        and n != INVENTORY
        and os.path.isfile(os.path.join(directory, n))
    ]


def _read_all(files: list[str], problems: list[Problem]) -> dict[str, Document]:
    """Documents by file stem; a file that cannot be read adds its problems."""
    docs: dict[str, Document] = {}
    for file in files:
        try:
            doc = load_document(file)
        except SiteError as exc:
            problems.extend(exc.problems)
            continue
        stem = Path(file).stem
        if stem in docs:
            problems.append(
                Problem(
                    Location(file, 1, 1),
                    "",
                    f"{os.path.basename(docs[stem].file)} defines '{stem}' too",
                    "keep one of the .yaml and .yml files",
                )
            )
            continue
        docs[stem] = doc
    return docs


def _units(root: str, docs: dict[str, Document], problems: list[Problem]) -> dict[str, Unit]:
    units: dict[str, Unit] = {}
    for stem, doc in docs.items():
        raw = doc.located()
        named = isinstance(raw.data, dict) and "name" in raw.data
        name_from_file(raw, "name", stem, "unit", problems)
        found: list[Problem] = []
        unit = validate_unit(root, raw, found)
        problems.extend(found if named else named_by_file(found, "name", stem, "unit"))
        if unit is not None:
            units[stem] = unit
    return units


def _inventory(root: str, roles: Mapping[str, Role], problems: list[Problem]) -> tuple[Node, ...]:
    file = os.path.join(root, INVENTORY)
    if not os.path.exists(file):
        return ()
    try:
        doc = load_document(file)
    except SiteError as exc:
        problems.extend(exc.problems)
        return ()
    inventory, found = build(Inventory, doc.located())
    problems.extend(found)
    if inventory is None:
        return ()
    return check_inventory(inventory, doc, roles, problems)
