"""How a role's workload drains before a node reboots: the `rollout.drain` of a role.

Two forms.  `drain: slurm` is built in: the server asks slurmctld (`scontrol`) to drain the
node with a reason that names the rollout, waits until no job runs on it, and resumes it
once the node is back on the new image, steady and healthy.  The generic form names three
commands (argv lists, no shell) for any other scheduler:

    drain:
      command: [sched-drain, "{node}"]   # stop giving the node work
      check: [sched-jobs, "{node}"]      # exit 0: nothing runs; 1: work left (stdout: how much)
      resume: [sched-resume, "{node}"]   # give the node back

`{node}` is the node's id, `{image}` the image the rollout assigns it.  A program is a plain
name, never a path: the server runs only executables of the directory its operator named
(`hostos serve --drain-hooks DIR`), so publishing a site never means running any program on
the server.  Pure: this module holds the form and its checks; the server runs the commands
(hostos/cluster/server/drainer.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

SLURM: Final = "slurm"
COMMANDS: Final = "commands"
STEPS = ("command", "check", "resume")
PLACEHOLDERS = ("node", "image")
DEFAULT_TIMEOUT = 86400.0  # drain_timeout: a day, the longest job most sites allow
MAX_ARGS = 64
MAX_ARG = 4096
_FIELD = re.compile(r"\{([^{}]*)\}")
PROGRAM = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}")  # a file of the hooks directory


class DrainError(ValueError):
    """A drain form that cannot be used; the message says why and what is expected."""


@dataclass(frozen=True)
class Drain:
    """A role's drain: `slurm`, or the three commands of the generic form."""

    kind: Literal["slurm", "commands"]
    command: tuple[str, ...] = ()
    check: tuple[str, ...] = ()
    resume: tuple[str, ...] = ()
    timeout: float = DEFAULT_TIMEOUT  # seconds a node may drain before it counts as failed

    def argv(self, step: str, node: str, image: str = "") -> list[str]:
        """The generic form's command for step with its placeholders filled in."""
        template: Sequence[str] = getattr(self, step)
        return [arg.replace("{node}", node).replace("{image}", image) for arg in template]

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "command": list(self.command),
            "check": list(self.check),
            "resume": list(self.resume),
            "timeout": self.timeout,
        }

    @classmethod
    def from_json(cls, data: Any) -> Drain:
        """A stored drain read back, checked as strictly as the site's (DrainError)."""
        if not isinstance(data, Mapping):
            raise DrainError(f"expected an object, got {type(data).__name__}")
        kind = data.get("kind")
        timeout = check_timeout(data.get("timeout", DEFAULT_TIMEOUT))
        if kind == SLURM:
            return cls(SLURM, timeout=timeout)
        if kind != COMMANDS:
            raise DrainError(f"kind: expected '{SLURM}' or '{COMMANDS}', got {kind!r}")
        steps = {step: check_argv(step, data.get(step, [])) for step in STEPS}
        check_required(steps)
        return cls(COMMANDS, steps["command"], steps["check"], steps["resume"], timeout)


def check_timeout(value: object) -> float:
    """A drain timeout in seconds: a finite positive number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DrainError(f"timeout: expected seconds, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise DrainError(f"timeout: must be a positive number of seconds, got {value}")
    return float(value)


def check_argv(step: str, value: object) -> tuple[str, ...]:
    """One generic command: a list of strings (no shell), placeholders {node} and {image}."""
    if not isinstance(value, list | tuple) or not all(isinstance(a, str) for a in value):
        raise DrainError(
            f"{step}: expected a command as a list of strings, e.g. [prog, '{{node}}']"
        )
    if len(value) > MAX_ARGS or any(len(a) > MAX_ARG or "\0" in a for a in value):
        raise DrainError(f"{step}: at most {MAX_ARGS} arguments of {MAX_ARG} characters, no NUL")
    if value and (not PROGRAM.fullmatch(value[0]) or value[0] in (".", "..")):
        raise DrainError(
            f"{step}: the program {value[0]!r} must be a plain file name (letters, digits, "
            "_ . + -), run from the server's --drain-hooks directory, not a path"
        )
    for arg in value:
        for name in _FIELD.findall(arg):
            if name not in PLACEHOLDERS:
                known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
                raise DrainError(f"{step}: unknown placeholder {{{name}}} (known: {known})")
    return tuple(value)


def check_required(steps: Mapping[str, tuple[str, ...]]) -> None:
    """The generic form needs `command` and `check`; `resume` may be left out."""
    missing = [step for step in ("command", "check") if not steps.get(step)]
    if missing:
        raise DrainError(
            f"{' and '.join(missing)}: missing (the generic form needs command and check; "
            f"or write drain: {SLURM})"
        )
