"""Table-driven tests of the pure planner and of the renderer it relies on."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import roles

from hostos.engine.base import Observed
from hostos.labels import HASH_LABEL, OWNER_LABEL, UNIT_LABEL
from hostos.node.holds import Holds
from hostos.node.plan import Action, Desired, Kind, plan
from hostos.node.render import render
from hostos.site.resolve import RoleSpec

UNITS = {
    "db": "image: busybox:1.36\ncommand: [sleep, '3600']\nenv: {MODE: primary}\n",
    "app": "image: busybox:1.36\ncommand: [sleep, '3600']\nrequires: [db]\n",
}


def role(tmp_path: Path, units: dict[str, str] | None = None, name: str = "r") -> RoleSpec:
    return roles.role(tmp_path, UNITS if units is None else units, name)


def desired(spec: RoleSpec, image: str = "sha256:" + "a" * 64) -> list[Desired]:
    return [Desired(u, render(u, image)) for u in spec.units]


def running(want: Desired, **changes: object) -> Observed:
    """The container a converged node would show for want."""
    base = Observed(
        id=f"id-{want.name}",
        name=want.spec.name,
        labels=dict(want.spec.labels),
        state="running",
        image_id=want.spec.image,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def kinds(actions: list) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return [(a.kind.value, a.unit) for a in actions]


def test_first_apply_creates_in_start_order(tmp_path: Path) -> None:
    actions = plan(desired(role(tmp_path)), [])
    assert kinds(actions) == [("create", "db"), ("create", "app")]
    assert actions[0].reason == "new unit"


def test_converged_node_is_all_noop(tmp_path: Path) -> None:
    want = desired(role(tmp_path))
    actions = plan(want, [running(w) for w in want])
    assert {a.kind for a in actions} == {Kind.NOOP}
    assert not any(a.changes for a in actions)


def test_env_change_recreates_exactly_that_unit(tmp_path: Path) -> None:
    old = desired(role(tmp_path / "old"))
    new = desired(role(tmp_path / "new", {**UNITS, "db": UNITS["db"].replace("primary", "b")}))
    actions = plan(new, [running(w) for w in old])
    assert kinds(actions) == [("recreate", "db"), ("noop", "app")]
    assert actions[0].reason == "env MODE changed"


def test_image_change_names_both_images(tmp_path: Path) -> None:
    spec = role(tmp_path)
    old, new = desired(spec, "sha256:" + "1" * 64), desired(spec, "sha256:" + "2" * 64)
    actions = plan(new, [running(w) for w in old])
    assert actions[0].reason == (
        "image changed busybox:1.36@111111111111→busybox:1.36@222222222222"
    )


@pytest.mark.parametrize(
    ("state", "exit_code", "reason"),
    [
        ("exited", 1, "container exited (exit code 1)"),
        ("created", None, "container created but never started"),
        ("dead", None, "container dead"),
    ],
)
def test_stopped_container_is_started(
    tmp_path: Path, state: str, exit_code: int | None, reason: str
) -> None:
    want = desired(role(tmp_path))
    observed = [running(want[0], state=state, exit_code=exit_code), running(want[1])]
    actions = plan(want, observed)
    assert kinds(actions) == [("start", "db"), ("noop", "app")]
    assert actions[0].reason == reason


def test_unit_removed_from_role_is_removed_first(tmp_path: Path) -> None:
    old = desired(role(tmp_path / "old"))
    new = desired(role(tmp_path / "new", {"db": UNITS["db"]}))
    actions = plan(new, [running(w) for w in old])
    assert kinds(actions) == [("remove", "app"), ("noop", "db")]
    assert actions[0].reason == "unit no longer in role"


def test_role_change_is_named(tmp_path: Path) -> None:
    old = desired(role(tmp_path / "old", name="compute"))
    new = desired(role(tmp_path / "new", {"db": UNITS["db"]}, name="login"))
    actions = plan(new, [running(w) for w in old])
    assert actions[0].kind is Kind.REMOVE and actions[0].reason == "role changed compute→login"
    assert actions[1].kind is Kind.RECREATE and actions[1].reason == "role changed compute→login"


def test_foreign_container_with_the_name_is_a_conflict(tmp_path: Path) -> None:
    want = desired(role(tmp_path))
    foreign = Observed(id="x", name="hostos-db", labels={}, state="running", image_id="i")
    similar = Observed(id="y", name="hostos-db-2", labels={}, state="running", image_id="i")
    actions = plan(want, [foreign, similar])
    assert kinds(actions) == [("conflict", "db"), ("create", "app")]
    assert "hostos does not own" in actions[0].reason


def test_leftover_of_an_interrupted_recreate_is_removed(tmp_path: Path) -> None:
    want = desired(role(tmp_path))
    leftover = running(want[0], id="id-next", name="hostos-db.next", state="created")
    actions = plan(want, [running(want[0]), leftover, running(want[1])])
    assert kinds(actions) == [("remove", "db"), ("noop", "db"), ("noop", "app")]
    assert actions[0].current is leftover


def test_container_from_another_version_is_recreated(tmp_path: Path) -> None:
    want = desired(role(tmp_path))
    old = running(want[0], labels={OWNER_LABEL: "hostos", UNIT_LABEL: "db", HASH_LABEL: "x"})
    actions = plan(want, [old, running(want[1])])
    assert actions[0].kind is Kind.RECREATE
    assert "created by another hostos version" in actions[0].reason


def test_missing_image_is_said(tmp_path: Path) -> None:
    spec = role(tmp_path)
    want = [Desired(u, render(u, None), image_present=False) for u in spec.units]
    assert plan(want, [])[0].reason == "new unit (image busybox:1.36 to fetch)"


def test_render_is_stable_and_labels_ownership(tmp_path: Path) -> None:
    spec = role(tmp_path)
    first, second = render(spec.units[0], "sha256:1"), render(spec.units[0], "sha256:1")
    assert first == second
    assert first.labels[OWNER_LABEL] == "hostos" and first.labels[UNIT_LABEL] == "db"
    assert render(spec.units[0], "sha256:2").labels[HASH_LABEL] != first.labels[HASH_LABEL]
    assert first.name == "hostos-db"


# -- holds: what the supervisor keeps back becomes WAIT, with the reason ----------------------

HELD_UNITS = {
    "db": "image: busybox:1.36\ncommand: [sleep, '3600']\n"
    "mounts: [{mount: apps, target: /apps}]\nrequires: [apps]\n",
    "app": "image: busybox:1.36\ncommand: [sleep, '3600']\nrequires: [db]\n",
    "web": "image: busybox:1.36\ncommand: [sleep, '3600']\nafter: [app]\n",
    "exporter": "image: busybox:1.36\ncommand: [sleep, '3600']\n",
}
APPS = "mounts:\n  - {name: apps, type: nfs, source: 'srv:/apps', target: /apps}\n"
APPS_DOWN = Holds(mounts=frozenset({"apps"}))


def held(tmp_path: Path) -> dict[str, Desired]:
    """The units in start order (db, exporter, app, web) by name."""
    return {w.name: w for w in desired(roles.role(tmp_path, HELD_UNITS, extra=APPS))}


def lines(actions: list[Action]) -> list[tuple[str, str, str]]:
    return [(a.kind.value, a.unit, a.reason) for a in actions]


def test_a_mount_down_holds_its_units_and_their_dependents(tmp_path: Path) -> None:
    assert lines(plan(list(held(tmp_path).values()), [], APPS_DOWN)) == [
        ("wait", "db", "waiting for mount apps"),
        ("create", "exporter", "new unit"),
        ("wait", "app", "waiting for db"),
        ("wait", "web", "waiting for app"),
    ]


def test_a_mount_down_leaves_running_units_alone(tmp_path: Path) -> None:
    """A unit up to date on its mount keeps running (an NFS hard mount resumes by itself);
    only what would change waits, and a dependent up to date does not wait behind it."""
    want = held(tmp_path)
    observed = [
        running(want["db"]),
        running(want["app"], state="exited", exit_code=1),
        running(want["web"]),
    ]
    assert lines(plan(list(want.values()), observed, APPS_DOWN)) == [
        ("noop", "db", "up to date"),
        ("create", "exporter", "new unit"),
        ("start", "app", "container exited (exit code 1)"),
        ("noop", "web", "up to date"),
    ]


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        # a stopped container the crash backoff keeps stopped waits, and its dependents too
        (
            "exited",
            [("wait", "db", "crash loop: next try in 2.0s"), ("wait", "app", "waiting for db")],
        ),
        # the backoff holds restarts only: a missing container is created
        (None, [("create", "db", "new unit"), ("start", "app", "container exited (exit code 1)")]),
    ],
)
def test_crash_backoff_holds_a_restart(
    tmp_path: Path, state: str | None, expected: list[tuple[str, str, str]]
) -> None:
    want = desired(role(tmp_path))
    observed = [running(want[1], state="exited", exit_code=1)]
    if state is not None:
        observed.append(running(want[0], state=state, exit_code=1))
    holds = Holds(stopped={"db": "crash loop: next try in 2.0s"})
    assert lines(plan(want, observed, holds)) == expected


def test_crash_backoff_does_not_hold_a_recreate(tmp_path: Path) -> None:
    old = desired(role(tmp_path / "old"))
    new = desired(role(tmp_path / "new", {**UNITS, "db": UNITS["db"].replace("primary", "b")}))
    observed = [running(old[0], state="exited", exit_code=1), running(old[1])]
    holds = Holds(stopped={"db": "exited, restart policy no"})
    assert kinds(plan(new, observed, holds)) == [("recreate", "db"), ("noop", "app")]


def test_a_leftover_is_removed_while_its_unit_waits(tmp_path: Path) -> None:
    want = held(tmp_path)
    db = running(want["db"], state="exited", exit_code=1)
    leftover = running(want["db"], id="id-next", name="hostos-db.next", state="created")
    actions = plan(list(want.values()), [db, leftover], APPS_DOWN)
    assert lines(actions)[:2] == [
        ("remove", "db", "leftover container hostos-db.next"),
        ("wait", "db", "waiting for mount apps"),
    ]


def test_wait_changes_nothing(tmp_path: Path) -> None:
    actions = plan(list(held(tmp_path).values()), [], APPS_DOWN)
    assert [(a.unit, a.changes) for a in actions] == [
        ("db", False),
        ("exporter", True),
        ("app", False),
        ("web", False),
    ]


def test_a_node_tells_its_containers_its_name_unless_the_unit_does(tmp_path: Path) -> None:
    spec = role(
        tmp_path, {"a": "image: busybox:1.36\n", "b": "image: b:1\nenv: {HOSTOS_NODE: x}\n"}
    )
    a, b = spec.units
    assert render(a, None, node="cn001").env == {"HOSTOS_NODE": "cn001"}
    assert render(b, None, node="cn001").env == {"HOSTOS_NODE": "x"}
    assert render(a, None).env == {}  # a role applied by hand names no node
    renamed = render(a, None, node="cn002").labels[HASH_LABEL]
    assert renamed != render(a, None, node="cn001").labels[HASH_LABEL]


def test_a_namespace_has_volumes_of_its_own(tmp_path: Path) -> None:
    unit = "image: busybox:1.36\nmounts:\n  - {type: volume, source: sock, target: /run/s}\n"
    [u] = role(tmp_path, {"a": unit}).units
    [plain] = render(u, None).mounts
    [spaced] = render(u, None, namespace="t1").mounts
    assert (plain.source, spaced.source) == ("sock", "hostos-t1-sock")
    assert spaced.type == "volume" and spaced.target == "/run/s"
