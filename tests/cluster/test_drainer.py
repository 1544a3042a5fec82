"""The server's drainer, its bookkeeping with a fake command runner: a scheduler in memory
that answers scontrol, sinfo and squeue as Slurm prints them, or the generic form's hooks.
(test_drainer_hooks.py runs real hook scripts; test_drainer_slurm.py a real slurmctld.)"""

from __future__ import annotations

import dataclasses
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hostos.cluster.rollout.plan import (
    NodeProgress,
    NodeState,
    Rollout,
    RolloutSpec,
    State,
    Workload,
)
from hostos.cluster.server.drainer import Drainer, Runner, check_jobs, failure
from hostos.process import CommandFailed, CommandTimedOut
from hostos.site.drain import Drain

SLURM = Drain("slurm")
GENERIC = Drain("commands", ("sched-drain", "{node}", "{image}"), ("sched-jobs", "{node}"))
OURS = "hostos rollout r1"
PENDING, DRAINING, RESUMING = NodeState.PENDING, NodeState.DRAINING, NodeState.RESUMING


Result = subprocess.CompletedProcess[str]


def done(cmd: Sequence[str], code: int = 0, out: str = "", err: str = "") -> Result:
    return subprocess.CompletedProcess(list(cmd), code, out, err)


@dataclass
class FakeSlurm:
    """Nodes with a drain reason ("" = takes work) and jobs, answering like Slurm 22.05."""

    reasons: dict[str, str]
    jobs: dict[str, list[str]] = field(default_factory=dict)  # job id → its nodes
    calls: list[list[str]] = field(default_factory=list)
    broken: dict[str, Result | Exception] = field(default_factory=dict)  # program → answer
    away: set[str] = field(default_factory=set)  # nodes whose slurmd does not answer (`*`)

    def __call__(self, cmd: Sequence[str], *, limit: int) -> Result:
        self.calls.append(list(cmd))
        answer = self.broken.get(cmd[0])
        if isinstance(answer, Exception):
            raise answer
        if answer is not None:
            return answer
        if cmd[0] == "sinfo":
            return done(
                cmd,
                out="".join(
                    f"{n}|{self.state(n)}|{r or 'none'}\n" for n, r in self.reasons.items()
                ),
            )
        if cmd[0] == "squeue":
            return done(cmd, out="".join(f"{j}|{','.join(ns)}\n" for j, ns in self.jobs.items()))
        args = dict(a.split("=", 1) for a in cmd[2:])
        node = args["nodename"]
        if node not in self.reasons:
            return done(cmd, 1, err="slurm_update error: Invalid node name specified\n")
        self.reasons[node] = args["reason"] if args["state"] == "drain" else ""
        return done(cmd)

    def state(self, node: str) -> str:
        busy = any(node in ns for ns in self.jobs.values())
        star = "*" if node in self.away else ""
        if self.reasons[node]:
            return ("draining" if busy else "drained") + star
        return ("allocated" if busy else "idle") + star

    def ran(self, program: str, *more: str) -> list[list[str]]:
        return [c for c in self.calls if c[0] == program and all(m in c for m in more)]


def make(
    nodes: dict[str, NodeProgress],
    state: State = State.RUNNING,
    drain: Drain = SLURM,
    reverting: bool = False,
) -> Rollout:
    spec = RolloutSpec("compute", "img-2", "img-1", drain=drain)
    return Rollout("r1", spec, state, 1, (), nodes, 0.0, reverting)


def at(state: NodeState, granted_at: float | None = None, held: str = "") -> NodeProgress:
    return NodeProgress(state, None, granted_at, slot=state is not PENDING, held=held)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def drainer_for(
    runner: Runner, hooks: Path | None = None, clock: Clock | None = None
) -> tuple[Drainer, list[int]]:
    woken: list[int] = []
    made = Drainer(
        hooks, interval=5.0, wake=lambda: woken.append(1), clock=clock or Clock(), runner=runner
    )
    return made, woken


def step(drainer: Drainer, rollout: Rollout) -> dict[str, Workload]:
    drainer.follow([rollout])
    drainer.run_once()
    return drainer.workloads(rollout)


# -- slurm ---------------------------------------------------------------------------------


def test_a_drain_is_asked_once_per_phase_and_in_place_once_counted_after() -> None:
    slurm = FakeSlurm({"n1": "", "n2": ""}, {"7": ["n1"]})
    drainer, woken = drainer_for(slurm)
    pending = make({"n1": at(PENDING), "n2": at(PENDING)})
    assert drainer.workloads(pending) == {"n1": Workload(), "n2": Workload()}
    assert step(drainer, pending) == {"n1": Workload(jobs=1), "n2": Workload(jobs=0)}
    assert woken and not slurm.ran("scontrol")

    draining = make({"n1": at(DRAINING, 10.0), "n2": at(PENDING)})
    woken.clear()
    assert step(drainer, draining)["n1"] == Workload(jobs=1, drained=True)
    assert slurm.ran("scontrol") == [
        ["scontrol", "update", "nodename=n1", "state=drain", f"reason={OURS}"]
    ]
    assert slurm.reasons["n1"] == OURS and woken
    woken.clear()
    step(drainer, draining)
    assert len(slurm.ran("scontrol")) == 1 and not woken  # once per phase; nothing new
    del slurm.jobs["7"]
    assert step(drainer, draining)["n1"] == Workload(jobs=0, drained=True)
    assert woken

    # drained again later in the same rollout (a rollback): a new phase, asked again
    slurm.reasons["n1"] = ""
    again = make({"n1": at(DRAINING, 500.0), "n2": at(PENDING)})
    assert step(drainer, again)["n1"] == Workload(jobs=0, drained=True)
    assert len(slurm.ran("scontrol", "state=drain")) == 2


def test_a_count_from_before_the_drain_does_not_make_it_drained() -> None:
    slurm = FakeSlurm({"n1": ""})
    slurm.broken["scontrol"] = done(["scontrol"], 1, err="slurm_update error: Access denied\nmore")
    drainer, _ = drainer_for(slurm)
    draining = make({"n1": at(DRAINING, 10.0)})
    assert step(drainer, draining)["n1"] == Workload(
        jobs=0, error="scontrol: exit 1: slurm_update error: Access denied"
    )
    assert len(slurm.ran("scontrol")) == 1
    del slurm.broken["scontrol"]
    assert step(drainer, draining)["n1"] == Workload(jobs=0, drained=True)  # retried
    assert len(slurm.ran("scontrol")) == 2


def test_one_sinfo_and_one_squeue_per_pass_for_the_whole_rollout() -> None:
    slurm = FakeSlurm({f"n{i}": "" for i in range(1, 6)})
    drainer, _ = drainer_for(slurm)
    step(drainer, make({f"n{i}": at(PENDING) for i in range(1, 6)}))
    assert [c[0] for c in slurm.calls] == ["sinfo", "squeue"]


def test_slurm_counts_every_node_and_the_generic_form_those_the_planner_asks_for(
    hooks: Path,
) -> None:
    for state, counted in [
        (State.RUNNING, True),
        (State.ROLLING_BACK, True),
        (State.PAUSED, False),
        (State.ABORTED, False),
    ]:
        nodes = {"n1": at(PENDING), "n2": at(DRAINING, 1.0), "n3": at(NodeState.DONE)}
        drainer, _ = drainer_for(FakeSlurm({"n1": "", "n2": "", "n3": ""}))
        work = step(drainer, make(nodes, state))
        assert {n: w.jobs for n, w in work.items()} == {"n1": 0, "n2": 0, "n3": 0}
        drainer, _ = drainer_for(FakeHooks(), hooks)
        work = step(drainer, make(nodes, state, GENERIC))
        assert {n: w.jobs for n, w in work.items()} == {
            "n1": 0 if counted else None,
            "n2": 0,
            "n3": None,
        }


def test_nothing_runs_for_rollouts_not_followed() -> None:
    slurm = FakeSlurm({"n1": ""})
    drainer, _ = drainer_for(slurm)
    drainer.follow([make({"n1": at(DRAINING, 1.0)})])
    drainer.follow([])  # the replica no longer leads
    drainer.run_once()
    for rollout in (
        make({"n1": at(DRAINING, 1.0)}, State.DONE),
        dataclasses.replace(make({"n1": at(DRAINING, 1.0)}), spec=RolloutSpec("c", "b", "a")),
    ):
        step(drainer, rollout)
    assert slurm.calls == []
    # paused or aborted with nothing draining or resuming: no need to look
    for state in (State.PAUSED, State.ABORTED):
        step(drainer, make({"n1": at(PENDING), "n2": at(NodeState.DONE)}, state))
    assert slurm.calls == []


def test_a_node_drained_by_someone_else_is_held_and_never_drained_or_resumed_by_us() -> None:
    slurm = FakeSlurm({"n1": "bad DIMM", "n2": ""})
    drainer, _ = drainer_for(slurm)
    assert step(drainer, make({"n1": at(PENDING), "n2": at(PENDING)}))["n1"] == Workload(
        jobs=0, held="bad DIMM"
    )
    held = make({"n1": at(DRAINING, 10.0, held="bad DIMM"), "n2": at(PENDING)})
    assert step(drainer, held)["n1"] == Workload(jobs=0, drained=True, held="bad DIMM")
    assert not slurm.ran("scontrol")
    # drained by an admin after the planner asked, before the drainer did: left alone too
    slurm.reasons["n2"] = "cable"
    step(drainer, make({"n1": at(PENDING), "n2": at(PENDING)}))
    work = step(drainer, make({"n1": at(PENDING), "n2": at(DRAINING, 20.0)}))["n2"]
    assert work == Workload(jobs=0, drained=True, held="cable")
    assert not slurm.ran("scontrol") and slurm.reasons == {"n1": "bad DIMM", "n2": "cable"}


def test_resume_gives_back_only_our_own_drain() -> None:
    slurm = FakeSlurm({"n1": OURS, "n2": "admin again", "n3": "", "n4": OURS})
    drainer, _ = drainer_for(slurm)
    resuming = make({n: at(RESUMING, 50.0) for n in ("n1", "n2", "n3")} | {"n4": at(DRAINING, 1.0)})
    work = step(drainer, resuming)
    assert {n: w.resumed for n, w in work.items()} == {
        "n1": True,
        "n2": True,
        "n3": True,
        "n4": False,
    }
    assert slurm.ran("scontrol", "state=resume") == [
        ["scontrol", "update", "nodename=n1", "state=resume"]
    ]
    assert slurm.reasons == {"n1": "", "n2": "admin again", "n3": "", "n4": OURS}
    step(drainer, resuming)
    assert len(slurm.ran("scontrol", "state=resume")) == 1  # once per phase


def test_a_resume_waits_until_the_rebooted_nodes_slurmd_answers() -> None:
    slurm = FakeSlurm({"n1": OURS})
    slurm.away = {"n1"}
    drainer, _ = drainer_for(slurm)
    resuming = make({"n1": at(RESUMING, 50.0)})
    work = step(drainer, resuming)["n1"]
    assert not work.resumed and work.error == "resume: waiting for slurmd on n1 to answer"
    assert not slurm.ran("scontrol")
    slurm.away = set()
    assert step(drainer, resuming)["n1"] == Workload(jobs=0, resumed=True)
    assert slurm.reasons == {"n1": ""}


def test_a_failed_listing_leaves_the_jobs_unknown_and_resumes_nothing() -> None:
    slurm = FakeSlurm({"n1": "", "n2": OURS})
    slurm.broken["squeue"] = CommandTimedOut(["squeue"], "timed out after 60s")
    drainer, _ = drainer_for(slurm)
    work = step(drainer, make({"n1": at(PENDING), "n2": at(RESUMING, 5.0)}))
    assert work["n1"] == Workload(error="squeue: timed out after 60s")
    assert not work["n2"].resumed and not slurm.ran("scontrol")
    slurm.broken["squeue"] = CommandFailed(["squeue"], "more than 67108864 bytes of output")
    assert step(drainer, make({"n1": at(PENDING)}))["n1"].error == (
        "squeue: more than 67108864 bytes of output"
    )
    del slurm.broken["squeue"]
    assert step(drainer, make({"n1": at(PENDING)}))["n1"] == Workload(jobs=0)


def test_a_node_slurm_does_not_know_is_an_error() -> None:
    slurm = FakeSlurm({"n1": ""})
    drainer, _ = drainer_for(slurm)
    work = step(drainer, make({"n1": at(PENDING), "x9": at(DRAINING, 1.0)}))
    assert work["x9"] == Workload(
        error="scontrol: exit 1: slurm_update error: Invalid node name specified"
    )


def test_a_drain_someone_lifted_is_not_in_place() -> None:
    slurm = FakeSlurm({"n1": ""})
    drainer, _ = drainer_for(slurm)
    draining = make({"n1": at(DRAINING, 1.0)})
    assert step(drainer, draining)["n1"].drained
    slurm.reasons["n1"] = ""  # an admin resumed it: it takes work again
    assert step(drainer, draining)["n1"] == Workload(
        jobs=0, error="drain: Slurm shows n1 idle, no longer drained"
    )
    assert len(slurm.ran("scontrol")) == 1


# -- the generic form (hooks resolved in test_drainer_hooks.py) ----------------------------


@dataclass
class FakeHooks:
    """Answers per program and node: (exit status, stdout)."""

    answers: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    calls: list[list[str]] = field(default_factory=list)

    def __call__(self, cmd: Sequence[str], *, limit: int) -> Result:
        self.calls.append([cmd[0].rsplit("/", 1)[-1], *cmd[1:]])
        code, out = self.answers.get((cmd[0].rsplit("/", 1)[-1], cmd[1]), (0, ""))
        return done(cmd, code, out, "broken\n" if code > 1 else "")


@pytest.fixture
def hooks(tmp_path: Path) -> Path:
    root = tmp_path / "hooks"
    root.mkdir()
    for name in ("sched-drain", "sched-jobs", "sched-resume"):
        (root / name).write_text("#!/bin/sh\n")
        (root / name).chmod(0o755)
    return root


def test_the_generic_check_answers(hooks: Path) -> None:
    fake = FakeHooks(
        {
            ("sched-jobs", "n2"): (1, "3 jobs\n"),
            ("sched-jobs", "n3"): (1, ""),
            ("sched-jobs", "n4"): (2, ""),
        }
    )
    clock = Clock()
    drainer, _ = drainer_for(fake, hooks, clock)
    pending = make({f"n{i}": at(PENDING) for i in range(1, 5)}, drain=GENERIC)
    work = step(drainer, pending)
    assert {n: w.jobs for n, w in work.items()} == {"n1": 0, "n2": 3, "n3": 1, "n4": None}
    assert work["n4"].error == "sched-jobs: exit 2: broken"
    # each node at most once per interval, even when follow brings something new, but a
    # node just drained is counted at once: its grant waits on that count
    work = step(drainer, make({**pending.nodes, "n1": at(DRAINING, 3.0)}, drain=GENERIC))
    assert [c[0] for c in fake.calls].count("sched-jobs") == 5
    assert fake.calls[-2:] == [["sched-drain", "n1", "img-2"], ["sched-jobs", "n1"]]
    assert work["n1"] == Workload(jobs=0, drained=True)
    work = step(drainer, make({**pending.nodes, "n1": at(DRAINING, 3.0)}, drain=GENERIC))
    assert [c[0] for c in fake.calls].count("sched-jobs") == 5
    clock.now += 5.0
    work = step(drainer, make({**pending.nodes, "n1": at(DRAINING, 3.0)}, drain=GENERIC))
    assert work["n1"] == Workload(jobs=0, drained=True)
    assert [c[0] for c in fake.calls].count("sched-jobs") == 9


def test_check_jobs_and_failure() -> None:
    assert check_jobs(done(["c"], 0, "5")) == 0
    assert check_jobs(done(["c"], 1, "left: 12 jobs, 3 steps")) == 12
    assert check_jobs(done(["c"], 1, "0")) == 1  # exit 1 says work is left
    assert check_jobs(done(["c"], 1, "9" * 40)) == 1_000_000
    assert check_jobs(done(["c"], 3, "0")) is None
    assert failure("x", done(["x"], 4, "out\n", "")) == "x: exit 4: out"
    assert failure("x", done(["x"], 4, "", "")) == "x: exit 4"
    assert failure("x", done(["x"], 4, "", "e" * 500)) == "x: exit 4: " + "e" * 200


def test_the_generic_form_runs_its_image_and_resume(hooks: Path) -> None:
    fake = FakeHooks()
    drainer, _ = drainer_for(fake, hooks)
    generic = dataclasses.replace(GENERIC, resume=("sched-resume", "{node}", "{image}"))
    reverting = make(
        {"n1": at(DRAINING, 3.0), "n2": at(RESUMING, 4.0)}, State.ROLLING_BACK, generic, True
    )
    work = step(drainer, reverting)
    assert ["sched-drain", "n1", "img-1"] in fake.calls  # the previous image: rolling back
    assert ["sched-resume", "n2", "img-1"] in fake.calls and work["n2"].resumed
    without = make({"n2": at(RESUMING, 4.0)}, drain=GENERIC)
    fake.calls.clear()
    assert step(drainer, without)["n2"].resumed and fake.calls == []


def test_without_a_hooks_directory_nothing_runs() -> None:
    fake = FakeHooks()
    drainer, _ = drainer_for(fake, None)
    work = step(drainer, make({"n1": at(DRAINING, 1.0), "n2": at(PENDING)}, drain=GENERIC))
    message = "no drain hooks directory (hostos serve --drain-hooks DIR)"
    assert work == {"n1": Workload(error=message), "n2": Workload(error=message)}
    assert fake.calls == []


def test_the_thread_passes_at_once_when_follow_brings_something_new() -> None:
    slurm = FakeSlurm({"n1": ""})
    woke = threading.Event()
    drainer = Drainer(None, interval=60.0, wake=woke.set, runner=slurm)
    drainer.start()
    try:
        time.sleep(0.1)  # the first pass, with nothing to follow, is over
        drainer.follow([make({"n1": at(PENDING)})])
        assert woke.wait(5)
        began = time.monotonic()
    finally:
        drainer.stop()
    assert time.monotonic() - began < 2
    assert [c[0] for c in slurm.calls] == ["sinfo", "squeue"]
