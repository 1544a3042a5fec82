"""The rollout planner: tables of rollouts driven through a simulated fleet, and a property
test that throws random reboot delays, failures and silences at it."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostos.cluster.records import RecordError
from hostos.cluster.rollout.plan import (
    FINAL,
    GRANTING,
    Decision,
    Kind,
    NodeState,
    NodeView,
    Rollout,
    RolloutError,
    RolloutSpec,
    State,
    abort,
    grant_refused,
    pause,
    plan,
    resolve_max_unavailable,
    resume,
    rollback,
    start,
)

OLD, NEW = "img-1", "img-2"
SILENT_AFTER = 30.0
STEP = 10.0

# -- a simulated fleet ---------------------------------------------------------------------


@dataclass
class SimNode:
    """A node as the boot endpoint and its agent would make it behave."""

    id: str
    delay: float = 30.0  # seconds a reboot takes
    bad: frozenset[str] = frozenset()  # images on which its units never get healthy
    gone: bool = False  # never comes back from its next reboot
    quiet: tuple[tuple[float, float], ...] = ()  # (from, until): heartbeats lost meanwhile
    booted: str = OLD
    assigned: str = OLD
    back_at: float | None = None  # while rebooting: when it is up again
    report: NodeView | None = None  # what its last heartbeat said: all the server knows

    def tick(self, now: float) -> None:
        if self.back_at is None and self.assigned != self.booted:
            self.back_at = now + self.delay  # the agent saw the new assignment: reboot
        if self.back_at is not None and now >= self.back_at and not self.gone:
            self.booted, self.back_at = self.assigned, None  # boots what it is assigned now
        if self.back_at is None and not any(a <= now < b for a, b in self.quiet):
            self.report = NodeView(
                self.id,
                self.booted,
                steady=True,
                healthy=self.booted not in self.bad,
                last_seen=now,
            )

    @property
    def last_seen(self) -> float:
        return self.report.last_seen if self.report else float("-inf")

    def view(self) -> NodeView:
        return self.report or NodeView(self.id)


@dataclass
class Fleet:
    nodes: dict[str, SimNode]
    history: list[Decision] = field(default_factory=list)

    @classmethod
    def of(cls, count: int, **special: dict[str, object]) -> Fleet:
        """count healthy nodes n1…; special maps a node id to SimNode fields."""
        ids = [f"n{i}" for i in range(1, count + 1)]
        return cls({i: SimNode(i, **special.get(i, {})) for i in ids})  # type: ignore[arg-type]

    def views(self) -> list[NodeView]:
        return [n.view() for n in self.nodes.values()]

    def step(self, rollout: Rollout, now: float) -> Rollout:
        for node in self.nodes.values():
            node.tick(now)
        decision = plan(rollout, self.views(), now, silent_after=SILENT_AFTER)
        for action in decision.grants:
            assert action.node is not None and action.image is not None
            self.nodes[action.node].assigned = action.image
        self.history.append(decision)
        return decision.rollout

    def run(
        self,
        rollout: Rollout,
        start_at: float,
        until: float,
        on_step: Callable[[Rollout, float], Rollout] | None = None,
    ) -> Rollout:
        now = start_at
        while now <= until and rollout.state not in FINAL:
            rollout = self.step(rollout, now)
            if on_step is not None:
                rollout = on_step(rollout, now)
            now += STEP
        return rollout

    def batches(self) -> list[list[str]]:
        """The nodes granted by each plan that granted any, in order."""
        return [[a.node or "" for a in d.grants] for d in self.history if d.grants]

    def kinds(self, kind: Kind) -> list[str]:
        return [a.node or "" for d in self.history for a in d.actions if a.kind is kind]


def spec(**changes: object) -> RolloutSpec:
    base = RolloutSpec("compute", NEW, OLD, max_unavailable=2, health_timeout=300.0)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def begin(fleet: Fleet, **changes: object) -> Rollout:
    for node in fleet.nodes.values():
        node.tick(0.0)
    return start(spec(**changes), fleet.views(), 0.0, "r1", silent_after=SILENT_AFTER)


def states(rollout: Rollout) -> dict[str, str]:
    return {node: p.state.value for node, p in rollout.nodes.items()}


# -- whole rollouts ------------------------------------------------------------------------


def test_eight_nodes_two_at_a_time_go_in_batches_of_two() -> None:
    fleet = Fleet.of(8)
    rollout = fleet.run(begin(fleet), 0, 3000)
    assert fleet.batches() == [["n1", "n2"], ["n3", "n4"], ["n5", "n6"], ["n7", "n8"]]
    assert rollout.state is State.DONE
    assert set(states(rollout).values()) == {"done"}
    assert all(n.booted == NEW for n in fleet.nodes.values())
    assert [a.kind for a in fleet.history[-1].actions][-1] is Kind.COMPLETE
    assert sorted(fleet.kinds(Kind.RELEASE)) == sorted(fleet.nodes)
    assert not any(p.slot for p in rollout.nodes.values())


def test_grant_reasons_say_what_and_why() -> None:
    fleet = Fleet.of(3)
    first = plan(begin(fleet, canary=1), fleet.views(), 0.0, silent_after=SILENT_AFTER)
    [grant] = first.grants
    assert (grant.kind, grant.node, grant.image) == (Kind.GRANT, "n1", NEW)
    assert grant.reason == "canary: img-1 → img-2; 1 of 2 slots in use"


def test_a_failing_canary_pauses_and_nothing_else_is_granted() -> None:
    fleet = Fleet.of(8, n1={"bad": frozenset({NEW})})
    rollout = fleet.run(begin(fleet, canary=1), 0, 3000)
    assert fleet.batches() == [["n1"]]
    assert rollout.state is State.PAUSED
    assert rollout.nodes["n1"].state is NodeState.FAILED
    assert rollout.nodes["n1"].reason == "not done 300s after its grant: units not healthy"
    assert rollout.reason == "n1 failed while updating: paused for a person to look"
    assert rollout.nodes["n1"].slot  # it is out until someone looks
    assert all(n.booted == OLD for i, n in fleet.nodes.items() if i != "n1")


def test_canaries_go_first_and_alone_even_when_more_slots_are_free() -> None:
    fleet = Fleet.of(6, n1={"delay": 100.0})
    rollout = fleet.run(begin(fleet, canary=3), 0, 3000)
    batches = fleet.batches()
    assert batches[:2] == [["n1", "n2"], ["n3"]]  # 3 canaries through 2 slots
    first_other = next(
        i for i, d in enumerate(fleet.history) if {"n4", "n5", "n6"} & {a.node for a in d.grants}
    )
    done_before = {
        a.node for d in fleet.history[: first_other + 1] for a in d.actions if a.kind is Kind.DONE
    }
    assert {"n1", "n2", "n3"} <= done_before
    assert rollout.state is State.DONE


def test_auto_rollback_returns_the_touched_nodes_to_the_previous_image() -> None:
    fleet = Fleet.of(6, n2={"bad": frozenset({NEW})})
    rollout = fleet.run(begin(fleet, canary=2, auto_rollback=True), 0, 5000)
    assert rollout.state is State.ROLLED_BACK
    assert states(rollout) == {
        "n1": "reverted",
        "n2": "reverted",
        "n3": "pending",
        "n4": "pending",
        "n5": "pending",
        "n6": "pending",
    }
    assert all(n.booted == OLD for n in fleet.nodes.values())
    assert fleet.kinds(Kind.ROLL_BACK) == [""]
    # n2 goes back in the slot it holds, n1 (done, slot released) takes the other one
    assert fleet.batches() == [["n1", "n2"], ["n1", "n2"]]
    back_n1, back_n2 = [d for d in fleet.history if d.grants][1].grants
    assert back_n1.reason == "rolling back (done on img-2); 2 of 2 slots in use"
    assert back_n2.reason == "rolling back (failed on img-2), in the slot it holds"
    assert rollout.reason == "every node the rollout touched runs img-1 again"


def test_auto_rollback_takes_back_done_and_in_flight_nodes_within_the_limit() -> None:
    fleet = Fleet.of(6, n3={"bad": frozenset({NEW})})
    rollout = fleet.run(begin(fleet, auto_rollback=True), 0, 5000)
    assert rollout.state is State.ROLLED_BACK
    assert set(states(rollout).values()) == {"reverted"}  # n4-n6 went by n3's free slot
    assert all(n.booted == OLD for n in fleet.nodes.values())
    assert sorted(fleet.kinds(Kind.ROLLBACK_NODE)) == sorted(fleet.nodes)
    for decision in fleet.history:
        assert sum(p.slot for p in decision.rollout.nodes.values()) <= 2


def test_without_auto_rollback_an_operator_rolls_back_a_finished_rollout() -> None:
    fleet = Fleet.of(3)
    rollout = fleet.run(begin(fleet), 0, 3000)
    assert rollout.state is State.DONE
    rollout = fleet.run(rollback(rollout), 3000, 6000)
    assert rollout.state is State.ROLLED_BACK
    assert set(states(rollout).values()) == {"reverted"}
    assert all(n.booted == OLD for n in fleet.nodes.values())


def test_a_failure_while_rolling_back_pauses() -> None:
    fleet = Fleet.of(2, n1={"bad": frozenset({NEW})}, n2={"bad": frozenset({NEW, OLD})})
    rollout = fleet.run(begin(fleet, auto_rollback=True), 0, 5000)
    assert rollout.state is State.PAUSED
    assert rollout.reverting
    assert rollout.nodes["n1"].state is NodeState.REVERTED
    assert rollout.nodes["n2"].state is NodeState.FAILED
    assert rollout.nodes["n2"].image == OLD
    assert "failed while rolling back" in rollout.reason


def test_rolling_back_again_retries_a_failed_rollback_first() -> None:
    fleet = Fleet.of(2, n2={"bad": frozenset({NEW, OLD})})
    rollout = fleet.run(begin(fleet, max_unavailable=1, auto_rollback=True), 0, 5000)
    assert rollout.state is State.PAUSED
    assert states(rollout) == {"n1": "done", "n2": "failed"}  # n2 holds the only slot
    fleet.nodes["n2"].bad = frozenset()  # someone fixed it
    rollout = fleet.run(rollback(rollout), 5000, 8000)
    assert rollout.state is State.ROLLED_BACK
    assert set(states(rollout).values()) == {"reverted"}
    last_two = [d.grants for d in fleet.history if d.grants][-2:]
    assert [[a.node for a in grants] for grants in last_two] == [["n2"], ["n1"]]
    assert last_two[0][0].reason == "rolling back (failed on img-1), in the slot it holds"


def test_pause_grants_nothing_new_but_records_nodes_finishing() -> None:
    fleet = Fleet.of(4)
    rollout = fleet.step(begin(fleet), 0.0)  # n1, n2 granted
    rollout = pause(rollout)
    rollout = fleet.run(rollout, STEP, 1000)
    assert fleet.batches() == [["n1", "n2"]]
    assert rollout.state is State.PAUSED
    assert states(rollout) == {"n1": "done", "n2": "done", "n3": "pending", "n4": "pending"}
    assert sorted(fleet.kinds(Kind.RELEASE)) == ["n1", "n2"]
    rollout = fleet.run(resume(rollout, 1000.0), 1000, 3000)
    assert fleet.batches() == [["n1", "n2"], ["n3", "n4"]]
    assert rollout.state is State.DONE


def test_abort_stops_granting_and_leaves_nodes_where_they_are() -> None:
    fleet = Fleet.of(6)
    rollout = abort(fleet.step(begin(fleet), 0.0))
    rollout = fleet.run(rollout, STEP, 2000)
    assert rollout.state is State.ABORTED
    assert fleet.batches() == [["n1", "n2"]]
    assert states(rollout) == {
        "n1": "done",
        "n2": "done",
        "n3": "pending",
        "n4": "pending",
        "n5": "pending",
        "n6": "pending",
    }
    assert [n.booted for n in fleet.nodes.values()] == [NEW, NEW, OLD, OLD, OLD, OLD]


def test_an_aborted_rollout_gives_back_the_slots_of_failed_nodes() -> None:
    fleet = Fleet.of(3, n1={"bad": frozenset({NEW})})
    rollout = fleet.run(begin(fleet), 0, 2000)
    assert rollout.state is State.PAUSED and rollout.nodes["n1"].slot
    decision = plan(abort(rollout), fleet.views(), 2010.0, silent_after=SILENT_AFTER)
    assert [(a.kind, a.node) for a in decision.actions] == [(Kind.RELEASE, "n1")]
    assert not decision.rollout.nodes["n1"].slot


def test_a_node_that_never_comes_back_fails_at_its_deadline() -> None:
    fleet = Fleet.of(4, n2={"gone": True})
    rollout = fleet.run(begin(fleet), 0, 3000)
    assert rollout.state is State.PAUSED
    assert rollout.nodes["n2"].state is NodeState.FAILED
    assert rollout.nodes["n2"].reason == "not done 300s after its grant: silent since 0"
    failed_at = next(
        i for i, d in enumerate(fleet.history) if Kind.FAILED in {a.kind for a in d.actions}
    )
    assert failed_at * STEP > 300  # not before its deadline
    assert fleet.batches() == [["n1", "n2"], ["n3"], ["n4"]]  # n2 held its slot meanwhile


def test_resume_gives_failed_nodes_another_try() -> None:
    fleet = Fleet.of(2, n1={"bad": frozenset({NEW})})
    rollout = fleet.run(begin(fleet, canary=1), 0, 2000)
    assert rollout.state is State.PAUSED
    fleet.nodes["n1"].bad = frozenset()  # someone fixed it
    rollout = fleet.run(resume(rollout, 2000.0), 2000, 4000)
    assert rollout.state is State.DONE
    assert fleet.batches() == [["n1"], ["n2"]]


def test_silent_nodes_count_as_unavailable() -> None:
    fleet = Fleet.of(4, n3={"quiet": ((0.0, 1e9),)})
    for node in fleet.nodes.values():
        node.tick(100.0)
    rollout = start(spec(), fleet.views(), 100.0, "r1", silent_after=SILENT_AFTER)
    first = plan(rollout, fleet.views(), 100.0, silent_after=SILENT_AFTER)
    # n3 is out already: one live node goes; n3 takes the other slot, which costs nothing
    assert [a.node for a in first.grants] == ["n1", "n3"]
    assert first.grants[1].reason.endswith("; silent, out already")


def test_nodes_missing_from_the_observation_are_silent() -> None:
    fleet = Fleet.of(3)
    rollout = begin(fleet)
    decision = plan(rollout, [v for v in fleet.views() if v.id != "n1"], 0.0)
    assert [a.node for a in decision.grants] == ["n1", "n2"]  # n1 for free, n2 is the one out
    assert decision.grants[0].reason.endswith("silent, out already")


def test_a_node_already_on_the_target_is_done_without_a_slot() -> None:
    fleet = Fleet.of(3)
    fleet.nodes["n2"].booted = fleet.nodes["n2"].assigned = NEW
    rollout = fleet.run(begin(fleet), 0, 2000)
    assert rollout.state is State.DONE
    assert fleet.batches() == [["n1", "n3"]]


def test_a_refused_grant_puts_the_node_back() -> None:
    fleet = Fleet.of(3)
    before = begin(fleet)
    decision = plan(before, fleet.views(), 0.0)
    after = grant_refused(decision.rollout, before, "n2")
    assert after.nodes["n2"] == before.nodes["n2"]
    again = plan(after, fleet.views(), 10.0)
    assert [a.node for a in again.grants] == ["n2"]


def test_an_empty_role_completes_at_once() -> None:
    decision = plan(start(spec(), [], 0.0), [], 0.0)
    assert decision.rollout.state is State.DONE


def test_plan_does_not_change_its_input() -> None:
    fleet = Fleet.of(4)
    rollout = begin(fleet)
    copy = dataclasses.replace(rollout, nodes=dict(rollout.nodes))
    plan(rollout, fleet.views(), 0.0)
    assert rollout == copy


# -- specs and commands --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "nodes", "limit"),
    [
        (2, 8, 2),
        (1, 1, 1),
        (5, 3, 5),
        ("25%", 8, 2),
        ("25%", 10, 2),
        ("25%", 3, 1),
        ("100%", 4, 4),
        ("50%", 5, 2),
        ("1%", 0, 1),
    ],
)
def test_max_unavailable_resolves_against_the_node_count(
    value: int | str, nodes: int, limit: int
) -> None:
    assert resolve_max_unavailable(value, nodes) == limit


def test_percentage_max_unavailable_runs_that_many_at_once() -> None:
    fleet = Fleet.of(8)
    rollout = fleet.run(begin(fleet, max_unavailable="50%"), 0, 2000)
    assert rollout.max_unavailable == 4
    assert fleet.batches() == [["n1", "n2", "n3", "n4"], ["n5", "n6", "n7", "n8"]]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_unavailable": 0}, "max_unavailable: must be 1 to 100000, got 0"),
        ({"max_unavailable": "0%"}, "max_unavailable: '0%' is not a count like 2 or a"),
        ({"max_unavailable": "150%"}, "'150%' is not a count"),
        ({"max_unavailable": " 50 % "}, "' 50 % ' is not a count"),
        ({"max_unavailable": "two"}, "'two' is not a count"),
        ({"max_unavailable": True}, "max_unavailable: expected a count .* the boolean true"),
        ({"canary": -1}, "canary: must be 0 to 100000"),
        ({"health_timeout": 0.0}, "health_timeout: must be a positive number of seconds"),
        ({"health_timeout": float("nan")}, "health_timeout: must be a positive number"),
        ({"target_image": OLD}, "target image img-1 is the previous image already"),
    ],
)
def test_bad_specs_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(RolloutError, match=message):
        start(spec(**changes), [], 0.0)


def test_canaries_are_chosen_among_the_nodes_heard_from() -> None:
    views = [
        NodeView("a", OLD, last_seen=-1000.0),
        NodeView("b", OLD, last_seen=0.0),
        NodeView("c", OLD, last_seen=0.0),
    ]
    assert start(spec(canary=1), views, 0.0).canaries == ("b",)
    assert start(spec(canary=3), views, 0.0).canaries == ("a", "b", "c")


COMMANDS: list[tuple[Callable[[Rollout], Rollout], Sequence[State]]] = [
    (pause, (State.RUNNING, State.ROLLING_BACK)),
    (lambda r: resume(r, 0.0), (State.PAUSED,)),
    (abort, (State.RUNNING, State.PAUSED, State.ROLLING_BACK)),
    (rollback, (State.RUNNING, State.PAUSED, State.ABORTED, State.DONE)),
]


@pytest.mark.parametrize(("command", "allowed"), COMMANDS)
def test_commands_apply_only_in_their_states(
    command: Callable[[Rollout], Rollout], allowed: Sequence[State]
) -> None:
    base = start(spec(), [NodeView("a", OLD, last_seen=0.0)], 0.0)
    for state in State:
        rollout = dataclasses.replace(base, state=state)
        if state in allowed:
            assert command(rollout).state is not state or state is State.PAUSED
        else:
            with pytest.raises(RolloutError, match=f"a rollout that is {state.value}"):
                command(rollout)


def test_a_paused_rollback_resumes_rolling_back() -> None:
    rollout = rollback(start(spec(), [], 0.0))
    assert resume(pause(rollout), 1.0).state is State.ROLLING_BACK


# -- the JSON form -------------------------------------------------------------------------


def test_every_rollout_value_survives_its_json_form() -> None:
    fleet = Fleet.of(4, n2={"bad": frozenset({NEW})}, n3={"quiet": ((0.0, 50.0),)})
    fleet.run(begin(fleet, canary=1, max_unavailable="50%", auto_rollback=True), 0, 5000)
    seen = {d.rollout.state for d in fleet.history}
    assert {State.RUNNING, State.ROLLING_BACK, State.ROLLED_BACK} <= seen
    for decision in fleet.history:
        data = json.loads(json.dumps(decision.rollout.to_json()))
        assert Rollout.from_json(data) == decision.rollout


def test_the_json_form_holds_what_the_fleetlock_endpoint_reads() -> None:
    data = start(spec(max_unavailable="50%"), Fleet.of(6).views(), 0.0, "r1").to_json()
    assert (data["state"], data["max_unavailable"]) == ("running", 3)
    assert data["spec"]["max_unavailable"] == "50%"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("id"), "id: missing"),
        (lambda d: d.update(state="sleeping"), "state: unknown 'sleeping' \\(one of running, "),
        (lambda d: d.update(max_unavailable="2"), "max_unavailable: expected int, got str"),
        (lambda d: d.update(max_unavailable=True), "max_unavailable: expected int, got bool"),
        (lambda d: d.update(canaries=[1]), "canaries: expected a list of node ids"),
        (lambda d: d.update(nodes=[]), "nodes: expected a JSON object, got list"),
        (lambda d: d["nodes"].update(n1={"slot": "yes"}), "slot: expected bool, got str"),
        (
            lambda d: d["nodes"].update(n1={"granted_at": "now"}),
            "granted_at: expected int or float or null, got str",
        ),
        (lambda d: d["spec"].update(canary=None), "canary: expected int, got NoneType"),
        (lambda d: d.update(spec="x"), "rollout spec: expected a JSON object, got str"),
    ],
)
def test_a_stored_rollout_of_the_wrong_shape_is_refused(
    change: Callable[[dict[str, Any]], object], message: str
) -> None:
    data = start(spec(), Fleet.of(2).views(), 0.0, "r1").to_json()
    change(data)
    with pytest.raises(RecordError, match=message):
        Rollout.from_json(data)


# -- the property: bounded unavailability, and always an end --------------------------------

HEALTH_TIMEOUT = 300.0


@st.composite
def fleets(draw: st.DrawFn) -> tuple[Fleet, RolloutSpec]:
    count = draw(st.integers(1, 10))
    nodes = {}
    for n in range(1, count + 1):
        quiet = draw(st.lists(st.tuples(st.floats(0, 3000), st.floats(1, 400)), max_size=2))
        nodes[f"n{n}"] = SimNode(
            f"n{n}",
            delay=draw(st.floats(1, 250)),
            bad=draw(
                st.sampled_from(
                    [frozenset(), frozenset(), frozenset(), frozenset({NEW}), frozenset({OLD, NEW})]
                )
            ),
            gone=draw(st.integers(0, 9)) == 0,
            quiet=tuple((a, a + d) for a, d in quiet),
        )
    limit = draw(st.one_of(st.integers(1, 4), st.sampled_from(["10%", "34%", "50%"])))
    rollout_spec = spec(
        max_unavailable=limit,
        canary=draw(st.integers(0, 3)),
        auto_rollback=draw(st.booleans()),
        health_timeout=HEALTH_TIMEOUT,
    )
    return Fleet(nodes), rollout_spec


def out_now(fleet: Fleet, rollout: Rollout, now: float) -> set[str]:
    """Nodes out of service as the planner must count them: holding a slot, or silent."""
    silent = {i for i, n in fleet.nodes.items() if now - n.last_seen > SILENT_AFTER}
    return {i for i, p in rollout.nodes.items() if p.slot} | silent


def check_step(fleet: Fleet, before: Rollout, decision: Decision, now: float) -> None:
    after, limit = decision.rollout, decision.rollout.max_unavailable
    slotted = [i for i, p in after.nodes.items() if p.slot]
    assert len(slotted) <= limit, f"{slotted} hold slots, limit {limit}"
    rebooting = {i for i, n in fleet.nodes.items() if n.assigned != n.booted}
    failed = {i for i, p in after.nodes.items() if p.state is NodeState.FAILED}
    # an aborted rollout gives back failed nodes' slots: a node gone for good must not hold
    # its group's slot for ever; any other node reboots only in a slot
    assert rebooting <= set(slotted) | failed, f"{sorted(rebooting)} reboot without a slot"
    out = out_now(fleet, after, now)
    live = [
        a.node
        for a in decision.grants
        if not before.nodes[a.node or ""].slot
        and now - fleet.nodes[a.node or ""].last_seen <= SILENT_AFTER
    ]
    # a grant to a live node takes it out: only while the out ones leave room; a silent one
    # is out already and costs only a slot
    assert not live or len(out) <= limit, f"granted {live} with {sorted(out)} out, limit {limit}"
    if before.state not in GRANTING:
        assert not decision.grants, f"a {before.state.value} rollout granted"
    forward = {a.node for a in decision.grants if a.kind is Kind.GRANT}
    if forward - set(after.canaries):
        assert all(after.nodes[c].state is NodeState.DONE for c in after.canaries), (
            f"granted {sorted(forward - set(after.canaries))} before the canaries were done"
        )


COMMANDS_BY_NAME: dict[str, Callable[[Rollout, float], Rollout]] = {
    "pause": lambda r, now: pause(r),
    "resume": resume,
    "abort": lambda r, now: abort(r),
    "rollback": lambda r, now: rollback(r),
}


@st.composite
def operators(draw: st.DrawFn) -> list[tuple[float, str]]:
    """Commands an operator gives, at the times given: a pause and a resume, an abort, a
    rollback, each maybe."""
    commands = []
    if draw(st.booleans()):
        at = draw(st.floats(0, 2000))
        commands += [(at, "pause"), (at + draw(st.floats(10, 500)), "resume")]
    if draw(st.integers(0, 3)) == 0:
        commands.append((draw(st.floats(0, 4000)), "abort"))
    if draw(st.integers(0, 5)) == 0:
        commands.append((draw(st.floats(0, 4000)), "rollback"))
    return sorted(commands)


def give(rollout: Rollout, command: str, now: float) -> Rollout:
    """An operator's command, when the rollout is in a state it applies to."""
    try:
        return COMMANDS_BY_NAME[command](rollout, now)
    except RolloutError:
        return rollout


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets(), operators())
def test_rollouts_stay_within_max_unavailable_and_always_end(
    drawn: tuple[Fleet, RolloutSpec], commands: list[tuple[float, str]]
) -> None:
    fleet, rollout_spec = drawn
    for node in fleet.nodes.values():
        node.tick(0.0)
    rollout = start(rollout_spec, fleet.views(), 0.0, "r1", silent_after=SILENT_AFTER)
    quiet_end = max((b for n in fleet.nodes.values() for _, b in n.quiet), default=0.0)
    last_command = max((at for at, _ in commands), default=0.0)
    # once silences and commands are over: what is in flight ends within a deadline, then
    # each node waits at most one deadline going forward and one coming back
    bound = (
        max(quiet_end, last_command)
        + (2 * len(fleet.nodes) + 1) * (HEALTH_TIMEOUT + 2 * STEP)
        + 10 * STEP
    )
    now = 0.0
    while rollout.state in GRANTING or commands:
        assert now <= bound, f"no end by {bound:.0f}s: {rollout.state.value} {states(rollout)}"
        while commands and commands[0][0] <= now:
            rollout = give(rollout, commands.pop(0)[1], now)
        before = rollout
        rollout = fleet.step(rollout, now)
        check_step(fleet, before, fleet.history[-1], now)
        now += STEP
    assert rollout.state in (State.DONE, State.ROLLED_BACK, State.PAUSED, State.ABORTED)
    if rollout.state is State.PAUSED:
        assert rollout.count(NodeState.FAILED) > 0, "paused with no failure"
    if rollout.state is State.DONE:
        assert all(fleet.nodes[i].booted == NEW for i in rollout.nodes)
    if rollout.state is State.ROLLED_BACK:
        assert all(fleet.nodes[i].booted == OLD for i in rollout.nodes)
