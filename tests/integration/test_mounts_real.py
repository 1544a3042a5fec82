"""Role mounts for real, as root, under a temporary directory: tmpfs and bind mounts, and real
failures (a missing bind source, a `mount` that hangs, a mount taken away behind hostos's
back, a `stat` that stops answering).  This machine's kernel has no NFS client, so what an NFS
server's death does to the commands is played by scripts given to the mounter as its `mount`
or `stat` program.  Every mount under the test's directory is lazily unmounted afterwards,
whatever happened, and the test fails if one was left behind."""

from __future__ import annotations

import os
import signal
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from hostos.backoff import Backoff
from hostos.mounts.commands import Commands, MountError, RealMounter, parse_mountinfo
from hostos.mounts.manager import MountManager
from hostos.mounts.state import Mounted, MountState, Policy
from hostos.process import run
from hostos.site.model import RoleMount

from conftest import wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root"),
]

FAST = Policy(Backoff(initial=0.1, factor=2.0, max=0.4), check_every=0.2)


def mounted_at(target: Path) -> list[str]:
    """The super options of each mount at target (empty: not mounted)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == str(target):
            found.append(fields[-1])
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with suppress(OSError):  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return False


class RecordingMounter(RealMounter):
    """The real mounter, noting when each mount attempt began."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.attempts: list[float] = []

    def mount(
        self, spec: RoleMount, stale: Sequence[RoleMount], cancel: threading.Event
    ) -> Mounted:
        self.attempts.append(time.monotonic())
        return super().mount(spec, stale, cancel)


class Lab:
    """A directory to mount under, fake programs, and everything to clean up."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state = root / "state"
        self.managers: list[MountManager] = []
        self.changes = 0
        self.flags = root / "flags"
        self.flags.mkdir()

    def path(self, name: str) -> Path:
        return self.root / name

    def mount(self, name: str, **fields: Any) -> RoleMount:
        return RoleMount.model_validate(
            {"name": name, "target": str(self.path(name)), "timeout": "5s", **fields}
        )

    def script(self, name: str, body: str) -> str:
        path = self.root / "bin" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)
        return str(path)

    def hanging_mount(self) -> str:
        """A `mount` that never returns, like mount.nfs on a dead server; notes its pid."""
        return self.script("mount", f"echo $$ >> {self.root}/hung.pids\nexec sleep 60\n")

    def hung_pids(self) -> list[int]:
        pids = self.root / "hung.pids"
        return [int(p) for p in pids.read_text().split()] if pids.exists() else []

    def flaky_stat(self) -> str:
        """A `stat` that hangs while flags/hang exists and fails while flags/broken exists."""
        return self.script(
            "stat",
            (
                f"while [ -e {self.flags}/hang ]; do sleep 0.05; done\n"
                f"if [ -e {self.flags}/broken ]; then "
                'echo "stat: Stale file handle" >&2; exit 1; fi\n'
                'exec stat -f "$@"\n'
            ),
        )

    def mounter(self, commands: Commands | None = None, **kwargs: Any) -> RecordingMounter:
        return RecordingMounter(
            state_dir=str(self.state),
            commands=commands,
            probe_timeout=kwargs.pop("probe_timeout", 0.5),
            reap=0.5,
            **kwargs,
        )

    def manager(self, mounts: list[RoleMount], mounter: RealMounter | None = None) -> MountManager:
        made = MountManager(
            mounts, self._changed, mounter=mounter or self.mounter(), policy=FAST, rand=lambda: 0.5
        )
        self.managers.append(made)
        made.start()
        return made

    def _changed(self) -> None:
        self.changes += 1

    def cleanup(self) -> list[str]:
        for made in self.managers:
            made.stop()
        for pid in self.hung_pids():
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return unmount_under(self.root)


def unmount_under(root: Path) -> list[str]:
    """Lazily unmount everything at or below root, deepest first; returns what was there."""
    text = Path("/proc/self/mountinfo").read_text()
    prefix = str(root) + os.sep
    targets = sorted(
        {
            e.target
            for e in parse_mountinfo(text)
            if e.target == str(root) or e.target.startswith(prefix)
        },
        key=len,
        reverse=True,
    )
    for target in targets:
        run(["umount", "-l", target], check=False)
    return targets


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    made = Lab(tmp_path.resolve())
    try:
        yield made
    finally:
        made.cleanup()
    assert unmount_under(made.root) == [], "umount -l left mounts behind"


def state_of(manager: MountManager, name: str) -> MountState | None:
    status = manager.status().get(name)
    return status.state if status else None


# -- the tests ---------------------------------------------------------------------------


def test_a_tmpfs_mounts_and_is_unmounted_when_it_leaves_the_role(lab: Lab) -> None:
    spec = lab.mount("scratch", type="tmpfs", options=["size=1m", "mode=0750"])
    mm = lab.manager([spec])
    wait_for("scratch mounted", lambda: state_of(mm, "scratch") is MountState.MOUNTED)
    assert mounted_at(lab.path("scratch")) == ["rw,size=1024k,mode=750"]
    status = mm.status()["scratch"]
    assert status.owned and status.attempts == 0 and status.last_error is None
    assert mm.sources() == {"scratch": spec.target} and mm.ready("scratch")
    assert lab.changes >= 1

    mm.update([])
    wait_for("scratch unmounted", lambda: not mounted_at(lab.path("scratch")))
    wait_for("scratch forgotten", lambda: mm.status() == {})
    assert mm.sources() == {}


def test_a_bind_mount_of_a_missing_source_retries_with_backoff_until_it_appears(lab: Lab) -> None:
    source = lab.path("export")
    spec = lab.mount("apps", type="bind", source=str(source))
    mounter = lab.mounter()
    mm = lab.manager([spec], mounter)
    wait_for("four failed attempts", lambda: len(mounter.attempts) >= 4)
    status = mm.status()["apps"]
    assert status.state is MountState.FAILED and status.attempts >= 3
    assert status.last_error is not None and "does not exist" in status.last_error
    assert status.next_retry is not None and status.next_retry > status.since
    assert not mm.ready("apps") and mm.sources() == {}
    gaps = [b - a for a, b in zip(mounter.attempts, mounter.attempts[1:], strict=False)]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2 and gaps[2] >= 0.4 - 0.01, gaps  # 0.1 0.2 0.4

    changes = lab.changes
    source.mkdir()
    (source / "hello").write_text("from the server\n")
    wait_for("apps mounted", lambda: state_of(mm, "apps") is MountState.MOUNTED, timeout=5)
    assert (lab.path("apps") / "hello").read_text() == "from the server\n"
    assert lab.changes > changes
    assert mm.sources() == {"apps": spec.target} and mm.ready("apps")
    assert mm.status()["apps"].attempts == 0


def test_units_bind_the_fallback_while_the_mount_is_down_and_the_target_once_up(lab: Lab) -> None:
    source, local = lab.path("export"), lab.path("local-copy")
    spec = lab.mount("apps", type="bind", source=str(source), options=["ro"], fallback=str(local))
    seen: list[dict[str, str]] = []
    mm = MountManager([spec], lambda: seen.append(mm.sources()), mounter=lab.mounter(), policy=FAST)
    lab.managers.append(mm)
    mm.start()
    wait_for("fallback", lambda: state_of(mm, "apps") is MountState.FALLBACK)
    assert local.is_dir()  # made for the units to bind
    assert mm.sources() == {"apps": str(local)} and mm.ready("apps")

    source.mkdir()
    wait_for("apps mounted", lambda: state_of(mm, "apps") is MountState.MOUNTED)
    assert mm.sources() == {"apps": spec.target}
    assert seen[0] == {"apps": str(local)} and seen[-1] == {"apps": spec.target}
    with pytest.raises(OSError, match="Read-only file system"):
        (lab.path("apps") / "x").write_text("no")


def test_skip_binds_an_empty_read_only_directory(lab: Lab) -> None:
    spec = lab.mount("apps", type="bind", source=str(lab.path("export")), fallback="skip")
    mm = lab.manager([spec])
    wait_for("skipped", lambda: state_of(mm, "apps") is MountState.SKIPPED)
    empty = Path(mm.sources()["apps"])
    assert mm.ready("apps") and empty.is_dir() and list(empty.iterdir()) == []
    assert stat.S_IMODE(empty.stat().st_mode) == 0o555
    assert empty.is_relative_to(lab.state)


def test_a_hanging_mount_command_is_killed_at_the_timeout(lab: Lab) -> None:
    mounter = lab.mounter(Commands(mount=(lab.hanging_mount(),)))
    spec = lab.mount("apps", type="tmpfs", timeout="500ms")
    began = time.monotonic()
    with pytest.raises(MountError, match=r"timed out after 0.5s: .*/bin/mount -t tmpfs") as err:
        mounter.mount(spec, (), threading.Event())
    took = time.monotonic() - began
    assert err.value.timed_out and 0.5 <= took < 1.5, took
    assert lab.hung_pids() and not any(alive(pid) for pid in lab.hung_pids())

    mm = lab.manager([spec], mounter)
    wait_for("failed", lambda: state_of(mm, "apps") is MountState.FAILED)
    assert "timed out after 0.5s" in (mm.status()["apps"].last_error or "")


def test_stop_returns_promptly_while_a_mount_hangs(lab: Lab) -> None:
    mounter = lab.mounter(Commands(mount=(lab.hanging_mount(),)))
    mm = lab.manager([lab.mount("apps", type="tmpfs", timeout="30s")], mounter)
    wait_for("mount running", lab.hung_pids)
    began = time.monotonic()
    mm.stop()
    assert time.monotonic() - began < 1.5
    wait_for("hung mount killed", lambda: not any(alive(p) for p in lab.hung_pids()), 2)


def test_a_mount_taken_away_behind_its_back_is_mounted_again(lab: Lab) -> None:
    spec = lab.mount("scratch", type="tmpfs", options=["size=1m"])
    states: list[MountState | None] = []
    mounter = lab.mounter()
    mm = MountManager(
        [spec], lambda: states.append(state_of(mm, "scratch")), mounter=mounter, policy=FAST
    )
    lab.managers.append(mm)
    mm.start()
    wait_for("mounted", lambda: MountState.MOUNTED in states)
    (lab.path("scratch") / "marker").write_text("x")

    run(["umount", str(lab.path("scratch"))])
    wait_for(
        "mounted again",
        lambda: len(mounter.attempts) == 2 and state_of(mm, "scratch") is MountState.MOUNTED,
    )
    assert MountState.FAILED in states  # noticed, and said so, before it was back
    assert mounted_at(lab.path("scratch")) == ["rw,size=1024k"]
    assert not (lab.path("scratch") / "marker").exists()  # a fresh tmpfs


def test_a_mount_that_stops_answering_falls_back_and_returns_without_a_remount(lab: Lab) -> None:
    mounter = lab.mounter(Commands(stat=(lab.flaky_stat(),)), probe_timeout=0.3)
    spec = lab.mount("scratch", type="tmpfs", fallback=str(lab.path("local")))
    mm = lab.manager([spec], mounter)
    wait_for("mounted", lambda: state_of(mm, "scratch") is MountState.MOUNTED)

    (lab.flags / "hang").touch()
    wait_for("fallback", lambda: state_of(mm, "scratch") is MountState.FALLBACK)
    status = mm.status()["scratch"]
    assert "did not answer within 0.3s" in (status.last_error or "")
    assert mm.sources() == {"scratch": str(lab.path("local"))}
    time.sleep(1.0)  # several probes: still one stat stuck, no remount attempted
    assert state_of(mm, "scratch") is MountState.FALLBACK and len(mounter.attempts) == 1
    stats = run(["pgrep", "-f", f"{lab.root}/bin/stat"], check=False).stdout.split()
    assert len(stats) == 1, stats

    (lab.flags / "hang").unlink()
    wait_for("back", lambda: state_of(mm, "scratch") is MountState.MOUNTED)
    assert len(mounter.attempts) == 1 and mm.sources() == {"scratch": spec.target}


def test_a_broken_mount_of_ours_is_unmounted_and_mounted_again(lab: Lab) -> None:
    mounter = lab.mounter(Commands(stat=(lab.flaky_stat(),)))
    spec = lab.mount("scratch", type="tmpfs")
    mm = lab.manager([spec], mounter)
    wait_for("mounted", lambda: state_of(mm, "scratch") is MountState.MOUNTED)
    (lab.path("scratch") / "marker").write_text("x")

    (lab.flags / "broken").touch()
    wait_for("remounted", lambda: len(mounter.attempts) >= 2)
    (lab.flags / "broken").unlink()
    wait_for("mounted", lambda: state_of(mm, "scratch") is MountState.MOUNTED)
    assert len(mounted_at(lab.path("scratch"))) == 1  # the old one went, not stacked
    assert not (lab.path("scratch") / "marker").exists()


def test_changed_options_remount(lab: Lab) -> None:
    spec = lab.mount("scratch", type="tmpfs", options=["size=1m"])
    mm = lab.manager([spec])
    wait_for("mounted", lambda: state_of(mm, "scratch") is MountState.MOUNTED)
    mm.update([lab.mount("scratch", type="tmpfs", options=["size=2m"])])
    wait_for("remounted with 2m", lambda: mounted_at(lab.path("scratch")) == ["rw,size=2048k"])
    wait_for("mounted", lambda: state_of(mm, "scratch") is MountState.MOUNTED)


def test_a_mount_found_in_place_is_adopted_and_left_alone(lab: Lab) -> None:
    target = lab.path("apps")
    target.mkdir()
    run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(target)])  # as /init would
    # a mount command that would fail: adopting must not run it
    mounter = lab.mounter(Commands(mount=("false",)))
    mm = lab.manager([lab.mount("apps", type="bind", source="/nonexistent")], mounter)
    wait_for("adopted", lambda: state_of(mm, "apps") is MountState.MOUNTED)
    assert not mm.status()["apps"].owned
    mm.update([])
    wait_for("forgotten", lambda: mm.status() == {})
    assert mounted_at(target) == ["rw,size=1024k"]  # not ours: left in place


def test_a_restarted_manager_still_owns_what_it_mounted(lab: Lab) -> None:
    spec = lab.mount("scratch", type="tmpfs", options=["size=1m"])
    first = lab.manager([spec])
    wait_for("mounted", lambda: state_of(first, "scratch") is MountState.MOUNTED)
    first.stop()
    assert mounted_at(lab.path("scratch"))  # stop() leaves mounts in place

    second = lab.manager([spec], lab.mounter(Commands(mount=("false",))))
    wait_for("adopted", lambda: state_of(second, "scratch") is MountState.MOUNTED)
    assert second.status()["scratch"].owned
    second.update([])
    wait_for("unmounted", lambda: not mounted_at(lab.path("scratch")))
