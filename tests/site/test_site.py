"""The loader and resolver on the example site and on small sites written here."""

from __future__ import annotations

from pathlib import Path

import pytest

from hostos.errors import SiteError
from hostos.site.load import load_site
from hostos.site.merge import merge
from hostos.site.resolve import resolve_node, resolve_role, spec_document, spec_view, start_order

from conftest import EXAMPLE_SITE, write


def test_example_site_loads() -> None:
    site = load_site(str(EXAMPLE_SITE))
    assert {"head", "compute", "gpu", "storage", "login", "demo"} <= set(site.roles)
    assert len([n for n in site.nodes if n.role == "compute"]) == 128
    assert [n.name for n in site.nodes if n.role == "head"] == ["head01"]
    assert [n.name for n in site.nodes if n.role == "gpu"] == [
        "gpu01",
        "gpu02",
        "gpu03",
        "gpu04",
        "gpu07",
    ]


def test_merge_rule() -> None:
    base = {"env": {"A": "1", "B": "2"}, "args": ["x", "y"], "user": "a", "health": {"tcp": "h:1"}}
    over = {"env": {"B": "3"}, "args": ["z"], "health": None}
    assert merge(base, over) == {"env": {"A": "1", "B": "3"}, "args": ["z"], "user": "a"}


def test_extends_merges_maps_and_replaces_lists() -> None:
    site = load_site(str(EXAMPLE_SITE))
    gpu, compute = site.roles["gpu"], site.roles["compute"]
    assert gpu.units == compute.units  # inherited list
    assert gpu.mounts == compute.mounts
    assert gpu.image == "gpu-2026.11"  # scalar replaced
    # overrides is a map: gpu's slurmd override merges over compute's, and over the unit
    slurmd = site.role_units["gpu"]["slurmd"]
    assert slurmd.labels == {"org.hpc.service": "slurm", "org.hpc.partition": "gpu"}
    assert site.role_units["compute"]["slurmd"].labels["org.hpc.partition"] == "compute"
    assert slurmd.devices[0].host == "/dev/nvidia0"  # from gpu
    assert slurmd.resources.pids == 65536 and slurmd.resources.memory is None
    assert [m.name for m in compute.mounts] == ["admin", "apps"]  # from base
    storage = site.roles["storage"]
    assert [m.name for m in storage.mounts] == ["admin", "apps"]  # from base
    assert storage.units == ["beegfs-storage", "beegfs-meta", "node-exporter"]  # replaced


def test_env_files_are_read() -> None:
    site = load_site(str(EXAMPLE_SITE))
    for unit in ("slurmd", "slurmctld"):
        assert site.units[unit].env == {
            "SLURM_CONF": "/mnt/admin/slurm/slurm.conf",
            "TZ": "Etc/UTC",
        }


def test_env_wins_over_env_files(tmp_path: Path) -> None:
    write(tmp_path / "env" / "a.env", "# shared\nA=file\nB=file\n")
    write(tmp_path / "app.yaml", "image: busybox:1.36\nenv_files: [env/a.env]\nenv: {B: unit}\n")
    write(tmp_path / "roles" / "r.yaml", "role: r\nunits: [app]\n")
    assert load_site(str(tmp_path)).units["app"].env == {"A": "file", "B": "unit"}


def test_start_order_follows_requires_and_after() -> None:
    site = load_site(str(EXAMPLE_SITE))
    spec = resolve_node(site, "cn001")
    assert [u.name for u in spec.units] == ["munge", "slurmd"]
    assert [m.name for m in spec.unit("slurmd").mounts] == ["apps", "admin"]
    assert [u.name for u in resolve_node(site, "head01").units] == ["munge", "slurmctld"]
    login = [u.name for u in resolve_node(site, "login1").units]
    assert login.index("munge") < login.index("sshd")  # sshd starts after munge


def test_start_order_keeps_listed_order_for_ties() -> None:
    site = load_site(str(EXAMPLE_SITE))
    units = dict(site.role_units["storage"])
    assert start_order(units, ["node-exporter", "beegfs-meta", "beegfs-storage"]) == [
        "node-exporter",
        "beegfs-storage",
        "beegfs-meta",
    ]


UNIT = """\
name: app
image: busybox:1.36
command: ["sleep", "3600"]
env: {A: "1", B: "2"}
mounts:
  - {type: tmpfs, target: /tmp, size: 16Mi}
"""
REORDERED = """\
mounts:
  - {size: 16Mi, target: /tmp, type: tmpfs}
env: {B: "2", A: "1"}
command: ["sleep", "3600"]
image: busybox:1.36
name: app
"""


def _hash(root: Path, unit_text: str, role_extra: str = "") -> str:
    write(root / "app.yaml", unit_text)
    write(root / "roles" / "r.yaml", "role: r\nunits: [app]\n" + role_extra)
    return resolve_role(load_site(str(root)), "r").unit("app").hash


def test_hash_ignores_key_order(tmp_path: Path) -> None:
    assert _hash(tmp_path / "a", UNIT) == _hash(tmp_path / "b", REORDERED)


def test_hash_ignores_equivalent_spellings(tmp_path: Path) -> None:
    spelled = UNIT.replace("16Mi", "16777216").replace('["sleep", "3600"]', '"sleep 3600"')
    assert _hash(tmp_path / "a", UNIT) == _hash(tmp_path / "b", spelled)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("busybox:1.36", "busybox:1.37"),
        ('"3600"]', '"3601"]'),
        ('B: "2"', 'B: "3"'),
        ("size: 16Mi", "size: 32Mi"),
        ("target: /tmp", "target: /scratch"),
    ],
)
def test_hash_changes_with_container_fields(tmp_path: Path, old: str, new: str) -> None:
    assert old in UNIT
    assert _hash(tmp_path / "a", UNIT) != _hash(tmp_path / "b", UNIT.replace(old, new))


@pytest.mark.parametrize(
    "extra",
    ["description: other words\n", "restart: {policy: always, backoff: {max: 10s}}\n"],
)
def test_hash_ignores_supervisor_only_fields(tmp_path: Path, extra: str) -> None:
    assert _hash(tmp_path / "a", UNIT) == _hash(tmp_path / "b", UNIT + extra)


def test_hash_changes_with_role_override(tmp_path: Path) -> None:
    plain = _hash(tmp_path / "a", UNIT)
    overridden = _hash(tmp_path / "b", UNIT, "overrides:\n  app: {env: {B: '9'}}\n")
    assert plain != overridden


def test_hash_changes_with_bound_role_mount(tmp_path: Path) -> None:
    unit = UNIT + "mounts:\n  - {mount: data, target: /data}\n"
    unit = unit.replace("mounts:\n  - {type: tmpfs, target: /tmp, size: 16Mi}\n", "", 1)
    role = "mounts:\n  - {name: data, type: nfs, source: 'srv:/export', target: /data}\n"
    first = _hash(tmp_path / "a", unit, role)
    second = _hash(tmp_path / "b", unit, role.replace("srv:/export", "srv2:/export"))
    assert first != second


def test_every_problem_is_reported_at_once(site: Path) -> None:
    write(site / "munge.yaml", (site / "munge.yaml").read_text().replace("image:", "imgae:"))
    (site / "roles" / "login.yaml").write_text(
        (site / "roles" / "login.yaml")
        .read_text()
        .replace("beegfs-client, sshd,", "beegfs-client, sshdd,")
    )
    write(site / "nodes.yaml", "nodes:\n  - {name: 'cn[1-2]', role: computer}\n")
    with pytest.raises(SiteError) as info:
        load_site(str(site))
    lines = [str(p) for p in info.value.problems]
    assert any(
        "munge.yaml:" in line and "imgae: unknown key (did you mean 'image'?)" in line
        for line in lines
    )
    assert any("login.yaml:" in line and "unknown unit 'sshdd'" in line for line in lines)
    assert any("nodes.yaml:2:" in line and "unknown role 'computer'" in line for line in lines)


def test_override_error_points_into_the_role_file(site: Path) -> None:
    role = site / "roles" / "compute.yaml"
    role.write_text(role.read_text().replace("    labels: {org", "    label: {org"))
    with pytest.raises(SiteError) as info:
        load_site(str(site))
    [problem] = [p for p in info.value.problems if p.key == "overrides.slurmd.label"]
    assert problem.where.file.endswith("roles/compute.yaml")
    assert problem.where.line == 10
    assert problem.hint == "did you mean 'labels'?"


def test_missing_site_directory(tmp_path: Path) -> None:
    with pytest.raises(SiteError, match="site directory not found"):
        load_site(str(tmp_path / "nope"))


def test_unknown_node_and_role(site: Path) -> None:
    loaded = load_site(str(site))
    with pytest.raises(SiteError, match=r"unknown node 'cn0001' .did you mean 'cn001'"):
        resolve_node(loaded, "cn0001")
    with pytest.raises(SiteError, match=r"unknown role 'compte' .did you mean 'compute'"):
        resolve_role(loaded, "compte")


def test_the_view_shows_what_the_site_sets_as_written(tmp_path: Path) -> None:
    unit = UNIT + "health: {tcp: '127.0.0.1:80', interval: 1m30s}\nstop_timeout: 500ms\n"
    write(tmp_path / "app.yaml", unit)
    write(tmp_path / "roles" / "r.yaml", "role: r\nunits: [app]\n")
    spec = resolve_role(load_site(str(tmp_path)), "r")
    view = spec_view(spec)
    assert "node" not in view
    (app,) = view["units"]
    assert set(app) == {
        "name",
        "image",
        "command",
        "env",
        "mounts",
        "health",
        "stop_timeout",
        "hash",
    }
    assert app["mounts"] == [{"type": "tmpfs", "target": "/tmp", "size": "16Mi"}]
    assert app["health"] == {"tcp": "127.0.0.1:80", "interval": "1m30s"}
    assert app["stop_timeout"] == "500ms"
    full = spec_view(spec, full=True)["units"][0]
    assert full["health"]["timeout"] == "5s" and full["privileged"] is False
    assert set(full) == set(spec_document(spec)["units"][0])


def test_the_document_keeps_seconds_and_bytes(tmp_path: Path) -> None:
    write(tmp_path / "app.yaml", UNIT + "stop_timeout: 2m\n")
    write(tmp_path / "roles" / "r.yaml", "role: r\nunits: [app]\n")
    (app,) = spec_document(resolve_role(load_site(str(tmp_path)), "r"))["units"]
    assert app["stop_timeout"] == 120.0
    assert app["mounts"][0]["size"] == 16 * 2**20
    assert app["restart"]["backoff"] == {"initial": 1.0, "max": 300.0}
