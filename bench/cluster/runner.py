"""One store's run: its servers started, the fleet set up through the admin API, the
agents started in their generator processes, then each phase measured in turn (heartbeats,
capacity, fan-out, rollouts) and what every process saw collected into a StoreRun."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from bench.cluster import jobs
from bench.cluster.fleet import (
    DRAIN_IMAGE,
    IMAGES,
    NEW_IMAGE,
    OLD_IMAGE,
    REST_ROLE,
    ROLLOUT_ROLE,
    node_ids,
    site,
)
from bench.cluster.load import Generator, ask
from bench.cluster.results import (
    Options,
    Rollout,
    StoreRun,
    drain_figures,
    handovers,
    max_out,
    spans,
)
from bench.cluster.servers import Serve, Servers
from bench.processes import Proc
from bench.procfs import file_limit, machine_cpu_seconds, open_files, tcp_counters
from bench.report import TIMES, percentile

log = logging.getLogger(__name__)


class Runner:
    def __init__(self, store: str, agents: int, opts: Options, tmp: Path) -> None:
        self.store, self.opts, self.tmp = store, opts, tmp
        self.agents = agents
        self.token = "admin-" + uuid.uuid4().hex
        self.servers: Servers | None = None
        self.generators: list[Generator] = []
        self.result = StoreRun(store, 1 if store == "sqlite" else 2, agents)
        self.loads: list[float] = []
        self.cpu0: dict[str, float] = {}
        # the drain rollout's hooks, what they leave behind and the jobs (jobs.py)
        self.hooks, self.drain_state, self.jobs = tmp / "hooks", tmp / "drain-state", tmp / "jobs"

    @property
    def procs(self) -> list[Proc]:
        """Every process of the run: etcd, the servers, the generators."""
        generators = [
            Proc(f"generator-{i}", g.process, Path(g.log.name))
            for i, g in enumerate(self.generators)
        ]
        return [*(self.servers.procs if self.servers else []), *generators]

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        try:
            yield
        finally:
            for generator in self.generators:
                generator.stop()
            if self.servers is not None:
                self.servers.stop()

    def sample_load(self) -> None:
        self.loads.append(os.getloadavg()[0])

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.sample_load()
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))

    def run(self) -> StoreRun:
        started, machine0, tcp0 = time.monotonic(), machine_cpu_seconds(), tcp_counters()
        self.result.load = (os.getloadavg()[0], 0.0)
        with self.running():
            self.servers = Servers(self.store, self.tmp, self.token, self.serve())
            self.cpu0 = {p.name: p.cpu_seconds() for p in self.procs}
            ids = node_ids(self.agents)
            self.start_agents(ids, self.setup(ids))
            if self.result.not_ready <= len(ids) // 10:
                self.measure(ids)
            else:
                self.result.note += "; so nothing else was measured"
            self.collect()
        self.result.wall = time.monotonic() - started
        self.result.cpu["all processes on the machine"] = machine_cpu_seconds() - machine0
        tcp1 = tcp_counters()
        self.result.kernel = {k: tcp1[k] - tcp0.get(k, 0) for k in tcp1}
        self.result.load = (self.result.load[0], max(self.loads, default=0.0))
        return self.result

    def serve(self) -> Serve:
        """How the servers are started; with the drain rollout's hooks written, if any."""
        serve = Serve(self.tmp / "admin-token", self.tmp / "images", self.opts.heartbeat_rate)
        if self.opts.drain_jobs <= 0:
            return serve
        jobs.write_hooks(self.hooks, self.drain_state, self.jobs)
        return dataclasses.replace(
            serve, drain_hooks=self.hooks, drain_interval=self.opts.drain_interval
        )

    def measure(self, ids: Sequence[str]) -> None:
        self.measure_beats()
        self.measure_fanout(ids)
        self.measure_rollout(ROLLOUT_ROLE, self.opts.rollout_nodes, self.opts.slots)
        if self.opts.big_rollout_slots and self.agents > self.opts.rollout_nodes:
            self.measure_rollout(
                REST_ROLE, self.agents - self.opts.rollout_nodes, self.opts.big_rollout_slots
            )
        if self.opts.drain_jobs > 0:
            self.measure_drain_rollout(ids)

    def admin(self, calls: Sequence[tuple[str, str, Any]], concurrency: int = 32) -> list[Any]:
        assert self.servers is not None
        return self.servers.admin(calls, concurrency)

    def setup(self, ids: Sequence[str]) -> list[str]:
        """The site, the images, every node's token and first assignment; the tokens."""
        begin = time.monotonic()
        self.admin([("POST", "/v1/site", site(ids, self.opts.rollout_nodes, 0))], 1)
        self.admin([("POST", f"/v1/images/{i}", None) for i in IMAGES], 1)
        issued = self.admin([("POST", f"/v1/tokens/nodes/{i}", None) for i in ids])
        self.admin([("PUT", f"/v1/nodes/{i}/assignment", {"image": OLD_IMAGE}) for i in ids])
        log.info(
            "%s: site, images, %d tokens and assignments in %.1f s",
            self.store,
            len(ids),
            time.monotonic() - begin,
        )
        return [str(doc["token"]) for doc in issued]

    def start_agents(self, ids: Sequence[str], tokens: Sequence[str]) -> None:
        """The generators started, their agents ramped up, then each agent's interval."""
        assert self.servers is not None
        count = max(1, min(self.opts.generators, len(ids)))
        servers = self.servers.urls
        for index in range(count):
            mine = [[ids[i], tokens[i], i % len(servers)] for i in range(index, len(ids), count)]
            config = {
                "heartbeat": self.opts.heartbeat,
                "wait": self.opts.wait,
                "reboot": self.opts.reboot,
                "servers": servers,
                "agents": mine,
                "jobs": str(self.jobs) if self.opts.drain_jobs > 0 else None,
            }
            self.generators.append(Generator(config, self.tmp / f"{self.store}-gen{index}.log"))
        begin = time.monotonic()
        ramp = min(self.opts.heartbeat, 20.0)
        ask(self.generators, op="start", ramp=ramp)
        self.wait_ready(len(ids), begin + ramp + self.opts.phase_timeout, ramp)
        self.result.ready_seconds = time.monotonic() - begin
        log.info("%s: %d agents up in %.1f s", self.store, len(ids), self.result.ready_seconds)
        self.sleep(min(self.opts.heartbeat, 15.0))  # every agent past its first beat
        intervals: Counter[float] = Counter()
        for reply in ask(self.generators, op="status"):
            intervals.update({float(k): n for k, n in reply["intervals"].items()})
        self.result.interval = intervals.most_common(1)[0][0] if intervals else math.nan
        self.result.offered = self.agents / self.result.interval
        log.info(
            "%s: agents beat every %g s (%s)", self.store, self.result.interval, dict(intervals)
        )

    def wait_ready(self, agents: int, deadline: float, ramp: float) -> None:
        """Until every agent had a heartbeat answered and its config; at the deadline, the
        ones that did not are counted and the servers' open files noted."""
        assert self.servers is not None
        while True:
            ready = sum(s["ready"] for s in ask(self.generators, op="status"))
            if ready == agents:
                return
            if time.monotonic() > deadline:
                break
            self.sleep(0.5)
        self.result.not_ready = agents - ready
        files = "; ".join(
            f"{s.name} had {open_files(s.pid)} files open, its limit {file_limit(s.pid)}"
            for s in self.servers.servers
        )
        self.result.note = (
            f"only {ready} of {agents} agents had a heartbeat answered and their config "
            f"within {ramp + self.opts.phase_timeout:.0f} s ({files})"
        )
        log.info("%s: %s", self.store, self.result.note)

    def beats(self, since: float, until: float) -> list[float]:
        return [
            s
            for reply in ask(self.generators, op="beats", since=since, until=until)
            for s in reply["latencies"]
        ]

    def measure_beats(self) -> None:
        opts = self.opts
        since = time.time()
        # at least one whole interval: a fleet paced at 50 s that came up within 37 s beats
        # in 37 s of every 50, so a shorter window counts a part of the fleet by chance
        interval = self.result.interval if math.isfinite(self.result.interval) else 0.0
        self.sleep(max(opts.steady, interval))
        until = time.time()
        steady = self.beats(since, until)
        self.result.steady_rate = len(steady) / (until - since)
        self.result.steady_latency = (percentile(steady, 50), percentile(steady, 99))
        log.info(
            "%s: heartbeats %.0f/s served of %.0f/s offered; p99 %.3f s",
            self.store,
            self.result.steady_rate,
            self.result.offered,
            self.result.steady_latency[1],
        )
        if opts.saturate > 0:
            self.measure_capacity()

    def measure_capacity(self) -> None:
        opts = self.opts
        per = max(1, opts.saturate_concurrency // len(self.generators))
        since = time.time()
        loops = ask(self.generators, op="saturate", seconds=opts.saturate, concurrency=per)
        until = time.time()
        closed = [s for reply in loops for s in reply["latencies"]]
        background = self.beats(since, until)
        self.result.capacity = (len(closed) + len(background)) / (until - since)
        self.result.capacity_latency = (percentile(closed, 50), percentile(closed, 99))
        log.info(
            "%s: heartbeat capacity %.0f/s (%d back to back on top of the fleet)",
            self.store,
            self.result.capacity,
            per * len(self.generators),
        )
        self.sleep(3.0)

    def wait_for(self, what: str, done: Callable[[], bool], timeout: float | None = None) -> bool:
        deadline = time.monotonic() + (timeout or self.opts.phase_timeout)
        while time.monotonic() < deadline:
            if done():
                return True
            self.sleep(0.25)
        log.info(
            "%s: %s did not happen within %s s",
            self.store,
            what,
            timeout or self.opts.phase_timeout,
        )
        return False

    def publish(self, body: dict[str, Any]) -> int:
        """Publish a site; its generation, once it reached every agent (or the phase's
        timeout passed)."""
        generation = int(self.admin([("POST", "/v1/site", body)], 1)[0]["generation"])

        def everyone() -> bool:
            replies = ask(self.generators, op="status")
            seen = sum(
                int(n)
                for r in replies
                for gen, n in r["generations"].items()
                if int(gen) >= generation
            )
            return seen == self.agents

        self.wait_for(f"generation {generation} reaching every agent", everyone)
        return generation

    def measure_fanout(self, ids: Sequence[str]) -> None:
        for publish in range(1, self.opts.publishes + 1):
            body = site(ids, self.opts.rollout_nodes, publish)
            published = time.time()
            generation = self.publish(body)
            times = [
                t - published
                for reply in ask(self.generators, op="seen", generation=generation)
                for t in reply["times"]
            ]
            self.result.missed += len(ids) - len(times)
            self.result.fanouts.append(times)
            log.info(
                "%s: generation %d to %d agents: p50 %.3f s, p99 %.3f s, max %.3f s",
                self.store,
                generation,
                len(times),
                percentile(times, 50),
                percentile(times, 99),
                max(times, default=math.nan),
            )
            self.sleep(3.0)

    def measure_rollout(self, role: str, nodes: int, slots: int) -> None:
        bound = math.ceil(nodes / slots) * self.opts.reboot
        result, _ = self.roll_out(role, NEW_IMAGE, nodes, slots, bound)
        self.result.rollouts.append(result)
        log.info(
            "%s: rollout of %d nodes, %d at a time: %.1f s (%.2f%s the bound %.0f s), %s, at "
            "most %d out; slot handover p50 %.3f s max %.3f s, pre-reboot p50 %.3f s, up to "
            "steady-state p50 %.3f s",
            *(self.store, nodes, slots, result.wall, result.ratio, TIMES, bound, result.state),
            *(result.max_out, *result.handover, result.lock, result.steady),
        )
        self.sleep(3.0)

    def measure_drain_rollout(self, ids: Sequence[str]) -> None:
        """The rollout role's nodes again, to DRAIN_IMAGE, the role draining each node first
        (its generic drain, the hooks of jobs.py) while some of them run jobs that all start
        with the rollout."""
        opts = self.opts
        nodes, slots = opts.rollout_nodes, opts.slots
        publish = opts.publishes + 1  # a generation of its own: the role's drain added
        self.publish(site(ids, nodes, publish, jobs.role_rollout()))
        reboot = opts.drain_reboot_time
        if reboot != opts.reboot:
            ask(self.generators, op="reboot", seconds=reboot)
        longest = jobs.JOBS_PER_REBOOT * reboot
        lengths = jobs.draw_jobs(ids[:nodes], opts.drain_jobs, longest, opts.job_seed)
        start = time.time()
        jobs.start_jobs(self.jobs, lengths, start)
        bound = jobs.drain_bound(nodes, slots, reboot, max(lengths.values(), default=0.0))
        ro, reboots = self.roll_out(ROLLOUT_ROLE, DRAIN_IMAGE, nodes, slots, bound)
        drained = jobs.hook_times(self.drain_state, "drain")
        result = drain_figures(ro, reboots, drained, lengths, start)
        self.result.drain_rollouts.append(result)
        log.info(
            "%s: drain rollout of %d nodes (%d with a job, the longest %.1f s), %d at a time: "
            "%.1f s (%.2f%s the bound %.0f s), %s; %d jobs interrupted, %d nodes drained busy, "
            "idle nodes done first: %s (%d busy ones done before the last idle); drain → "
            "pre-reboot p50 %.3f s",
            *(self.store, nodes, result.busy, result.longest_job, slots, ro.wall, ro.ratio),
            *(TIMES, bound, ro.state, result.interrupted, result.drained_busy, result.idle_first),
            *(result.busy_before_idle, result.drain_wait),
        )
        self.sleep(3.0)

    def roll_out(
        self, role: str, image: str, nodes: int, slots: int, bound: float
    ) -> tuple[Rollout, list[dict[str, Any]]]:
        """Roll role out to image, slots at a time; what it took, and the agents' reboot
        records (kept as reboots-ROLE-IMAGE.json)."""
        posted = time.time()
        rollout = {"role": role, "image": image, "max_unavailable": slots}
        self.admin([("POST", "/v1/rollouts", {**rollout, "health_timeout": 600})], 1)
        status = self.watch_rollout(role, max(self.opts.phase_timeout, bound * 5), nodes)
        reboots = [r for r in self.report_reboots() if r["locked"] >= posted]
        (self.tmp / f"reboots-{role}-{image}.json").write_text(json.dumps(reboots))
        # done: when the controller wrote it so; else as long as it was watched
        done_at = (
            float(status.get("updated_at") or time.time())
            if status.get("state") == "done"
            else time.time()
        )
        on_new = len({r["id"] for r in reboots if r["image"] == image and "up" in r})
        gaps = handovers(reboots, slots)
        result = Rollout(
            nodes,
            slots,
            done_at - posted,
            bound,
            str(status.get("state")),
            max_out(reboots),
            on_new,
            (percentile(gaps, 50), max(gaps, default=math.nan)),
            percentile(spans(reboots, "told", "locked"), 50),
            percentile(spans(reboots, "up", "steady"), 50),
        )
        return result, reboots

    def watch_rollout(self, role: str, timeout: float, nodes: int) -> dict[str, Any]:
        """The stored rollout once it is no longer running or rolling back, or when
        timeout seconds have passed."""
        every = 0.25 if nodes <= 1000 else 1.0
        deadline = time.monotonic() + timeout
        while True:
            status: dict[str, Any] = self.admin([("GET", f"/v1/rollouts/{role}", None)], 1)[0]
            if status.get("state") not in ("running", "rolling-back"):
                return status
            if time.monotonic() > deadline:
                return status
            self.sleep(every)

    def report_reboots(self) -> list[dict[str, Any]]:
        return [r for reply in ask(self.generators, op="report") for r in reply["reboots"]]

    def collect(self) -> None:
        """The generators' counts, every process's CPU, the servers' logged failures."""
        assert self.servers is not None
        for reply in ask(self.generators, op="report"):
            self.result.errors.update(reply["errors"])
            self.result.samples += reply["samples"]
            self.result.connects += reply["connects"]
            self.result.lock_waits += reply["lock_waits"]
        for proc in self.procs:
            kind = (
                "load generators"
                if proc.name.startswith("generator")
                else "etcd"
                if proc.name == "etcd"
                else "hostos serve"
            )
            used = proc.cpu_seconds() - self.cpu0.get(proc.name, 0.0)
            self.result.cpu[kind] = self.result.cpu.get(kind, 0.0) + used
        self.result.errors.update(self.servers.failures())
