"""What a store's run measured (StoreRun, a Rollout each), the settings it ran with
(Options), and the rollout figures drawn from the agents' reboot records."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.report import percentile


@dataclass(frozen=True)
class Options:
    """The run's settings: the command line's options of the same names."""

    agents: int
    heartbeat: float
    wait: float
    reboot: float
    rollout_nodes: int
    slots: int
    big_rollout_slots: int
    generators: int
    steady: float
    saturate: float
    saturate_concurrency: int
    publishes: int
    phase_timeout: float
    heartbeat_rate: float
    drain_jobs: float  # the drain rollout's nodes with a job (0: no drain rollout)
    drain_interval: float  # the servers' --drain-interval
    drain_reboot: float  # a simulated reboot in the drain rollout (0: reboot's)
    job_seed: int  # which nodes run jobs, and how long

    @property
    def drain_reboot_time(self) -> float:
        """How long a simulated reboot takes in the drain rollout."""
        return self.drain_reboot or self.reboot


def max_out(reboots: Sequence[dict[str, Any]]) -> int:
    """The most agents out at once, from each one's pre-reboot answer to its steady-state
    request (inside the time the server counts it as holding a slot)."""
    events = []
    for record in reboots:
        if "steady" in record:
            events += [(record["locked"], 1), (record["steady"], -1)]
    out = most = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):
        out += step
        most = max(most, out)
    return most


def handovers(reboots: Sequence[dict[str, Any]], slots: int) -> list[float]:
    """Per freed slot, seconds from a steady-state request to the assignment reaching the
    next node (the controller seeing it, granting, the node's long-poll answered): the i-th
    steady-state frees the slot the (i + slots)-th assignment takes."""
    steady = sorted(r["steady"] for r in reboots if "steady" in r)
    told = sorted(r["told"] for r in reboots if "told" in r)
    return [t - s for s, t in zip(steady, told[slots:], strict=False)]


def spans(reboots: Sequence[dict[str, Any]], start: str, end: str) -> list[float]:
    return [r[end] - r[start] for r in reboots if start in r and end in r]


def busy_before_idle(done: Mapping[str, float], ends: Mapping[str, float]) -> int:
    """The nodes with a job (at the rollout's start) done before the last node without one."""
    last_idle = max((t for n, t in done.items() if n not in ends), default=float("-inf"))
    return sum(1 for n, t in done.items() if n in ends and t < last_idle)


def idle_first(
    done: Mapping[str, float], taken: Mapping[str, float], ends: Mapping[str, float]
) -> tuple[int, bool]:
    """The nodes taken (drained, or rebooted undrained) while their job still ran, and
    whether every node taken idle was done (done: per node, its steady-state) before the
    first of those was."""
    busy = {n for n, at in taken.items() if ends.get(n, 0.0) > at}
    idle_done = [t for n, t in done.items() if n not in busy]
    busy_done = [t for n, t in done.items() if n in busy]
    return len(busy), not busy_done or max(idle_done, default=0.0) <= min(busy_done)


@dataclass
class Rollout:
    nodes: int
    slots: int
    wall: float
    bound: float
    state: str
    max_out: int
    on_new_image: int
    handover: tuple[float, float] = (math.nan, math.nan)  # p50, max
    lock: float = math.nan  # p50 told → pre-reboot answered
    steady: float = math.nan  # p50 up → steady-state sent

    @property
    def ratio(self) -> float:
        return self.wall / self.bound if self.bound else math.nan


@dataclass
class DrainRollout:
    """A rollout whose role drains each node first; jobs on some of its nodes."""

    rollout: Rollout  # its bound: drain_bound's
    busy: int  # nodes with a job when the rollout started
    longest_job: float
    interrupted: int  # nodes rebooted while their job still ran
    drained_busy: int  # nodes drained while their job still ran
    idle_first: bool  # every node drained idle done before the first drained busy
    busy_before_idle: int  # nodes with a job done before the last node without one
    drain_wait: float = math.nan  # p50 drain hook run → pre-reboot answered

    @property
    def met(self) -> bool:
        return self.interrupted == 0 and self.idle_first


def drain_figures(
    rollout: Rollout,
    reboots: Sequence[dict[str, Any]],
    drained: Mapping[str, float],
    lengths: Mapping[str, float],
    start: float,
) -> DrainRollout:
    """A drain rollout's figures from the agents' reboot records, when the drain hook ran
    for each node, and the jobs (their lengths, all started at start: jobs.py); a node
    rebooted without a drain counts as taken at its pre-reboot."""
    ends = {node: start + length for node, length in lengths.items()}
    done = {r["id"]: float(r["steady"]) for r in reboots if "steady" in r}
    taken = {r["id"]: min(drained.get(r["id"], math.inf), r["locked"]) for r in reboots}
    drained_busy, first = idle_first(done, taken, ends)
    return DrainRollout(
        rollout,
        len(lengths),
        max(lengths.values(), default=0.0),
        sum(1 for r in reboots if r.get("job_left", 0.0) > 0),
        drained_busy,
        first,
        busy_before_idle(done, ends),
        percentile([r["locked"] - drained[r["id"]] for r in reboots if r["id"] in drained], 50),
    )


@dataclass
class StoreRun:
    store: str
    servers: int
    agents: int
    ready_seconds: float = 0.0
    interval: float = math.nan  # the heartbeat interval most agents were at (after pacing)
    offered: float = 0.0
    steady_rate: float = 0.0
    steady_latency: tuple[float, float] = (math.nan, math.nan)  # p50, p99
    capacity: float = 0.0
    capacity_latency: tuple[float, float] = (math.nan, math.nan)
    fanouts: list[list[float]] = field(default_factory=list)  # per publish, per agent
    missed: int = 0  # agents that never saw a published generation
    not_ready: int = 0  # agents whose first heartbeat and config never came back
    rollouts: list[Rollout] = field(default_factory=list)
    drain_rollouts: list[DrainRollout] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)
    connects: int = 0
    lock_waits: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0
    load: tuple[float, float] = (0.0, 0.0)  # 1-min load average at the start, the most seen
    kernel: dict[str, int] = field(default_factory=dict)  # TCP counters' growth in the run
    note: str = ""
