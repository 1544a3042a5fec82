"""The drain rollout's simulated jobs: which nodes run one and until when, the drain hooks
the server runs for the role (small sh scripts in a hooks directory of the run's own), and
what the hooks and the agents leave behind to measure.

Three directories of the run, one clock (the machine's):

- `jobs/NODE`: a busy node's job end time, in nanoseconds since the epoch; nodes without a
  file run no job.  Written when the rollout starts (every job starts then); read by the
  check hook and by the agents, which count a job interrupted when they reboot before its
  end.
- `drain-state/drained/NODE`: the node is drained (the drain hook makes it, the resume hook
  removes it); `drain-state/events`: a line per hook run, `STEP NODE TIME_NS`.
- `hooks/`: `bench-drain NODE`, `bench-check NODE` (exit 0: no job; exit 1 and `1` on
  stdout while the job's end time is in the future), `bench-resume NODE`, the programs of the
  role's generic drain (`hostos serve --drain-hooks DIR`).
"""

from __future__ import annotations

import math
import random
import shlex
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hostos.site.drain import COMMANDS, Drain
from hostos.site.rollout import RolloutPolicy

NS = 1_000_000_000
DRAIN_HOOK, CHECK_HOOK, RESUME_HOOK = "bench-drain", "bench-check", "bench-resume"
DRAIN = Drain(
    COMMANDS,
    command=(DRAIN_HOOK, "{node}"),
    check=(CHECK_HOOK, "{node}"),
    resume=(RESUME_HOOK, "{node}"),
)
JOBS_PER_REBOOT = 5.0  # the longest a job may run: this many reboot times

# Every hook first refuses a node id that could name a path out of its directory.  The
# server runs the check of every node of the rollout each --drain-interval, so it runs no
# program but `date`, and that only on a node with a job.
_HEAD = """#!/bin/sh
set -eu
node=${1:-}
case "$node" in ''|.*|*/*) echo "bad node id: '$node'" >&2; exit 2;; esac
state=%(state)s
"""
HOOKS = {
    DRAIN_HOOK: _HEAD
    + """: > "$state/drained/$node"
echo "drain $node $(date +%%s%%N)" >> "$state/events"
""",
    CHECK_HOOK: _HEAD
    + """job=%(jobs)s/$node
[ -f "$job" ] || exit 0
read -r end < "$job"
if [ "$(date +%%s%%N)" -lt "$end" ]; then echo 1; exit 1; fi
""",
    RESUME_HOOK: _HEAD
    + """rm -f "$state/drained/$node"
echo "resume $node $(date +%%s%%N)" >> "$state/events"
""",
}


def write_hooks(hooks: Path, state: Path, jobs: Path) -> None:
    """The three hook scripts into hooks (executable), their state and jobs directories
    made, their absolute paths written into the scripts."""
    for directory in (hooks, state / "drained", jobs):
        directory.mkdir(parents=True, exist_ok=True)
    paths = {"state": shlex.quote(str(state.resolve())), "jobs": shlex.quote(str(jobs.resolve()))}
    for name, text in HOOKS.items():
        path = hooks / name
        path.write_text(text % paths)
        path.chmod(0o755)


def role_rollout() -> dict[str, Any]:
    """The rollout policy of the drain rollout's role, as a published role spec carries it
    (what `rollout: {drain: {command: …, check: …, resume: …}}` in a site file becomes)."""
    return RolloutPolicy(drain=DRAIN).to_json()


def draw_jobs(nodes: Sequence[str], fraction: float, longest: float, seed: int) -> dict[str, float]:
    """Seeded: round(fraction * nodes) of the nodes, each with a job of a length uniform up
    to longest seconds."""
    rng = random.Random(seed)
    busy = rng.sample(sorted(nodes), round(fraction * len(nodes)))
    return {node: rng.uniform(0, longest) for node in sorted(busy)}


def start_jobs(jobs: Path, lengths: Mapping[str, float], start: float) -> dict[str, float]:
    """Every job started at start (time.time()): its end time written to jobs/NODE (the
    directory emptied first); the end times, per node."""
    for old in jobs.iterdir():
        old.unlink()
    ends = {node: start + length for node, length in lengths.items()}
    for node, end in ends.items():
        (jobs / node).write_text(f"{round(end * NS)}\n")
    return ends


def job_left(jobs: Path, node: str, now: float | None = None) -> float:
    """Seconds node's job still runs at now (default: this moment); 0 for a node without
    one.  Node ids are the fleet's own (n00042), never a path."""
    try:
        end = int((jobs / node).read_text()) / NS
    except FileNotFoundError:
        return 0.0
    return max(0.0, end - (time.time() if now is None else now))


def hook_times(state: Path, step: str) -> dict[str, float]:
    """Per node, when the hook step (`drain`, `resume`) first ran for it (time.time())."""
    times: dict[str, float] = {}
    events = state / "events"
    text = events.read_text() if events.exists() else ""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[0] == step and fields[2].isdigit():
            times.setdefault(fields[1], int(fields[2]) / NS)
    return times


def drain_bound(nodes: int, slots: int, reboot: float, longest_job: float) -> float:
    """The least a drain rollout can take: its reboots, S at a time, or the longest job and
    then its node's reboot, whichever is longer."""
    return max(math.ceil(nodes / slots) * reboot, longest_job + reboot)
