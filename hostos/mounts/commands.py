"""The commands behind the role mounts: mount, unmount, and a liveness probe that cannot hang.

Everything goes through the real `mount`, `umount` and `stat` (via hostos.process), because the
node's admins debug with those very commands, and a mount helper (mount.nfs, mount.lustre)
does work the kernel call alone does not.  Each command is bounded by the mount's `timeout`
and killed when it overruns; a process stuck in the kernel is abandoned, never waited for.

What is mounted is read from /proc/self/mountinfo, which never touches the filesystems
themselves, so it answers even when an NFS server is dead.  The liveness probe is a `stat -f`
of the target (statfs goes to the server every time, where a plain stat may be answered from
the attribute cache) in a child process that is polled, not waited for: one that does not
answer within `probe_timeout` marks the mount dead and is kept, so a hung server costs one
stuck process per mount, not one per probe.

Ownership: hostos writes every target it mounts into a ledger (`<state_dir>/owned.json`, on
the node's /run, so it lives exactly as long as the mounts do) before running `mount`.  A
mount found already in place is adopted without running anything; it counts as hostos's own
only if the ledger lists it (an earlier supervisor run).  hostos unmounts only its own mounts:
what /init or an admin mounted is left alone, with a warning, when it leaves the role.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hostos.errors import RuntimeFailure
from hostos.logfmt import kv
from hostos.mounts.state import Alive, Dead, Death, Mounted, Unmounted
from hostos.process import CommandFailed, CommandTimedOut, run_bounded, start
from hostos.site.model import RoleMount

log = logging.getLogger(__name__)

STATE_DIR = "/run/hostos/mounts"
MOUNTINFO = "/proc/self/mountinfo"
PROBE_TIMEOUT = 5.0  # seconds a liveness stat may take before the mount counts as dead
REAP = 1.0  # seconds a killed command gets to die before it is abandoned
POLL = 0.05
FSTYPES = {
    "nfs": "nfs",
    "nfs4": "nfs4",
    "beegfs": "beegfs",
    "lustre": "lustre",
    "cephfs": "ceph",
    "tmpfs": "tmpfs",
}


class MountError(RuntimeFailure):
    """A mount attempt failed; the message is one line, fit for a status and a log line."""

    def __init__(self, message: str, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


@dataclass(frozen=True)
class Commands:
    """The programs run, as argv prefixes; tests point them at scripts (a `mount` that hangs,
    a `stat` that never answers) to make real failures on demand."""

    mount: tuple[str, ...] = ("mount",)
    umount: tuple[str, ...] = ("umount",)
    stat: tuple[str, ...] = ("stat", "-f", "--")
    mkdir: tuple[str, ...] = ("mkdir", "-p", "--")


@dataclass(frozen=True)
class MountEntry:
    target: str
    fstype: str
    source: str


# -- pure helpers ------------------------------------------------------------------------


def parse_mountinfo(text: str) -> list[MountEntry]:
    """The mounts listed in a /proc/<pid>/mountinfo text."""
    entries = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        if dash < 5 or len(fields) < dash + 3:
            continue
        entries.append(
            MountEntry(
                _unescape(fields[4]), _unescape(fields[dash + 1]), _unescape(fields[dash + 2])
            )
        )
    return entries


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as \\ooo octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def mount_commands(spec: RoleMount, mount: Sequence[str] = ("mount",)) -> list[list[str]]:
    """The commands that mount spec, in order."""
    target = os.path.normpath(spec.target)
    options = [o for o in spec.options if o not in ("bind", "rbind")]
    if spec.type == "bind":
        assert spec.source is not None  # the model requires it
        flag = "--rbind" if "rbind" in spec.options else "--bind"
        commands = [[*mount, flag, spec.source, target]]
        if options:  # a bind mount takes its flags (ro, nosuid, …) only from a remount
            commands.append([*mount, "-o", ",".join(["remount", "bind", *options]), target])
        return commands
    opts = ["-o", ",".join(options)] if options else []
    return [[*mount, "-t", FSTYPES[spec.type], *opts, spec.source or spec.type, target]]


def one_line(exc: CommandFailed) -> str:
    """A command failure as one line: what the program said, then what was run."""
    said = [
        line.strip()
        for line in exc.output.splitlines()
        if line.strip() and not line.strip().startswith("dmesg(1)")
    ]
    head = str(exc).splitlines()[0]
    return f"{said[0]} ({head})" if said else head


# -- the mounter -------------------------------------------------------------------------


class RealMounter:
    """Mounts, probes and unmounts with the real commands; safe to call from several threads
    at once for different mounts (one call per mount at a time)."""

    def __init__(
        self,
        *,
        state_dir: str = STATE_DIR,
        commands: Commands | None = None,
        mountinfo: str = MOUNTINFO,
        probe_timeout: float = PROBE_TIMEOUT,
        reap: float = REAP,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.commands = commands or Commands()
        self.mountinfo = mountinfo
        self.probe_timeout = probe_timeout
        self.reap = reap
        self._lock = threading.Lock()
        self._probes: dict[str, subprocess.Popen[str]] = {}

    # -- what is mounted -----------------------------------------------------------------

    def mounted(self, target: str) -> MountEntry | None:
        """The mount at target (the topmost), from mountinfo; never touches the filesystem."""
        path = os.path.normpath(target)
        found = [e for e in parse_mountinfo(Path(self.mountinfo).read_text()) if e.target == path]
        return found[-1] if found else None

    def empty_dir(self, name: str) -> str:
        """The empty directory containers bind in place of a skipped mount."""
        return str(self.state_dir / "empty" / name)

    # -- mount ---------------------------------------------------------------------------

    def mount(
        self, spec: RoleMount, stale: Sequence[RoleMount], cancel: threading.Event
    ) -> Mounted:
        """Unmount what hostos mounted for the stale specs, then mount spec (or adopt what is
        at its target already).  Raises MountError."""
        deadline = time.monotonic() + spec.timeout
        for old in stale:
            self._unmount_one(old, cancel)
        self._make_dirs(spec, deadline, cancel)
        found = self.mounted(spec.target)
        if found is not None:
            owned = self._owns(spec.target)
            log.info(
                kv(
                    "mount-adopted",
                    mount=spec.name,
                    target=spec.target,
                    fstype=found.fstype,
                    source=found.source,
                    owner="hostos" if owned else "other",
                )
            )
            return Mounted(owned=owned, adopted=True)
        self._ledger_add(spec.target)
        try:
            self._run_mount(spec, deadline, cancel)
        except MountError:
            if self.mounted(spec.target) is None:
                self._ledger_remove(spec.target)
            raise
        if self.mounted(spec.target) is None:
            raise MountError(f"{spec.target} is not mounted although mount succeeded")
        return Mounted(owned=True)

    def _run_mount(self, spec: RoleMount, deadline: float, cancel: threading.Event) -> None:
        commands = mount_commands(spec, self.commands.mount)
        for i, cmd in enumerate(commands):
            try:
                self._bounded(cmd, deadline, spec.timeout, cancel)
            except MountError:
                if i > 0:  # a bind mount whose flags could not be set must not stay
                    self._detach(spec, cancel)
                raise

    def _make_dirs(self, spec: RoleMount, deadline: float, cancel: threading.Event) -> None:
        paths = [spec.target]
        if spec.fallback == "skip":
            empty = Path(self.empty_dir(spec.name))
            empty.mkdir(parents=True, exist_ok=True)
            empty.chmod(0o555)
        elif spec.fallback is not None:
            paths.append(spec.fallback)
        # through a command: a parent on a dead NFS server would hang os.makedirs for good
        self._bounded([*self.commands.mkdir, *paths], deadline, spec.timeout, cancel)

    def _bounded(
        self, cmd: Sequence[str], deadline: float, timeout: float, cancel: threading.Event
    ) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise MountError(f"timed out after {timeout:g}s before: {shlex.join(cmd)}", True)
        try:
            run_bounded(cmd, timeout=left, cancel=cancel, reap=self.reap)
        except CommandTimedOut:
            why = "cancelled" if cancel.is_set() else f"timed out after {timeout:g}s"
            raise MountError(f"{why}: {shlex.join(cmd)}", timed_out=True) from None
        except CommandFailed as exc:
            raise MountError(one_line(exc)) from None

    # -- liveness ------------------------------------------------------------------------

    def check(self, spec: RoleMount, cancel: threading.Event) -> Alive | Dead:
        """Whether the mount is there and answers; returns within probe_timeout."""
        target = os.path.normpath(spec.target)
        if self.mounted(target) is None:
            return Dead(Death.GONE, f"{target} is no longer mounted")
        with self._lock:
            probe = self._probes.get(target)
            if probe is None:
                probe = self._probes[target] = start([*self.commands.stat, target])
        deadline = time.monotonic() + self.probe_timeout
        while probe.poll() is None and time.monotonic() < deadline and not cancel.is_set():
            time.sleep(POLL)
        if probe.returncode is None:  # kept: the next check waits on this same process
            return Dead(
                Death.HUNG, f"stat of {target} did not answer within {self.probe_timeout:g}s"
            )
        with self._lock:
            self._probes.pop(target, None)
        _, stderr = probe.communicate()
        if probe.returncode == 0:
            return Alive()
        said = (stderr or "").strip().splitlines()
        return Dead(Death.BROKEN, said[0] if said else f"stat exit status {probe.returncode}")

    # -- unmount -------------------------------------------------------------------------

    def unmount(self, specs: Sequence[RoleMount], cancel: threading.Event) -> Unmounted:
        errors = []
        for spec in specs:
            try:
                self._unmount_one(spec, cancel)
            except MountError as exc:
                errors.append(str(exc))
        return Unmounted("; ".join(errors) or None)

    def _unmount_one(self, spec: RoleMount, cancel: threading.Event) -> None:
        """Unmount spec's target if hostos mounted it; a busy mount is detached lazily."""
        target = os.path.normpath(spec.target)
        if self.mounted(target) is None:
            self._ledger_remove(target)
            return
        if not self._owns(target):
            log.warning(
                kv("mount-left", mount=spec.name, target=target, reason="not mounted by hostos")
            )
            return
        try:
            run_bounded(
                [*self.commands.umount, target], timeout=spec.timeout, cancel=cancel, reap=self.reap
            )
            log.info(kv("unmounted", mount=spec.name, target=target))
        except CommandFailed as exc:
            log.warning(kv("unmount-lazy", mount=spec.name, target=target, error=one_line(exc)))
            self._detach(spec, cancel)
        self._ledger_remove(target)

    def _detach(self, spec: RoleMount, cancel: threading.Event) -> None:
        """umount -l: takes the mount out of the tree now, frees it when the last user goes."""
        try:
            run_bounded(
                [*self.commands.umount, "-l", os.path.normpath(spec.target)],
                timeout=spec.timeout,
                cancel=cancel,
                reap=self.reap,
            )
        except CommandFailed as exc:
            raise MountError(one_line(exc), isinstance(exc, CommandTimedOut)) from None

    # -- the ledger of what hostos mounted -----------------------------------------------

    def _owns(self, target: str) -> bool:
        with self._lock:
            return os.path.normpath(target) in self._ledger()

    def _ledger_add(self, target: str) -> None:
        with self._lock:
            self._write_ledger(self._ledger() | {os.path.normpath(target)})

    def _ledger_remove(self, target: str) -> None:
        with self._lock:
            owned = self._ledger()
            if os.path.normpath(target) in owned:
                self._write_ledger(owned - {os.path.normpath(target)})

    def _ledger(self) -> set[str]:
        try:
            data = json.loads((self.state_dir / "owned.json").read_text())
        except (FileNotFoundError, ValueError):
            return set()
        return {t for t in data if isinstance(t, str)} if isinstance(data, list) else set()

    def _write_ledger(self, owned: set[str]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_dir / "owned.json.tmp"
        tmp.write_text(json.dumps(sorted(owned), indent=1) + "\n")
        os.replace(tmp, self.state_dir / "owned.json")

    def close(self) -> None:
        """Forget probes still running (stuck); they are reaped by Python when they end."""
        with self._lock:
            probes, self._probes = list(self._probes.values()), {}
        for probe in probes:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(probe.pid, signal.SIGKILL)
