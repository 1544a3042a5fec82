"""Pick and reach a container engine; start a private podman service when none runs.

A hostos node needs no engine daemon: with podman installed and no API service
answering, `connect` starts `podman system service` on a private socket and
stops it again at `close()`.  Reachability is decided by `GET /_ping` over a raw
socket with a short timeout, which costs no HTTP library import and tells Docker
from Podman (podman adds a Libpod-Api-Version header), so a podman socket found
where Docker's usually is still gets the podman adapter and its health checks.

The adapters are imported only once chosen, and they import docker-py or podman-py
only for calls that change or stream something (each takes about 0.15 s to import,
a large share of a no-op apply's budget); reads go over hostos.engine.http.
`EarlyEngine` connects and lists the owned containers while `hostos apply` reads
the site.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

from hostos.engine.base import Engine, EngineError, Observed
from hostos.engine.kind import EngineKind
from hostos.engine.probe import Pong, ping
from hostos.process import CommandFailed, spawn, terminate

log = logging.getLogger("hostos.engine")

DOCKER_SOCKET = "unix:///var/run/docker.sock"
PODMAN_SOCKET = "unix:///run/podman/podman.sock"
EMBEDDED_SOCKET = "/run/hostos/podman.sock"  # root; others use $XDG_RUNTIME_DIR/hostos/
# The wait ends as soon as the service answers; the bound is for a service that hangs.
# Under emulation (the lab's qemu boots) a first start takes several seconds.
SERVICE_START_TIMEOUT = 30.0
SERVICE_STOP_TIMEOUT = 5.0
HINT = "install podman or start dockerd"


def connect(
    kind: EngineKind = EngineKind.auto,
    podman_socket: str | None = None,
    *,
    embedded_socket: str | None = None,
    start_service: bool = True,
    starting: StartingService | None = None,
) -> Engine:
    """A connected engine adapter.

    kind "auto": Docker when its socket answers (DOCKER_HOST or /var/run/docker.sock),
    else Podman.  podman_socket: where to look for a running podman service instead
    of CONTAINER_HOST or /run/podman/podman.sock; embedded_socket: where to start
    hostos's own service when that one does not answer (start_service=False: raise
    EngineError instead of starting one; starting: a service of ours already on its way
    up there, from start_podman_early, to wait for instead of starting another).
    """
    if kind not in tuple(EngineKind):
        raise EngineError(f"unknown engine '{kind}' (want docker, podman or auto)")
    if kind in (EngineKind.docker, EngineKind.auto):
        url = os.environ.get("DOCKER_HOST") or DOCKER_SOCKET
        pong = ping(url)
        if pong is not None:
            if starting is not None:
                starting.stop()
            return _adapter(url, pong)
        if kind == EngineKind.docker:
            raise EngineError(f"docker: dockerd does not answer on {url} (start dockerd)")
    return _connect_podman(
        podman_socket,
        embedded_socket,
        auto=kind == EngineKind.auto,
        start_service=start_service,
        starting=starting,
    )


def start_podman_early(
    kind: EngineKind, podman_socket: str | None = None, embedded_socket: str | None = None
) -> StartingService | None:
    """Start hostos's own podman service now, without waiting, when connect() would start
    one later: the caller does its own work (imports, reading the site) meanwhile and
    hands the result to connect(starting=…).  None when an engine answers already or
    podman is not there (connect() then says what is wrong)."""
    if kind == EngineKind.docker or shutil.which("podman") is None:
        return None
    if kind == EngineKind.auto and ping(os.environ.get("DOCKER_HOST") or DOCKER_SOCKET) is not None:
        return None
    path = embedded_socket or default_embedded_socket()
    looked = {_url(podman_socket or os.environ.get("CONTAINER_HOST") or PODMAN_SOCKET), _url(path)}
    if any(ping(url) is not None for url in looked):
        return None
    try:
        return StartingService.spawn(path)
    except EngineError:
        return None  # connect() tries again and reports it


def _connect_podman(
    podman_socket: str | None,
    embedded_socket: str | None,
    auto: bool,
    start_service: bool = True,
    starting: StartingService | None = None,
) -> Engine:
    url = _url(podman_socket or os.environ.get("CONTAINER_HOST") or PODMAN_SOCKET)
    pong = ping(url)
    if pong is not None and (starting is None or _url(starting.path) != url):
        if starting is not None:
            starting.stop()
        return _adapter(url, pong)
    if shutil.which("podman") is None:
        where = "dockerd does not answer, " if auto else ""
        raise EngineError(
            f"no container engine: {where}no podman service answers on {url}, "
            f"and podman is not installed ({HINT})"
        )
    path = embedded_socket or default_embedded_socket()
    url = _url(path)
    if starting is None:
        pong = ping(url)
        if pong is not None:  # another hostos process's service: use it, leave it running
            return _adapter(url, pong)
    if not start_service and starting is None:
        raise EngineError(f"podman: no podman service answers on {url}")
    from hostos.engine.podman import PodmanEngine

    service = (starting or StartingService.spawn(path)).ready()
    try:
        return PodmanEngine(url, service.pong.libpod_version, on_close=service.stop)
    except BaseException:
        service.stop()
        raise


class EarlyEngine:
    """An engine connected at once, and the containers hostos owns there listed in a
    background thread while the caller does its own work (imports, reading the site).

    A no-op `hostos apply` spends most of its time on the CPU in Python, and podman takes
    about 60 ms to list a hundred containers; doing both at once hides the list.  Nothing
    is started for it (no private podman service): when no engine answers at once,
    `engine` and `listed` are None and the caller connects as it would have, with its
    errors.  The list is a snapshot from before the caller's work: use it only when that
    work did not change the engine (see hostos.node.converge.prepare).
    """

    def __init__(self, kind: EngineKind) -> None:
        self._listed: list[Observed] | None = None
        self._thread: threading.Thread | None = None
        try:
            self._engine: Engine | None = connect(kind, start_service=False)
        except EngineError:
            self._engine = None
            return
        self._thread = threading.Thread(
            target=self._list, args=(self._engine,), name="hostos-early-list", daemon=True
        )
        self._thread.start()

    def _list(self, engine: Engine) -> None:
        try:
            self._listed = engine.owned()
        except EngineError as exc:  # the caller lists again and reports what goes wrong
            log.debug("early list of owned containers: %s", exc)

    @property
    def engine(self) -> Engine | None:
        """The connected engine, once its list is done (the engine is not shared)."""
        if self._thread is not None:
            self._thread.join()
        return self._engine

    @property
    def listed(self) -> list[Observed] | None:
        """What engine.owned() returned, or None."""
        return self._listed if self.engine is not None else None

    def close(self) -> None:
        """Close the engine, for a caller that will not use it."""
        engine, self._engine, self._listed = self.engine, None, None
        if engine is not None:
            engine.close()


def _adapter(url: str, pong: Pong) -> Engine:
    if pong.libpod_version is not None:
        from hostos.engine.podman import PodmanEngine

        return PodmanEngine(url, pong.libpod_version)
    from hostos.engine.docker import DockerEngine

    return DockerEngine(url, pong.api_version)


def _local_podman_env() -> dict[str, str]:
    """The environment without what would turn the podman command into a remote client."""
    remote = ("CONTAINER_HOST", "CONTAINER_CONNECTION", "CONTAINER_SSHKEY")
    return {k: v for k, v in os.environ.items() if k not in remote}


def default_embedded_socket() -> str:
    """/run/hostos/podman.sock for root, $XDG_RUNTIME_DIR/hostos/podman.sock otherwise."""
    if os.geteuid() == 0:
        return EMBEDDED_SOCKET
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/hostos-{os.geteuid()}"
    return os.path.join(runtime, "hostos", "podman.sock")


class StartingService:
    """A `podman system service` that hostos started and that may not answer yet."""

    def __init__(
        self, path: str, process: subprocess.Popen[bytes], log_path: Path, command: list[str]
    ) -> None:
        self.path = path
        self.process = process
        self.log_path = log_path
        self.command = command

    @classmethod
    def spawn(cls, path: str) -> StartingService:
        """Start the service; its output goes to a log beside the socket."""
        sock = Path(path)
        sock.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        sock.unlink(missing_ok=True)  # a dead service's socket would make the bind fail
        log_path = sock.with_name(sock.stem + "-service.log")
        cmd = ["podman", "system", "service", "--time=0", _url(path)]
        with open(log_path, "ab") as log_file:
            try:
                process = spawn(cmd, log_file=log_file, env=_local_podman_env())
            except CommandFailed as exc:
                raise EngineError(f"podman: {exc} ({HINT})") from None
        log.info("started podman service pid %d on %s", process.pid, path)
        return cls(path, process, log_path, cmd)

    def ready(self, timeout: float = SERVICE_START_TIMEOUT) -> EmbeddedService:
        """Wait until it answers; the tail of its log if it exits or hangs instead."""
        deadline = time.monotonic() + timeout
        while (pong := ping(_url(self.path), timeout=0.5)) is None:
            if self.process.poll() is not None or time.monotonic() > deadline:
                why = (
                    "exited"
                    if self.process.poll() is not None
                    else f"did not answer within {timeout:g}s"
                )
                _terminate(self.process)
                raise EngineError(
                    f"podman: `{' '.join(self.command)}` {why}; "
                    f"last lines of {self.log_path}:\n{_tail(self.log_path)}"
                )
            time.sleep(0.05)
        return EmbeddedService(self.path, self.process, pong, self.log_path)

    def stop(self) -> None:
        """Not needed after all (another engine answered)."""
        _terminate(self.process)
        Path(self.path).unlink(missing_ok=True)


class EmbeddedService:
    """A `podman system service` that hostos started and must stop."""

    def __init__(
        self, path: str, process: subprocess.Popen[bytes], pong: Pong, log_path: Path
    ) -> None:
        self.path = path
        self.process = process
        self.pong = pong
        self.log_path = log_path

    def stop(self) -> None:
        """Stop the service (SIGTERM, then SIGKILL after a grace period)."""
        _terminate(self.process)
        Path(self.path).unlink(missing_ok=True)
        log.info("stopped podman service pid %d", self.process.pid)


def _url(socket_or_url: str) -> str:
    return socket_or_url if "://" in socket_or_url else "unix://" + socket_or_url


def _terminate(process: subprocess.Popen[bytes]) -> None:
    terminate(process, SERVICE_STOP_TIMEOUT)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
