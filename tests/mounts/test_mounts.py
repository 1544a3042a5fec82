"""Role mounts without mounting anything: the state machine as tables (fake clock, made-up
command outcomes), the commands the mounter would run, and the manager's thread driven by a
fake mounter."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from hostos.backoff import Backoff
from hostos.mounts.commands import MountError, mount_commands, one_line, parse_mountinfo
from hostos.mounts.manager import MountManager
from hostos.mounts.state import (
    Alive,
    Dead,
    Death,
    Event,
    Mounted,
    MountFailed,
    MountState,
    Need,
    Now,
    Policy,
    Track,
    Unmounted,
    begin,
    ready,
    remove,
    respec,
    source,
    step,
)
from hostos.process import CommandFailed
from hostos.site.model import RoleMount

NO_JITTER = Policy(Backoff(initial=1.0, factor=2.0, max=60.0), check_every=5.0)
WALL = 1_700_000_000.0  # wall time = WALL + monotonic time in these tables
EMPTY = "/run/hostos/mounts/empty/apps"


def at(t: float, rand: float = 0.5) -> Now:
    return Now(mono=t, wall=WALL + t, rand=rand)


def apps(**fields: Any) -> RoleMount:
    base: dict[str, Any] = {
        "name": "apps",
        "type": "nfs4",
        "source": "mgmt01:/export/apps",
        "target": "/apps",
        "options": ["vers=4.1", "ro"],
    }
    return RoleMount.model_validate({**base, **fields})


def play(
    spec: RoleMount, steps: Sequence[tuple[float, Event]], policy: Policy = NO_JITTER
) -> Track:
    track: Track | None = begin(spec, at(0))
    for t, event in steps:
        assert track is not None
        track = step(track, event, at(t), policy)
    assert track is not None
    return track


def go(track: Track, event: Event, now: Now) -> Track:
    after = step(track, event, now, NO_JITTER)
    assert after is not None
    return after


OK = Mounted(owned=True)
FOREIGN = Mounted(owned=False, adopted=True)
NO = MountFailed("mount.nfs4: Connection timed out")
SLOW = MountFailed("timed out after 20s: mount -t nfs4 …", timed_out=True)
GONE = Dead(Death.GONE, "/apps is no longer mounted")
HUNG = Dead(Death.HUNG, "stat of /apps did not answer within 5s")
BROKEN = Dead(Death.BROKEN, "stat: Stale file handle")


# -- the table ---------------------------------------------------------------------------
# (case, fallback, steps, state, attempts, need, due, next_retry (as monotonic), error)

CASES: list[
    tuple[
        str,
        str | None,
        list[tuple[float, Event]],
        MountState,
        int,
        Need,
        float,
        float | None,
        str | None,
    ]
] = [
    (
        "new mount is pending and due at once",
        None,
        [],
        MountState.PENDING,
        0,
        Need.MOUNT,
        0,
        None,
        None,
    ),
    (
        "first attempt mounts: probe it every 5s",
        None,
        [(0.2, OK)],
        MountState.MOUNTED,
        0,
        Need.CHECK,
        5.2,
        None,
        None,
    ),
    (
        "a mount found in place is adopted",
        None,
        [(0.1, FOREIGN)],
        MountState.MOUNTED,
        0,
        Need.CHECK,
        5.1,
        None,
        None,
    ),
    (
        "failure without fallback: failed, retry in 1s",
        None,
        [(3, NO)],
        MountState.FAILED,
        1,
        Need.MOUNT,
        4,
        4,
        NO.error,
    ),
    (
        "a timed out attempt counts as a failure",
        None,
        [(20, SLOW)],
        MountState.FAILED,
        1,
        Need.MOUNT,
        21,
        21,
        SLOW.error,
    ),
    (
        "backoff doubles: 1 2 4 8",
        None,
        [(0, NO), (1, NO), (3, NO), (7, NO)],
        MountState.FAILED,
        4,
        Need.MOUNT,
        15,
        15,
        NO.error,
    ),
    (
        "backoff is capped at 60s",
        None,
        [(float(i), NO) for i in range(8)],
        MountState.FAILED,
        8,
        Need.MOUNT,
        67,
        67,
        NO.error,
    ),
    (
        "failure with a fallback path: fallback",
        "/local/apps",
        [(1, NO)],
        MountState.FALLBACK,
        1,
        Need.MOUNT,
        2,
        2,
        NO.error,
    ),
    (
        "failure with skip: skipped",
        "skip",
        [(1, NO)],
        MountState.SKIPPED,
        1,
        Need.MOUNT,
        2,
        2,
        NO.error,
    ),
    (
        "up after failures: attempts and error cleared",
        "/local/apps",
        [(0, NO), (1, NO), (3, OK)],
        MountState.MOUNTED,
        0,
        Need.CHECK,
        8,
        None,
        None,
    ),
    (
        "alive: nothing changes but the next probe",
        None,
        [(0, OK), (5, Alive()), (10, Alive())],
        MountState.MOUNTED,
        0,
        Need.CHECK,
        15,
        None,
        None,
    ),
    (
        "gone (unmounted behind our back): mount again at once",
        "/local/apps",
        [(0, OK), (5, GONE)],
        MountState.FALLBACK,
        0,
        Need.MOUNT,
        5,
        5,
        GONE.error,
    ),
    (
        "gone, remount fails: backoff from 1s",
        None,
        [(0, OK), (5, GONE), (5.5, NO)],
        MountState.FAILED,
        1,
        Need.MOUNT,
        6.5,
        6.5,
        NO.error,
    ),
    (
        "hung: down, keep probing, no remount",
        "/local/apps",
        [(0, OK), (5, HUNG)],
        MountState.FALLBACK,
        0,
        Need.CHECK,
        10,
        None,
        HUNG.error,
    ),
    (
        "hung then answering again: mounted, nothing was remounted",
        "skip",
        [(0, OK), (5, HUNG), (10, HUNG), (15, Alive())],
        MountState.MOUNTED,
        0,
        Need.CHECK,
        20,
        None,
        None,
    ),
    (
        "hung then gone: mount again",
        None,
        [(0, OK), (5, HUNG), (10, GONE)],
        MountState.FAILED,
        0,
        Need.MOUNT,
        10,
        10,
        GONE.error,
    ),
    (
        "broken mount of ours: unmount and mount at once",
        None,
        [(0, OK), (5, BROKEN)],
        MountState.FAILED,
        0,
        Need.MOUNT,
        5,
        5,
        BROKEN.error,
    ),
    (
        "broken mount not ours: left in place, probed",
        "skip",
        [(0, FOREIGN), (5, BROKEN)],
        MountState.SKIPPED,
        0,
        Need.CHECK,
        10,
        None,
        BROKEN.error,
    ),
    (
        "an outcome that does not answer the need is ignored",
        None,
        [(0, NO), (0.5, Alive())],
        MountState.FAILED,
        1,
        Need.MOUNT,
        1,
        1,
        NO.error,
    ),
]


@pytest.mark.parametrize(
    ("case", "fallback", "steps", "state", "attempts", "need", "due", "retry", "error"),
    CASES,
    ids=[c[0] for c in CASES],
)
def test_transitions(
    case: str,
    fallback: str | None,
    steps: list[tuple[float, Event]],
    state: MountState,
    attempts: int,
    need: Need,
    due: float,
    retry: float | None,
    error: str | None,
) -> None:
    track = play(apps(fallback=fallback), steps)
    status = track.status
    assert (status.state, status.attempts, track.need, track.due) == (state, attempts, need, due)
    assert status.next_retry == (None if retry is None else WALL + retry)
    assert status.last_error == error


def test_since_is_wall_time_of_entering_the_state_and_schedules_are_monotonic() -> None:
    track = begin(apps(), Now(mono=10, wall=500))
    track = go(track, NO, Now(mono=12, wall=900))  # the wall clock was set meanwhile
    assert (track.status.since, track.status.next_retry, track.due) == (900, 901, 13)
    again = go(track, NO, Now(mono=13, wall=901))
    assert again.status.since == 900  # still failed: since stays


def test_owned_follows_the_mount_outcome() -> None:
    assert play(apps(), [(0, OK)]).status.owned
    assert not play(apps(), [(0, FOREIGN)]).status.owned


def test_a_hung_mount_is_quiet_while_it_stays_hung() -> None:
    hung = play(apps(fallback="/local/apps"), [(0, OK), (5, HUNG)])
    again = step(hung, HUNG, at(10), NO_JITTER)
    assert again is not None and again.status == hung.status and again.due == 15


# -- role changes ------------------------------------------------------------------------


def test_a_changed_fallback_applies_at_once_without_a_remount() -> None:
    failed = play(apps(), [(0, NO)])
    track = respec(failed, apps(fallback="/local/apps"), at(0.5))
    assert (track.status.state, track.need, track.stale, track.gen) == (
        MountState.FALLBACK,
        Need.MOUNT,
        (),
        0,
    )
    assert track.status.since == WALL + 0.5 and track.due == failed.due


def test_a_changed_timeout_of_a_mounted_mount_changes_nothing_else() -> None:
    mounted = play(apps(), [(0, OK)])
    track = respec(mounted, apps(timeout="5s"), at(1))
    assert track.status == mounted.status and track.need is Need.CHECK
    assert track.spec.timeout == 5


@pytest.mark.parametrize(
    "change",
    [{"options": ["vers=4.2", "ro"]}, {"source": "mgmt02:/export/apps"}, {"target": "/opt/apps"}],
)
def test_a_changed_mount_is_remounted(change: dict[str, Any]) -> None:
    old = apps()
    mounted = play(old, [(0, OK)])
    track = respec(mounted, apps(**change), at(7))
    assert (track.status.state, track.need, track.due, track.gen) == (
        MountState.PENDING,
        Need.MOUNT,
        7,
        1,
    )
    assert track.stale == (old,)
    assert not ready(track)
    after = step(track, OK, at(7.5), NO_JITTER)
    assert after is not None and after.stale == () and after.status.state is MountState.MOUNTED


def test_a_failed_remount_keeps_what_must_be_unmounted_first() -> None:
    track = respec(play(apps(), [(0, OK)]), apps(options=["ro"]), at(1))
    track = go(track, NO, at(2))
    assert track.stale == (apps(),) and track.need is Need.MOUNT


def test_a_removed_mount_is_unmounted_then_forgotten() -> None:
    mounted = play(apps(), [(0, OK)])
    track = remove(mounted, at(3))
    assert (track.removed, track.need, track.due, track.stale, track.gen) == (
        True,
        Need.UNMOUNT,
        3,
        (apps(),),
        1,
    )
    assert not ready(track) and source(track, EMPTY) is None
    assert step(track, Alive(), at(4), NO_JITTER) == track
    assert step(track, Unmounted(), at(4), NO_JITTER) is None
    assert step(track, Unmounted("umount: target is busy"), at(4), NO_JITTER) is None


def test_a_mount_put_back_before_its_unmount_is_mounted_again() -> None:
    track = respec(remove(play(apps(), [(0, OK)]), at(3)), apps(), at(4))
    assert (track.removed, track.need, track.status.state, track.gen) == (
        False,
        Need.MOUNT,
        MountState.PENDING,
        2,
    )
    assert track.stale == (apps(),)


# -- what units see ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fallback", "steps", "is_ready", "path"),
    [
        (None, [], False, None),
        ("/local/apps", [], False, None),  # pending: the first attempt decides
        ("skip", [], False, None),
        (None, [(0, OK)], True, "/apps"),
        (None, [(0, NO)], False, None),
        ("/local/apps", [(0, NO)], True, "/local/apps"),
        ("skip", [(0, NO)], True, EMPTY),
        ("/local/apps", [(0, NO), (1, OK)], True, "/apps"),
        ("/local/apps", [(0, OK), (5, HUNG)], True, "/local/apps"),
        (None, [(0, OK), (5, HUNG)], False, None),
    ],
)
def test_ready_and_source(
    fallback: str | None, steps: list[tuple[float, Event]], is_ready: bool, path: str | None
) -> None:
    track = play(apps(fallback=fallback), steps)
    assert (ready(track), source(track, EMPTY)) == (is_ready, path)


# -- the commands ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "commands"),
    [
        ({}, [["mount", "-t", "nfs4", "-o", "vers=4.1,ro", "mgmt01:/export/apps", "/apps"]]),
        ({"type": "nfs", "options": []}, [["mount", "-t", "nfs", "mgmt01:/export/apps", "/apps"]]),
        (
            {"type": "cephfs", "source": "mon1:/", "options": ["name=admin"]},
            [["mount", "-t", "ceph", "-o", "name=admin", "mon1:/", "/apps"]],
        ),
        (
            {"type": "lustre", "source": "mgs@tcp:/lfs", "options": []},
            [["mount", "-t", "lustre", "mgs@tcp:/lfs", "/apps"]],
        ),
        (
            {"type": "beegfs", "source": "beegfs_nodev", "options": ["cfgFile=/etc/b.conf"]},
            [["mount", "-t", "beegfs", "-o", "cfgFile=/etc/b.conf", "beegfs_nodev", "/apps"]],
        ),
        (
            {"type": "tmpfs", "source": None, "options": ["size=1m"], "target": "/apps/"},
            [["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", "/apps"]],
        ),
        (
            {"type": "bind", "source": "/local/apps", "options": []},
            [["mount", "--bind", "/local/apps", "/apps"]],
        ),
        (
            {"type": "bind", "source": "/local/apps", "options": ["ro", "nosuid"]},
            [
                ["mount", "--bind", "/local/apps", "/apps"],
                ["mount", "-o", "remount,bind,ro,nosuid", "/apps"],
            ],
        ),
        (
            {"type": "bind", "source": "/local/apps", "options": ["rbind"]},
            [["mount", "--rbind", "/local/apps", "/apps"]],
        ),
    ],
)
def test_mount_commands(fields: dict[str, Any], commands: list[list[str]]) -> None:
    assert mount_commands(apps(**fields)) == commands


def test_mount_commands_use_the_configured_program() -> None:
    assert mount_commands(apps(type="nfs", options=[]), ("/opt/fake-mount", "-v")) == [
        ["/opt/fake-mount", "-v", "-t", "nfs", "mgmt01:/export/apps", "/apps"]
    ]


def test_parse_mountinfo() -> None:
    text = (
        "22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
        "47 22 0:41 / /tmp/a\\040b rw,relatime - tmpfs tmpfs rw,size=1024k\n"
        "48 22 0:42 /export /apps ro master:3 - nfs4 mgmt01:/export/apps ro,vers=4.1\n"
        "garbage line\n"
    )
    found = [(e.target, e.fstype, e.source) for e in parse_mountinfo(text)]
    assert found == [
        ("/", "ext4", "/dev/vda"),
        ("/tmp/a b", "tmpfs", "tmpfs"),
        ("/apps", "nfs4", "mgmt01:/export/apps"),
    ]


def test_a_command_failure_becomes_one_line() -> None:
    exc = CommandFailed(
        ["mount", "--bind", "/x", "/y"],
        "exit status 32",
        "mount: /y: special device /x does not exist.\n"
        "       dmesg(1) may have more information after failed mount.\n",
    )
    assert one_line(exc) == (
        "mount: /y: special device /x does not exist. (exit status 32: mount --bind /x /y)"
    )
    assert one_line(CommandFailed(["umount", "/y"], "exit status 1")) == "exit status 1: umount /y"


# -- the manager, driven by a fake mounter -----------------------------------------------

FAST = Policy(Backoff(initial=0.01, factor=2.0, max=0.04), check_every=0.02)


class FakeMounter:
    """Scripted outcomes per mount name; the last one repeats."""

    def __init__(self) -> None:
        self.mounts: dict[str, list[Mounted | Exception]] = {}
        self.checks: dict[str, list[Alive | Dead]] = {}
        self.calls: list[tuple[str, str, tuple[str, ...]]] = []
        self.hang = False
        self.lock = threading.Lock()

    def mount(
        self, spec: RoleMount, stale: Sequence[RoleMount], cancel: threading.Event
    ) -> Mounted:
        self._call("mount", spec.name, tuple(s.target for s in stale))
        if self.hang:
            cancel.wait()
            raise MountError("cancelled", timed_out=True)
        result: Mounted | Exception = _next(
            self.mounts.setdefault(spec.name, [Mounted(owned=True)])
        )
        if isinstance(result, Exception):
            raise result
        return result

    def check(self, spec: RoleMount, cancel: threading.Event) -> Alive | Dead:
        self._call("check", spec.name, ())
        result: Alive | Dead = _next(self.checks.setdefault(spec.name, [Alive()]))
        return result

    def unmount(self, specs: Sequence[RoleMount], cancel: threading.Event) -> Unmounted:
        self._call("unmount", specs[0].name, tuple(s.target for s in specs))
        return Unmounted()

    def empty_dir(self, name: str) -> str:
        return f"/empty/{name}"

    def _call(self, kind: str, name: str, stale: tuple[str, ...]) -> None:
        with self.lock:
            self.calls.append((kind, name, stale))

    def count(self, kind: str, name: str) -> int:
        with self.lock:
            return sum(1 for c in self.calls if c[:2] == (kind, name))


def _next(script: list[Any]) -> Any:
    return script.pop(0) if len(script) > 1 else script[0]


def eventually(probe: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.005)
    raise AssertionError(f"not true within {timeout}s: {probe()!r}")


class Changes:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


@pytest.fixture
def fake() -> FakeMounter:
    return FakeMounter()


def manager(
    fake: FakeMounter, mounts: list[RoleMount], on_change: Callable[[], None]
) -> MountManager:
    return MountManager(mounts, on_change, mounter=fake, policy=FAST, rand=lambda: 0.5)


def test_manager_retries_until_up_and_says_so(fake: FakeMounter) -> None:
    fake.mounts["apps"] = [
        MountError("no route to host"),
        MountError("no route to host"),
        Mounted(owned=True),
    ]
    changes = Changes()
    mm = manager(fake, [apps(fallback="/local/apps")], changes)
    assert mm.status()["apps"].state is MountState.PENDING and not mm.ready("apps")
    assert mm.sources() == {}
    mm.start()
    try:
        eventually(lambda: mm.status()["apps"].state is MountState.MOUNTED)
        assert fake.count("mount", "apps") == 3
        assert mm.sources() == {"apps": "/apps"} and mm.ready("apps")
        assert changes.count >= 3  # fallback, fallback with 2 attempts, mounted
        eventually(lambda: fake.count("check", "apps") >= 3)  # probed while up
    finally:
        mm.stop()


def test_manager_is_quiet_while_nothing_changes(fake: FakeMounter) -> None:
    changes = Changes()
    mm = manager(fake, [apps()], changes)
    mm.start()
    try:
        eventually(lambda: mm.ready("apps"))
        settled = changes.count
        eventually(lambda: fake.count("check", "apps") >= 5)
        assert changes.count == settled == 1
    finally:
        mm.stop()


def test_manager_moves_to_the_fallback_and_back(fake: FakeMounter) -> None:
    fake.checks["apps"] = [
        Alive(),
        Dead(Death.HUNG, "stat hung"),
        Dead(Death.HUNG, "stat hung"),
        Alive(),
    ]
    seen: list[dict[str, str]] = []
    mm: MountManager = manager(
        fake, [apps(fallback="/local/apps")], lambda: seen.append(mm.sources())
    )
    mm.start()
    try:
        eventually(lambda: len(seen) >= 3)
        assert seen[:3] == [{"apps": "/apps"}, {"apps": "/local/apps"}, {"apps": "/apps"}]
        assert fake.count("mount", "apps") == 1  # back without a remount
    finally:
        mm.stop()


def test_manager_unmounts_removed_mounts_and_remounts_changed_ones(fake: FakeMounter) -> None:
    scratch = RoleMount(name="scratch", type="tmpfs", target="/scratch")
    mm = manager(fake, [apps(), scratch], Changes())
    mm.start()
    try:
        eventually(lambda: mm.ready("apps") and mm.ready("scratch"))
        mm.update([apps(options=["vers=4.2"])])
        eventually(lambda: fake.count("unmount", "scratch") == 1)
        eventually(lambda: "scratch" not in mm.status())
        assert ("unmount", "scratch", ("/scratch",)) in fake.calls
        eventually(lambda: ("mount", "apps", ("/apps",)) in fake.calls and mm.ready("apps"))
        assert mm.sources() == {"apps": "/apps"}
    finally:
        mm.stop()


def test_manager_skip_binds_an_empty_directory(fake: FakeMounter) -> None:
    fake.mounts["apps"] = [MountError("mount.nfs4: access denied")]
    mm = manager(fake, [apps(fallback="skip")], Changes())
    mm.start()
    try:
        eventually(lambda: mm.status()["apps"].state is MountState.SKIPPED)
        assert mm.ready("apps") and mm.sources() == {"apps": "/empty/apps"}
        assert mm.status()["apps"].last_error == "mount.nfs4: access denied"
    finally:
        mm.stop()


def test_stop_returns_promptly_while_a_mount_hangs(fake: FakeMounter) -> None:
    fake.hang = True
    mm = manager(fake, [apps()], Changes())
    mm.start()
    eventually(lambda: fake.count("mount", "apps") == 1)
    began = time.monotonic()
    mm.stop()
    assert time.monotonic() - began < 0.5


def test_a_failing_on_change_does_not_stop_the_manager(fake: FakeMounter) -> None:
    fake.mounts["apps"] = [MountError("down"), Mounted(owned=True)]

    def explode() -> None:
        raise RuntimeError("supervisor bug")

    mm = manager(fake, [apps()], explode)
    mm.start()
    try:
        eventually(lambda: mm.ready("apps"))
    finally:
        mm.stop()


def test_an_unexpected_mounter_exception_counts_as_a_failure(fake: FakeMounter) -> None:
    fake.mounts["apps"] = [ValueError("bug in a mounter"), Mounted(owned=True)]
    mm = manager(fake, [apps()], Changes())
    mm.start()
    try:
        eventually(lambda: mm.ready("apps"))
        assert fake.count("mount", "apps") == 2
    finally:
        mm.stop()
