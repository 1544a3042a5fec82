"""Starting, waiting for and stopping the processes a bench runs: hostos commands, servers,
etcd, load generators; the ports they listen on and the environment they get."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.cli import BenchError
from bench.procfs import cpu_seconds
from hostos.process import terminate

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
PYTHON = BIN / "python"
HOSTOS = [str(PYTHON), "-m", "hostos"]  # hostos as a child process of a bench
START_SECONDS = 60.0  # how long a server may take to answer after its start
NOFILE = 65536  # file descriptors for a server or generator holding 10,000 connections
# Variables that would point a child at another engine, namespace or compose project, or
# change its defaults.
ENV_DROP = (
    "DOCKER_HOST",
    "CONTAINER_HOST",
    "HOSTOS_ENGINE",
    "HOSTOS_NAMESPACE",
    "COMPOSE_PROJECT_NAME",
    "COMPOSE_FILE",
)


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment without ENV_DROP, plus extra."""
    return {**{k: v for k, v in os.environ.items() if k not in ENV_DROP}, **extra}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of asking)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def more_files() -> None:
    """In a child before exec: room for tens of thousands of sockets."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, max(hard, NOFILE)))
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """Whether a GET of url answers 200 within timeout."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return int(reply.status) == 200
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class Proc:
    """A process a bench started, its output going to a log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    url: str = ""  # where it serves, for a server

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        """Its CPU time and its reaped children's so far (0 once it is gone)."""
        try:
            return cpu_seconds(self.pid, children=True)
        except OSError:
            return 0.0

    def wait_ready(self, check: Callable[[], bool], timeout: float = START_SECONDS) -> None:
        """Wait for check() to hold; BenchError if the process ends or time runs out."""
        deadline = time.monotonic() + timeout
        while not check():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"{self.name} did not start; its log: {self.log}")
            time.sleep(0.1)

    def stop(self, grace: float = 15.0) -> int:
        """SIGTERM, SIGKILL after grace seconds; its exit status."""
        terminate(self.process, grace)
        return self.process.returncode

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


def start(
    name: str,
    cmd: Sequence[str],
    log: Path,
    *,
    url: str = "",
    env: Mapping[str, str] | None = None,
    many_files: bool = False,
) -> Proc:
    """Start cmd in the repository's root, stdout and stderr appended to log; env: its
    whole environment (default: child_env()); many_files: room for NOFILE sockets."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            list(cmd),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else child_env(),
            preexec_fn=more_files if many_files else None,
        )
    return Proc(name, process, log, url)
