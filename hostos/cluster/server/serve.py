"""`hostos serve`: check the options, open the store, run the app under uvicorn.

The checks come first and need neither fastapi nor the store, so a bad option is one line
and exit 2 at once.
"""

from __future__ import annotations

import gc
import logging
import resource
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from hostos.cluster import auth, pacing

log = logging.getLogger(__name__)

SHUTDOWN_SECONDS = 3  # long-polls still open then are cut; agents poll again
# connections the kernel queues while the server is busy: a fleet's agents connect at once
# after a server restart or a power-on; the kernel caps it at net.core.somaxconn
BACKLOG = 65535
GC_YOUNG, GC_MIDDLE, GC_FULL = 700, 10, 10_000  # gc.set_threshold (CPython: 700, 10, 10)
DRAIN_INTERVAL = 5.0  # seconds between two job counts of a draining node


def raise_file_limit() -> int:
    """Raise the soft limit of open files to the hard one and return it: each agent holds a
    long-poll connection and opens one per heartbeat, so 10,000 nodes need over 10,000
    descriptors, and the usual soft limit is 1,024 (Go servers such as etcd do the same)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError):
        return soft
    return wanted


class BadOption(ValueError):
    """An option `hostos serve` cannot run with (exit 2)."""


@dataclass(frozen=True)
class ServeOptions:
    host: str
    port: int
    listener: socket.socket  # bound and listening: a port in use is found before anything runs
    store: str
    admin_token: str
    images: Path | None
    public_url: str | None
    boot_tokens: bool
    heartbeat_rate: float
    drain_hooks: Path | None = None  # the generic drain's programs, and nothing else
    drain_interval: float = DRAIN_INTERVAL


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT, [V6]:PORT or :PORT (all addresses)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadOption(f"--listen {text!r}: expected HOST:PORT, e.g. 0.0.0.0:8080")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port; BadOption when the address cannot be had."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise BadOption(f"--listen {host}:{port}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise BadOption(f"--listen {host}:{port}: {exc.strerror or exc}") from None
    return sock


def check_store(url: str) -> str:
    """The store URL, its SQLite directory made when missing; BadOption for anything
    `open_kv` would refuse."""
    from hostos.cluster.store.url import open_kv

    parts = urlsplit(url)
    if parts.scheme == "sqlite" and parts.path and parts.path != "/" and not parts.netloc:
        try:
            Path(parts.path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadOption(
                f"--store {url}: cannot create {Path(parts.path).parent}: {exc.strerror}"
            ) from None
    try:
        open_kv(url).close()
    except ValueError as exc:
        raise BadOption(f"--store: {exc}") from None
    except Exception as exc:  # sqlite3.Error: a file that is not a database, say
        raise BadOption(f"--store {url}: {exc}") from None
    return url


def options(
    listen: str,
    store: str,
    admin_token_file: str,
    images: str | None,
    public_url: str | None,
    boot_tokens: bool,
    heartbeat_rate: float = pacing.RATE,
    drain_hooks: str | None = None,
    drain_interval: float = DRAIN_INTERVAL,
) -> ServeOptions:
    host, port = parse_listen(listen)
    hooks = check_hooks(drain_hooks)
    if not (0.1 <= drain_interval <= 3600):
        raise BadOption(
            f"--drain-interval {drain_interval:g}: expected seconds from 0.1 to 3600, "
            f"e.g. {DRAIN_INTERVAL:g}"
        )
    if not heartbeat_rate > 0:
        raise BadOption(
            f"--heartbeat-rate {heartbeat_rate:g}: expected heartbeats a second "
            f"above 0, e.g. {pacing.RATE:g}"
        )
    store = check_store(store)
    try:
        token = auth.read_admin_token(admin_token_file)
    except auth.AdminTokenError as exc:
        raise BadOption(str(exc)) from None
    image_dir = Path(images) if images else None
    if image_dir is not None and not image_dir.is_dir():
        raise BadOption(f"--images {images}: not a directory")
    if public_url is not None and urlsplit(public_url).scheme not in ("http", "https"):
        raise BadOption(f"--public-url {public_url!r}: expected http://HOST[:PORT]")
    return ServeOptions(
        host,
        port,
        bind(host, port),
        store,
        token,
        image_dir,
        public_url,
        boot_tokens,
        heartbeat_rate,
        hooks,
        drain_interval,
    )


def check_hooks(path: str | None) -> Path | None:
    """The drain hooks directory, absolute; BadOption when it is not a directory."""
    if path is None:
        return None
    hooks = Path(path).absolute()
    if not hooks.is_dir():
        raise BadOption(f"--drain-hooks {path}: not a directory")
    return hooks


def quiet_gc() -> None:
    """Keep the cyclic garbage collector's full passes out of a large fleet's way.

    With 10,000 agents the server holds a long-poll (task, future, timer, connection) per
    agent, renewed at every publish, so survivors pile into the oldest generation and
    CPython's full collection ran every few seconds, each 1.0-1.4 s with the event loop
    stopped and nothing freed (measured: `gc.callbacks` in a 10,000-agent bench run; the
    heartbeat p99 was 2.9 s and one slot handover 2.4 s). What is loaded at start (modules,
    the app) is frozen out of every pass; young and middle collections run as usual, so
    short-lived cycles are still freed, but a full one waits for 10,000 middle collections
    instead of 10 (not measured how often that comes; it frees what cycles got old)."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG, GC_MIDDLE, GC_FULL)


def serve(opts: ServeOptions) -> None:
    """Serve until SIGINT/SIGTERM."""
    import uvicorn

    from hostos.cluster.server.app import Settings, create_app
    from hostos.cluster.server.controller import Controller
    from hostos.cluster.server.drainer import Drainer
    from hostos.cluster.server.rollouts import add_rollout_routes
    from hostos.cluster.store.fleet import FleetStore
    from hostos.cluster.store.url import open_kv

    kv = open_kv(opts.store)
    controller = None

    def wake() -> None:  # the drainer's news: the controller plans again at once
        if controller is not None:
            controller.wake()

    drainer = Drainer(opts.drain_hooks, interval=opts.drain_interval, wake=wake)
    try:
        settings = Settings(
            opts.admin_token,
            opts.images,
            opts.public_url,
            opts.boot_tokens,
            heartbeat_rate=opts.heartbeat_rate,
        )
        state = FleetStore(kv)
        app = create_app(state, settings)
        add_rollout_routes(app, state)
        # acts only on the replica holding the claim, and so does its drainer
        controller = Controller(state, drainer=drainer)
        drainer.start()
        controller.start()
        log.info(
            "hostos serve on %s:%s, store %s, open files up to %s",
            opts.host,
            opts.port,
            opts.store,
            raise_file_limit(),
        )
        quiet_gc()
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            backlog=BACKLOG,
            timeout_graceful_shutdown=SHUTDOWN_SECONDS,
            server_header=False,
        )
        uvicorn.Server(config).run(sockets=[opts.listener])
    finally:
        if controller is not None:
            controller.stop()
        drainer.stop()
        kv.close()
        opts.listener.close()
