"""The example site's Slurm stack for the tests that run it (tests/integration/test_slurm.py
on the host's engines, tests/e2e/test_slurm_node.py on a booted node): its image, built
once with Docker from containers/slurm, and its slurm.conf pointed at one machine.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from hostos.engine.connect import connect
from hostos.engine.kind import EngineKind
from hostos.node.render import image_ref
from hostos.site.load import load_site

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_SITE = ROOT / "units"
EXAMPLE_CONF = ROOT / "containers" / "slurm" / "slurm.conf"
EXAMPLE_CGROUP_CONF = EXAMPLE_CONF.with_name("cgroup.conf")
IMAGE_CLI = [sys.executable, "-c", "from hostos.cli.image import image_app; image_app()"]


def build_image() -> tuple[str, str]:
    """(reference, image ID) of the units' image, built with Docker from its context on
    the debian:bookworm-slim that `hostos image base` makes (the build cache makes a
    second build cheap)."""
    slurmd = load_site(str(EXAMPLE_SITE)).units["slurmd"]
    assert slurmd.build is not None
    ref, context = image_ref(slurmd), str(EXAMPLE_SITE / slurmd.build.context)
    base = subprocess.run(
        [*IMAGE_CLI, "base", "--engine", "docker"], cwd=ROOT, capture_output=True, text=True
    )
    if base.returncode != 0:
        raise RuntimeError(f"hostos image base failed:\n{base.stdout}{base.stderr}")
    docker = connect(EngineKind.docker)
    try:
        return ref, docker.build(context, ref, None, {})
    finally:
        docker.close()


def conf(ctld_host: str, ctld_port: int, node: str, node_addr: str, slurmd_port: int) -> str:
    """The example slurm.conf for one controller (SlurmctldHost=ctld_host, as slurm.conf
    spells it: `NAME` or `NAME(ADDRESS)`) and one node, reached at node_addr:slurmd_port."""
    text = EXAMPLE_CONF.read_text()
    for key, value in (
        ("SlurmctldHost", ctld_host),
        ("SlurmctldPort", str(ctld_port)),
        ("SlurmdPort", str(slurmd_port)),
    ):
        text, found = re.subn(rf"(?m)^{key}=.*$", f"{key}={value}", text)
        assert found == 1, key
    text = text.replace("NodeName=cn[001-128] ", f"NodeName={node} NodeAddr={node_addr} ")
    return text.replace("Nodes=cn[001-128]", f"Nodes={node}")


def admin_share(admin: Path, slurm_conf: str) -> Path:
    """The admin share's Slurm part in admin: slurm/slurm.conf, the example cgroup.conf
    beside it, and a new munge key (munge/munge.key, 0400, owned by whoever runs this)."""
    (admin / "slurm").mkdir(parents=True, exist_ok=True)
    (admin / "munge").mkdir(exist_ok=True)
    (admin / "slurm" / "slurm.conf").write_text(slurm_conf)
    (admin / "slurm" / "cgroup.conf").write_text(EXAMPLE_CGROUP_CONF.read_text())
    key = admin / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    return admin


def bind_shares(site: Path, admin: Path, apps: Path) -> None:
    """The site's base role with the admin and apps shares as directories of this machine,
    which `hostos apply` binds where they are (a role mount's target is a path of the host)."""
    (site / "roles" / "base.yaml").write_text(
        "role: base\nmounts:\n"
        f"  - {{name: admin, type: bind, source: {admin}, target: {admin}}}\n"
        f"  - {{name: apps, type: bind, source: {apps}, target: {apps}}}\n"
    )


def override(site: Path, role: str, unit: str, **fields: Any) -> None:
    """Lay fields on the role's override of unit, as a site's admin would edit the role
    (None writes null, which removes the unit's key)."""
    path = site / "roles" / f"{role}.yaml"
    data = yaml.safe_load(path.read_text())
    data.setdefault("overrides", {}).setdefault(unit, {}).update(fields)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
