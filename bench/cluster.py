"""Benchmark of the cluster server: simulated agents against real `hostos serve` processes.

    .venv/bin/python bench/cluster.py [--agents 10000] [--stores sqlite,etcd[:AGENTS],…]
                                      [--write FILE]

Per store, in one run, one after the other on the same machine:

- sqlite: one `hostos serve` on a SQLite file in a temporary directory;
- etcd: two `hostos serve` replicas on one etcd (started here, data in the temporary
  directory), the agents spread over both replicas.

The admin publishes a site (role `bench-a`: the rollout's nodes, role `bench-b`: the rest),
registers two images, issues every node its token and assigns it `img-1` (its first boot),
all through the API.  The agents then run in a few load-generator processes (asyncio; per
agent one HTTP/1.1 keep-alive connection for its long-poll, and for its heartbeats one that
is kept only when they come more often than the server's 5 s keep-alive: at a longer
interval, like the node agent, each heartbeat opens a connection and asks to close it).
Each agent does what the node agent does: a heartbeat `--heartbeat` seconds (or the longer
interval the server's answer asks of a large fleet) after the last one's answer, a long-poll
`GET /v1/nodes/<id>/config?after=G&wait=W&image=I` that returns a new generation or a new
assignment, and when its assignment is not its booted image: `pre-reboot`, a reboot of
`--reboot` seconds (silent, its connections dropped), then a heartbeat on the new image and
`steady-state`.  (The node agent sends a heartbeat before its pre-reboot; these agents go
straight to the pre-reboot, one request less per reboot.)

Measured:
- heartbeats: the rate served while every agent beats at its interval (a steady window),
  and the server's capacity (the rate served while, on top, `--saturate-concurrency`
  heartbeats are kept in flight back to back);
- fan-out: after `POST /v1/site` of a new generation, per agent the time from the publish
  until its long-poll returns that generation: p50/p95/p99/max (target: p99 ≤ 2 s);
- rollout: `POST /v1/rollouts` of `bench-a` (N nodes, max-unavailable S) to `img-2`, wall
  time until the stored rollout is done, against the bound ceil(N / S) x reboot time
  (target: ≤ 1.1x the bound); the agents' own record says how many were out at once;
- errors: every answer not the expected one, every timeout and failed connection (target 0).

The generator processes are this file run with `--generator` (JSON lines on stdin/stdout).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from report import commit_line, machine, write_section  # noqa: E402

from hostos.cluster import pacing  # noqa: E402
from hostos.cluster.server.serve import quiet_gc  # noqa: E402
from hostos.process import terminate  # noqa: E402

PYTHON = ROOT / ".venv" / "bin" / "python"
ETCD = "/usr/bin/etcd"
SECTION = "cluster-bench"
TIMES = "\u00d7"
FLEETLOCK = {"fleet-lock-protocol": "true"}
ROLLOUT_ROLE, REST_ROLE = "bench-a", "bench-b"
OLD_IMAGE, NEW_IMAGE = "img-1", "img-2"
IDLE_REUSE = 4.0  # seconds: a connection idle longer is not reused (uvicorn closes at 5 s)
NOFILE = 65536  # file descriptors for the servers and generators (10,000 long-polls each)
TARGET_FANOUT_P99 = 2.0
TARGET_ROLLOUT = 1.1
START_SECONDS = 60.0


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """The benchmark cannot go on (a server did not start, a phase did not finish)."""


# -- a small HTTP/1.1 client over asyncio streams -------------------------------------------


class HttpError(Exception):
    """A request that got no answer: connection refused or reset, a timeout."""


class Conn:
    """One keep-alive connection to a server, for one caller; reconnects when the server
    closed it (or it sat idle past the server's keep-alive time)."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port = host, port
        self.auth = f"Authorization: Bearer {token}\r\n".encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.used = 0.0
        self.connects = 0
        self.lock = asyncio.Lock()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 60.0,
    ) -> tuple[int, bytes]:
        async with self.lock:
            try:
                return await asyncio.wait_for(self._request(method, path, body, headers), timeout)
            except TimeoutError:
                self.close()
                raise HttpError(
                    f"{method} {path.split('?')[0]}: no answer in {timeout:g} s"
                ) from None

    async def _request(
        self, method: str, path: str, body: Any, headers: dict[str, str] | None
    ) -> tuple[int, bytes]:
        payload = b"" if body is None else json.dumps(body).encode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{extra}"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        )
        message = head.encode() + self.auth + b"\r\n" + payload
        reused = self.writer is not None and time.monotonic() - self.used < IDLE_REUSE
        if not reused:
            self.close()
        for attempt in (1, 2):
            try:
                if self.writer is None:
                    self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
                    self.connects += 1
                assert self.reader is not None and self.writer is not None
                self.writer.write(message)
                await self.writer.drain()
                status, data, keep = await _response(self.reader)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                self.close()
                if reused and attempt == 1:  # the server closed it just now: once more
                    continue
                raise HttpError(
                    f"{method} {path.split('?')[0]}: {type(exc).__name__}: {exc}"
                ) from None
            self.used = time.monotonic()
            if not keep:
                self.close()
            return status, data
        raise AssertionError("unreachable")


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            fields[name.strip().lower()] = value.strip()
    if fields.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        data = b"".join(parts)
    else:
        data = await reader.readexactly(int(fields.get("content-length", "0")))
    return status, data, fields.get("connection", "").lower() != "close"


def split_url(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    return str(parts.hostname), int(parts.port or 80)


# -- the load generator: many agents in one process --------------------------------------------


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


@dataclass
class Settings:
    heartbeat: float
    wait: float
    reboot: float
    servers: list[str]


class Agent:
    def __init__(
        self, node: str, token: str, server: str, settings: Settings, stats: Stats
    ) -> None:
        self.id, self.token, self.settings, self.stats = node, token, settings, stats
        host, port = split_url(server)
        self.beat_conn = Conn(host, port, token)  # heartbeats and steady-state
        self.poll_conn = Conn(host, port, token)  # the config long-poll
        self.lock_conn = Conn(host, port, token)  # pre-reboot
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

    async def beat(self) -> None:
        started = time.time()
        body = {
            "booted_image": self.booted,
            "boot_id": self.boot_id,
            "units": {"app": "healthy"},
            "generation": self.generation,
        }
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
                record = {
                    "id": self.id,
                    "image": self.assigned,
                    "told": told,
                    "locked": time.time(),
                }
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
                body = {
                    "booted_image": agent.booted,
                    "boot_id": agent.boot_id,
                    "units": {"app": "healthy"},
                    "generation": agent.generation,
                }
                try:
                    status, data = await conn.request("PUT", f"/v1/nodes/{agent.id}/status", body)
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


async def generator_main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    config = json.loads(await reader.readline())
    settings = Settings(config["heartbeat"], config["wait"], config["reboot"], config["servers"])
    stats = Stats()
    agents = [
        Agent(node, token, settings.servers[server], settings, stats)
        for node, token, server in config["agents"]
    ]

    def reply(doc: Any) -> None:
        sys.stdout.write(json.dumps(doc) + "\n")
        sys.stdout.flush()

    while line := await reader.readline():
        command = json.loads(line)
        op = command["op"]
        if op == "start":
            for agent in agents:
                agent.start(random.uniform(0, command["ramp"]))
            reply({"ok": True})
        elif op == "status":
            reply(
                {
                    "agents": len(agents),
                    "ready": sum(a.ready for a in agents),
                    "generations": dict(Counter(a.generation for a in agents)),
                    "booted": dict(Counter(a.booted for a in agents)),
                    "intervals": dict(Counter(str(a.interval) for a in agents)),
                    "errors": sum(stats.errors.values()),
                }
            )
        elif op == "beats":
            since, until = command["since"], command["until"]
            reply({"latencies": [s for end, s in stats.beats if since <= end < until]})
        elif op == "saturate":
            chosen = agents[: command["concurrency"]]
            reply(await saturate(chosen, command["seconds"], stats))
        elif op == "seen":
            reply({"times": stats.seen.get(command["generation"], [])})
        elif op == "report":
            reply(
                {
                    "errors": dict(stats.errors),
                    "samples": stats.samples,
                    "reboots": stats.reboots,
                    "lock_waits": stats.lock_waits,
                    "connects": sum(a.connects for a in agents),
                }
            )
        elif op == "stop":
            for agent in agents:
                agent.stop()
            await asyncio.sleep(0.2)
            reply({"ok": True})
            return


class Generator:
    """A load-generator process, driven over its stdin/stdout."""

    def __init__(self, config: dict[str, Any], log_path: Path) -> None:
        self.log = log_path.open("wb")
        self.process = subprocess.Popen(
            [str(PYTHON), str(Path(__file__).resolve()), "--generator"],
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


# -- processes: etcd, servers ----------------------------------------------------------------


def more_files() -> None:
    """In a child before exec: room for tens of thousands of sockets."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, max(hard, NOFILE)))
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    check: Any,
    what: str,
    process: subprocess.Popen[bytes],
    log_path: Path,
    timeout: float = START_SECONDS,
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if process.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"{what} did not start; its log: {log_path}")
        time.sleep(0.1)


def answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    url: str

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.process.pid)

    def stop(self) -> None:
        terminate(self.process, 15)


def start_etcd(tmp: Path) -> Proc:
    binary = shutil.which("etcd") or ETCD
    if not Path(binary).exists():
        raise BenchError("etcd is not installed (Debian: apt install etcd-server)")
    url, log_path = f"http://127.0.0.1:{free_port()}", tmp / "etcd.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [
                binary,
                "--data-dir",
                str(tmp / "etcd-data"),
                "--listen-client-urls",
                url,
                "--advertise-client-urls",
                url,
                "--listen-peer-urls",
                f"http://127.0.0.1:{free_port()}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wait_until(lambda: answers(url + "/health"), "etcd", process, log_path)
    return Proc("etcd", process, log_path, url)


def write_images(images: Path) -> None:
    for name in (OLD_IMAGE, NEW_IMAGE):
        directory = images / name
        directory.mkdir(parents=True)
        (directory / "vmlinuz").write_bytes(bytes(range(256)) * 64)
        (directory / "initramfs.img").write_bytes(b"initramfs " * 100)
        (directory / "boot.ipxe").write_text(
            "#!ipxe\nkernel vmlinuz initrd=initramfs.img console=ttyS0 quiet\n"
            "initrd initramfs.img\nboot\n"
        )


def start_server(
    tmp: Path, name: str, store: str, token_file: Path, images: Path, heartbeat_rate: float
) -> Proc:
    port, log_path = free_port(), tmp / f"{name}.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [
                str(PYTHON),
                "-m",
                "hostos",
                "serve",
                "--listen",
                f"127.0.0.1:{port}",
                "--store",
                store,
                "--admin-token-file",
                str(token_file),
                "--images",
                str(images),
                "--heartbeat-rate",
                f"{heartbeat_rate:g}",
            ],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=more_files,
        )
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: answers(url + "/healthz"), f"hostos serve ({name})", process, log_path)
    return Proc(name, process, log_path, url)


TCP_COUNTERS = ("ListenOverflows", "SyncookiesSent", "SyncookiesFailed")


def tcp_counters() -> dict[str, int]:
    """The kernel's counts (since boot, all sockets) of connections a listen queue could not
    take: accept queue full (ListenOverflows), SYN queue full (SyncookiesSent), and a
    cookie's ACK that came too late to be taken (SyncookiesFailed: answered with a reset)."""
    found: dict[str, int] = {}
    with contextlib.suppress(OSError):
        lines = Path("/proc/net/netstat").read_text().splitlines()
        for names, values in zip(lines[::2], lines[1::2], strict=False):
            if names.startswith("TcpExt:"):
                pairs = zip(names.split()[1:], values.split()[1:], strict=False)
                found = {k: int(v) for k, v in pairs if k in TCP_COUNTERS}
    return found


def sysctls() -> str:
    """The kernel limits on listen queues (what BACKLOG is capped at)."""
    names = ("net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog")
    values = []
    for name in names:
        try:
            values.append(f"{name}={Path('/proc/sys', *name.split('.')).read_text().strip()}")
        except OSError:
            values.append(f"{name}=?")
    return ", ".join(values)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its reaped children so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(x) for x in fields[11:15]) / ticks


def open_files(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def file_limit(pid: int) -> str:
    """The process's soft limit of open files, as /proc says it."""
    try:
        line = next(
            x
            for x in Path(f"/proc/{pid}/limits").read_text().splitlines()
            if x.startswith("Max open files")
        )
    except (OSError, StopIteration):
        return "?"
    return line.split()[3]


def machine_cpu_seconds() -> float:
    """CPU time spent by anything on the machine since boot (all CPUs)."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(values[:8]) - values[3] - values[4]
    return busy / os.sysconf("SC_CLK_TCK")


# -- one store's run --------------------------------------------------------------------------


@dataclass
class Options:
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


def node_ids(count: int) -> list[str]:
    return [f"n{i:05d}" for i in range(count)]


def site(ids: Sequence[str], rollout_nodes: int, publish: int) -> dict[str, Any]:
    roles = {
        role: {
            "role": role,
            "image": OLD_IMAGE,
            "units": [],
            "env": {"BENCH_PUBLISH": str(publish)},
        }
        for role in (ROLLOUT_ROLE, REST_ROLE)
    }
    nodes = {
        node: {"role": ROLLOUT_ROLE if i < rollout_nodes else REST_ROLE}
        for i, node in enumerate(ids)
    }
    return {"roles": roles, "nodes": nodes}


async def admin_calls(
    servers: Sequence[str], token: str, calls: Sequence[tuple[str, str, Any]], concurrency: int = 32
) -> list[Any]:
    """Admin requests spread over the servers, `concurrency` at a time; every answer must
    be 200."""
    queue = list(enumerate(calls))
    results: list[Any] = [None] * len(calls)

    async def worker(index: int) -> None:
        conn = Conn(*split_url(servers[index % len(servers)]), token)
        try:
            while queue:
                position, (method, path, body) = queue.pop()
                status, data = await conn.request(method, path, body)
                if status != 200:
                    raise BenchError(f"{method} {path}: HTTP {status} {data[:300]!r}")
                results[position] = json.loads(data) if data else None
        finally:
            conn.close()

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return results


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (nearest rank) of values; nan when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


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
    errors: Counter[str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)
    connects: int = 0
    lock_waits: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0
    load: tuple[float, float] = (0.0, 0.0)  # 1-min load average at the start, the most seen
    kernel: dict[str, int] = field(default_factory=dict)  # TCP counters' growth in the run
    note: str = ""


class Runner:
    def __init__(self, store: str, agents: int, opts: Options, tmp: Path) -> None:
        self.store, self.opts, self.tmp = store, opts, tmp
        self.agents = agents
        self.token = "admin-" + uuid.uuid4().hex
        self.procs: list[Proc] = []
        self.servers: list[Proc] = []
        self.generators: list[Generator] = []
        self.result = StoreRun(store, 1 if store == "sqlite" else 2, agents)
        self.loads: list[float] = []

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        try:
            yield
        finally:
            for generator in self.generators:
                generator.stop()
            for proc in reversed(self.procs):
                proc.stop()

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
            self.start_processes()
            ids = node_ids(self.agents)
            tokens = self.setup(ids)
            self.start_agents(ids, tokens)
            if self.result.not_ready <= len(ids) // 10:
                self.measure_beats()
                self.measure_fanout(ids)
                self.measure_rollout(ROLLOUT_ROLE, self.opts.rollout_nodes, self.opts.slots)
                if self.opts.big_rollout_slots and self.agents > self.opts.rollout_nodes:
                    self.measure_rollout(
                        REST_ROLE,
                        self.agents - self.opts.rollout_nodes,
                        self.opts.big_rollout_slots,
                    )
            else:
                self.result.note += "; so nothing else was measured"
            self.collect()
        self.result.wall = time.monotonic() - started
        self.result.cpu["all processes on the machine"] = machine_cpu_seconds() - machine0
        tcp1 = tcp_counters()
        self.result.kernel = {k: tcp1[k] - tcp0.get(k, 0) for k in tcp1}
        self.result.load = (self.result.load[0], max(self.loads, default=0.0))
        return self.result

    def start_processes(self) -> None:
        images, token_file = self.tmp / "images", self.tmp / "admin-token"
        write_images(images)
        token_file.write_text(self.token + "\n")
        if self.store == "sqlite":
            server = start_server(
                self.tmp,
                "serve-sqlite",
                f"sqlite://{self.tmp / 'cluster.db'}",
                token_file,
                images,
                self.opts.heartbeat_rate,
            )
            self.procs.append(server)
            self.servers = [server]
        else:
            etcd = start_etcd(self.tmp)
            self.procs.append(etcd)
            store = etcd.url.replace("http://", "etcd://") + "/bench"
            for index in (1, 2):
                server = start_server(
                    self.tmp,
                    f"serve-etcd-{index}",
                    store,
                    token_file,
                    images,
                    self.opts.heartbeat_rate,
                )
                self.procs.append(server)
                self.servers.append(server)
        self.cpu0 = {p.name: p.cpu_seconds() for p in self.procs}

    def admin(self, calls: Sequence[tuple[str, str, Any]], concurrency: int = 32) -> list[Any]:
        return asyncio.run(
            admin_calls([s.url for s in self.servers], self.token, calls, concurrency)
        )

    def setup(self, ids: Sequence[str]) -> list[str]:
        begin = time.monotonic()
        self.admin([("POST", "/v1/site", site(ids, self.opts.rollout_nodes, 0))], 1)
        self.admin([("POST", f"/v1/images/{i}", None) for i in (OLD_IMAGE, NEW_IMAGE)], 1)
        issued = self.admin([("POST", f"/v1/tokens/nodes/{i}", None) for i in ids])
        self.admin([("PUT", f"/v1/nodes/{i}/assignment", {"image": OLD_IMAGE}) for i in ids])
        log(
            f"{self.store}: site, images, {len(ids)} tokens and assignments in "
            f"{time.monotonic() - begin:.1f} s"
        )
        return [str(doc["token"]) for doc in issued]

    def start_agents(self, ids: Sequence[str], tokens: Sequence[str]) -> None:
        count = max(1, min(self.opts.generators, len(ids)))
        servers = [s.url for s in self.servers]
        for index in range(count):
            mine = [[ids[i], tokens[i], i % len(servers)] for i in range(index, len(ids), count)]
            config = {
                "heartbeat": self.opts.heartbeat,
                "wait": self.opts.wait,
                "reboot": self.opts.reboot,
                "servers": servers,
                "agents": mine,
            }
            self.generators.append(Generator(config, self.tmp / f"{self.store}-gen{index}.log"))
        for generator in self.generators:
            self.procs.append(
                Proc(
                    f"generator-{len(self.procs)}", generator.process, Path(generator.log.name), ""
                )
            )
        begin = time.monotonic()
        ramp = min(self.opts.heartbeat, 20.0)
        ask(self.generators, op="start", ramp=ramp)
        deadline = begin + ramp + self.opts.phase_timeout
        while True:
            ready = sum(s["ready"] for s in ask(self.generators, op="status"))
            if ready == len(ids):
                break
            if time.monotonic() > deadline:
                self.result.not_ready = len(ids) - ready
                files = "; ".join(
                    f"{s.name} had {open_files(s.process.pid)} files open, "
                    f"its limit {file_limit(s.process.pid)}"
                    for s in self.servers
                )
                self.result.note = (
                    f"only {ready} of {len(ids)} agents had a heartbeat "
                    "answered and their config within "
                    f"{ramp + self.opts.phase_timeout:.0f} s ({files})"
                )
                log(f"{self.store}: {self.result.note}")
                break
            self.sleep(0.5)
        self.result.ready_seconds = time.monotonic() - begin
        log(f"{self.store}: {len(ids)} agents up in {self.result.ready_seconds:.1f} s")
        self.sleep(min(self.opts.heartbeat, 15.0))  # every agent past its first beat
        intervals: Counter[float] = Counter()
        for reply in ask(self.generators, op="status"):
            intervals.update({float(k): n for k, n in reply["intervals"].items()})
        self.result.interval = intervals.most_common(1)[0][0] if intervals else math.nan
        self.result.offered = self.agents / self.result.interval
        log(f"{self.store}: agents beat every {self.result.interval:g} s ({dict(intervals)})")

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
        log(
            f"{self.store}: heartbeats {self.result.steady_rate:.0f}/s served of "
            f"{self.result.offered:.0f}/s offered; p99 {self.result.steady_latency[1]:.3f} s"
        )
        if opts.saturate <= 0:
            return
        per = max(1, opts.saturate_concurrency // len(self.generators))
        since = time.time()
        loops = ask(self.generators, op="saturate", seconds=opts.saturate, concurrency=per)
        until = time.time()
        closed = [s for reply in loops for s in reply["latencies"]]
        background = self.beats(since, until)
        self.result.capacity = (len(closed) + len(background)) / (until - since)
        self.result.capacity_latency = (percentile(closed, 50), percentile(closed, 99))
        log(
            f"{self.store}: heartbeat capacity {self.result.capacity:.0f}/s "
            f"({per * len(self.generators)} back to back on top of the fleet)"
        )
        self.sleep(3.0)

    def wait_for(self, what: str, done: Any, timeout: float | None = None) -> bool:
        deadline = time.monotonic() + (timeout or self.opts.phase_timeout)
        while time.monotonic() < deadline:
            if done():
                return True
            self.sleep(0.25)
        log(f"{self.store}: {what} did not happen within {timeout or self.opts.phase_timeout} s")
        return False

    def measure_fanout(self, ids: Sequence[str]) -> None:
        for publish in range(1, self.opts.publishes + 1):
            body = site(ids, self.opts.rollout_nodes, publish)
            published = time.time()
            doc = self.admin([("POST", "/v1/site", body)], 1)[0]
            generation = int(doc["generation"])

            def everyone(g: int = generation) -> bool:
                replies = ask(self.generators, op="status")
                return sum(
                    int(n) for r in replies for gen, n in r["generations"].items() if int(gen) >= g
                ) == len(ids)

            self.wait_for(f"generation {generation} reaching every agent", everyone)
            times = [
                t - published
                for reply in ask(self.generators, op="seen", generation=generation)
                for t in reply["times"]
            ]
            self.result.missed += len(ids) - len(times)
            self.result.fanouts.append(times)
            log(
                f"{self.store}: generation {generation} to {len(times)} agents: p50 "
                f"{percentile(times, 50):.3f} s, p99 {percentile(times, 99):.3f} s, max "
                f"{max(times, default=math.nan):.3f} s"
            )
            self.sleep(3.0)

    def measure_rollout(self, role: str, nodes: int, slots: int) -> None:
        import httpx

        client = httpx.Client(
            base_url=self.servers[0].url,
            timeout=60,
            headers={"Authorization": f"Bearer {self.token}"},
        )
        bound = math.ceil(nodes / slots) * self.opts.reboot
        with client:
            posted = time.time()
            reply = client.post(
                "/v1/rollouts",
                json={
                    "role": role,
                    "image": NEW_IMAGE,
                    "max_unavailable": slots,
                    "health_timeout": 600,
                },
            )
            if reply.status_code != 200:
                raise BenchError(f"POST /v1/rollouts: HTTP {reply.status_code} {reply.text}")
            every = 0.25 if nodes <= 1000 else 1.0
            status: dict[str, Any] = {}

            def finished() -> bool:
                nonlocal status
                status = client.get(f"/v1/rollouts/{role}").json()
                return status.get("state") not in ("running", "rolling-back")

            deadline = time.monotonic() + max(self.opts.phase_timeout, bound * 5)
            while not finished():
                if time.monotonic() > deadline:
                    break
                self.sleep(every)
        reboots = [r for r in self.report_reboots() if r["locked"] >= posted]
        (self.tmp / f"reboots-{role}.json").write_text(json.dumps(reboots))
        # done: when the controller wrote it so; else as long as it was watched
        done_at = (
            float(status.get("updated_at") or time.time())
            if status.get("state") == "done"
            else time.time()
        )
        on_new = len({r["id"] for r in reboots if r["image"] == NEW_IMAGE and "up" in r})
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
        self.result.rollouts.append(result)
        log(
            f"{self.store}: rollout of {nodes} nodes, {slots} at a time: "
            f"{result.wall:.1f} s ({result.ratio:.2f}{TIMES} the bound {bound:.0f} s), "
            f"{result.state}, at most {result.max_out} out; slot handover p50 "
            f"{result.handover[0]:.3f} s max {result.handover[1]:.3f} s, pre-reboot p50 "
            f"{result.lock:.3f} s, up to steady-state p50 {result.steady:.3f} s"
        )
        self.sleep(3.0)

    def report_reboots(self) -> list[dict[str, Any]]:
        return [r for reply in ask(self.generators, op="report") for r in reply["reboots"]]

    def collect(self) -> None:
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
        for server in self.servers:
            text = server.log.read_text(errors="replace")
            failed = sum(
                1 for line in text.splitlines() if " status=5" in line or "Traceback" in line
            )
            if failed:
                self.result.errors[f"{server.name}: 5xx or tracebacks in its log"] += failed


# -- the report --------------------------------------------------------------------------------


def _s(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.3f} s"


def _met(ok: bool) -> str:
    return "yes" if ok else "**NO**"


def _name(run: StoreRun) -> str:
    store = "SQLite, 1 server" if run.store == "sqlite" else "etcd, 2 replicas"
    return f"{store}, {run.agents} agents"


def _handover(ro: Rollout) -> str:
    return f"{_s(ro.handover[0])} / {_s(ro.handover[1])}; {_s(ro.lock)}; {_s(ro.steady)}"


def _errors(run: StoreRun) -> int:
    return (
        sum(run.errors.values())
        + run.missed
        + run.not_ready
        + sum(1 for r in run.rollouts if r.state != "done" or r.on_new_image < r.nodes)
    )


def targets(runs: Sequence[StoreRun]) -> list[str]:
    rows = ["| run | target | measured | met |", "|---|---|---:|---|"]
    for run in runs:
        pooled = [t for times in run.fanouts for t in times]
        p99 = percentile(pooled, 99)
        rows.append(
            f"| {_name(run)} | fan-out p99 ≤ {TARGET_FANOUT_P99:g} s "
            f"| {_s(p99)} | {_met(p99 <= TARGET_FANOUT_P99)} |"
        )
        if not run.rollouts:
            rows.append(
                f"| {_name(run)} | rollout ≤ {TARGET_ROLLOUT:g}{TIMES} the bound | "
                "not measured | **NO** |"
            )
        for r in run.rollouts:
            rows.append(
                f"| {_name(run)} | rollout of {r.nodes} nodes, "
                f"{r.slots} at a time ≤ {TARGET_ROLLOUT:g}{TIMES} ceil(N / S) {TIMES} "
                f"reboot = {r.bound:.0f} s | {r.wall:.1f} s = {r.ratio:.2f}{TIMES} | "
                f"{_met(r.ratio <= TARGET_ROLLOUT and r.state == 'done')} |"
            )
        errors = _errors(run)
        rows.append(f"| {_name(run)} | zero errors | {errors} | {_met(errors == 0)} |")
    return rows


def figures(runs: Sequence[StoreRun], opts: Options) -> list[str]:
    head = "| | " + " | ".join(_name(r) for r in runs) + " |"
    rows = [head, "|---|" + "---:|" * len(runs)]

    def row(label: str, values: Sequence[str]) -> None:
        rows.append(f"| {label} | " + " | ".join(values) + " |")

    row("agents (load-generator processes)", [f"{r.agents} ({opts.generators})" for r in runs])
    row(
        "all agents up (first heartbeat and config answered)",
        [f"{r.ready_seconds:.1f} s" for r in runs],
    )
    row(
        f"heartbeat interval of most agents (theirs: {opts.heartbeat:g} s; the server's pace "
        f"at {opts.heartbeat_rate:g}/s when longer)",
        [f"{r.interval:g} s" for r in runs],
    )
    row(
        "heartbeats offered (agents / interval; less while answers are slow)",
        [f"{r.offered:.0f}/s" for r in runs],
    )
    row(
        f"heartbeats served (a window of {opts.steady:g} s or the interval, the longer)",
        [f"{r.steady_rate:.0f}/s" for r in runs],
    )
    row(
        "heartbeat latency p50 / p99",
        [f"{_s(r.steady_latency[0])} / {_s(r.steady_latency[1])}" for r in runs],
    )
    if opts.saturate > 0:
        row(
            f"heartbeat capacity: served while {opts.saturate_concurrency} more are kept in flight",
            [f"{r.capacity:.0f}/s" for r in runs],
        )
        row(
            "closed-loop heartbeat latency p50 / p99",
            [f"{_s(r.capacity_latency[0])} / {_s(r.capacity_latency[1])}" for r in runs],
        )
        row(
            f"agents that capacity would hold at one heartbeat per {opts.heartbeat:g} s (unpaced)",
            [f"{r.capacity * opts.heartbeat:.0f}" for r in runs],
        )
    for index in range(max((len(r.fanouts) for r in runs), default=0)):
        row(
            f"fan-out, publish {index + 1}: p50 / p95 / p99 / max",
            [
                " / ".join(_s(percentile(r.fanouts[index], p)) for p in (50, 95, 99, 100))
                if index < len(r.fanouts)
                else ""
                for r in runs
            ],
        )
    row(
        "fan-out, all publishes: p99",
        [_s(percentile([t for ts in r.fanouts for t in ts], 99)) for r in runs],
    )
    row("agents that missed a generation", [str(r.missed) for r in runs])
    row("agents never up (no first heartbeat and config)", [str(r.not_ready) for r in runs])
    for index in range(max((len(r.rollouts) for r in runs), default=0)):
        cells = []
        for r in runs:
            if index >= len(r.rollouts):
                cells.append("")
                continue
            ro = r.rollouts[index]
            cells.append(
                f"{ro.wall:.1f} s / {ro.bound:.0f} s = {ro.ratio:.2f}{TIMES}, "
                f"{ro.state}, {ro.on_new_image}/{ro.nodes} on {NEW_IMAGE}, at most "
                f"{ro.max_out} out"
            )
        first = runs[0].rollouts[index] if index < len(runs[0].rollouts) else None
        label = f"rollout N={first.nodes} S={first.slots}: wall / bound" if first else "rollout"
        row(label, cells)
        row(
            "  slot handover (steady-state → next node told) p50 / max; told → pre-reboot "
            "answered p50; boot → steady-state sent p50",
            [_handover(r.rollouts[index]) if index < len(r.rollouts) else "" for r in runs],
        )
    row("pre-reboot answered 409 (slot not free yet)", [str(r.lock_waits) for r in runs])
    row("errors", [str(_errors(r)) for r in runs])
    row("TCP connections opened by the agents", [str(r.connects) for r in runs])
    row(
        "the kernel, meanwhile: accept queue full / SYN cookies sent / cookies failed (reset)",
        [" / ".join(str(r.kernel.get(k, "?")) for k in TCP_COUNTERS) for r in runs],
    )
    row("wall time of the store's run", [f"{r.wall:.0f} s" for r in runs])
    kinds = ["hostos serve", "etcd", "load generators", "all processes on the machine"]
    row(
        "CPU used: " + ", ".join(kinds),
        [" / ".join(f"{r.cpu.get(k, 0.0):.0f} s" for k in kinds) for r in runs],
    )
    row(
        "1-minute load average: at the start / the most seen",
        [f"{r.load[0]:.2f} / {r.load[1]:.2f}" for r in runs],
    )
    return rows


def report(runs: Sequence[StoreRun], opts: Options, argv: Sequence[str]) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "## `hostos serve` under simulated agents (cluster-bench)",
        "",
        f"Measured {now} at {commit_line()}: `bench/cluster.py {' '.join(argv)}`.",
        "",
        f"- machine: {machine()}; the load generators, the servers and etcd all share it; "
        f"listen queues: {sysctls()}",
        f"- agents: heartbeat every {opts.heartbeat:g} s or at the server's pace "
        f"(`--heartbeat-rate {opts.heartbeat_rate:g}`), long-poll `wait={opts.wait:g}` "
        f"with `image=`, reboot {opts.reboot:g} s",
        "",
        "### Targets",
        "",
        *targets(runs),
        "",
        "### All figures",
        "",
        *figures(runs, opts),
    ]
    notes = [f"- {_name(r)}: {r.note}" for r in runs if r.note]
    samples = [f"- {_name(r)}: `{s}`" for r in runs for s in r.samples[:5]]
    if notes or samples:
        lines += ["", *notes, *samples]
    command = " ".join([".venv/bin/python bench/cluster.py", *argv])
    lines += [
        "",
        HOW,
        "",
        "Reproduce (the run above):",
        "",
        "```sh",
        command,
        "```",
        "",
        "This section is written by `bench/cluster.py --write`; its numbers are never "
        "edited by hand.",
    ]
    return "\n".join(lines)


HOW = """How it is measured: per store, real `hostos serve` processes (SQLite in a temporary
directory; or two replicas on one etcd started for the run, its data on disk), the admin
token from a file, every node's token issued and its first image assigned through the API.
The agents run as asyncio tasks in a few load-generator processes, each agent with its own
node id, token and connections, doing what the node agent does (see the top of
`bench/cluster.py`); on etcd they are spread over both replicas. Heartbeats served = the
heartbeats answered 200 within the window, divided by its length; capacity = the same while,
on top of the fleet, that many heartbeats are kept in flight back to back. Fan-out = for each
agent, from just before `POST /v1/site` of a generation that changes every role until its
long-poll returns that generation (one clock: all on one machine). Rollout = from `POST
/v1/rollouts` until the stored rollout's `updated_at` of its `done` state; the bound is
ceil(N / S) times the agents' reboot time, the time the reboots alone take; "out" is counted by
the agents, from the pre-reboot answer to the steady-state request. Errors = every answer
that was not the expected one (heartbeat 200, config 200/304, pre-reboot 200/409,
steady-state 200), every request without an answer, 5xx lines or tracebacks in the server
logs, an agent that never saw a generation, a rollout not done or a node not on the new
image. A reconnect because the server closed a keep-alive connection is not an error (it
closes idle ones after 5 s, so at a heartbeat interval above that each heartbeat opens a
connection)."""


# -- main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--generator"]:
        # thousands of agents in one process: full collections would stop its event loop
        # for a second now and then and show up as the agents' own delays (the server does
        # the same, hostos.cluster.server.serve.quiet_gc)
        quiet_gc()
        asyncio.run(generator_main())
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=10000)
    parser.add_argument(
        "--stores",
        default="sqlite,etcd",
        help="the runs, in order: sqlite or etcd, each with :AGENTS for a "
        "size other than --agents (default %(default)s)",
    )
    parser.add_argument(
        "--heartbeat",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="each agent's heartbeat interval (default %(default)s, as hostos.cluster.agent's)",
    )
    parser.add_argument(
        "--heartbeat-rate",
        type=float,
        default=pacing.RATE,
        metavar="PER_S",
        help="the servers' --heartbeat-rate (default %(default)s)",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="the long-poll's wait= (default %(default)s)",
    )
    parser.add_argument(
        "--reboot",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how long a simulated reboot takes (default %(default)s)",
    )
    parser.add_argument("--rollout-nodes", type=int, default=200, metavar="N")
    parser.add_argument(
        "--slots",
        type=int,
        default=20,
        metavar="S",
        help="the rollout's max-unavailable (default %(default)s)",
    )
    parser.add_argument(
        "--big-rollout-slots",
        type=int,
        default=0,
        metavar="S",
        help="then roll out every other agent, S at a time (0: not)",
    )
    parser.add_argument(
        "--generators", type=int, default=2, help="load-generator processes (default %(default)s)"
    )
    parser.add_argument(
        "--steady",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="the heartbeat window, at least the fleet's interval (default %(default)s)",
    )
    parser.add_argument(
        "--saturate",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="the capacity window, 0 to skip (default %(default)s)",
    )
    parser.add_argument("--saturate-concurrency", type=int, default=128)
    parser.add_argument(
        "--publishes",
        type=int,
        default=3,
        help="site generations published for the fan-out (default 3)",
    )
    parser.add_argument("--phase-timeout", type=float, default=180.0, metavar="SECONDS")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary directories (logs, stores, each rollout's "
        "reboot records: reboots-ROLE.json)",
    )
    parser.add_argument(
        "--write", type=Path, metavar="FILE", help="replace the cluster-bench section of FILE"
    )
    args = parser.parse_args(argv)
    stores: list[tuple[str, int]] = []
    for item in (s.strip() for s in args.stores.split(",") if s.strip()):
        name, _, size = item.partition(":")
        if name not in ("sqlite", "etcd") or (size and not size.isdigit()):
            parser.error(f"--stores {item!r}: expected sqlite or etcd, then :AGENTS or not")
        stores.append((name, int(size) if size else args.agents))
    if not stores:
        parser.error("--stores: name at least one store")
    if min(n for _, n in stores) < args.rollout_nodes or args.rollout_nodes < 1 or args.slots < 1:
        parser.error("need agents ≥ --rollout-nodes ≥ 1 and --slots ≥ 1")
    opts = Options(
        args.agents,
        args.heartbeat,
        args.wait,
        args.reboot,
        args.rollout_nodes,
        args.slots,
        args.big_rollout_slots,
        args.generators,
        args.steady,
        args.saturate,
        args.saturate_concurrency,
        args.publishes,
        args.phase_timeout,
        args.heartbeat_rate,
    )
    runs = []
    for store, agents in stores:
        tmp = Path(tempfile.mkdtemp(prefix=f"hostos-cluster-bench-{store}-"))
        try:
            runs.append(Runner(store, agents, opts, tmp).run())
        except BenchError as exc:
            print(f"bench: FAILED: {exc} (logs kept in {tmp})", file=sys.stderr)
            return 1
        if args.keep:
            log(f"{store}: logs and store kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        if args.write:  # after each run: a long run cut short keeps the ones before it
            write_section(args.write, SECTION, report(runs, opts, argv))
            log(f"wrote {args.write} ({len(runs)} of {len(stores)} runs)")
    print(report(runs, opts, argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
