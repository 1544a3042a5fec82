"""The role mounts of this node, kept up by a thread of their own.

A mount attempt may take its whole `timeout`, and a stat on a dead NFS server may never
return, so the supervisor's loop must never make either call itself.  `MountManager` runs a
scheduler thread that launches every command in a short-lived thread of its own (one at a
time per mount, each bounded: see hostos.mounts.commands), feeds the outcomes into the pure state
machine of hostos.mounts.state, and calls `on_change()` when what the supervisor reads changed.

The supervisor reads three things:

- `ready(name)`: a unit that binds (or requires) this mount may be created or started now.
  True when it is mounted, in fallback, or skipped; False while pending (the first attempt
  has not ended: starting on a fallback for the few seconds a healthy mount takes would only
  recreate the unit moments later) and while failed (no fallback).
- `sources()`: role mount name → host path to bind, for the ready mounts only: the target
  when mounted, the fallback path in fallback, an empty read-only directory when skipped.
  A unit moves to its fallback and back by being recreated: the source is part of the
  container's hash.  A mount that is not ready has no entry; rendering then uses its target,
  which leaves a unit already running on it untouched (an NFS hard mount resumes by itself
  when the server returns) while `ready()` keeps new starts back.
- `status()`: one `MountStatus` per mount, for `hostos status`.

`stop()` leaves every mount in place: containers may still use them, and a supervisor started
again adopts them (and, by the ledger of hostos.mounts.commands, still knows which are its own).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from hostos.errors import RuntimeFailure
from hostos.logfmt import kv
from hostos.mounts.state import (
    Alive,
    Dead,
    Death,
    Event,
    Mounted,
    MountFailed,
    MountState,
    MountStatus,
    Need,
    Now,
    Policy,
    Track,
    Unmounted,
    begin,
    remove,
    respec,
    step,
)
from hostos.mounts.state import ready as track_ready
from hostos.mounts.state import source as track_source
from hostos.site.model import RoleMount

__all__ = ["Clock", "MountManager", "MountState", "MountStatus", "Mounter", "Policy"]

log = logging.getLogger(__name__)

MAX_SLEEP = 1.0  # the scheduler looks around at least this often, whatever is due
STOP_GRACE = 2.0  # seconds stop() waits for commands in flight to see the cancel


class Mounter(Protocol):
    """What runs the commands (hostos.mounts.commands.RealMounter, or a fake in tests).  Every call
    must return in bounded time and give up promptly once `cancel` is set."""

    def mount(
        self, spec: RoleMount, stale: Sequence[RoleMount], cancel: threading.Event
    ) -> Mounted: ...  # raises a RuntimeFailure on failure

    def check(self, spec: RoleMount, cancel: threading.Event) -> Alive | Dead: ...

    def unmount(self, specs: Sequence[RoleMount], cancel: threading.Event) -> Unmounted: ...

    def empty_dir(self, name: str) -> str: ...


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def time(self) -> float: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()


View = tuple[dict[str, MountStatus], dict[str, str]]


class MountManager:
    """Mounts the role's mounts, keeps them up, and says what containers may bind."""

    def __init__(
        self,
        mounts: Iterable[RoleMount],
        on_change: Callable[[], None] | None = None,
        *,
        mounter: Mounter | None = None,
        clock: Clock | None = None,
        policy: Policy | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if mounter is None:
            from hostos.mounts.commands import RealMounter

            mounter = RealMounter()
        self._mounter = mounter
        self._on_change = on_change
        self._clock = clock or SystemClock()
        self._policy = policy or Policy()
        self._rand = rand
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._tracks: dict[str, Track] = {}
        self._busy: set[str] = set()  # names with a command in flight
        self._results: list[tuple[str, int, Event]] = []
        self._ops: list[threading.Thread] = []
        self._thread: threading.Thread | None = None
        now = self._now()
        for spec in _by_name(mounts).values():
            self._tracks[spec.name] = begin(spec, now)
        self._view = self._read_view()

    # -- the supervisor's side -----------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="hostos-mounts", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = STOP_GRACE) -> None:
        """Stop the thread; cancel the commands in flight; leave the mounts in place."""
        self._stopping.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        for op in list(self._ops):
            op.join(max(0.0, deadline - time.monotonic()))
            if op.is_alive():
                log.warning(kv("mount-command-abandoned", thread=op.name))
        close = getattr(self._mounter, "close", None)
        if callable(close):
            close()

    def update(self, mounts: Iterable[RoleMount]) -> None:
        """The role changed: mount new mounts, unmount those no longer listed (if hostos
        mounted them), remount those whose type, source, target or options changed."""
        wanted = _by_name(mounts)
        now = self._now()
        with self._lock:
            for name, spec in wanted.items():
                track = self._tracks.get(name)
                if track is None:
                    self._tracks[name] = begin(spec, now)
                elif track.removed or track.spec != spec:
                    self._tracks[name] = respec(track, spec, now)
            for name, track in list(self._tracks.items()):
                if name not in wanted and not track.removed:
                    self._tracks[name] = remove(track, now)
        self._wake.set()

    def status(self) -> dict[str, MountStatus]:
        with self._lock:
            return {n: t.status for n, t in sorted(self._tracks.items()) if not t.removed}

    def sources(self) -> dict[str, str]:
        with self._lock:
            return self._sources()

    def ready(self, name: str) -> bool:
        with self._lock:
            track = self._tracks.get(name)
            return track is not None and track_ready(track)

    # -- the scheduler thread ------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                self._apply_results()
                self._launch_due()
                self._publish()
            except Exception:  # a bug must not end mount supervision for good
                log.exception(kv("mount-loop-error"))
            self._wake.wait(self._sleep_for())

    def _apply_results(self) -> None:
        with self._lock:
            results, self._results = self._results, []
            for name, gen, event in results:
                self._busy.discard(name)
                track = self._tracks.get(name)
                if track is None or track.gen != gen:
                    continue  # the spec changed meanwhile; its own need is scheduled
                now = self._now()
                after = step(track, event, now, self._policy)
                _log_change(track, after, event, now)
                if after is None:
                    del self._tracks[name]
                else:
                    self._tracks[name] = after

    def _launch_due(self) -> None:
        now = self._clock.monotonic()
        with self._lock:
            due = [t for n, t in self._tracks.items() if n not in self._busy and t.due <= now]
            for track in due:
                self._busy.add(track.spec.name)
        self._ops = [op for op in self._ops if op.is_alive()]
        for track in due:
            op = threading.Thread(
                target=self._run,
                args=(track,),
                daemon=True,
                name=f"hostos-mount-{track.need}-{track.spec.name}",
            )
            self._ops.append(op)
            op.start()

    def _run(self, track: Track) -> None:
        """One command for one mount, in its own thread; its outcome goes to the loop."""
        event = self._command(track)
        with self._lock:
            self._results.append((track.spec.name, track.gen, event))
        self._wake.set()

    def _command(self, track: Track) -> Event:
        cancel = self._stopping
        try:
            if track.need is Need.MOUNT:
                return self._mounter.mount(track.spec, track.stale, cancel)
            if track.need is Need.CHECK:
                return self._mounter.check(track.spec, cancel)
            return self._mounter.unmount(track.stale, cancel)
        except Exception as exc:
            if not isinstance(exc, RuntimeFailure):  # the mounter's own failures are expected
                log.exception(kv("mount-command-error", mount=track.spec.name))
            error = str(exc) or type(exc).__name__
            if track.need is Need.UNMOUNT:
                return Unmounted(error)
            if track.need is Need.CHECK:
                return Dead(Death.BROKEN, error)
            return MountFailed(error, bool(getattr(exc, "timed_out", False)))

    def _publish(self) -> None:
        """Call on_change (outside the lock) when status or sources changed."""
        with self._lock:
            view = self._read_view()
            changed = view != self._view
            self._view = view
        if changed and self._on_change is not None and not self._stopping.is_set():
            try:
                self._on_change()
            except Exception:
                log.exception(kv("mount-on-change-error"))

    def _sleep_for(self) -> float:
        now = self._clock.monotonic()
        with self._lock:
            dues = [t.due - now for n, t in self._tracks.items() if n not in self._busy]
        return max(0.0, min([MAX_SLEEP, *dues]))

    # -- helpers -------------------------------------------------------------------------

    def _now(self) -> Now:
        return Now(self._clock.monotonic(), self._clock.time(), self._rand())

    def _sources(self) -> dict[str, str]:
        found = {}
        for name, track in sorted(self._tracks.items()):
            path = track_source(track, self._mounter.empty_dir(name))
            if path is not None:
                found[name] = path
        return found

    def _read_view(self) -> View:
        statuses = {n: t.status for n, t in self._tracks.items() if not t.removed}
        return statuses, self._sources()


def _by_name(mounts: Iterable[RoleMount]) -> dict[str, RoleMount]:
    return {m.name: m for m in mounts}


def _log_change(before: Track, after: Track | None, event: Event, now: Now) -> None:
    """One line when a mount changes state (or fails differently); nothing otherwise."""
    name = before.spec.name
    if after is None:
        log.info(
            kv(
                "mount",
                mount=name,
                state="removed",
                error=event.error if isinstance(event, Unmounted) else None,
            )
        )
        return
    old, new = before.status, after.status
    retry_in = None if new.next_retry is None else f"{max(0.0, new.next_retry - now.wall):.3g}s"
    if old.state is new.state and old.last_error == new.last_error:
        if new.attempts != old.attempts:
            log.debug(
                kv(
                    "mount",
                    mount=name,
                    state=new.state.value,
                    attempts=new.attempts,
                    retry_in=retry_in,
                )
            )
        return
    up = new.state is MountState.MOUNTED
    adopted = isinstance(event, Mounted) and event.adopted
    log.log(
        logging.INFO if up else logging.WARNING,
        kv(
            "mount",
            mount=name,
            state=new.state.value,
            target=after.spec.target,
            fallback=None if up else after.spec.fallback,
            adopted="yes" if adopted else None,
            attempts=new.attempts or None,
            error=new.last_error,
            retry_in=retry_in,
        ),
    )
