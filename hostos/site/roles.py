"""Roles as nodes see them: `extends` merged, units with the role's overrides applied."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace

from hostos.errors import Location, Problem, SiteError, did_you_mean
from hostos.site.merge import Located
from hostos.site.model import Role, Unit
from hostos.site.source import Document, read_text
from hostos.site.validation import build, name_from_file, named_by_file

ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class RoleDef:
    role: Role
    raw: Located  # the merged document, positions pointing into each role file


def effective_roles(docs: dict[str, Document], problems: list[Problem]) -> dict[str, RoleDef]:
    """Every role with its `extends` chain merged (maps merge, lists replace)."""
    raws: dict[str, Located] = {}
    named = {
        stem for stem, doc in docs.items() if isinstance(doc.data, dict) and "role" in doc.data
    }
    for stem, doc in docs.items():
        raw = doc.located()
        name_from_file(raw, "role", stem, "role", problems)
        raws[stem] = raw
    merged: dict[str, Located | None] = {}
    for name in raws:
        _merge_chain(name, raws, merged, (), problems)
    roles: dict[str, RoleDef] = {}
    for name, done in merged.items():
        if done is None:
            continue
        role, found = build(Role, done)
        problems.extend(found if name in named else named_by_file(found, "role", name, "role"))
        if role is not None:
            roles[name] = RoleDef(role, done)
    return roles


def _merge_chain(
    name: str,
    raws: dict[str, Located],
    merged: dict[str, Located | None],
    seen: tuple[str, ...],
    problems: list[Problem],
) -> Located | None:
    """The role merged over its parents; None (reported once) if the chain is broken."""
    if name in merged:
        return merged[name]
    raw = raws[name]
    parent = raw.data.get("extends") if isinstance(raw.data, dict) else None
    result: Located | None = raw
    if isinstance(parent, str):
        result = _extend(name, parent, raws, merged, seen, problems)
    merged[name] = result
    return result


def _extend(
    name: str,
    parent: str,
    raws: dict[str, Located],
    merged: dict[str, Located | None],
    seen: tuple[str, ...],
    problems: list[Problem],
) -> Located | None:
    raw = raws[name]
    if parent in (*seen, name):
        chain = seen[seen.index(parent) :] if parent in seen else ()
        cycle = " → ".join((name, *chain, name))
        problems.append(
            Problem(
                raw.where(("extends",)),
                "extends",
                f"extends cycle: {cycle}",
                "a role cannot extend itself, directly or through others",
            )
        )
        return None
    if parent not in raws:
        problems.append(
            Problem(
                raw.where(("extends",)),
                "extends",
                f"unknown role '{parent}'",
                did_you_mean(parent, raws) or "roles live in roles/<name>.yaml",
            )
        )
        return None
    base = _merge_chain(parent, raws, merged, (*seen, name), problems)
    return None if base is None else base.overlay(raw)


def role_units(
    root: str,
    roledef: RoleDef,
    units: dict[str, Unit],
    unit_docs: dict[str, Document],
    problems: list[Problem],
) -> dict[str, Unit]:
    """The role's units with its overrides applied, references checked."""
    role, raw = roledef.role, roledef.raw
    for name in role.overrides:
        if name not in role.units:
            problems.append(
                Problem(
                    raw.where(("overrides", name)),
                    f"overrides.{name}",
                    f"the role does not run unit '{name}'",
                    did_you_mean(name, role.units) or "add it to units",
                )
            )
    out: dict[str, Unit] = {}
    for i, name in enumerate(role.units):
        if name not in unit_docs:
            problems.append(
                Problem(
                    raw.where(("units", i)),
                    f"units[{i}]",
                    f"unknown unit '{name}'",
                    did_you_mean(name, unit_docs) or f"create {name}.yaml in the site",
                )
            )
            continue
        unit_raw = unit_docs[name].located()
        if isinstance(unit_raw.data, dict):
            unit_raw.data.setdefault("name", name)
        found: list[Problem] = []
        if name in role.overrides:
            unit_raw = unit_raw.overlay(raw, ("overrides", name))
            unit = validate_unit(root, unit_raw, found)
        else:
            unit = units.get(name)
        if unit is not None:
            _check_refs(role, unit, unit_raw, found)
            out[name] = unit
        problems.extend(_in_overrides(found, name, raw))
    return out


def _in_overrides(found: list[Problem], name: str, raw: Located) -> list[Problem]:
    """Problems placed in a role file, with the key path they have there."""
    files = {where.file for path, where in raw.positions.items() if path[:2] == ("overrides", name)}
    prefix = f"overrides.{name}"
    return [
        replace(p, key=f"{prefix}.{p.key}" if p.key else prefix) if p.where.file in files else p
        for p in found
    ]


def _check_refs(role: Role, unit: Unit, raw: Located, problems: list[Problem]) -> None:
    mounts = [m.name for m in role.mounts]
    for i, req in enumerate(unit.requires):
        if req not in role.units and req not in mounts:
            problems.append(
                Problem(
                    raw.where(("requires", i)),
                    f"requires[{i}]",
                    f"'{req}' is neither a unit nor a mount of role '{role.role}'",
                    did_you_mean(req, [*role.units, *mounts]),
                )
            )
    for i, mount in enumerate(unit.mounts):
        if mount.mount is not None and mount.mount not in mounts:
            problems.append(
                Problem(
                    raw.where(("mounts", i, "mount")),
                    f"mounts[{i}].mount",
                    f"role '{role.role}' has no mount '{mount.mount}'",
                    did_you_mean(mount.mount, mounts)
                    or f"add it to the mounts of role '{role.role}'",
                )
            )


def validate_unit(root: str, raw: Located, problems: list[Problem]) -> Unit | None:
    """A Unit from raw data, env files read into env; problems appended on failure."""
    data = raw.data
    if isinstance(data, dict) and isinstance(data.get("env_files"), list):
        env: dict[str, str] = {}
        for i, rel in enumerate(data["env_files"]):
            if isinstance(rel, str):
                env.update(_env_file(root, rel, raw.where(("env_files", i)), i, problems))
        explicit = data.get("env")
        if env and (explicit is None or isinstance(explicit, dict)):
            data["env"] = {**env, **(explicit or {})}
    unit, found = build(Unit, raw)
    problems.extend(found)
    return unit


def _env_file(
    root: str, rel: str, where: Location, i: int, problems: list[Problem]
) -> dict[str, str]:
    key = f"env_files[{i}]"
    if rel.startswith("/") or ".." in rel.split("/"):
        problems.append(
            Problem(
                where,
                key,
                f"'{rel}' must be a path inside the site",
                "write it relative to the site directory, without '..'",
            )
        )
        return {}
    file = os.path.join(root, rel)
    if not os.path.isfile(file):
        problems.append(Problem(where, key, f"env file '{rel}' not found"))
        return {}
    try:
        text = read_text(file)
    except SiteError as exc:
        problems.extend(exc.problems)
        return {}
    return parse_env(text, file, problems)


def parse_env(text: str, file: str, problems: list[Problem]) -> dict[str, str]:
    """KEY=VALUE lines; blank lines and # comments skipped; quotes around a value removed."""
    env: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        key = key.strip()
        if not sep or not ENV_KEY.match(key):
            problems.append(
                Problem(
                    Location(file, number, 1),
                    "",
                    "not a KEY=VALUE line",
                    "keys are letters, digits and _",
                )
            )
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key] = value
    return env
