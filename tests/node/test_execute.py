"""The executor on the in-memory engine: levels, blocked dependents, the `.next` swap and
its roll back, health gating, and WAIT actions that run nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_engine import BUSYBOX, FakeEngine
from roles import role

from hostos.node.converge import prepare
from hostos.node.execute import Options, Outcome, execute, levels
from hostos.node.plan import Action, Kind

SVC = f"image: {BUSYBOX}\ncommand: [sleep, '3600']\n"
CHECKED = SVC + "health: {command: [CMD, 'true'], interval: 1s, timeout: 1s, retries: 1}\n"
FAST = Options(poll=0.01)
STACK = {  # listed out of order on purpose: the levels put them right
    "web": SVC + "after: [app]\n",
    "app": SVC + "requires: [db]\n",
    "db": SVC,
    "exporter": SVC,
}


def actions(engine: FakeEngine, tmp_path: Path, units: dict[str, str]) -> list[Action]:
    """The plan for these units against what the engine holds now."""
    return prepare(engine, role(tmp_path, units), str(tmp_path), fetch=False).actions


def results(outcomes: list[Outcome]) -> dict[str, tuple[str, bool, str]]:
    return {o.unit: (o.kind.value, o.ok, o.message) for o in outcomes}


def test_levels_follow_requires_and_after(tmp_path: Path) -> None:
    grouped = levels(actions(FakeEngine(), tmp_path, STACK))
    assert [sorted(a.unit for a in level) for level in grouped] == [
        ["db", "exporter"],
        ["app"],
        ["web"],
    ]


def test_first_run_creates_level_by_level(tmp_path: Path) -> None:
    engine = FakeEngine()
    outcomes = execute(engine, actions(engine, tmp_path, STACK), FAST)
    assert {u: r[:2] for u, r in results(outcomes).items()} == {u: ("create", True) for u in STACK}
    started = engine.made("start")
    assert started.index("hostos-db") < started.index("hostos-app") < started.index("hostos-web")
    assert set(engine.names().values()) == {"running"}


@pytest.mark.parametrize(
    ("failing", "expected"),
    [
        (
            ("start", "hostos-db"),
            {
                "db": ("create", False, "failed: start hostos-db: refused"),
                "app": ("create", False, "blocked: dependency db failed"),
                "web": ("create", False, "blocked: dependency app failed"),
                "exporter": ("create", True, "created"),
            },
        ),
        (
            ("create", "hostos-app"),
            {
                "db": ("create", True, "created"),
                "app": ("create", False, "failed: create hostos-app: refused"),
                "web": ("create", False, "blocked: dependency app failed"),
                "exporter": ("create", True, "created"),
            },
        ),
    ],
)
def test_a_failure_blocks_its_dependents_and_no_one_else(
    tmp_path: Path, failing: tuple[str, str], expected: dict[str, tuple[str, bool, str]]
) -> None:
    engine = FakeEngine()
    engine.fail[failing] = "refused"
    assert results(execute(engine, actions(engine, tmp_path, STACK), FAST)) == expected
    assert "hostos-web" not in engine.made("create")  # a blocked unit is not even created


def test_a_unit_that_exits_at_once_fails_with_its_code(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.exits["hostos-db"] = 3
    got = results(execute(engine, actions(engine, tmp_path, {"db": SVC}), FAST))
    assert got == {
        "db": ("create", False, "failed: exited at once with code 3 (see hostos logs db)")
    }


def converged(engine: FakeEngine, tmp_path: Path, units: dict[str, str]) -> None:
    outcomes = execute(engine, actions(engine, tmp_path, units), FAST)
    assert all(o.ok for o in outcomes), outcomes
    engine.calls.clear()


def test_recreate_swaps_in_the_next_container(tmp_path: Path) -> None:
    engine = FakeEngine()
    converged(engine, tmp_path, {"db": SVC})
    old = engine.by_name("hostos-db").id
    planned = actions(engine, tmp_path, {"db": SVC + "env: {V: '2'}\n"})
    assert [(a.kind, a.reason) for a in planned] == [(Kind.RECREATE, "env V added")]
    assert results(execute(engine, planned, FAST)) == {"db": ("recreate", True, "recreated")}
    assert engine.calls == [
        ("create", "hostos-db.next"),
        ("stop", "hostos-db"),
        ("start", "hostos-db.next"),
        ("remove", "hostos-db"),
        ("rename", "hostos-db.next"),
    ]
    assert engine.names() == {"hostos-db": "running"}
    assert engine.by_name("hostos-db").id != old


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ("refuse", "failed: start hostos-db.next: refused"),
        ("exit", "failed: exited at once with code 2 (see hostos logs db)"),
    ],
)
def test_a_failed_recreate_rolls_back_to_the_previous_container(
    tmp_path: Path, script: str, message: str
) -> None:
    engine = FakeEngine()
    converged(engine, tmp_path, {"db": SVC})
    old = engine.by_name("hostos-db").id
    if script == "refuse":
        engine.fail["start", "hostos-db.next"] = "refused"
    else:
        engine.exits["hostos-db.next"] = 2
    planned = actions(engine, tmp_path, {"db": SVC + "env: {V: '2'}\n"})
    [outcome] = execute(engine, planned, FAST)
    assert (outcome.ok, outcome.message, outcome.container) == (
        False,
        message + "; kept the previous container running",
        old,
    )
    assert engine.names() == {"hostos-db": "running"}  # the .next one is gone
    assert engine.made("start")[-1] == "hostos-db"  # the old one started again


@pytest.mark.parametrize(
    ("answers", "expected_db", "app_created"),
    [
        (["starting", "starting", "healthy"], ("create", True, "created, healthy"), True),
        (["starting", "unhealthy"], ("create", False, "created, unhealthy"), False),
    ],
)
def test_a_required_unit_must_be_healthy_before_its_dependents_start(
    tmp_path: Path,
    answers: list[str | None],
    expected_db: tuple[str, bool, str],
    app_created: bool,
) -> None:
    engine = FakeEngine()
    engine.healths["hostos-db"] = list(answers)
    units = {"db": CHECKED, "app": SVC + "requires: [db]\n"}
    got = results(execute(engine, actions(engine, tmp_path, units), FAST))
    assert got["db"] == expected_db
    assert ("hostos-app" in engine.made("create")) is app_created
    assert engine.made("health") == ["hostos-db"] * len(answers)


def test_health_is_waited_for_only_where_a_dependent_needs_it(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.healths["hostos-db"] = ["starting"]
    units = {"db": CHECKED, "app": SVC + "after: [db]\n"}  # after: order only, no health gate
    assert all(o.ok for o in execute(engine, actions(engine, tmp_path, units), FAST))
    assert engine.made("health") == []


def test_a_unit_that_never_gets_healthy_times_out(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.healths["hostos-db"] = ["starting"]
    units = {"db": CHECKED, "app": SVC + "requires: [db]\n"}
    got = results(
        execute(engine, actions(engine, tmp_path, units), Options(health_timeout=0.1, poll=0.01))
    )
    assert got["db"] == ("create", False, "created, not healthy after 0.1s")
    assert got["app"] == ("create", False, "blocked: dependency db failed")


def test_a_known_healthy_unit_is_not_checked_again(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.healths["hostos-db"] = ["healthy"]
    units = {"db": CHECKED, "app": SVC + "requires: [db]\n"}
    converged(engine, tmp_path, units)
    planned = actions(engine, tmp_path, units)
    assert [a.kind for a in planned] == [Kind.NOOP, Kind.NOOP]
    assert all(o.ok for o in execute(engine, planned, FAST))
    assert engine.made("health") == []


def test_wait_actions_run_nothing_and_give_no_outcome(tmp_path: Path) -> None:
    engine = FakeEngine()
    units = {"db": SVC, "app": SVC + "requires: [db]\n", "exporter": SVC}
    planned = actions(engine, tmp_path, units)
    waiting = [
        Action(Kind.WAIT, a.unit, "waiting for mount x", a.desired) if a.unit != "exporter" else a
        for a in planned
    ]
    outcomes = execute(engine, waiting, FAST)
    assert [(o.unit, o.kind) for o in outcomes] == [("exporter", Kind.CREATE)]
    assert engine.made("create") == ["hostos-exporter"]
