"""The supervisor's decisions on the in-memory engine: holds from mounts and crash backoff,
what a reconcile does, reconnecting, the events it reacts to, and the status it serves."""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path

import pytest
from fake_engine import BUSYBOX, BUSYBOX_ID, FakeEngine
from roles import role

from hostos.engine.base import EngineError
from hostos.mounts.state import MountState
from hostos.mounts.state import MountStatus as Track
from hostos.node.crashes import Crashes
from hostos.node.events import ContainerChanged, EngineLost, SiteChanged, Stop
from hostos.node.holds import Holds
from hostos.node.status import NodeStatus
from hostos.node.supervisor import Settings, Supervisor, UnitState, holds
from hostos.site.resolve import RoleSpec

SVC = f"image: {BUSYBOX}\ncommand: [sleep, '3600']\n"
APPS = "mounts:\n  - {name: apps, type: nfs, source: 'srv:/apps', target: /apps}\n"
ON_APPS = "mounts: [{mount: apps, target: /apps}]\nrequires: [apps]\n"
QUICK = "restart: {policy: always, backoff: {initial: 4s, max: 8s}}\n"
FETCHED = "registry.example/data:1"


class FakeMounts:
    """The mount manager as the supervisor reads it: name → host path, None while down."""

    def __init__(self, **sources: str | None) -> None:
        self.at = sources

    def sources(self) -> dict[str, str]:
        return {name: path for name, path in self.at.items() if path is not None}

    def ready(self, name: str) -> bool:
        return self.at.get(name) is not None

    def status(self) -> dict[str, Track]:
        return {
            name: Track(name, MountState.MOUNTED if path else MountState.FAILED)
            for name, path in self.at.items()
        }

    def stop(self) -> None:
        pass


def supervised(spec: RoleSpec, engine: FakeEngine, mounts: FakeMounts | None = None) -> Supervisor:
    """A supervisor connected to engine with spec loaded, as `run()` leaves it before its
    first reconcile (a fake mount manager in place of the real one)."""
    made = Supervisor(Settings("unused", role="r"), connect=lambda kind: engine)
    made.spec, made.generation, made.engine, made.mounts = spec, 1, engine, mounts
    return made


def waiting(supervisor: Supervisor) -> dict[str, str | None]:
    return {u.unit: u.waiting for u in supervisor.snapshot().units}


def test_a_reconcile_converges_and_the_status_says_so(tmp_path: Path) -> None:
    engine = FakeEngine()
    supervisor = supervised(role(tmp_path, {"db": SVC, "app": SVC + "requires: [db]\n"}), engine)
    supervisor._reconcile()
    assert engine.names() == {"hostos-db": "running", "hostos-app": "running"}
    status = supervisor.snapshot()
    assert (status.generation, status.reconciled, status.engine) == (1, 1, "fake")
    [db, app] = status.units
    assert (db.unit, db.state, db.role, db.restarts, db.waiting) == ("db", "running", "r", 0, None)
    assert (db.image, db.image_ref) == (BUSYBOX_ID, BUSYBOX)
    assert app.container_id == engine.by_name("hostos-app").id


def test_a_mount_down_holds_its_units_and_their_images(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.pullable[FETCHED] = "sha256:" + "d" * 64
    units = {
        "data": f"image: {FETCHED}\ncommand: [sleep, '3600']\n{ON_APPS}",
        "later": SVC + "requires: [data]\n",
        "free": SVC,
    }
    mounts = FakeMounts(apps=None)
    supervisor = supervised(role(tmp_path, units, extra=APPS), engine, mounts)
    supervisor._reconcile()
    assert engine.names() == {"hostos-free": "running"}
    assert engine.made("pull") == []  # not fetched for a unit that waits
    assert waiting(supervisor) == {
        "data": "waiting for mount apps",
        "later": "waiting for data",
        "free": None,
    }
    status = supervisor.snapshot()
    assert status.holds() == Holds(mounts=frozenset({"apps"}))
    assert [(m.name, m.state, m.source) for m in status.mounts] == [("apps", "failed", None)]
    mounts.at["apps"] = "/apps"  # the mount is back
    supervisor._reconcile()
    assert engine.made("pull") == [FETCHED]
    assert set(engine.names().values()) == {"running"} and len(engine.names()) == 3
    assert waiting(supervisor) == {"data": None, "later": None, "free": None}


def test_a_mount_readied_after_the_sources_were_taken_still_holds(tmp_path: Path) -> None:
    """Units rendered without the mount's source would start on its bare target."""
    supervisor = supervised(
        role(tmp_path, {"data": SVC + ON_APPS}, extra=APPS), FakeEngine(), FakeMounts(apps="/x")
    )
    assert supervisor._holds({}) == Holds(mounts=frozenset({"apps"}))
    assert supervisor._holds({"apps": "/x"}) == Holds()


def test_crashes_restart_at_once_then_back_off(tmp_path: Path) -> None:
    engine = FakeEngine()
    supervisor = supervised(
        role(tmp_path, {"crash": SVC + QUICK, "after": SVC + "requires: [crash]\n"}), engine
    )
    supervisor._reconcile()
    engine.exit("hostos-crash", 3)
    supervisor._reconcile()  # the first crash: started again at once
    assert engine.names()["hostos-crash"] == "running"
    assert supervisor.snapshot().units[0].restarts == 1
    engine.calls.clear()
    engine.exit("hostos-crash", 3)
    supervisor._reconcile()  # a quick second crash: backoff
    assert engine.calls == []
    crash = supervisor.snapshot().units[0]
    assert (crash.state, crash.exit_code, crash.last_exit, crash.restarts) == ("exited", 3, 3, 1)
    assert crash.waiting is not None and re.fullmatch(
        r"crash loop: next try in [34]\.\ds", crash.waiting
    )
    assert crash.stopped == crash.waiting and crash.next_retry is not None
    assert supervisor.snapshot().holds().stopped == {"crash": crash.waiting}
    state = supervisor.units["crash"]
    state.crashes = dataclasses.replace(state.crashes, next_retry=time.time() - 1)  # time's up
    supervisor._reconcile()
    assert engine.made("start") == ["hostos-crash"]
    assert supervisor.snapshot().units[0].restarts == 2


def test_an_exit_the_policy_does_not_restart_is_left_alone(tmp_path: Path) -> None:
    engine = FakeEngine()
    supervisor = supervised(role(tmp_path, {"job": SVC + "restart: on-failure\n"}), engine)
    supervisor._reconcile()
    engine.exit("hostos-job", 0)
    engine.calls.clear()
    for _ in range(2):
        supervisor._reconcile()
    assert engine.calls == []
    assert waiting(supervisor) == {"job": "exited, restart policy on-failure"}
    assert supervisor.snapshot().units[0].stopped == "exited, restart policy on-failure"


def test_a_failed_start_is_an_error_in_the_status_and_backs_off(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.exits["hostos-bad"] = 1
    supervisor = supervised(role(tmp_path, {"bad": SVC + QUICK}), engine)
    supervisor._reconcile()
    [bad] = supervisor.snapshot().units
    assert bad.last_error == "failed: exited at once with code 1 (see hostos logs bad)"
    assert supervisor.units["bad"].crashes.waiting


@pytest.mark.parametrize(
    ("crashes", "expected"),
    [
        (Crashes(), {}),
        (Crashes(waiting=True, next_retry=None), {"u": "exited, restart policy always"}),
        (Crashes(waiting=True, next_retry=1002.5), {"u": "crash loop: next try in 2.5s"}),
        (Crashes(waiting=True, next_retry=999.0), {}),  # due: started at this reconcile
        (Crashes(waiting=False, next_retry=1002.5), {}),  # started since
    ],
)
def test_holds_from_crash_records(
    tmp_path: Path, crashes: Crashes, expected: dict[str, str]
) -> None:
    spec = role(tmp_path, {"u": SVC})
    assert holds(spec, {"m"}, {"u": crashes}, now=1000.0) == Holds(frozenset({"m"}), expected)


def test_reconnecting_backs_off_and_a_connection_resets_it(tmp_path: Path) -> None:
    engine, answers = FakeEngine(), [EngineError("refused")] * 3
    supervisor = supervised(role(tmp_path, {"db": SVC}), engine)
    supervisor.engine = None

    def connect(kind: str) -> FakeEngine:
        if answers:
            raise answers.pop()
        return engine

    supervisor.connect_engine = connect
    waits = []
    for _ in range(3):
        supervisor._connect()
        waits.append(round(supervisor.reconnect_at - time.monotonic()))
    assert waits == [1, 2, 4] and supervisor.engine_error == "refused"
    supervisor.dirty = False
    try:
        supervisor._connect()
        assert supervisor.engine is engine and supervisor.dirty and supervisor.engine_error == ""
        supervisor._handle(EngineLost("gone"))
        assert supervisor.engine is None
        assert round(supervisor.reconnect_at - time.monotonic()) == 1  # reset by the success
    finally:
        supervisor.stop_event.set()
        engine.close()


def test_events(tmp_path: Path) -> None:
    supervisor = supervised(role(tmp_path, {"db": SVC}), FakeEngine())
    supervisor.dirty = False
    supervisor._handle(ContainerChanged("c0001"))
    assert supervisor.dirty and supervisor.refresh == {"c0001"}
    supervisor._handle(SiteChanged(str(tmp_path / "db.yaml")))
    assert supervisor.site_dirty_at is not None
    supervisor._handle(Stop("SIGTERM"))
    assert supervisor.stop_event.is_set()


def test_the_status_has_one_json_form(tmp_path: Path) -> None:
    engine = FakeEngine()
    supervisor = supervised(
        role(tmp_path, {"data": SVC + ON_APPS, "free": SVC}, extra=APPS),
        engine,
        FakeMounts(apps=None),
    )
    supervisor.units["free"] = UnitState(last_error="failed: no")
    supervisor._reconcile()
    status = supervisor.snapshot()
    assert NodeStatus.from_json(status.to_json()) == status
    assert NodeStatus.from_json({**status.to_json(), "new-key": 1}) == status  # a newer one
    with pytest.raises(ValueError):
        NodeStatus.from_json({"units": [{"state": "running"}]})  # a unit without a name
