"""The rollout controller in process: its pure parts, its rounds over a SQLite store, the
claim it acts under, and the commands' and status views' words."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from hostos.cli import cluster as commands
from hostos.cluster.records import Heartbeat, ImageRecord, NodeRecord, SiteDocument
from hostos.cluster.rollout.plan import (
    Action,
    Decision,
    Kind,
    NodeState,
    Rollout,
    RolloutError,
    RolloutSpec,
    Workload,
    plan,
    start,
)
from hostos.cluster.server import controller
from hostos.cluster.server.controller import Controller, Stored, round_writes, view_of
from hostos.cluster.store import keys
from hostos.cluster.store.fleet import FleetStore, NotFound
from hostos.cluster.store.url import open_kv
from hostos.errors import RuntimeFailure
from hostos.site.drain import Drain
from hostos.site.rollout import RolloutPolicy

IDS = ["n1", "n2", "n3", "n4"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def state(clock: Clock) -> Iterator[FleetStore]:
    with contextlib.closing(open_kv("sqlite://:memory:")) as kv:
        state = FleetStore(kv, clock=clock)
        site = SiteDocument({"compute": {"image": "img-1"}}, {i: {"role": "compute"} for i in IDS})
        state.publish(site)
        for image in ("img-1", "img-2"):
            state.register_image(ImageRecord(image))
        for node in IDS:
            beat(state, node, "img-1")
        yield state


def beat(state: FleetStore, node: str, image: str, health: str = "healthy") -> None:
    state.heartbeat(node, Heartbeat(image, {"app": health}, boot_id=f"{node}-{image}"))
    state.steady_state(node, "compute")


def spec(**changes: Any) -> RolloutSpec:
    base = RolloutSpec("compute", "img-2", "", max_unavailable=2, health_timeout=60.0)
    return dataclasses.replace(base, **changes)


# -- pure parts ----------------------------------------------------------------------------


def test_a_node_record_as_the_planner_sees_it() -> None:
    record = NodeRecord(
        "n1",
        booted_image="img-2",
        last_seen=5.0,
        boot_id="b",
        steady_boot_id="b",
        units={"a": "healthy", "b": "running"},
    )
    assert view_of(record) == controller.NodeView("n1", "img-2", True, True, 5.0)
    starting = dataclasses.replace(record, units={"a": "starting"}, steady_boot_id="old")
    assert (view_of(starting).healthy, view_of(starting).steady) == (False, False)
    assert view_of(NodeRecord("n2")).last_seen == float("-inf")  # never heard from
    assert view_of(NodeRecord("n3", last_seen=1.0)).healthy  # no units: nothing unhealthy


@pytest.mark.parametrize(
    ("records", "role_image", "expected"),
    [
        ([("img-1", None), ("img-1", None), ("img-0", None)], None, "img-1"),
        ([(None, "img-1"), (None, "img-0")], None, "img-0"),  # a tie: the first by name
        ([(None, None)], "img-1", "img-1"),  # nothing reported: the role's spec image
        ([("img-2", "img-2")], "img-2", None),  # everyone has the target already
    ],
)
def test_the_previous_image_is_what_the_nodes_run(
    records: list[tuple[str | None, str | None]], role_image: str | None, expected: str | None
) -> None:
    nodes = [
        NodeRecord(f"n{i}", assigned_image=a, booted_image=b) for i, (a, b) in enumerate(records)
    ]
    assert controller.previous_image(nodes, "img-2", role_image) == expected


def _started() -> Stored:
    views = [controller.NodeView(i, "img-1", True, True, 1000.0) for i in IDS]
    return Stored(start(spec(previous_image="img-1", max_unavailable=3), views, 1000.0, "r1"))


def test_one_txn_holds_the_slots_the_assignments_and_the_rollout() -> None:
    before = _started()
    decision = plan(
        before.rollout, [controller.NodeView(i, "img-1", True, True, 1000.0) for i in IDS], 1001.0
    )
    assert [a.node for a in decision.grants] == ["n1", "n2", "n3"]
    foreign = keys.encode({"holders": ["n9", "n8"], "max": 3})  # two slots taken by hand
    slots = controller.Entry(keys.fleetlock("compute"), foreign, 7)
    records = {
        "n1": controller.Entry(
            keys.node("n1"), keys.encode(NodeRecord("n1", booted_image="img-1").to_json()), 5
        )
    }
    writes = round_writes(before, decision, 3, slots, records, 1001.0)
    assert writes.refused == ["n2", "n3"]  # the table had one slot left
    assert writes.rollout.nodes["n1"].state is NodeState.GRANTED
    assert writes.rollout.nodes["n2"] == before.rollout.nodes["n2"]
    assert {(c.key, c.revision) for c in writes.compares} == {
        ("rollouts/current/compute", 3),
        ("fleetlock/compute", 7),
        ("nodes/n1", 5),
    }
    assert keys.decode(writes.puts["fleetlock/compute"])["holders"] == ["n9", "n8", "n1"]
    assert keys.decode(writes.puts["nodes/n1"])["assigned_image"] == "img-2"
    assert "nodes/n2" not in writes.puts and writes.changed
    logged = Stored.from_json(keys.decode(writes.puts["rollouts/current/compute"])).log
    assert [(e["kind"], e["node"]) for e in logged] == [("grant", "n1")]


def test_grants_beyond_one_txn_wait_for_the_next_round(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(controller, "GRANTS_PER_TXN", 2)
    before = _started()
    decision = plan(
        before.rollout, [controller.NodeView(i, "img-1", True, True, 1000.0) for i in IDS], 1001.0
    )
    writes = round_writes(before, decision, 3, None, {}, 1001.0)
    assert writes.refused == ["n3"]
    assert {c.key for c in writes.compares} >= {"nodes/n1", "nodes/n2"}
    assert all(c.revision == 0 for c in writes.compares if c.key.startswith("nodes/"))


def test_nothing_to_write_when_every_grant_was_refused() -> None:
    before = _started()
    decision = Decision(before.rollout, (Action(Kind.GRANT, "next", "n1", "img-2"),))
    full = keys.encode({"holders": ["x", "y", "z"], "max": 3})
    writes = round_writes(
        before, decision, 1, controller.Entry(keys.fleetlock("compute"), full, 2), {}, 1.0
    )
    assert writes.refused == ["n1"] and not writes.changed


def test_a_finished_rollout_goes_to_the_history_in_the_same_txn() -> None:
    before = _started()
    done = dataclasses.replace(before.rollout, state=controller.rollout.State.DONE)
    writes = round_writes(
        before, Decision(done, (Action(Kind.COMPLETE, "all done"),)), 1, None, {}, 1.0
    )
    assert "rollouts/history/r1" in writes.puts


# -- rounds over a store -------------------------------------------------------------------


def test_a_round_grants_within_the_limit_and_the_node_record_says_so(state: FleetStore) -> None:
    stored = controller.start_rollout(state, spec())
    assert stored.rollout.spec.previous_image == "img-1"
    leader = Controller(state, holder="a")
    assert leader.campaign() and leader.round()
    assert [n.assigned_image for n in state.nodes()] == ["img-2", "img-2", None, None]
    assert state.slots("compute").holders == ("n1", "n2")
    assert not leader.round()  # nothing moved: nothing written
    for node in ("n1", "n2"):
        beat(state, node, "img-2")
    assert not leader.round()  # the round plans on what the watch brought: nothing yet
    leader.follow(5)
    assert leader.round()
    found = controller.read(state.kv, "compute")
    assert found is not None
    assert [p.state.value for p in found[0].rollout.nodes.values()] == [
        "done",
        "done",
        "granted",
        "granted",
    ]


def test_the_operator_overrides_the_roles_policy_which_overrides_the_defaults() -> None:
    policy = RolloutPolicy(max_unavailable="25%", health_timeout=900.0, drain=Drain("slurm"))
    asked = controller.spec_for(controller.Ask("compute", "img-2", canary=2), policy)
    assert (asked.max_unavailable, asked.canary, asked.health_timeout) == ("25%", 2, 900.0)
    assert asked.auto_rollback is False and asked.drain == Drain("slurm")
    mine = controller.Ask("compute", "img-2", max_unavailable=3, auto_rollback=True, drain=False)
    assert controller.spec_for(mine, policy) == RolloutSpec(
        "compute", "img-2", "", 3, 0, 900.0, True, None
    )
    assert controller.spec_for(controller.Ask("c", "i"), RolloutPolicy()) == RolloutSpec(
        "c", "i", ""
    )


def test_a_rollout_starts_with_the_policy_of_the_published_role(state: FleetStore) -> None:
    drain = Drain("commands", ("d", "{node}"), ("c", "{node}"), timeout=60.0)
    policy = RolloutPolicy(max_unavailable=3, drain=drain)
    site = SiteDocument(
        {"compute": {"image": "img-1", "rollout": policy.to_json()}},
        {i: {"role": "compute"} for i in IDS},
    )
    state.publish(site)
    stored = controller.start_asked(state, controller.Ask("compute", "img-2"))
    assert stored.rollout.max_unavailable == 3 and stored.rollout.spec.drain == drain


def test_a_bad_stored_policy_refuses_the_start(state: FleetStore) -> None:
    roles = {"compute": {"image": "img-1", "rollout": {"canary": -1}}}
    state.publish(SiteDocument(roles, {i: {"role": "compute"} for i in IDS}))
    with pytest.raises(RolloutError, match=r"rollout policy in the published site: .*canary"):
        controller.start_asked(state, controller.Ask("compute", "img-2"))
    assert controller.read(state.kv, "compute") is None


class Drained:
    """An in-memory drainer: says what the test sets, records what it was asked to follow."""

    def __init__(self) -> None:
        self.work: dict[str, Workload] = {}
        self.followed: list[list[str]] = []

    def follow(self, rollouts: Sequence[Rollout]) -> None:
        self.followed.append([r.id for r in rollouts])

    def workloads(self, rollout: Rollout) -> Mapping[str, Workload]:
        return self.work


def test_a_drain_round_takes_a_slot_and_assigns_only_once_drained(state: FleetStore) -> None:
    drainer = Drained()
    drainer.work = {i: Workload(jobs=1 if i == "n1" else 0) for i in IDS}
    started = controller.start_rollout(state, spec(max_unavailable=1, drain=Drain("slurm")))
    leader = Controller(state, holder="a", drainer=drainer)
    assert leader.campaign() and leader.round()
    assert drainer.followed[-1] == [started.rollout.id]
    assert state.slots("compute").holders == ("n2",)  # idle first
    assert [n.assigned_image for n in state.nodes()] == [None] * 4  # draining: no image yet
    assert not leader.round()
    drainer.work["n2"] = Workload(jobs=0, drained=True)
    assert leader.round()
    assert state.node("n2").assigned_image == "img-2"  # type: ignore[union-attr]
    found = controller.read(state.kv, "compute")
    assert found is not None and found[0].rollout.nodes["n2"].state is NodeState.GRANTED
    assert [e["kind"] for e in found[0].log][-2:] == ["drain", "grant"]


def test_the_drainers_news_wakes_a_round_at_once(state: FleetStore) -> None:
    controller.start_rollout(state, spec(drain=Drain("slurm")))
    leader = Controller(state, holder="a", drainer=Drained())
    assert leader.campaign()
    leader.round()
    leader.follow(5)  # the round's own writes
    threading.Timer(0.2, leader.wake).start()
    started = time.monotonic()
    leader.follow(5)
    assert 0.15 < time.monotonic() - started < 1


def test_a_replica_that_does_not_lead_runs_no_drain(state: FleetStore) -> None:
    drainer = Drained()
    controller.start_rollout(state, spec(drain=Drain("slurm")))
    first = Controller(state, holder="a")
    second = Controller(state, holder="b", tick=0.05, drainer=drainer)
    assert first.campaign()
    second.start()
    try:
        deadline = time.monotonic() + 5
        while not drainer.followed and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        second.stop()
    assert drainer.followed and all(f == [] for f in drainer.followed)


def test_only_writes_to_nodes_of_the_rollout_wake_the_controller(state: FleetStore) -> None:
    controller.start_rollout(state, spec(max_unavailable=1))
    leader = Controller(state, holder="a")
    assert leader.campaign() and leader.round()  # rollout of n1..n4: n1 granted
    leader.follow(5)  # the round's own writes
    state.heartbeat("other", Heartbeat(booted_image="img-1"))  # not in the rollout
    started = time.monotonic()
    leader.follow(0.5)
    assert time.monotonic() - started >= 0.5
    beat(state, "n1", "img-2")
    started = time.monotonic()
    leader.follow(5)
    assert time.monotonic() - started < 4
    assert leader.round()  # n1 is done: n2 is granted
    assert state.slots("compute").holders == ("n2",)


def test_a_round_on_a_cache_behind_the_store_starts_over_from_the_store(state: FleetStore) -> None:
    """The cache lags a command written meanwhile (a pause): the round's grant loses the
    compare, the keys it compared are read again, and the next round sees the pause
    without the watch having delivered it."""
    controller.start_rollout(state, spec(max_unavailable=1))
    leader = Controller(state, holder="a")
    assert leader.campaign() and leader.round()  # n1 granted: the cache holds the write
    assert leader.round() is False  # nothing new: the own write was not planned again
    beat(state, "n1", "img-2")
    leader.follow(5)  # n1 done, as the cache sees it
    controller.command(state, "compute", "pause")  # not followed: the cache is behind
    assert leader.round()  # n2 granted on the cached (running) rollout: the compare lost
    # nothing granted on the stale plan; n1's slot waits for the round that records it done
    assert state.slots("compute").holders == ("n1",)
    assert leader.round()  # read again: paused, and n1 recorded done
    assert leader.round() is False  # nothing to grant, nothing to retry
    found = controller.read(state.kv, "compute")
    assert found is not None and found[0].rollout.state.value == "paused"
    assert found[0].rollout.nodes["n1"].state.value == "done"
    assert state.slots("compute").holders == ()


def test_a_granted_nodes_slot_goes_back_with_the_next_grant(state: FleetStore) -> None:
    """steady-state of a node the rollout granted writes only its own record; the round
    that records it done releases its slot and grants the next node in one transaction."""
    controller.start_rollout(state, spec(max_unavailable=1))
    leader = Controller(state, holder="a")
    assert leader.campaign() and leader.round()  # n1 granted
    slots = state.kv.get(keys.fleetlock("compute"))
    state.heartbeat("n1", Heartbeat("img-2", {"app": "healthy"}, boot_id="n1-img-2"))
    outcome = state.steady_state("n1", "compute")
    assert outcome.ok and not outcome.changed
    assert state.node("n1").steady  # type: ignore[union-attr]
    assert state.kv.get(keys.fleetlock("compute")) == slots  # not written: no queue on it
    leader.follow(5)
    assert leader.round()
    assert state.slots("compute").holders == ("n2",)
    after = state.kv.get(keys.fleetlock("compute"))
    rollout = state.kv.get(keys.rollout("compute"))
    assert after is not None and rollout is not None and after.revision == rollout.revision


def test_steady_state_releases_a_slot_no_rollout_gave(state: FleetStore) -> None:
    """A FleetLock client's own slot, or one from a rollout that another has replaced, is
    released by steady-state at once, rollout or not."""
    assert state.pre_reboot("n1", "compute").ok  # no rollout: a plain FleetLock client
    assert state.steady_state("n1", "compute").changed
    assert state.slots("compute").holders == ()
    controller.start_rollout(state, spec(max_unavailable=2))
    assert state.pre_reboot("n3", "compute").ok  # in the rollout, but not granted by it
    assert state.steady_state("n3", "compute").changed
    assert state.slots("compute").holders == ()
    leader = Controller(state, holder="a")
    assert leader.campaign() and leader.round()  # n1 and n2 granted
    controller.command(state, "compute", "abort")
    controller.start_rollout(state, spec(max_unavailable=2))  # the aborted one replaced
    assert state.steady_state("n1", "compute").changed  # no rollout holds its slot now
    assert state.slots("compute").holders == ("n2",)


def test_only_the_claim_holder_acts(state: FleetStore) -> None:
    controller.start_rollout(state, spec())
    first, second = Controller(state, holder="a"), Controller(state, holder="b")
    assert first.campaign() and not second.campaign()
    first._leading_until = 0.0  # the claim ran out while it planned
    entry = state.kv.get(keys.rollout("compute"))
    assert entry is not None
    stored = Stored.from_json(keys.decode(entry.value))
    assert not first._role_round(entry, stored)
    assert state.slots("compute").holders == ()


def test_a_command_between_the_read_and_the_write_wins(state: FleetStore) -> None:
    controller.start_rollout(state, spec())
    entry = state.kv.get(keys.rollout("compute"))
    assert entry is not None
    stored = Stored.from_json(keys.decode(entry.value))
    views = [view_of(r) for r in state.nodes()]
    decision = plan(stored.rollout, views, state.clock())
    writes = round_writes(stored, decision, entry.revision, None, {}, state.clock())
    controller.command(state, "compute", "pause")
    assert state.kv.txn(writes.compares, writes.puts) is None  # the stale round loses
    assert state.slots("compute").holders == ()


def test_commands_and_their_refusals(state: FleetStore, clock: Clock) -> None:
    with pytest.raises(NotFound, match="no rollout"):
        controller.command(state, "compute", "pause")
    with pytest.raises(NotFound, match="img-9"):
        controller.start_rollout(state, spec(target_image="img-9"))
    with pytest.raises(NotFound, match="role 'storage'"):
        controller.start_rollout(state, spec(role="storage"))
    first = controller.start_rollout(state, spec())
    with pytest.raises(controller.Conflict, match="abort it first"):
        controller.start_rollout(state, spec())
    assert controller.command(state, "compute", "pause").rollout.state.value == "paused"
    with pytest.raises(controller.Conflict, match="cannot pause"):
        controller.command(state, "compute", "pause")
    aborted = controller.command(state, "compute", "abort")
    assert [e["kind"] for e in aborted.log] == ["start", "pause", "abort"]
    clock.now += 5
    second = controller.start_rollout(state, spec())
    assert second.rollout.id != first.rollout.id
    history = state.kv.get(keys.ROLLOUTS_HISTORY + first.rollout.id)
    assert history is not None and keys.decode(history.value)["state"] == "aborted"


def test_everyone_on_the_target_already_is_refused(state: FleetStore) -> None:
    for node in IDS:
        beat(state, node, "img-2")
    with pytest.raises(controller.RolloutError, match="has img-2 already"):
        controller.start_rollout(state, spec())


# -- what the commands print ---------------------------------------------------------------


def test_node_states_as_listed() -> None:
    now = 1000.0
    assert commands.node_state({"last_seen": 990.0, "booted_image": "a"}, now) == "up"
    assert commands.node_state({"last_seen": 900.0, "booted_image": "a"}, now) == "stale"
    assert commands.node_state({"last_seen": 0}, now) == "unseen"
    assert (
        commands.node_state({"last_seen": 999.0, "booted_image": "a", "assigned_image": "b"}, now)
        == "rebooting"
    )
    row = commands.node_rows(
        [{"id": "n1", "role": "c", "last_seen": 990.0, "booted_image": "a"}], now
    )[0]
    assert row == ["n1", "c", "up", "a", "-", "10s ago"]


def test_diff_lines_per_role() -> None:
    old = {
        "roles": {"c": {"image": "i1"}, "gone": {}},
        "nodes": {"n1": {"role": "c"}, "n2": {"role": "gone"}},
    }
    new = {
        "roles": {"c": {"image": "i2"}, "fresh": {}},
        "nodes": {"n1": {"role": "c"}, "n3": {"role": "fresh"}},
    }
    diff = {
        "generation": 4,
        "changed": True,
        "roles": {"added": ["fresh"], "removed": ["gone"], "changed": ["c"]},
        "nodes": {"added": ["n3"], "removed": ["n2"], "changed": []},
    }
    assert commands.diff_lines(diff, old, new) == [
        "against generation 4:",
        "~ role c: host image i1 → i2 (roll it out: hostos rollout start c --image i2)",
        "+ role fresh",
        "    + 1 node added: n3",
        "- role gone",
        "    - 1 node removed: n2",
    ]
    assert commands.diff_lines({"generation": 4, "changed": False}, old, old) == [
        "no change (generation 4)"
    ]


def _status(state: str, done: int, reverting: bool = False) -> dict[str, Any]:
    return {
        "id": "r1",
        "state": state,
        "reverting": reverting,
        "total": 4,
        "max_unavailable": 2,
        "canaries": [],
        "reason": "why",
        "spec": {
            "role": "c",
            "previous_image": "i1",
            "target_image": "i2",
            "health_timeout": 60.0,
            "auto_rollback": False,
        },
        "counts": {"reverted" if reverting else "done": done, "granted": 1, "failed": 0},
        "nodes": {"n1": {"state": "done", "image": "i2", "slot": False, "reason": ""}},
        "log": [
            {"at": 3661.0, "kind": "grant", "node": "n1", "image": "i2", "reason": "next in order"}
        ],
    }


def test_status_words() -> None:
    assert (
        commands.progress_line(_status("running", 1))
        == "c: running i1 → i2, 1/4 done, 1 in flight, 0 failed (why)"
    )
    lines = commands.status_lines(_status("running", 1))
    assert lines[0] == "rollout r1"
    assert "n1    done   i2     -" in lines
    assert lines[-1] == "  01:01:01 grant n1 i2: next in order"


def test_status_words_of_a_drain_rollout() -> None:
    status = _status("running", 1)
    status["spec"]["drain"] = {"kind": "slurm", "timeout": 86400.0}
    status["counts"]["draining"] = 2
    status["nodes"] = {
        "n1": {"state": "draining", "image": None, "slot": True, "jobs": 3, "held": ""},
        "n2": {"state": "draining", "image": None, "slot": True, "jobs": None, "held": ""},
        "n3": {"state": "done", "image": "i2", "slot": False, "held": "bad DIMM"},
    }
    assert commands.progress_line(status) == (
        "c: running i1 → i2, 1/4 done, 2 draining, 1 in flight, 0 failed (why)"
    )
    lines = commands.status_lines(status)
    assert lines[2].endswith("auto-rollback off, drain slurm (timeout 1d)")
    assert "n1    draining (3 job(s) left)" in lines[5]
    assert "n2    draining (jobs not counted yet)" in lines[6]
    assert "n3    done, left drained: bad DIMM" in lines[7]


class FakeClient:
    server = "http://fake"

    def __init__(self, answers: list[dict[str, Any]]) -> None:
        self.answers = answers

    def rollout(self, role: str) -> dict[str, Any]:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def test_follow_prints_lines_without_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(commands, "WATCH_SECONDS", 0.0)
    client = FakeClient([_status("running", 1), _status("running", 1), _status("done", 4)])
    assert commands.follow(client, "c") == 0  # type: ignore[arg-type]
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "01:01:01 grant n1 i2: next in order"  # once, though read three times
    assert out[1:] == [
        "c: running i1 → i2, 1/4 done, 1 in flight, 0 failed (why)",
        "c: done i1 → i2, 4/4 done, 1 in flight, 0 failed (why)",
    ]
    paused = FakeClient([_status("paused", 2)])
    assert commands.follow(paused, "c") == 1  # type: ignore[arg-type]


def test_follow_draws_a_bar_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(commands, "WATCH_SECONDS", 0.0)
    monkeypatch.setattr(commands.sys.stdout, "isatty", lambda: True)
    client = FakeClient(
        [_status("rolling-back", 1, reverting=True), _status("rolled-back", 4, reverting=True)]
    )
    assert commands.follow(client, "c") == 1  # type: ignore[arg-type]
    assert "4/4 reverted" in capsys.readouterr().out


class FlakyClient(FakeClient):
    """Away for its first reads, as a server restarting is."""

    def __init__(self, answers: list[dict[str, Any]], away: int) -> None:
        super().__init__(answers)
        self.away = away

    def rollout(self, role: str) -> dict[str, Any]:
        if self.away:
            self.away -= 1
            raise RuntimeFailure("connection refused")
        return super().rollout(role)


def test_follow_waits_for_a_server_that_is_away_a_moment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(commands, "WATCH_SECONDS", 0.0)
    assert commands.follow(FlakyClient([_status("done", 4)], away=3), "c") == 0  # type: ignore[arg-type]
    assert "4/4 done" in capsys.readouterr().out
    with pytest.raises(RuntimeFailure):
        commands.follow(FlakyClient([_status("done", 4)], away=100), "c")  # type: ignore[arg-type]
