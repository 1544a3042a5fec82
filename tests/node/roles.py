"""Sites for unit tests of the node's code: units as YAML text in, the resolved role out."""

from __future__ import annotations

from pathlib import Path

from hostos.site.load import load_site
from hostos.site.resolve import RoleSpec, resolve_role

from conftest import write


def role(tmp_path: Path, units: dict[str, str], name: str = "r", extra: str = "") -> RoleSpec:
    """The resolved role `name` of a site of these units (name → YAML), in this order;
    extra: more of the role's YAML (its mounts)."""
    for unit, text in units.items():
        write(tmp_path / f"{unit}.yaml", text)
    write(
        tmp_path / "roles" / f"{name}.yaml",
        f"role: {name}\nunits: [{', '.join(units)}]\n{extra}",
    )
    return resolve_role(load_site(str(tmp_path)), name)
