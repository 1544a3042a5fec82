"""The cluster bench's figures from the agents' records, and its section's tables."""

from __future__ import annotations

from bench.cluster.report import figures, targets
from bench.cluster.results import (
    DrainRollout,
    Options,
    Rollout,
    StoreRun,
    busy_before_idle,
    drain_figures,
    handovers,
    idle_first,
    max_out,
)
from bench.report import TIMES

OPTS = Options(
    agents=40,
    heartbeat=2.0,
    wait=10.0,
    reboot=0.5,
    rollout_nodes=4,
    slots=2,
    big_rollout_slots=0,
    generators=2,
    steady=3.0,
    saturate=2.0,
    saturate_concurrency=8,
    publishes=2,
    phase_timeout=30.0,
    heartbeat_rate=200.0,
    drain_jobs=0.3,
    drain_interval=0.25,
    drain_reboot=0.0,
    job_seed=1,
)


def test_max_out_counts_agents_between_pre_reboot_and_steady_state() -> None:
    reboots = [
        {"locked": 0.0, "steady": 2.0},
        {"locked": 1.0, "steady": 3.0},
        {"locked": 2.0, "steady": 4.0},  # starts as the first ends: never three at once
        {"locked": 5.0},  # never came back: not counted
    ]
    assert max_out(reboots) == 2


def test_a_handover_runs_from_a_steady_state_to_the_next_node_told() -> None:
    reboots = [
        {"told": 0.0, "steady": 2.0},
        {"told": 0.0, "steady": 3.0},
        {"told": 2.25, "steady": 5.0},
        {"told": 3.5, "steady": 6.0},
    ]
    assert handovers(reboots, slots=2) == [0.25, 0.5]


def test_idle_first_compares_nodes_drained_idle_with_those_drained_busy() -> None:
    ends = {"b1": 10.0, "b2": 3.0}  # b2's job ended before its drain: idle by then
    drained = {"i1": 0.0, "i2": 0.0, "b2": 4.0, "b1": 5.0}
    assert idle_first({"i1": 2.0, "i2": 2.0, "b2": 6.0, "b1": 12.0}, drained, ends) == (
        1,
        True,
    )
    assert idle_first({"i1": 2.0, "i2": 13.0, "b2": 6.0, "b1": 12.0}, drained, ends) == (
        1,
        False,
    )
    assert idle_first({"i1": 2.0}, {"i1": 0.0}, {}) == (0, True)  # nobody drained busy


def test_busy_before_idle_counts_the_nodes_with_a_job_done_early() -> None:
    ends = {"b1": 10.0, "b2": 3.0}
    assert busy_before_idle({"i1": 2.0, "i2": 7.0, "b2": 6.0, "b1": 12.0}, ends) == 1
    assert busy_before_idle({"i1": 2.0, "b2": 6.0}, ends) == 0


def test_drain_figures_count_a_node_rebooted_undrained_as_taken_at_its_pre_reboot() -> None:
    rollout = Rollout(3, 1, 6.0, 5.0, "done", 1, 3)
    reboots = [
        {"id": "i1", "locked": 1.0, "steady": 2.0, "job_left": 0.0},
        {"id": "b1", "locked": 2.0, "steady": 3.0, "job_left": 2.0},  # never drained
        {"id": "i2", "locked": 3.0, "steady": 4.0, "job_left": 0.0},
    ]
    figures = drain_figures(rollout, reboots, {"i1": 0.5, "i2": 2.5}, {"b1": 4.0}, start=0.0)
    assert (figures.busy, figures.longest_job, figures.interrupted) == (1, 4.0, 1)
    assert (figures.drained_busy, figures.idle_first, figures.busy_before_idle) == (1, False, 1)
    assert figures.drain_wait == 0.5


def run(store: str, errors: int = 0) -> StoreRun:
    result = StoreRun(store, 1, 40, fanouts=[[0.1] * 40, [0.2] * 40])
    result.rollouts.append(Rollout(4, 2, 1.05, 1.0, "done", 2, 4))
    result.errors["heartbeat: no answer"] = errors
    return result


def test_targets_say_which_are_met() -> None:
    rows = targets([run("sqlite"), run("etcd", errors=3)])
    assert rows[2] == "| SQLite, 1 server, 40 agents | fan-out p99 ≤ 2 s | 0.200 s | yes |"
    assert rows[3].endswith(f"| 1.1 s = 1.05{TIMES} | yes |")
    assert rows[-1] == "| etcd, 2 replicas, 40 agents | zero errors | 3 | **NO** |"


def test_figures_have_a_column_per_run_and_a_row_per_publish_and_rollout() -> None:
    rows = figures([run("sqlite"), run("etcd")], OPTS)
    assert rows[0] == "| | SQLite, 1 server, 40 agents | etcd, 2 replicas, 40 agents |"
    assert all(row.count(" | ") == 2 for row in rows[2:]), rows
    labels = [row.split(" | ")[0].removeprefix("| ") for row in rows[2:]]
    assert labels[:2] == [
        "agents (load-generator processes)",
        "all agents up (first heartbeat and config answered)",
    ]
    assert sum(label.startswith("fan-out, publish") for label in labels) == 2
    assert "rollout N=4 S=2: wall / bound" in labels
    assert labels[-1] == "1-minute load average: at the start / the most seen"


def test_a_drain_rollout_has_three_targets_and_its_rows() -> None:
    result = run("sqlite")
    rollout = Rollout(4, 2, 1.2, 1.0, "done", 2, 4)
    result.drain_rollouts.append(DrainRollout(rollout, 1, 0.4, 0, 0, True, 1, 0.3))
    rows = targets([result])
    assert rows[-4].endswith(f"longest job + reboot) = 1.0 s | 1.2 s = 1.20{TIMES} | **NO** |")
    assert rows[-3].endswith("with a job: zero jobs interrupted | 0 | yes |")
    assert rows[-2].endswith(
        "idle nodes all done before the first busy one | yes: no node drained or rebooted with "
        "its job running | yes |"
    )
    labels = [row.split(" | ")[0] for row in figures([result], OPTS)]
    assert "| drain rollout N=4 S=2: wall / bound" in labels


def test_a_drain_rollout_not_done_is_an_error() -> None:
    result = run("sqlite")
    rollout = Rollout(4, 2, 9.0, 1.0, "paused", 2, 3)
    result.drain_rollouts.append(DrainRollout(rollout, 1, 0.4, 1, 1, False, 0))
    rows = targets([result])
    assert rows[-1].endswith("| zero errors | 1 | **NO** |")
    assert rows[-3].endswith("| 1 | **NO** |")
    assert rows[-2].endswith("| no: 1 drained or rebooted with their job running | **NO** |")
