"""The rollout planner with a drain: a simulated fleet whose nodes run jobs, a scheduler that
puts work only on nodes not drained, and a drainer that reports what it sees; tables of
rollouts, and a property test that no job is ever cut short by a reboot."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostos.cluster.records import RecordError
from hostos.cluster.rollout.plan import (
    FINAL,
    GRANTING,
    Decision,
    Kind,
    NodeProgress,
    NodeState,
    NodeView,
    Rollout,
    RolloutError,
    RolloutSpec,
    State,
    Workload,
    abort,
    pause,
    plan,
    resume,
    rollback,
    start,
)
from hostos.site.drain import Drain

OLD, NEW = "img-1", "img-2"
STEP = 10.0
REBOOT = 30.0
SLURM = Drain("slurm", timeout=3600.0)


@dataclass
class Node:
    """A node with jobs (their end times), the scheduler's drain flag and its reboot."""

    id: str
    jobs: list[float] = field(default_factory=list)
    drained: str = ""  # the scheduler's drain reason; "" = takes work
    booted: str = OLD
    assigned: str = OLD
    back_at: float | None = None
    bad: bool = False  # units never healthy on NEW
    cut: list[float] = field(default_factory=list)  # jobs a reboot killed

    def tick(self, now: float) -> None:
        self.jobs = [end for end in self.jobs if end > now]
        if self.back_at is None and self.assigned != self.booted:
            self.cut += self.jobs  # a reboot ends whatever runs
            self.jobs, self.back_at = [], now + REBOOT
        if self.back_at is not None and now >= self.back_at:
            self.booted, self.back_at = self.assigned, None

    def view(self, now: float, work: Workload) -> NodeView:
        up = self.back_at is None
        return NodeView(
            self.id,
            self.booted if up else None,
            steady=up,
            healthy=up and not (self.bad and self.booted == NEW),
            last_seen=now if up else now - 1000.0,
            workload=work,
        )


@dataclass
class Cluster:
    """The fleet, its scheduler and the server's drainer, stepped with the planner."""

    nodes: dict[str, Node]
    history: list[Decision] = field(default_factory=list)
    resumed: set[tuple[str, float | None]] = field(default_factory=set)
    broken_resume: bool = False  # the resume command fails

    @classmethod
    def of(cls, count: int, **special: dict[str, object]) -> Cluster:
        ids = [f"n{i}" for i in range(1, count + 1)]
        return cls({i: Node(i, **special.get(i, {})) for i in ids})  # type: ignore[arg-type]

    def submit(self, node: str, now: float, length: float) -> bool:
        """A job for node, as the scheduler places it: never on a drained node."""
        if self.nodes[node].drained or self.nodes[node].back_at is not None:
            return False
        self.nodes[node].jobs.append(now + length)
        return True

    def drainer(self, rollout: Rollout, now: float) -> dict[str, Workload]:
        """What the server's drainer does for each node and reports: drain the draining
        ones (not those someone else drained), resume the resuming ones."""
        seen = {}
        for i, node in self.nodes.items():
            progress = rollout.nodes[i]
            held = node.drained if node.drained and node.drained != rollout.id else ""
            drained = False
            if progress.state is NodeState.DRAINING:
                if not progress.held:
                    node.drained = rollout.id
                drained = True
            resumed = (i, progress.granted_at) in self.resumed
            if progress.state is NodeState.RESUMING and not self.broken_resume:
                if node.drained == rollout.id:
                    node.drained = ""
                self.resumed.add((i, progress.granted_at))
                resumed = True
            work = Workload(len(node.jobs), drained, held, resumed)
            seen[i] = work
        return seen

    def step(self, rollout: Rollout, now: float) -> Rollout:
        for node in self.nodes.values():
            node.tick(now)
        work = self.drainer(rollout, now)
        views = [n.view(now, work[i]) for i, n in self.nodes.items()]
        decision = plan(rollout, views, now, silent_after=60.0)
        for action in decision.grants:
            assert action.node is not None and action.image is not None
            self.nodes[action.node].assigned = action.image
        self.history.append(decision)
        return decision.rollout

    def run(
        self,
        rollout: Rollout,
        until: float,
        on_step: Callable[[Rollout, float], Rollout] | None = None,
    ) -> Rollout:
        now = 0.0
        while now <= until and rollout.state not in FINAL:
            rollout = self.step(rollout, now)
            if on_step is not None:
                rollout = on_step(rollout, now)
            now += STEP
        return rollout

    def first(self, kind: Kind, node: str | None) -> int:
        """The index of the first plan with an action of kind for node."""
        return next(
            i
            for i, d in enumerate(self.history)
            if any(a.kind is kind and a.node == node for a in d.actions)
        )

    def kinds(self, kind: Kind) -> list[str]:
        return [a.node or "" for d in self.history for a in d.actions if a.kind is kind]


def begin(cluster: Cluster, **changes: object) -> Rollout:
    base = RolloutSpec("compute", NEW, OLD, max_unavailable=1, health_timeout=600.0, drain=SLURM)
    views = [n.view(0.0, Workload()) for n in cluster.nodes.values()]
    return start(dataclasses.replace(base, **changes), views, 0.0, "r1")  # type: ignore[arg-type]


def states(rollout: Rollout) -> dict[str, str]:
    return {i: p.state.value for i, p in rollout.nodes.items()}


# -- tables --------------------------------------------------------------------------------


def test_idle_nodes_go_first_and_the_busy_one_after_its_job() -> None:
    cluster = Cluster.of(4, n1={"jobs": [300.0]})
    rollout = cluster.run(begin(cluster), 5000)
    assert rollout.state is State.DONE
    assert [cluster.kinds(Kind.DRAIN)] == [["n2", "n3", "n4", "n1"]]
    assert cluster.kinds(Kind.GRANT) == ["n2", "n3", "n4", "n1"]
    assert all(not n.cut for n in cluster.nodes.values())
    assert all(n.booted == NEW and not n.drained for n in cluster.nodes.values())
    # n1 was granted its image only once its job had ended
    grant_at = cluster.first(Kind.GRANT, "n1") * STEP
    assert grant_at >= 300.0


def test_a_drain_counts_against_max_unavailable_from_the_moment_it_is_asked() -> None:
    cluster = Cluster.of(3, n1={"jobs": [200.0]}, n2={"jobs": [200.0]}, n3={"jobs": [200.0]})
    rollout = begin(cluster, max_unavailable=2)
    for now in (0.0, 10.0, 20.0):
        rollout = cluster.step(rollout, now)
    assert states(rollout) == {"n1": "draining", "n2": "draining", "n3": "pending"}
    assert sum(p.slot for p in rollout.nodes.values()) == 2
    assert rollout.nodes["n1"].jobs == 1  # for `hostos rollout status`


def test_a_node_whose_jobs_were_not_counted_yet_waits() -> None:
    cluster = Cluster.of(2)
    rollout = begin(cluster)
    views = [n.view(0.0, Workload()) for n in cluster.nodes.values()]
    assert plan(rollout, views, 0.0).actions == ()


def test_the_grant_waits_for_the_drain_to_be_in_place() -> None:
    cluster = Cluster.of(1)
    rollout = cluster.step(begin(cluster), 0.0)
    assert rollout.nodes["n1"].state is NodeState.DRAINING
    counted_before = [cluster.nodes["n1"].view(10.0, Workload(jobs=0, drained=False))]
    assert not plan(rollout, counted_before, 10.0).grants
    counted_after = [cluster.nodes["n1"].view(10.0, Workload(jobs=0, drained=True))]
    [grant] = plan(rollout, counted_after, 10.0).grants
    assert (
        grant.reason
        == "next in order: img-1 → img-2; drained, no job running, in the slot it holds"
    )


def test_resume_comes_after_steady_and_healthy_and_keeps_the_slot_until_done() -> None:
    cluster = Cluster.of(1)
    cluster.broken_resume = True
    rollout = cluster.run(begin(cluster), 600)
    assert rollout.nodes["n1"].state is NodeState.RESUMING
    assert rollout.nodes["n1"].slot and rollout.state is State.RUNNING
    assert cluster.nodes["n1"].booted == NEW and cluster.nodes["n1"].drained == "r1"
    cluster.broken_resume = False
    rollout = cluster.run(rollout, 600)
    assert rollout.state is State.DONE and not cluster.nodes["n1"].drained


def test_an_unhealthy_node_is_not_resumed() -> None:
    cluster = Cluster.of(2, n1={"bad": True})
    rollout = cluster.run(begin(cluster), 5000)
    assert rollout.state is State.PAUSED
    assert rollout.nodes["n1"].state is NodeState.FAILED
    assert cluster.nodes["n1"].drained == "r1"  # stays out of the scheduler: broken
    assert "n1" not in cluster.kinds(Kind.RESUME)


def test_a_node_drained_by_an_admin_is_updated_but_left_drained() -> None:
    cluster = Cluster.of(2, n2={"drained": "bad DIMM"})
    rollout = cluster.run(begin(cluster), 5000)
    assert rollout.state is State.DONE
    assert cluster.nodes["n2"].booted == NEW
    assert cluster.nodes["n2"].drained == "bad DIMM"
    assert rollout.nodes["n2"].held == "bad DIMM"
    assert cluster.kinds(Kind.RESUME) == ["n1"]
    done = next(
        a for d in cluster.history for a in d.actions if a.kind is Kind.DONE and a.node == "n2"
    )
    assert done.reason == "booted img-2, steady and healthy; left drained (bad DIMM)"


def test_a_drain_that_times_out_pauses_the_rollout() -> None:
    cluster = Cluster.of(2, n1={"jobs": [1e9]}, n2={"jobs": [1e9]})
    rollout = cluster.run(begin(cluster, drain=Drain("slurm", timeout=100.0)), 1000)
    assert rollout.state is State.PAUSED
    assert rollout.nodes["n1"].state is NodeState.FAILED
    assert rollout.nodes["n1"].reason == "still draining 100s after it was asked: 1 job(s) left"
    assert rollout.nodes["n1"].slot  # drained, out until someone looks
    assert cluster.nodes["n1"].booted == OLD and not cluster.nodes["n1"].cut
    # resume: it drains again with a fresh deadline
    again = resume(rollout, 1000.0)
    assert again.nodes["n1"].state is NodeState.DRAINING
    assert again.nodes["n1"].granted_at == 1000.0


def test_abort_gives_back_the_nodes_drained_but_never_rebooted() -> None:
    cluster = Cluster.of(3, n1={"jobs": [1e9]}, n2={"jobs": [1e9]})
    rollout = begin(cluster, max_unavailable=2)
    for now in (0.0, 10.0):
        rollout = cluster.step(rollout, now)
    assert cluster.nodes["n3"].drained == "r1"  # idle: went first
    rollout = cluster.run(abort(rollout), 200)
    assert {i: p.state for i, p in rollout.nodes.items() if p.slot} == {}
    assert all(not n.drained for n in cluster.nodes.values())
    assert all(not n.cut for n in cluster.nodes.values())
    assert "returned" in [a.kind.value for d in cluster.history for a in d.actions]


def test_a_rollback_drains_the_nodes_that_were_given_back_before_it_reboots_them() -> None:
    cluster = Cluster.of(3, n3={"bad": True})
    rollout = cluster.run(begin(cluster, auto_rollback=True), 8000)
    assert rollout.state is State.ROLLED_BACK
    assert all(n.booted == OLD and not n.drained for n in cluster.nodes.values())
    assert all(not n.cut for n in cluster.nodes.values())
    # n1 was done and back in service: drained again before its rollback grant
    assert cluster.kinds(Kind.DRAIN).count("n1") == 2
    assert cluster.first(Kind.ROLLBACK_NODE, "n1") > cluster.first(Kind.ROLL_BACK, None)


def test_without_a_drain_nothing_changes() -> None:
    cluster = Cluster.of(2, n1={"jobs": [1e9]})
    rollout = cluster.run(begin(cluster, drain=None), 2000)
    assert rollout.state is State.DONE
    assert cluster.nodes["n1"].cut  # the job died: no drain was asked for
    assert not cluster.kinds(Kind.DRAIN) and not cluster.kinds(Kind.RESUME)


def test_the_spec_and_progress_keep_the_drain_in_their_json() -> None:
    spec = RolloutSpec("compute", NEW, OLD, drain=Drain("commands", ("d", "{node}"), ("c",)))
    assert RolloutSpec.from_json(spec.to_json()) == spec
    progress = NodeProgress(NodeState.DRAINING, None, 1.0, True, "", 3, "admin")
    assert NodeProgress.from_json(progress.to_json()) == progress
    with pytest.raises(RecordError, match="drain: command: the program"):
        RolloutSpec.from_json({**spec.to_json(), "drain": {"kind": "commands", "command": ["/x"]}})


# -- the property: no job is ever cut short -------------------------------------------------

COMMANDS: dict[str, Callable[[Rollout, float], Rollout]] = {
    "pause": lambda r, now: pause(r),
    "resume": resume,
    "abort": lambda r, now: abort(r),
    "rollback": lambda r, now: rollback(r),
}


@st.composite
def busy_clusters(draw: st.DrawFn) -> tuple[Cluster, int, list[tuple[float, str]]]:
    count = draw(st.integers(1, 7))
    special: dict[str, dict[str, object]] = {}
    for i in range(1, count + 1):
        node: dict[str, object] = {"jobs": draw(st.lists(st.floats(1, 3000), max_size=3))}
        if draw(st.integers(0, 5)) == 0:
            node["drained"] = "admin"
        if draw(st.integers(0, 6)) == 0:
            node["bad"] = True
        special[f"n{i}"] = node
    commands = []
    if draw(st.booleans()):
        at = draw(st.floats(0, 3000))
        commands += [(at, "pause"), (at + draw(st.floats(10, 500)), "resume")]
    for name in ("abort", "rollback"):
        if draw(st.integers(0, 4)) == 0:
            commands.append((draw(st.floats(0, 5000)), name))
    return Cluster.of(count, **special), draw(st.integers(1, 3)), sorted(commands)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(busy_clusters(), st.lists(st.tuples(st.integers(1, 7), st.floats(10, 2000)), max_size=8))
def test_no_job_is_cut_short_and_drains_stay_within_the_limit(
    drawn: tuple[Cluster, int, list[tuple[float, str]]], submits: list[tuple[int, float]]
) -> None:
    cluster, limit, commands = drawn
    admin = {i for i, n in cluster.nodes.items() if n.drained}
    rollout = begin(cluster, max_unavailable=limit, auto_rollback=len(commands) % 2 == 0)
    now = 0.0
    while rollout.state in GRANTING or commands:
        assert now < 40000, f"no end: {rollout.state.value} {states(rollout)}"
        while commands and commands[0][0] <= now:
            name = commands.pop(0)[1]
            with contextlib.suppress(RolloutError):
                rollout = COMMANDS[name](rollout, now)
        for number, length in submits:  # new work keeps arriving where the scheduler allows
            if f"n{number}" in cluster.nodes and int(now) % 500 == 0:
                cluster.submit(f"n{number}", now, length)
        rollout = cluster.step(rollout, now)
        assert sum(p.slot for p in rollout.nodes.values()) <= rollout.max_unavailable
        now += STEP
    for _ in range(100):  # what is in flight settles
        rollout = cluster.step(rollout, now)
        now += STEP
    assert all(not n.cut for n in cluster.nodes.values()), {
        i: n.cut for i, n in cluster.nodes.items() if n.cut
    }
    for i in admin:
        assert cluster.nodes[i].drained == "admin", f"{i}: the admin's drain was lost"
    if rollout.state in (State.DONE, State.ROLLED_BACK):
        assert not any(n.drained == rollout.id for n in cluster.nodes.values())
