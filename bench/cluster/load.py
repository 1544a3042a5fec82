"""The load: simulated node agents, thousands to a process on asyncio, and the driver of
those load-generator processes.

Each agent does what hostos.cluster.agent does (see the package's docstring): heartbeats
at its interval or the server's pace, the config long-poll, and when its assignment is not
its booted image the FleetLock pre-reboot, a silent reboot and the steady-state.  A
generator process is `python -m bench.cluster.load`; it reads its agents as one JSON line
on stdin, then commands (`{"op": …}`), one JSON line each, and answers each with one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.cli import BenchError
from bench.cluster.client import IDLE_REUSE, Conn, HttpError
from bench.cluster.fleet import OLD_IMAGE
from bench.cluster.jobs import job_left
from bench.processes import PYTHON, ROOT, more_files
from hostos.cluster import pacing
from hostos.cluster.server.serve import quiet_gc

FLEETLOCK = {"fleet-lock-protocol": "true"}
GENERATOR = "bench.cluster.load"  # this module, run as a generator process


@dataclass
class Stats:
    """What one generator saw; times are time.time() (one clock for every process)."""

    beats: list[tuple[float, float]] = field(default_factory=list)  # (end, seconds) ok
    errors: Counter[str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)  # the first few errors, in full
    seen: dict[int, list[float]] = field(default_factory=dict)  # generation → arrival times
    reboots: list[dict[str, Any]] = field(default_factory=list)
    lock_waits: int = 0  # pre-reboot answered 409: the slot was not free yet

    def error(self, what: str, detail: str) -> None:
        self.errors[what] += 1
        if len(self.samples) < 10:
            self.samples.append(f"{what}: {detail}"[:300])


@dataclass(frozen=True)
class Settings:
    heartbeat: float
    wait: float
    reboot: float
    servers: list[str]
    jobs: Path | None = None  # the drain rollout's jobs directory (jobs.py), if any


class Agent:
    """One simulated node agent: its token, its three connections, its boot and what it
    was told."""

    def __init__(
        self, node: str, token: str, server: str, settings: Settings, stats: Stats
    ) -> None:
        self.id, self.token, self.settings, self.stats = node, token, settings, stats
        self.beat_conn = Conn.to(server, token)  # heartbeats and steady-state
        self.poll_conn = Conn.to(server, token)  # the config long-poll
        self.lock_conn = Conn.to(server, token)  # pre-reboot
        self.record: dict[str, Any] | None = None  # the reboot under way
        self.booted, self.assigned = OLD_IMAGE, OLD_IMAGE
        self.boot_id = uuid.uuid4().hex
        self.generation = 0
        self.steady_sent = False
        self.beaten = False
        self.paced = 0.0  # the heartbeat interval the server last asked (pacing.py)
        self.down = False
        self.rebooting: asyncio.Task[None] | None = None
        self.poller: asyncio.Task[None] | None = None
        self.tasks: list[asyncio.Task[None]] = []

    @property
    def ready(self) -> bool:
        return self.beaten and self.generation > 0

    @property
    def interval(self) -> float:
        """Like the node agent: its own interval, or the server's pace when longer."""
        return max(self.settings.heartbeat, self.paced)

    def start(self, delay: float) -> None:
        self.tasks.append(asyncio.create_task(self._beats(delay)))
        self.poller = asyncio.create_task(self._polls(delay))

    def stop(self) -> None:
        for task in [*self.tasks, self.poller, self.rebooting]:
            if task is not None:
                task.cancel()
        for conn in (self.beat_conn, self.poll_conn, self.lock_conn):
            conn.close()

    @property
    def connects(self) -> int:
        return self.beat_conn.connects + self.poll_conn.connects + self.lock_conn.connects

    async def call(
        self,
        conn: Conn,
        what: str,
        method: str,
        path: str,
        body: Any = None,
        ok: Sequence[int] = (200,),
        headers: dict[str, str] | None = None,
        timeout: float = 60.0,
    ) -> tuple[int, Any] | None:
        try:
            status, data = await conn.request(method, path, body, headers, timeout)
        except HttpError as exc:
            self.stats.error(f"{what}: no answer", f"{self.id}: {exc}")
            return None
        if status not in ok:
            self.stats.error(
                f"{what}: HTTP {status}", f"{self.id}: {data.decode(errors='replace')}"
            )
            return None
        return status, (json.loads(data) if data else None)

    def status(self) -> dict[str, Any]:
        """A heartbeat's body: what the node agent reports."""
        return {
            "booted_image": self.booted,
            "boot_id": self.boot_id,
            "units": {"app": "healthy"},
            "generation": self.generation,
        }

    async def beat(self) -> None:
        started = time.time()
        body = self.status()
        # like the node agent: a connection per heartbeat when it would sit idle past the
        # server's keep-alive anyway (no socket held open between heartbeats)
        closing = {"Connection": "close"} if self.interval > IDLE_REUSE else None
        reply = await self.call(
            self.beat_conn, "heartbeat", "PUT", f"/v1/nodes/{self.id}/status", body, headers=closing
        )
        if reply is None:
            return
        end = time.time()
        self.stats.beats.append((end, end - started))
        self.beaten = True
        self.paced = pacing.asked(reply[1])
        if not self.steady_sent:
            lock = {"client_params": {"id": self.id, "group": "default"}}
            sent = time.time()
            if (
                await self.call(
                    self.beat_conn,
                    "steady-state",
                    "POST",
                    "/v1/steady-state",
                    lock,
                    headers=FLEETLOCK,
                )
                is not None
            ):
                self.steady_sent = True
                if self.record is not None:
                    self.record["steady"], self.record = sent, None
        assigned = reply[1].get("assigned_image") if reply[1] else None
        if isinstance(assigned, str):
            self.assign(assigned)

    async def _beats(self, delay: float) -> None:
        """Like the node agent: the interval after each answer (a slow server is not sent
        the missed beats at once, so an overload does not feed itself)."""
        await asyncio.sleep(delay)
        while True:
            if not self.down:
                await self.beat()
            await asyncio.sleep(self.interval)

    async def _polls(self, delay: float) -> None:
        await asyncio.sleep(delay)
        while True:
            asked = self.assigned if self.generation else None
            image = f"&image={asked}" if asked else ""
            path = (
                f"/v1/nodes/{self.id}/config?after={self.generation}"
                f"&wait={self.settings.wait:g}{image}"
            )
            reply = await self.call(
                self.poll_conn,
                "config",
                "GET",
                path,
                ok=(200, 304),
                timeout=self.settings.wait + 60,
            )
            if reply is None:
                await asyncio.sleep(1.0)
                continue
            status, doc = reply
            if status != 200 or not isinstance(doc, dict):
                continue
            arrived, generation = time.time(), int(doc["generation"])
            assigned = doc.get("assigned_image")
            # (an assignment the heartbeat's answer brought first is news to this poll)
            news = generation > self.generation or (asked is not None and assigned != asked)
            if generation > self.generation:
                self.stats.seen.setdefault(generation, []).append(arrived)
                self.generation = generation
            if isinstance(assigned, str):
                self.assign(assigned)
            if not news:  # answered at once with nothing new: do not spin
                self.stats.error("config: answered with nothing new", self.id)
                await asyncio.sleep(1.0)

    def assign(self, image: str) -> None:
        self.assigned = image
        if image != self.booted and self.rebooting is None:
            self.rebooting = asyncio.create_task(self._reboot())

    async def _reboot(self) -> None:
        lock = {"client_params": {"id": self.id, "group": "default"}}
        told = time.time()  # the assignment arrived (heartbeat answer or long-poll)
        try:
            while self.assigned != self.booted:
                reply = await self.call(
                    self.lock_conn,
                    "pre-reboot",
                    "POST",
                    "/v1/pre-reboot",
                    lock,
                    ok=(200, 409),
                    headers=FLEETLOCK,
                )
                if reply is None or reply[0] == 409:
                    self.stats.lock_waits += reply is not None
                    await asyncio.sleep(1.0)
                    continue
                locked = time.time()
                record: dict[str, Any] = {
                    "id": self.id,
                    "image": self.assigned,
                    "told": told,
                    "locked": locked,
                }
                if self.settings.jobs is not None:  # a job still running dies with the boot
                    record["job_left"] = job_left(self.settings.jobs, self.id, locked)
                self.stats.reboots.append(record)
                self.record = record
                self.down = True  # a reboot: silent, every connection dropped
                if self.poller is not None:
                    self.poller.cancel()
                self.poll_conn.close()
                self.lock_conn.close()
                async with self.beat_conn.lock:  # a heartbeat already on its way finishes
                    self.beat_conn.close()
                await asyncio.sleep(self.settings.reboot)
                self.booted, self.boot_id = self.assigned, uuid.uuid4().hex
                self.steady_sent, self.down = False, False
                record["up"] = time.time()
                self.poller = asyncio.create_task(self._polls(0.0))
                await self.beat()  # at once after boot: the new image, then steady-state
        finally:
            self.rebooting = None


async def saturate(agents: Sequence[Agent], seconds: float, stats: Stats) -> dict[str, Any]:
    """Heartbeats back to back from `agents` (connections of their own) for seconds."""
    done: list[float] = []
    end = time.monotonic() + seconds

    async def worker(agent: Agent) -> None:
        conn = Conn(agent.beat_conn.host, agent.beat_conn.port, agent.token)
        try:
            while time.monotonic() < end:
                started = time.time()
                path, body = f"/v1/nodes/{agent.id}/status", agent.status()
                try:
                    status, data = await conn.request("PUT", path, body)
                except HttpError as exc:
                    stats.error("heartbeat (closed loop): no answer", f"{agent.id}: {exc}")
                    continue
                if status != 200:
                    stats.error(
                        f"heartbeat (closed loop): HTTP {status}",
                        f"{agent.id}: {data.decode(errors='replace')}",
                    )
                    continue
                done.append(time.time() - started)
        finally:
            conn.close()

    await asyncio.gather(*(worker(a) for a in agents))
    return {"latencies": done}


class Generated:
    """A generator process's agents and what they saw, answering the driver's commands:
    `{"op": "status"}` is answered by op_status(), its other keys the arguments."""

    def __init__(self, config: dict[str, Any]) -> None:
        jobs = config.get("jobs")
        settings = Settings(
            config["heartbeat"],
            config["wait"],
            config["reboot"],
            config["servers"],
            Path(jobs) if jobs else None,
        )
        self.stats = Stats()
        self.agents = [
            Agent(node, token, settings.servers[server], settings, self.stats)
            for node, token, server in config["agents"]
        ]

    async def answer(self, command: dict[str, Any]) -> Any:
        handler = getattr(self, f"op_{command.pop('op')}")
        return await handler(**command)

    async def op_start(self, ramp: float) -> Any:
        for agent in self.agents:
            agent.start(random.uniform(0, ramp))
        return {"ok": True}

    async def op_status(self) -> Any:
        agents = self.agents
        return {
            "agents": len(agents),
            "ready": sum(a.ready for a in agents),
            "generations": dict(Counter(a.generation for a in agents)),
            "booted": dict(Counter(a.booted for a in agents)),
            "intervals": dict(Counter(str(a.interval) for a in agents)),
            "errors": sum(self.stats.errors.values()),
        }

    async def op_reboot(self, seconds: float) -> Any:
        """From now on, each agent's reboot takes seconds."""
        for agent in self.agents:
            agent.settings = dataclasses.replace(agent.settings, reboot=seconds)
        return {"ok": True}

    async def op_beats(self, since: float, until: float) -> Any:
        return {"latencies": [s for end, s in self.stats.beats if since <= end < until]}

    async def op_saturate(self, seconds: float, concurrency: int) -> Any:
        return await saturate(self.agents[:concurrency], seconds, self.stats)

    async def op_seen(self, generation: int) -> Any:
        return {"times": self.stats.seen.get(generation, [])}

    async def op_report(self) -> Any:
        stats = self.stats
        return {
            "errors": dict(stats.errors),
            "samples": stats.samples,
            "reboots": stats.reboots,
            "lock_waits": stats.lock_waits,
            "connects": sum(a.connects for a in self.agents),
        }

    async def op_stop(self) -> Any:
        for agent in self.agents:
            agent.stop()
        await asyncio.sleep(0.2)
        return {"ok": True}


async def generator_main() -> None:
    """A generator process: its agents from stdin's first line, then a command a line
    until `stop`, each answered with a JSON line on stdout."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    generated = Generated(json.loads(await reader.readline()))
    while line := await reader.readline():
        command = json.loads(line)
        sys.stdout.write(json.dumps(await generated.answer(dict(command))) + "\n")
        sys.stdout.flush()
        if command["op"] == "stop":
            return


class Generator:
    """A load-generator process, driven over its stdin/stdout."""

    def __init__(self, config: dict[str, Any], log_path: Path) -> None:
        self.log = log_path.open("wb")
        self.process = subprocess.Popen(
            [str(PYTHON), "-m", GENERATOR],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            preexec_fn=more_files,
        )
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(config) + "\n").encode())
        self.process.stdin.flush()

    def send(self, **command: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(command) + "\n").encode())
        self.process.stdin.flush()

    def receive(self) -> Any:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise BenchError(
                f"a load generator exited {self.process.poll()}; its log: {self.log.name}"
            )
        return json.loads(line)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.send(op="stop")
            self.receive()
        with contextlib.suppress(OSError):
            assert self.process.stdin is not None
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def ask(generators: Sequence[Generator], **command: Any) -> list[Any]:
    """Send a command to every generator at once, then collect their answers."""
    for generator in generators:
        generator.send(**command)
    return [generator.receive() for generator in generators]


if __name__ == "__main__":
    # thousands of agents in one process: full collections would stop its event loop
    # for a second now and then and show up as the agents' own delays (the server does
    # the same, hostos.cluster.server.serve.quiet_gc)
    quiet_gc()
    asyncio.run(generator_main())
