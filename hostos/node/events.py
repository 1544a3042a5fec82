"""What the supervisor's loop reacts to: its events (a small closed set of frozen values)
and two of their sources, the site files (watchdog) and the engine's event stream.

Each source runs in a daemon thread and only posts to the supervisor's queue; the mount
manager, the cluster agent and the signal handlers post there too.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from hostos.engine.base import Engine, EngineError
from hostos.errors import SiteError
from hostos.labels import NAMESPACE_LABEL, OWNER, OWNER_LABEL
from hostos.logfmt import kv
from hostos.site.resolve import RoleSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SiteChanged:
    """A file under the site directory changed (the supervisor reloads after a quiet time)."""

    path: str


@dataclass(frozen=True)
class SpecArrived:
    """The cluster server sent a spec: a RoleSpec, or the SiteError of one that is not."""

    spec: RoleSpec | SiteError


@dataclass(frozen=True)
class ContainerChanged:
    """An owned container died, stopped, went (un)healthy…; container: its ID, "" when the
    event stream ended and events may have been missed."""

    container: str = ""


@dataclass(frozen=True)
class MountsChanged:
    """A role mount changed state (up, down, back, on its fallback)."""


@dataclass(frozen=True)
class EngineLost:
    """The engine stopped answering: the supervisor reconnects."""

    why: str


@dataclass(frozen=True)
class Reap:
    """SIGCHLD while the supervisor is PID 1: reap the orphans it inherited."""


@dataclass(frozen=True)
class Stop:
    """SIGTERM or SIGINT: stop the units, dependents first, and exit."""

    signal: str


Event = SiteChanged | SpecArrived | ContainerChanged | MountsChanged | EngineLost | Reap | Stop
Events = queue.Queue[Event]
# Container events that can change what the supervisor must do.
RELEVANT = ("die", "oom", "destroy", "stop", "kill", "health_status")


class _SiteHandler(FileSystemEventHandler):
    def __init__(self, events: Events) -> None:
        self.events = events

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return  # reads change nothing (watchdog 4+ reports them)
        self.events.put(SiteChanged(str(event.src_path)))


def watch_site(root: str, events: Events) -> Any:
    """A started watchdog observer posting SiteChanged for every change under root."""
    observer = Observer()
    observer.schedule(_SiteHandler(events), root, recursive=True)
    observer.daemon = True
    observer.start()
    return observer


def watch_engine(
    engine: Engine, events: Events, namespace: str, stop: threading.Event
) -> threading.Thread:
    """A thread posting ContainerChanged for owned containers, EngineLost when the engine
    stops answering: the supervisor then reconnects.  A stream that merely ends
    (podman ends it when it rotates its events log) is followed again at once."""

    def follow() -> None:
        since = time.time()
        try:
            while not stop.is_set():
                since = _follow_once(engine, events, namespace, stop, since)
                engine.ping()  # the stream ended: podman ends it when it rotates its log
                events.put(ContainerChanged())  # events may have been missed: reconcile
        except EngineError as exc:
            if not stop.is_set():
                events.put(EngineLost(str(exc)))
        except Exception as exc:
            log.warning(kv("engine-events-failed", error=repr(exc)))
            if not stop.is_set():
                events.put(EngineLost(repr(exc)))

    thread = threading.Thread(target=follow, name="engine-events", daemon=True)
    thread.start()
    return thread


def _follow_once(
    engine: Engine,
    events: Events,
    namespace: str,
    stop: threading.Event,
    since: float,
) -> float:
    """Post relevant events until the stream ends; where to follow on from (a second back,
    so nothing at the seam is lost: a repeated event only marks the supervisor dirty)."""
    last = since
    for event in engine.events(since, None):
        if stop.is_set():
            break
        last = max(last, float(event.get("time") or last))
        if _ours(event, namespace) and _relevant(event):
            events.put(ContainerChanged(str(event.get("id") or "")))
    return max(since, last - 1.0)


def _ours(event: dict[str, Any], namespace: str) -> bool:
    attributes = event.get("attributes") or {}
    if attributes.get(OWNER_LABEL) == OWNER:
        return str(attributes.get(NAMESPACE_LABEL, "")) == namespace
    # podman's health events carry no labels: match the name instead
    name = str(event.get("name", ""))
    prefix = "hostos-" + (f"{namespace}-" if namespace else "")
    return str(event.get("action", "")).startswith("health_status") and name.startswith(prefix)


def _relevant(event: dict[str, Any]) -> bool:
    return str(event.get("action", "")).split(":")[0] in RELEVANT
