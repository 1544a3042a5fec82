"""The built-in Slurm drain (`drain: slurm`), pure: the commands and what their output means.

The server's drainer (hostos/cluster/server/drainer.py) runs these where `scontrol` reaches
slurmctld:

- drain: `scontrol update nodename=N state=drain "reason=hostos rollout <id>"`; the reason
  names the rollout, so the drainer knows its own drain from an admin's (`ours`);
- observe: `sinfo -h -N -o %N|%T|%E` (each node's state and drain reason) and
  `squeue -h -t running,completing,configuring,suspended -o %i|%N` (each job's nodes, in
  Slurm's hostlist syntax `n[01-03,07],m5`), one of each per look at the whole cluster;
- resume: `scontrol update nodename=N state=resume`, only while the node is still drained
  for this rollout (an admin who drained it again meanwhile keeps it).

sinfo's states (`%T`): idle, allocated, mixed, completing, draining (drained, jobs still
on it), drained, down, ..., with a suffix when slurmctld flags the node (`*` not
responding, `~` powered off, `#` powering up, `%` powering down, `$` maintenance, `@`
reboot pending, `^` rebooting, `!` power down pending, `-` planned); `+` joins a
state and its flags in some versions (`idle+drain`).  A node just resumed shows `idle*`
until it answers slurmctld's next ping.  `%E` prints `none` when no reason is
set.  A node in several partitions is listed once for each.  A suspended job keeps its
node: a reboot would end it, so it counts like a running one.

Output is the scheduler's, read with a bound: lines that do not parse are skipped, and
more lines than MAX_LINES is an error (a count cut short would read as fewer jobs).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Final

from hostos.site.hostlist import expand

SCONTROL: Final = "scontrol"
SINFO: Final = "sinfo"
SQUEUE: Final = "squeue"
SINFO_FORMAT: Final = "%N|%T|%E"
SQUEUE_FORMAT: Final = "%i|%N"
JOB_STATES: Final = "running,completing,configuring,suspended"  # jobs that hold their nodes
NO_REASON: Final = "none"  # what %E prints for a node without a reason
REASON_PREFIX: Final = "hostos rollout "
MAX_LINES: Final = 1_000_000
FLAG_SUFFIXES: Final = "*~#%$@^!-"
DRAIN_STATES: Final = frozenset({"drain", "drained", "draining"})
BUSY_STATES: Final = frozenset({"allocated", "mixed", "completing", "draining"})


class SlurmOutputError(ValueError):
    """Output that cannot be trusted as a whole (cut short, or far too long)."""


@dataclass(frozen=True)
class NodeSlurmState:
    """One node as sinfo shows it."""

    state: str  # %T as printed, lower case: `idle`, `draining`, `drained*`, `idle+drain`
    reason: str = ""  # the drain (or down) reason; "" when there is none

    @property
    def parts(self) -> tuple[str, ...]:
        """The state and its `+` flags, without the suffix flags: `drained*` → (drained,)."""
        return tuple(part.rstrip(FLAG_SUFFIXES) for part in self.state.split("+"))

    @property
    def drained(self) -> bool:
        """Drained or draining: slurmctld gives it no new job."""
        return any(part in DRAIN_STATES for part in self.parts)

    @property
    def responding(self) -> bool:
        """slurmctld hears from the node's slurmd (no `*`): after a reboot, it registered."""
        return "*" not in self.state

    @property
    def busy(self) -> bool:
        """A job is (or was until just now) on it: allocated, mixed, completing, draining."""
        return any(part in BUSY_STATES for part in self.parts)


def reason(rollout_id: str) -> str:
    """The drain reason that marks a node as drained by this rollout."""
    return f"{REASON_PREFIX}{rollout_id}"


def ours(node_reason: str, rollout_id: str) -> bool:
    """The node's reason is the one this rollout's drain set."""
    return node_reason == reason(rollout_id)


def drain_argv(node: str, rollout_id: str) -> list[str]:
    return [SCONTROL, "update", f"nodename={node}", "state=drain", f"reason={reason(rollout_id)}"]


def resume_argv(node: str) -> list[str]:
    return [SCONTROL, "update", f"nodename={node}", "state=resume"]


def sinfo_argv() -> list[str]:
    return [SINFO, "-h", "-N", "-o", SINFO_FORMAT]


def squeue_argv() -> list[str]:
    return [SQUEUE, "-h", "-t", JOB_STATES, "-o", SQUEUE_FORMAT]


def parse_sinfo(text: str) -> dict[str, NodeSlurmState]:
    """Each node's state and reason from `sinfo -h -N -o %N|%T|%E`; malformed lines skipped
    (a reason may hold `|`: it is the rest of the line)."""
    nodes: dict[str, NodeSlurmState] = {}
    for line in _lines(text):
        fields = line.split("|", 2)
        if len(fields) != 3:
            continue
        node, state, why = (f.strip() for f in fields)
        if not node or not state or any(c.isspace() for c in node + state):
            continue
        nodes[node] = NodeSlurmState(state.lower(), "" if why == NO_REASON else why)
    return nodes


def jobs_per_node(text: str) -> Counter[str]:
    """How many jobs hold each node, from `squeue -h -t ... -o %i|%N`; a line whose node
    list does not parse (or names none) is skipped."""
    jobs: Counter[str] = Counter()
    for line in _lines(text):
        fields = line.split("|")
        if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
            continue
        try:
            nodes = expand(fields[1].strip())
        except ValueError:
            continue
        jobs.update(set(nodes))
    return jobs


def is_drained_by_other(state: NodeSlurmState | None, rollout_id: str) -> str:
    """The reason of someone else's drain on the node ("" when it is not drained, or
    drained by this rollout): a node held so is updated but never resumed."""
    if state is None or not state.drained or ours(state.reason, rollout_id):
        return ""
    return state.reason or state.state


def jobs_on(node: str, state: NodeSlurmState | None, jobs: Counter[str]) -> int | None:
    """The jobs on a node, from one sinfo and one squeue: None when sinfo does not know the
    node; at least one while sinfo still calls it busy (the two reads are not atomic)."""
    if state is None:
        return None
    count = jobs[node]
    return max(count, 1) if state.busy else count


def _lines(text: str) -> list[str]:
    lines = text.splitlines()
    if len(lines) > MAX_LINES:
        raise SlurmOutputError(f"{len(lines)} lines, more than {MAX_LINES}")
    return [line for line in lines if line.strip()]
