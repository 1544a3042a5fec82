"""Fixtures for the cluster tests: a real etcd for the session, and a store of each kind.

etcd runs once per session on free loopback ports with its data in a temporary directory;
each test gets its own key prefix on it, so tests never see each other's keys or claims.
"""

from __future__ import annotations

import contextlib
import json
import runpy
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hostos.cluster.store.kv import KV
from hostos.cluster.store.url import open_kv

# Test modules `from conftest import …` and get whichever conftest pytest loaded last under
# that name: hand on the helpers of tests/conftest.py, as tests/integration/conftest.py does.
_SHARED = runpy.run_path(str(Path(__file__).parent.parent / "conftest.py"))
ROOT: Path = _SHARED["ROOT"]
EXAMPLE_SITE: Path = _SHARED["EXAMPLE_SITE"]
write: Callable[[Path, str], Path] = _SHARED["write"]

ETCD = "/usr/bin/etcd"
ETCD_START = 20.0  # seconds etcd may take to answer /health


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=1) as reply:
            return bool(json.load(reply).get("health") == "true")
    except OSError:
        return False


@pytest.fixture(scope="session")
def etcd_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The client URL of an etcd started for this session (http://127.0.0.1:PORT)."""
    binary = shutil.which("etcd") or ETCD
    if not Path(binary).exists():
        pytest.skip("etcd is not installed (Debian: apt install etcd-server)")
    data = tmp_path_factory.mktemp("etcd")
    url = f"http://127.0.0.1:{free_port()}"
    log = (data / "etcd.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            "--data-dir",
            str(data / "data"),
            "--listen-client-urls",
            url,
            "--advertise-client-urls",
            url,
            "--listen-peer-urls",
            f"http://127.0.0.1:{free_port()}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + ETCD_START
        while not _healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"etcd did not start; its log: {data / 'etcd.log'}")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def etcd_store_url(etcd_url: str) -> str:
    """A store URL on the session's etcd with a prefix of its own."""
    return etcd_url.replace("http://", "etcd://") + f"/test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["sqlite", pytest.param("etcd", marks=pytest.mark.integration)])
def kv_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL of each kind: a fresh SQLite file, or a fresh prefix on the session etcd."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'cluster.db'}"
    return etcd_store_url(request.getfixturevalue("etcd_url"))


@pytest.fixture
def kv(kv_url: str) -> Iterator[KV]:
    """An empty store of each kind, closed after the test."""
    with contextlib.closing(open_kv(kv_url)) as store:
        yield store
