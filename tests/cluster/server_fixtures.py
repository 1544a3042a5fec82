"""A real `hostos serve` process for the server tests: free loopback port, store in tmp.

Imported by the server test modules (`from server_fixtures import …`); the fixtures are
module-scoped, so one server serves a module's tests (they use node ids of their own).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from hostos.process import terminate

ROOT = Path(__file__).resolve().parent.parent.parent
ADMIN_TOKEN = "admin-" + uuid.uuid4().hex
START_SECONDS = 30.0
KERNEL = bytes(range(256)) * 64  # 16 KiB whose every offset is recognisable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    images: Path
    token_file: Path

    def client(self, token: str | None = ADMIN_TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def hostos(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hostos", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **kwargs,
    )  # type: ignore[call-overload]


def write_image(images: Path, name: str) -> Path:
    directory = images / name
    directory.mkdir(parents=True)
    (directory / "vmlinuz").write_bytes(KERNEL)
    (directory / "initramfs.img").write_bytes(b"initramfs " * 100)
    (directory / "boot.ipxe").write_text(
        "#!ipxe\nkernel vmlinuz initrd=initramfs.img console=ttyS0 quiet\n"
        "initrd initramfs.img\nboot\n"
    )
    return directory


def start_server(
    tmp: Path,
    store: str,
    host: str = "127.0.0.1",
    port: int | None = None,
    options: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Server:
    """A `hostos serve` on host:port (a free port by default) with images img-1 and img-2
    under tmp/images (made unless there: a restart on the same tmp finds them), in env
    (default: the test's own environment, e.g. a Slurm lab's for a server that runs scontrol)."""
    images, token_file, log = tmp / "images", tmp / "admin-token", tmp / "server.log"
    if not images.exists():
        images.mkdir()
        write_image(images, "img-1")
        write_image(images, "img-2")
    token_file.write_text(ADMIN_TOKEN + "\n")
    port = port or free_port()
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hostos",
                "serve",
                "--listen",
                f"{host}:{port}",
                "--store",
                store,
                "--admin-token-file",
                str(token_file),
                "--images",
                str(images),
                *options,
            ],
            cwd=ROOT,
            env=dict(env) if env is not None else None,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://{host}:{port}", process, log, images, token_file)
    deadline = time.monotonic() + START_SECONDS
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"hostos serve exited {process.returncode}: {server.log_text()}")
        try:
            if httpx.get(server.url + "/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"hostos serve did not answer: {server.log_text()}")
        time.sleep(0.1)


@contextmanager
def serving(tmp: Path, store: str | None = None, **where: Any) -> Iterator[Server]:
    """start_server on tmp (a SQLite store there by default), stopped afterwards."""
    running = start_server(tmp, store or f"sqlite://{tmp / 'cluster.db'}", **where)
    try:
        yield running
    finally:
        stop_server(running)


def stop_server(server: Server) -> None:
    terminate(server.process, 15)


@pytest.fixture(scope="module", params=["sqlite", "etcd"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A running `hostos serve` on SQLite, then on the session's etcd (own key prefix)."""
    tmp = tmp_path_factory.mktemp(f"serve-{request.param}")
    if request.param == "sqlite":
        store = f"sqlite://{tmp / 'cluster.db'}"
    else:
        etcd_url: str = request.getfixturevalue("etcd_url")
        store = etcd_url.replace("http://", "etcd://") + f"/serve-{uuid.uuid4().hex[:12]}"
    running = start_server(tmp, store)
    try:
        yield running
    finally:
        stop_server(running)


@pytest.fixture(scope="module")
def admin(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def node_client(server: Server, admin: httpx.Client, node_id: str) -> httpx.Client:
    """A client holding a freshly issued token of node_id."""
    reply = admin.post(f"/v1/tokens/nodes/{node_id}")
    assert reply.status_code == 200, reply.text
    return server.client(reply.json()["token"])
