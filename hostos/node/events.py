"""Event sources of the supervisor: site files (watchdog) and the engine's event stream.

Each runs in a daemon thread and only posts to the supervisor's queue.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from hostos.engine.base import NAMESPACE_LABEL, OWNER, OWNER_LABEL, Engine, EngineError
from hostos.logfmt import kv

log = logging.getLogger(__name__)
# Container events that can change what the supervisor must do.
RELEVANT = ("die", "oom", "destroy", "stop", "kill", "health_status")


class _SiteHandler(FileSystemEventHandler):
    def __init__(self, events: queue.Queue[tuple[str, Any]]) -> None:
        self.events = events

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return  # reads change nothing (watchdog 4+ reports them)
        self.events.put(("site", str(event.src_path)))


def watch_site(root: str, events: queue.Queue[tuple[str, Any]]) -> Any:
    """A started watchdog observer posting ("site", path) for every change under root."""
    observer = Observer()
    observer.schedule(_SiteHandler(events), root, recursive=True)
    observer.daemon = True
    observer.start()
    return observer


def watch_engine(
    engine: Engine, events: queue.Queue[tuple[str, Any]], namespace: str, stop: threading.Event
) -> threading.Thread:
    """A thread posting ("engine", event) for owned containers, ("engine-lost", why) when
    the engine stops answering: the supervisor then reconnects.  A stream that merely ends
    (podman ends it when it rotates its events log) is followed again at once."""

    def follow() -> None:
        since = time.time()
        try:
            while not stop.is_set():
                since = _follow_once(engine, events, namespace, stop, since)
                engine.ping()  # the stream ended: podman ends it when it rotates its log
                events.put(("engine", {}))  # events may have been missed: reconcile
        except EngineError as exc:
            if not stop.is_set():
                events.put(("engine-lost", str(exc)))
        except Exception as exc:
            log.warning(kv("engine-events-failed", error=repr(exc)))
            if not stop.is_set():
                events.put(("engine-lost", repr(exc)))

    thread = threading.Thread(target=follow, name="engine-events", daemon=True)
    thread.start()
    return thread


def _follow_once(
    engine: Engine,
    events: queue.Queue[tuple[str, Any]],
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
            events.put(("engine", event))
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
