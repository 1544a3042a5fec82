"""The one way hostos runs other programs.

Every command is logged before it runs, and a failure raises CommandFailed
whose message holds the command line quoted for a shell, so an admin can paste
it and see the problem first hand.  `spawn` starts background processes (the
embedded podman service) in their own session, so a Ctrl-C aimed at hostos does
not reach them before hostos has stopped them itself.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from typing import IO

from hostos.errors import RuntimeFailure

log = logging.getLogger("hostos.run")

STDERR_TAIL_LINES = 20


class CommandFailed(RuntimeFailure):
    """A command exited non-zero, could not start, or timed out."""

    def __init__(self, cmd: Sequence[str], why: str, output: str = "") -> None:
        self.cmd = list(cmd)
        self.output = output
        message = f"{why}: {shlex.join(cmd)}"
        tail = "\n".join(output.strip().splitlines()[-STDERR_TAIL_LINES:])
        if tail:
            message += "\n" + tail
        super().__init__(message)


def run(cmd: Sequence[str], *, check: bool = True, timeout: float | None = None,
        env: Mapping[str, str] | None = None, input: str | None = None,
        cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command to completion, capturing its output as text."""
    log.debug("run: %s", shlex.join(cmd))
    try:
        result = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                                env=dict(env) if env is not None else None, input=input,
                                cwd=cwd, check=False)
    except FileNotFoundError:
        raise CommandFailed(cmd, f"{cmd[0]} is not installed") from None
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(cmd, f"timed out after {timeout:g}s", _text(exc.stderr)) from None
    if check and result.returncode != 0:
        raise CommandFailed(cmd, f"exit status {result.returncode}",
                            result.stderr or result.stdout)
    return result


def spawn(cmd: Sequence[str], *, log_file: IO[bytes] | None = None,
          env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a background process; its output goes to log_file (or nowhere)."""
    log.debug("spawn: %s", shlex.join(cmd))
    out: IO[bytes] | int = log_file if log_file is not None else subprocess.DEVNULL
    try:
        return subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                env=dict(env) if env is not None else None,
                                start_new_session=True)
    except FileNotFoundError:
        raise CommandFailed(cmd, f"{cmd[0]} is not installed") from None


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data
