"""The one way hostos runs other programs.

Every command is logged before it runs, and a failure raises CommandFailed
whose message holds the command line quoted for a shell, so an admin can paste
it and see the problem first hand.  `spawn` starts background processes (the
embedded podman service) in their own session, so a Ctrl-C aimed at hostos does
not reach them before hostos has stopped them itself.  `run_bounded` and `start`
serve commands that may hang in the kernel (mount, umount, stat on a dead NFS
server): a process in uninterruptible sleep cannot be killed, so waiting for it
would hang hostos too; these never wait longer than they were told.
"""

from __future__ import annotations

import logging
import os
import selectors
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

from hostos.errors import RuntimeFailure

log = logging.getLogger("hostos.process")

STDERR_TAIL_LINES = 20
POLL = 0.05  # seconds between looks at the cancel event of run_bounded
MAX_OUTPUT = 1 << 20  # bytes of each output run_capped keeps


class CommandFailed(RuntimeFailure):
    """A command exited non-zero, could not start, or timed out."""

    def __init__(self, cmd: Sequence[str], why: str, output: str = "") -> None:
        self.cmd = list(cmd)
        self.why = why  # the failure alone, without the command line
        self.output = output
        message = f"{why}: {shlex.join(cmd)}"
        tail = "\n".join(output.strip().splitlines()[-STDERR_TAIL_LINES:])
        if tail:
            message += "\n" + tail
        super().__init__(message)


class CommandTimedOut(CommandFailed):
    """A command overran its timeout (or was cancelled) and was killed or abandoned."""


def run(
    cmd: Sequence[str],
    *,
    check: bool = True,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    cwd: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion, capturing its output as text."""
    log.debug("run: %s", shlex.join(cmd))
    try:
        result = subprocess.run(
            list(cmd),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            input=input,
            cwd=cwd,
            check=False,
        )
    except FileNotFoundError:
        raise CommandFailed(cmd, f"{cmd[0]} is not installed") from None
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(cmd, f"timed out after {timeout:g}s", _text(exc.stderr)) from None
    if check and result.returncode != 0:
        raise CommandFailed(cmd, f"exit status {result.returncode}", result.stderr or result.stdout)
    return result


def run_bounded(
    cmd: Sequence[str],
    *,
    timeout: float,
    cancel: threading.Event | None = None,
    reap: float = 1.0,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command for at most `timeout` seconds (less if `cancel` is set meanwhile).

    An overrun kills the command's whole process group (it runs in its own session, so
    helpers such as mount.nfs die with it) and raises CommandTimedOut.  A process that has
    not died `reap` seconds after SIGKILL is stuck in the kernel: it is abandoned, not
    waited for, so the caller is back after timeout + reap seconds whatever happens.
    """
    proc = _piped(cmd)
    outcome = _wait_bounded(proc, timeout, cancel)
    if isinstance(outcome, str):
        _kill_group(proc)
        raise CommandTimedOut(cmd, outcome, _reap_or_abandon(cmd, proc, reap))
    stdout, stderr = outcome
    result = subprocess.CompletedProcess(list(cmd), proc.returncode, stdout, stderr)
    if check and result.returncode != 0:
        raise CommandFailed(cmd, f"exit status {result.returncode}", result.stderr or result.stdout)
    return result


def run_capped(
    cmd: Sequence[str],
    *,
    timeout: float,
    limit: int = MAX_OUTPUT,
    env: Mapping[str, str] | None = None,
    reap: float = 1.0,
) -> subprocess.CompletedProcess[str]:
    """Run a command whose output is not ours to trust (an operator's hook, a scheduler's
    listing of a whole cluster): at most `timeout` seconds, and at most `limit` bytes of
    each of stdout and stderr.  More output than that is a failure (CommandFailed: a listing
    cut short must never read as a short one), an overrun a CommandTimedOut; either kills
    the command's process group as run_bounded does.  The exit status is the caller's to
    judge (no check)."""
    proc = _piped(cmd, env)
    outcome = _read_capped(proc, timeout, limit)
    if isinstance(outcome, str):
        _kill_group(proc)
        kind = CommandTimedOut if outcome.startswith("timed out") else CommandFailed
        raise kind(cmd, outcome, _reap_or_abandon(cmd, proc, reap))
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    stdout, stderr = (_text(b) for b in outcome)
    return subprocess.CompletedProcess(list(cmd), proc.returncode, stdout, stderr)


def _piped(cmd: Sequence[str], env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    """cmd started in its own session, its outputs piped to us."""
    log.debug("run: %s", shlex.join(cmd))
    try:
        return subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise CommandFailed(cmd, f"{cmd[0]} is not installed") from None
    except OSError as exc:
        raise CommandFailed(cmd, f"cannot run {cmd[0]}: {exc.strerror or exc}") from None


def _read_capped(
    proc: subprocess.Popen[str], timeout: float, limit: int
) -> tuple[bytes, bytes] | str:
    """Both outputs of proc once it has ended (read from the pipes themselves, counted in
    bytes), or why it must be killed."""
    deadline = time.monotonic() + timeout
    late = f"timed out after {timeout:g}s"
    assert proc.stdout is not None and proc.stderr is not None
    kept = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    with selectors.DefaultSelector() as selector:
        for fd in kept:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return late
            for key, _ in selector.select(left):
                data = os.read(key.fd, 65536)
                if not data:
                    selector.unregister(key.fd)
                kept[key.fd] += data
                if len(kept[key.fd]) > limit:
                    return f"more than {limit} bytes of output"
    try:
        proc.wait(max(deadline - time.monotonic(), 0.0))
    except subprocess.TimeoutExpired:
        return late
    return bytes(kept[proc.stdout.fileno()]), bytes(kept[proc.stderr.fileno()])


def _wait_bounded(
    proc: subprocess.Popen[str], timeout: float, cancel: threading.Event | None
) -> tuple[str, str] | str:
    """Wait for proc to end: its (stdout, stderr), or why it must be killed."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return f"timed out after {timeout:g}s"
        if cancel is not None and cancel.is_set():
            return "cancelled"
        step = min(left, POLL) if cancel is not None else left
        try:
            # communicate keeps what it read so far when it times out, and resumes
            return proc.communicate(timeout=step)
        except subprocess.TimeoutExpired:
            continue


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _reap_or_abandon(cmd: Sequence[str], proc: subprocess.Popen[str], reap: float) -> str:
    """The stderr of a killed process, or "" if it does not die: it is then abandoned."""
    try:
        _, stderr = proc.communicate(timeout=reap)
        return stderr or ""
    except subprocess.TimeoutExpired:
        log.warning(
            "abandoned process %d (%s): it does not die, probably stuck in the kernel",
            proc.pid,
            shlex.join(cmd),
        )
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        return ""


def start(cmd: Sequence[str]) -> subprocess.Popen[str]:
    """Start a command in its own session with its stderr captured, for the caller to poll
    (never to wait for without a timeout): the liveness probe of a mount."""
    log.debug("start: %s", shlex.join(cmd))
    try:
        return subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise CommandFailed(cmd, f"{cmd[0]} is not installed") from None


def spawn(
    cmd: Sequence[str], *, log_file: IO[bytes] | None = None, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a background process; its output goes to log_file (or nowhere)."""
    log.debug("spawn: %s", shlex.join(cmd))
    out: IO[bytes] | int = log_file if log_file is not None else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise CommandFailed(cmd, f"{cmd[0]} is not installed") from None


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def terminate(process: subprocess.Popen[Any], grace: float) -> None:
    """Stop a process we started: SIGTERM, then SIGKILL if it is still there after grace
    seconds; reaped either way.  Nothing happens to one that has ended."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
