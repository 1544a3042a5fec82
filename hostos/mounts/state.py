"""The role mounts' state machine (pure): what each mount is, what to do next, and when.

Mount attempts, liveness probes and unmounts happen in the kernel, take seconds or forever and
fail in many ways; the decisions about them (retry when, fall back to what, which host path a
container binds, when a unit may start) are a table once time, randomness and the outcome of
each command are plain inputs.  This module holds that table and nothing that waits:
`hostos.mounts.commands` runs the commands and `hostos.mounts.manager` owns the thread that
feeds their outcomes in here.

A mount's life, per `Track`:

    pending --Mounted--> mounted --Dead(gone)--> down, mount again at once
       |                    |    --Dead(hung)--> down, keep probing: an NFS hard mount
       |                    |                    comes back by itself, nothing to remount
       |                    |    --Dead(broken)-> down, unmount and mount again
       |                    |                    (only a mount hostos made; else keep probing)
       +--MountFailed--> down, mount again after an exponential backoff

"down" is `failed` (no fallback: units that need the mount wait), `fallback` (units bind the
fallback path) or `skipped` (units start without the mount: they bind an empty directory).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum

from hostos.backoff import Backoff
from hostos.site.model import RoleMount

MOUNT_FIELDS = ("type", "source", "target", "options")  # a change means unmount and mount again


class MountState(StrEnum):
    PENDING = "pending"  # the first attempt (or the remount after a change) has not ended yet
    MOUNTED = "mounted"
    FAILED = "failed"  # down, no fallback: units that need it wait
    FALLBACK = "fallback"  # down: units bind the fallback path instead
    SKIPPED = "skipped"  # down, fallback: skip: units start and bind an empty directory


UP_OR_STANDING_IN = frozenset({MountState.MOUNTED, MountState.FALLBACK, MountState.SKIPPED})


class Need(StrEnum):
    """The next thing the shell must do for a mount, once `Track.due` has come."""

    MOUNT = "mount"  # unmount `stale` (what hostos mounted for an older spec), then mount
    CHECK = "check"  # liveness probe
    UNMOUNT = "unmount"  # the mount left the role: unmount `stale` (what hostos mounted)


class Death(StrEnum):
    GONE = "gone"  # no longer in mountinfo: somebody unmounted it
    HUNG = "hung"  # stat did not answer in time: a dead NFS server, say
    BROKEN = "broken"  # stat failed at once (ESTALE, EIO): the mount itself is bad


@dataclass(frozen=True)
class MountStatus:
    name: str
    state: MountState
    attempts: int = 0  # failed mount attempts since the mount was last up
    last_error: str | None = None
    since: float = 0.0  # wall time the state was entered
    next_retry: float | None = None  # wall time of the next mount attempt, if one is scheduled
    owned: bool = False  # hostos mounted it, so hostos unmounts it when it leaves the role


RETRY = Backoff(initial=1.0, factor=2.0, max=60.0, jitter=0.1)


@dataclass(frozen=True)
class Policy:
    """The backoff of mount attempts, and how often a mount is probed."""

    retry: Backoff = RETRY
    check_every: float = 5.0


@dataclass(frozen=True)
class Now:
    mono: float  # schedules (immune to the clock being set at boot)
    wall: float  # what status shows
    rand: float = 0.5  # jitter draw in [0, 1); 0.5 is none


# -- outcomes of the shell's commands (the events) ---------------------------------------


@dataclass(frozen=True)
class Mounted:
    owned: bool  # hostos mounted it (now, or on an earlier run: its ledger says so)
    adopted: bool = False  # it was mounted already; nothing was run


@dataclass(frozen=True)
class MountFailed:
    error: str
    timed_out: bool = False


@dataclass(frozen=True)
class Alive:
    pass


@dataclass(frozen=True)
class Dead:
    death: Death
    error: str


@dataclass(frozen=True)
class Unmounted:
    error: str | None = None


Event = Mounted | MountFailed | Alive | Dead | Unmounted


@dataclass(frozen=True)
class Track:
    spec: RoleMount
    status: MountStatus
    need: Need
    due: float  # monotonic time the need is due
    stale: tuple[RoleMount, ...] = ()  # older specs whose mounts must go first
    removed: bool = False  # left the role; dropped once unmounted
    gen: int = 0  # bumped by every change of spec: outcomes of older commands are ignored


# -- transitions -------------------------------------------------------------------------


def begin(spec: RoleMount, now: Now) -> Track:
    """A mount that just appeared in the role: mount it at once."""
    return Track(
        spec, MountStatus(spec.name, MountState.PENDING, since=now.wall), Need.MOUNT, now.mono
    )


def step(track: Track, event: Event, now: Now, policy: Policy) -> Track | None:
    """The track after an outcome of the command its `need` asked for; None: forget it."""
    if track.removed:
        return None if isinstance(event, Unmounted) else track
    if isinstance(event, Mounted) and track.need is Need.MOUNT:
        return _up(track, event.owned, now, policy)
    if isinstance(event, MountFailed) and track.need is Need.MOUNT:
        return _attempt_failed(track, event, now, policy)
    if isinstance(event, Alive) and track.need is Need.CHECK:
        return _alive(track, now, policy)
    if isinstance(event, Dead) and track.need is Need.CHECK:
        return _dead(track, event, now, policy)
    return track  # an outcome that does not answer the need: nothing to learn from it


def respec(track: Track, spec: RoleMount, now: Now) -> Track:
    """The role changed this mount (or brought back one that was leaving)."""
    if not track.removed and _same_mount(track.spec, spec):
        state = track.status.state
        if state in (MountState.FAILED, MountState.FALLBACK, MountState.SKIPPED):
            state = down_state(spec)  # the fallback may have changed
        return dataclasses.replace(track, spec=spec, status=_enter(track.status, state, now))
    stale = _with(track.stale, track.spec)
    status = MountStatus(spec.name, MountState.PENDING, since=now.wall)
    return Track(spec, status, Need.MOUNT, now.mono, stale, False, track.gen + 1)


def remove(track: Track, now: Now) -> Track:
    """The mount left the role: unmount what hostos mounted for it, then forget it."""
    return dataclasses.replace(
        track,
        need=Need.UNMOUNT,
        due=now.mono,
        stale=_with(track.stale, track.spec),
        removed=True,
        gen=track.gen + 1,
    )


# -- what the rest of hostos reads -------------------------------------------------------


def down_state(spec: RoleMount) -> MountState:
    if spec.fallback is None:
        return MountState.FAILED
    return MountState.SKIPPED if spec.fallback == "skip" else MountState.FALLBACK


def ready(track: Track) -> bool:
    """Whether a unit that needs this mount may be created or started now."""
    return not track.removed and track.status.state in UP_OR_STANDING_IN


def source(track: Track, empty_dir: str) -> str | None:
    """The host path a container binds for this mount, or None while it may not start."""
    if not ready(track):
        return None
    state = track.status.state
    if state is MountState.MOUNTED:
        return track.spec.target
    if state is MountState.FALLBACK:
        assert track.spec.fallback is not None
        return track.spec.fallback
    return empty_dir


# -- the steps ---------------------------------------------------------------------------


def _up(track: Track, owned: bool, now: Now, policy: Policy) -> Track:
    status = dataclasses.replace(
        _enter(track.status, MountState.MOUNTED, now),
        attempts=0,
        last_error=None,
        next_retry=None,
        owned=owned,
    )
    return dataclasses.replace(
        track, status=status, need=Need.CHECK, due=now.mono + policy.check_every, stale=()
    )


def _attempt_failed(track: Track, event: MountFailed, now: Now, policy: Policy) -> Track:
    attempts = track.status.attempts + 1
    delay = policy.retry.delay(attempts, now.rand)
    status = dataclasses.replace(
        _enter(track.status, down_state(track.spec), now),
        attempts=attempts,
        last_error=event.error,
        next_retry=now.wall + delay,
    )
    return dataclasses.replace(track, status=status, due=now.mono + delay)


def _alive(track: Track, now: Now, policy: Policy) -> Track:
    due = now.mono + policy.check_every
    if track.status.state is MountState.MOUNTED:
        return dataclasses.replace(track, due=due)
    status = dataclasses.replace(
        _enter(track.status, MountState.MOUNTED, now), attempts=0, last_error=None, next_retry=None
    )
    return dataclasses.replace(track, status=status, due=due)


def _dead(track: Track, event: Dead, now: Now, policy: Policy) -> Track:
    status = dataclasses.replace(
        _enter(track.status, down_state(track.spec), now), last_error=event.error
    )
    remount = event.death is Death.GONE or (event.death is Death.BROKEN and status.owned)
    if remount:
        # mount again at once; a broken mount of ours is unmounted first (stale)
        stale = _with(track.stale, track.spec) if event.death is Death.BROKEN else track.stale
        return dataclasses.replace(
            track,
            status=dataclasses.replace(status, next_retry=now.wall),
            need=Need.MOUNT,
            due=now.mono,
            stale=stale,
        )
    # still mounted but not answering (or not ours to remount): probe until it answers
    return dataclasses.replace(
        track,
        status=dataclasses.replace(status, next_retry=None),
        due=now.mono + policy.check_every,
    )


def _enter(status: MountStatus, state: MountState, now: Now) -> MountStatus:
    if status.state is state:
        return status
    return dataclasses.replace(status, state=state, since=now.wall)


def _same_mount(a: RoleMount, b: RoleMount) -> bool:
    return all(getattr(a, f) == getattr(b, f) for f in MOUNT_FIELDS)


def _with(stale: tuple[RoleMount, ...], spec: RoleMount) -> tuple[RoleMount, ...]:
    """stale plus spec, one entry per target (unmounting goes by target)."""
    if any(s.target == spec.target for s in stale):
        return stale
    return (*stale, spec)
