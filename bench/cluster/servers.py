"""The servers under load: `hostos serve` on SQLite, or two replicas on an etcd started for
the run; started, checked, stopped, and the admin's API calls to them."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.cli import BenchError
from bench.cluster.client import Conn, HttpError
from bench.cluster.fleet import write_images
from bench.processes import HOSTOS, Proc, free_port, http_ok, start

ETCD = "/usr/bin/etcd"


def start_etcd(tmp: Path) -> Proc:
    binary = shutil.which("etcd") or ETCD
    if not Path(binary).exists():
        raise BenchError("etcd is not installed (Debian: apt install etcd-server)")
    url = f"http://127.0.0.1:{free_port()}"
    cmd = [
        binary,
        "--data-dir",
        str(tmp / "etcd-data"),
        "--listen-client-urls",
        url,
        "--advertise-client-urls",
        url,
        "--listen-peer-urls",
        f"http://127.0.0.1:{free_port()}",
    ]
    etcd = start("etcd", cmd, tmp / "etcd.log", url=url)
    etcd.wait_ready(lambda: http_ok(url + "/health"))
    return etcd


@dataclass(frozen=True)
class Serve:
    """What every `hostos serve` of a run is started with, besides its store and port."""

    token_file: Path
    images: Path
    heartbeat_rate: float
    drain_hooks: Path | None = None  # the drain rollout's hooks (jobs.py), if any
    drain_interval: float = 0.0  # with drain_hooks: the servers' --drain-interval

    def args(self) -> list[str]:
        drain = (
            ["--drain-hooks", str(self.drain_hooks), "--drain-interval", f"{self.drain_interval:g}"]
            if self.drain_hooks is not None
            else []
        )
        return [
            "--admin-token-file",
            str(self.token_file),
            "--images",
            str(self.images),
            "--heartbeat-rate",
            f"{self.heartbeat_rate:g}",
            *drain,
        ]


def start_server(tmp: Path, name: str, store: str, serve: Serve) -> Proc:
    """`hostos serve` on a free port of 127.0.0.1, its log tmp/NAME.log."""
    port = free_port()
    cmd = [
        *HOSTOS,
        "serve",
        "--listen",
        f"127.0.0.1:{port}",
        "--store",
        store,
        *serve.args(),
    ]
    url = f"http://127.0.0.1:{port}"
    server = start(name, cmd, tmp / f"{name}.log", url=url, many_files=True)
    server.wait_ready(lambda: http_ok(url + "/healthz"))
    return server


class Servers:
    """One store's servers (and its etcd), started in tmp with an admin token of its own."""

    def __init__(self, store: str, tmp: Path, token: str, serve: Serve) -> None:
        self.store, self.token = store, token
        self.procs: list[Proc] = []  # etcd first, if any: stopped last
        self.servers: list[Proc] = []
        write_images(serve.images)
        serve.token_file.write_text(token + "\n")
        try:
            if store == "sqlite":
                self._serve(tmp, ["serve-sqlite"], f"sqlite://{tmp / 'cluster.db'}", serve)
            else:
                etcd = start_etcd(tmp)
                self.procs.append(etcd)
                url = etcd.url.replace("http://", "etcd://") + "/bench"
                self._serve(tmp, ["serve-etcd-1", "serve-etcd-2"], url, serve)
        except BaseException:
            self.stop()
            raise

    def _serve(self, tmp: Path, names: list[str], url: str, serve: Serve) -> None:
        for name in names:
            server = start_server(tmp, name, url, serve)
            self.procs.append(server)
            self.servers.append(server)

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()

    def failures(self) -> dict[str, int]:
        """Per server, its log's 5xx answers and tracebacks (none expected)."""
        found = {}
        for server in self.servers:
            text = server.log.read_text(errors="replace")
            failed = sum(
                1 for line in text.splitlines() if " status=5" in line or "Traceback" in line
            )
            if failed:
                found[f"{server.name}: 5xx or tracebacks in its log"] = failed
        return found

    def admin(self, calls: Sequence[tuple[str, str, Any]], concurrency: int = 32) -> list[Any]:
        """Admin requests (method, path, JSON body) spread over the servers, `concurrency`
        at a time; their JSON answers, in order.  Every answer must be 200."""
        return asyncio.run(admin_calls(self.urls, self.token, calls, concurrency))


async def admin_calls(
    servers: Sequence[str], token: str, calls: Sequence[tuple[str, str, Any]], concurrency: int
) -> list[Any]:
    queue = list(enumerate(calls))
    results: list[Any] = [None] * len(calls)

    async def worker(index: int) -> None:
        conn = Conn.to(servers[index % len(servers)], token)
        try:
            while queue:
                position, (method, path, body) = queue.pop()
                try:
                    status, data = await conn.request(method, path, body)
                except HttpError as exc:
                    raise BenchError(f"the admin's {exc}") from None
                if status != 200:
                    raise BenchError(f"{method} {path}: HTTP {status} {data[:300]!r}")
                results[position] = json.loads(data) if data else None
        finally:
            conn.close()

    await asyncio.gather(*(worker(i) for i in range(min(concurrency, len(calls)) or 1)))
    return results
