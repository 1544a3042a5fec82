"""The drainer: runs a drain rollout's drain, count and resume commands on the server.

The planner (rollout/plan.py) decides which nodes drain and when they are given back; this
thread carries that out against the scheduler and reports what it sees as a `Workload` per
node, which the controller hands to the planner.  It acts only for the rollouts the leading
controller gives it (`follow`, every round; [] when the replica does not lead: then nothing
runs at all), and only for those with a drain whose state is running, paused, rolling back
or aborted.  Every `interval` seconds (and at once when `follow` brings something new) a
pass, for each such rollout:

1. drains its DRAINING nodes, once per phase: a phase is (rollout, node, `granted_at`),
   since a node can be drained twice in one rollout (updated and given back, then drained
   again for a rollback).  A node someone else drained (`held`, or seen drained by another
   reason just now) is left as it is: their reason is never overwritten.  A failed drain
   is asked again next pass;
2. counts jobs.  Slurm: one sinfo and one squeue for the whole rollout, every node counted
   (rollout/slurm.py).  The generic form: its `check` per node, for the DRAINING nodes and,
   while the rollout grants, the PENDING ones (the planner drains idle nodes first); 16 at
   once, each node at most once per interval (exit 0: no job; 1: the first integer on
   stdout, else 1; anything else, or a timeout: the count failed).  A node is `drained`
   (the drain is in place) only by a count started after its drain was asked in this
   phase, and for Slurm only while sinfo shows it draining or drained: a node with jobs
   left is drained with `jobs` ≥ 1, and the planner waits for 0;
3. gives back its RESUMING nodes, once per phase.  Slurm: only a node still drained with
   this rollout's reason (one an admin drained again meanwhile stays drained, and counts
   as given back); one not drained counts as given back.  The generic form runs `resume`
   if it has one.

A node's `error` is its last failure (drain, count or resume), cleared when that step next
succeeds; `wake()` is called whenever some node's Workload changed.  Logged: each drain
and resume run (info), each listing and check (debug), each new failure once (warning).

Commands run without a shell, with the given environment over the server's (SLURM_CONF,
...), a timeout and a bound on their output (process.run_capped).  Slurm's tools come from
PATH; the generic form's programs only from the hooks directory its operator named
(`hostos serve --drain-hooks DIR`): a plain name, resolving inside it (no symlink or `..`
out), a regular executable file, or nothing runs.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import stat
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from hostos.cluster.rollout import slurm
from hostos.cluster.rollout.plan import (
    GRANTING,
    NodeProgress,
    NodeState,
    Rollout,
    State,
    Workload,
)
from hostos.logfmt import kv as logfmt
from hostos.process import MAX_OUTPUT, CommandFailed, run_capped
from hostos.site.drain import PROGRAM, SLURM, Drain

log = logging.getLogger(__name__)

ACTIVE = frozenset({State.RUNNING, State.PAUSED, State.ROLLING_BACK, State.ABORTED})
PARALLEL = 16  # commands at once (generic checks, drains, resumes)
LISTING_OUTPUT = 64 << 20  # bytes of sinfo/squeue output read (a whole cluster's jobs)
ERROR_CHARS = 200
MAX_JOBS = 1_000_000  # a check's count is clamped to this
NO_HOOKS = "no drain hooks directory (hostos serve --drain-hooks DIR)"
STEPS = ("drain", "resume", "count")  # a node's error: the first of these that failed
_NUMBER = re.compile(r"\d{1,18}")

Phase = tuple[str, str, str, float | None]  # (step, rollout id, node, granted_at)


class Runner(Protocol):
    """Runs a command (argv, no shell): its result, whatever the exit status; CommandFailed
    when it could not run, ran too long or printed too much."""

    def __call__(self, cmd: Sequence[str], *, limit: int) -> subprocess.CompletedProcess[str]: ...


class HookError(Exception):
    """A generic drain program that is not the hooks directory's to run."""


def hook_argv(hooks: Path | None, argv: Sequence[str]) -> list[str]:
    """argv with its program replaced by the hooks directory's executable of that name."""
    if hooks is None:
        raise HookError(NO_HOOKS)
    name = argv[0] if argv else ""
    if not PROGRAM.fullmatch(name) or name in (".", ".."):
        raise HookError(f"{name!r}: not a plain file name in {hooks}")
    try:
        root = hooks.resolve(strict=True)
        path = (root / name).resolve(strict=True)
        info = path.stat()
    except (OSError, RuntimeError):
        raise HookError(f"{name}: not in {hooks}") from None
    if not path.is_relative_to(root) or path == root:
        raise HookError(f"{name}: not in {hooks} (it resolves to {path})")
    if not stat.S_ISREG(info.st_mode) or not os.access(path, os.X_OK):
        raise HookError(f"{name}: not an executable file in {hooks}")
    return [str(path), *argv[1:]]


def check_jobs(done: subprocess.CompletedProcess[str]) -> int | None:
    """A generic check's job count: exit 0 → 0, exit 1 → the first integer on stdout (at
    least 1: it said work is left), anything else → None (the count failed)."""
    if done.returncode == 0:
        return 0
    if done.returncode != 1:
        return None
    number = _NUMBER.search(done.stdout)
    return max(1, min(int(number.group()), MAX_JOBS)) if number else 1


def failure(name: str, done: subprocess.CompletedProcess[str]) -> str:
    """A failed command in short: `scontrol: exit 1: <first line of stderr>`."""
    text = (done.stderr or done.stdout).strip()
    first = text.splitlines()[0][:ERROR_CHARS] if text else ""
    return f"{name}: exit {done.returncode}" + (f": {first}" if first else "")


def next_image(rollout: Rollout) -> str:
    """{image}: the image the rollout assigns next."""
    spec = rollout.spec
    return spec.previous_image if rollout.reverting else spec.target_image


@dataclass
class _Seen:
    """What the drainer knows of one node of one rollout."""

    jobs: int | None = None
    counted: int = 0  # the sequence number at which its last good count started
    checked_at: float = float("-inf")  # clock of its last generic check
    slurm: slurm.NodeSlurmState | None = None  # its state in the last good sinfo
    errors: dict[str, str] = field(default_factory=dict)  # step → last failure

    def error(self) -> str:
        return next((self.errors[s] for s in STEPS if self.errors.get(s)), "")


@dataclass(frozen=True)
class _Outcome:
    """One command's result for the bookkeeping: ok, or the failure in short."""

    ok: bool
    error: str = ""
    result: subprocess.CompletedProcess[str] | None = None


class Drainer:
    """The thread that drains, counts and resumes the followed rollouts' nodes."""

    def __init__(
        self,
        hooks: Path | None,
        env: Mapping[str, str] | None = None,
        interval: float = 5.0,
        timeout: float = 60.0,
        wake: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
        *,
        runner: Runner | None = None,
    ) -> None:
        self.hooks = hooks
        self.interval = interval
        self.timeout = timeout
        self.wake = wake
        self.clock = clock
        merged = {**os.environ, **(env or {})}
        self._run: Runner = runner or (
            lambda cmd, *, limit: run_capped(cmd, timeout=timeout, limit=limit, env=merged)
        )
        self._lock = threading.Lock()
        self._due = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._followed: dict[str, Rollout] = {}
        self._seen: dict[tuple[str, str], _Seen] = {}
        self._asked: dict[Phase, int] = {}  # drain phase → sequence number once in place
        self._resumed: set[Phase] = set()
        self._listing: dict[str, str] = {}  # rollout id → its last sinfo/squeue failure
        self._seq = 0

    # -- the controller's side -------------------------------------------------------------

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="drainer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._due.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 5.0)
            self._thread = None

    def follow(self, rollouts: Sequence[Rollout]) -> None:
        """The active rollouts, as the leading controller sees them now ([] when it does
        not lead); a pass starts at once when a node entered a new state."""
        wanted = {r.id: r for r in rollouts if r.spec.drain is not None and r.state in ACTIVE}
        with self._lock:
            new = _phases(wanted.values()) - _phases(self._followed.values())
            self._followed = wanted
            self._forget(set(wanted))
        if new:
            self._due.set()

    def workloads(self, rollout: Rollout) -> dict[str, Workload]:
        """What is known now of each node of rollout (Workload() for one never seen)."""
        with self._lock:
            return self._workloads(rollout)

    # -- the thread ------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._due.clear()
            try:
                self.run_once()
            except Exception as exc:  # the thread outlives any one pass
                log.warning(logfmt("drainer-pass-failed", error=f"{type(exc).__name__}: {exc}"))
            self._due.wait(self.interval)

    def run_once(self) -> None:
        """One pass over the followed rollouts: drains, counts, resumes; wake() if some
        node's Workload changed."""
        with self._lock:
            rollouts = list(self._followed.values())
        for step in (self._pass, self._count_pending):  # what a rollout waits on first
            with self._lock:
                before = [self._workloads(r) for r in rollouts]
            for rollout in rollouts:
                if self._stopping.is_set():
                    return
                step(rollout)
            with self._lock:
                after = [self._workloads(r) for r in rollouts]
            if after != before:
                self.wake()

    def _pass(self, rollout: Rollout) -> None:
        """What nodes in the rollout's slots wait on: drains, their counts, resumes."""
        drain = rollout.spec.drain
        assert drain is not None
        self._drain(rollout, drain)
        busy = rollout.state in GRANTING or rollout.count(NodeState.DRAINING, NodeState.RESUMING)
        if drain.kind == SLURM and busy:  # (paused or aborted, none: nothing to see)
            self._observe_slurm(rollout)
        self._resume(rollout, drain)
        if drain.kind != SLURM:
            self._check(rollout, drain, NodeState.DRAINING)

    def _count_pending(self, rollout: Rollout) -> None:
        """The generic form's counts of the nodes next in line (Slurm's came with the
        listing): after the rest, since dozens of checks may run."""
        drain = rollout.spec.drain
        if drain is not None and drain.kind != SLURM and rollout.state in GRANTING:
            self._check(rollout, drain, NodeState.PENDING)

    # -- step 1: drain ---------------------------------------------------------------------

    def _drain(self, rollout: Rollout, drain: Drain) -> None:
        tasks: dict[str, Callable[[], _Outcome]] = {}
        with self._lock:
            for node, progress in _in_state(rollout, NodeState.DRAINING):
                phase = _phase("drain", rollout, node)
                if phase in self._asked:
                    continue
                seen = self._node(rollout.id, node)
                other = slurm.is_drained_by_other(seen.slurm, rollout.id)
                if progress.held or (drain.kind == SLURM and other):
                    self._asked[phase] = self._next()  # theirs: nothing to ask
                    continue
                tasks[node] = self._task(rollout, node, "drain", drain)
        for node, outcome in self._parallel(tasks).items():
            with self._lock:
                phase = _phase("drain", rollout, node)
                if outcome.ok:
                    self._asked[phase] = self._next()
                self._note(rollout.id, node, "drain", outcome.error)

    # -- step 2: count ---------------------------------------------------------------------

    def _counted(self, rollout: Rollout, state: NodeState) -> list[str]:
        """The nodes the generic form counts: draining ones, and pending ones while the
        rollout grants (the planner takes idle nodes first)."""
        return [node for node, p in sorted(rollout.nodes.items()) if p.state is state]

    def _observe_slurm(self, rollout: Rollout) -> None:
        with self._lock:
            start = self._next()
        outcomes = [self._command(rollout.id, "", "sinfo", slurm.sinfo_argv(), quiet=True)]
        if outcomes[0].ok:
            outcomes.append(
                self._command(rollout.id, "", "squeue", slurm.squeue_argv(), quiet=True)
            )
        error = next((o.error for o in outcomes if not o.ok), "")
        states: dict[str, slurm.NodeSlurmState] = {}
        jobs: Counter[str] = Counter()
        if not error:
            sinfo, squeue = (o.result.stdout if o.result else "" for o in outcomes)
            try:
                states, jobs = slurm.parse_sinfo(sinfo), slurm.jobs_per_node(squeue)
            except slurm.SlurmOutputError as exc:
                error = f"sinfo/squeue: {exc}"
        counted = set(rollout.nodes)  # one listing serves all: every count kept fresh
        with self._lock:
            if error and error != self._listing.get(rollout.id):
                log.warning(logfmt("drain-failed", rollout=rollout.id, step="count", error=error))
            self._listing[rollout.id] = error
            for node in rollout.nodes:
                seen = self._node(rollout.id, node)
                if error:
                    seen.jobs = None if node in counted else seen.jobs
                    seen.errors["count"] = error  # logged once for the rollout, above
                    continue
                seen.slurm = states.get(node)
                if node not in counted:
                    continue
                seen.jobs = slurm.jobs_on(node, seen.slurm, jobs)
                if seen.jobs is None:
                    self._note(rollout.id, node, "count", f"sinfo: Slurm lists no node {node}")
                    continue
                seen.counted = start
                self._note(rollout.id, node, "count", self._drain_lost(rollout, node, seen))

    def _drain_lost(self, rollout: Rollout, node: str, seen: _Seen) -> str:
        """A draining node whose drain was asked but that Slurm no longer shows drained
        (someone resumed it): it is not drained again, and not granted."""
        if rollout.nodes[node].state is not NodeState.DRAINING or seen.slurm is None:
            return ""
        if _phase("drain", rollout, node) not in self._asked or seen.slurm.drained:
            return ""
        return f"drain: Slurm shows {node} {seen.slurm.state}, no longer drained"

    def _check(self, rollout: Rollout, drain: Drain, state: NodeState) -> None:
        tasks: dict[str, Callable[[], _Outcome]] = {}
        starts: dict[str, int] = {}
        now = self.clock()
        with self._lock:
            for node in self._counted(rollout, state):
                seen = self._node(rollout.id, node)
                asked = self._asked.get(_phase("drain", rollout, node))
                just_drained = asked is not None and seen.counted < asked
                if now - seen.checked_at < self.interval and not just_drained:
                    continue  # a node drained since its last count is counted at once
                seen.checked_at = now
                starts[node] = self._next()
                tasks[node] = self._task(rollout, node, "check", drain, quiet=True)
        for node, outcome in self._parallel(tasks).items():
            jobs = check_jobs(outcome.result) if outcome.result else None
            error = outcome.error
            if outcome.result is not None and jobs is None:
                error = failure(drain.check[0], outcome.result)
            with self._lock:
                seen = self._node(rollout.id, node)
                seen.jobs = jobs
                if jobs is not None:
                    seen.counted = starts[node]
                self._note(rollout.id, node, "count", error)

    # -- step 3: resume --------------------------------------------------------------------

    def _resume(self, rollout: Rollout, drain: Drain) -> None:
        tasks: dict[str, Callable[[], _Outcome]] = {}
        with self._lock:
            for node, progress in _in_state(rollout, NodeState.RESUMING):
                phase = _phase("resume", rollout, node)
                if phase in self._resumed:
                    continue
                if progress.held or (drain.kind != SLURM and not drain.resume):
                    self._resumed.add(phase)
                elif drain.kind != SLURM or self._slurm_resumes(rollout, node):
                    tasks[node] = self._task(rollout, node, "resume", drain)
        for node, outcome in self._parallel(tasks).items():
            with self._lock:
                if outcome.ok:
                    self._resumed.add(_phase("resume", rollout, node))
                self._note(rollout.id, node, "resume", outcome.error)

    def _slurm_resumes(self, rollout: Rollout, node: str) -> bool:
        """Whether node is to be resumed now (still drained with this rollout's reason, as
        this pass's sinfo shows); one not drained, or drained by someone else since,
        counts as given back at once.  No answer from sinfo: not yet."""
        seen = self._node(rollout.id, node)
        if seen.errors.get("count"):
            return False
        phase = _phase("resume", rollout, node)
        other = slurm.is_drained_by_other(seen.slurm, rollout.id)
        if seen.slurm is not None and seen.slurm.drained and not other:
            if not seen.slurm.responding:  # a resume now: ReturnToService=1 downs it later
                seen.errors["resume"] = f"resume: waiting for slurmd on {node} to answer"
                return False
            return True
        self._resumed.add(phase)
        why = f"drained again by someone else: {other}" if other else "not drained"
        if seen.slurm is None:
            why = "Slurm lists no such node"
        log.info(logfmt("drain-resume-skipped", rollout=rollout.id, node=node, why=why))
        return False

    # -- commands --------------------------------------------------------------------------

    def _task(
        self, rollout: Rollout, node: str, step: str, drain: Drain, quiet: bool = False
    ) -> Callable[[], _Outcome]:
        """The command of step for node, ready to run (or to fail without running)."""
        if drain.kind == SLURM:
            argv = (
                slurm.drain_argv(node, rollout.id) if step == "drain" else slurm.resume_argv(node)
            )
            return lambda: self._command(rollout.id, node, step, argv, quiet)
        template = "command" if step == "drain" else step
        argv = drain.argv(template, node, next_image(rollout))
        try:
            path = hook_argv(self.hooks, argv)
        except HookError as exc:
            refused = _Outcome(False, str(exc))
            return lambda: refused
        return lambda: self._command(rollout.id, node, step, path, quiet, name=argv[0])

    def _command(
        self,
        rollout_id: str,
        node: str,
        step: str,
        argv: Sequence[str],
        quiet: bool = False,
        name: str = "",
    ) -> _Outcome:
        """Run one command and log it; its outcome, failures in short.  A check's exit
        status is its answer: the caller reads it."""
        name = name or argv[0]
        fields = {"rollout": rollout_id, "node": node, "step": step, "command": shlex.join(argv)}
        log.log(logging.DEBUG if quiet else logging.INFO, logfmt("drain-run", **fields))
        limit = MAX_OUTPUT if step in ("drain", "resume", "check") else LISTING_OUTPUT
        try:
            done = self._run(argv, limit=limit)
        except CommandFailed as exc:
            return _Outcome(False, f"{name}: {exc.why}")
        if done.returncode != 0 and step != "check":
            return _Outcome(False, failure(name, done), done)
        return _Outcome(True, "", done)

    def _parallel(self, tasks: Mapping[str, Callable[[], _Outcome]]) -> dict[str, _Outcome]:
        if not tasks:
            return {}
        if len(tasks) == 1:
            return {node: task() for node, task in tasks.items()}
        with ThreadPoolExecutor(min(PARALLEL, len(tasks)), "drainer-command") as pool:
            futures = {node: pool.submit(task) for node, task in tasks.items()}
            return {node: future.result() for node, future in futures.items()}

    # -- bookkeeping (under the lock) ------------------------------------------------------

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _node(self, rollout_id: str, node: str) -> _Seen:
        return self._seen.setdefault((rollout_id, node), _Seen())

    def _note(self, rollout_id: str, node: str, step: str, error: str) -> None:
        """Record step's outcome for node; a new failure is logged once."""
        seen = self._node(rollout_id, node)
        if error and error != seen.errors.get(step):
            log.warning(
                logfmt("drain-failed", rollout=rollout_id, node=node, step=step, error=error)
            )
        seen.errors[step] = error

    def _forget(self, followed: set[str]) -> None:
        """Drop what was known of the rollouts no longer followed."""
        self._seen = {k: v for k, v in self._seen.items() if k[0] in followed}
        self._asked = {k: v for k, v in self._asked.items() if k[1] in followed}
        self._resumed = {k for k in self._resumed if k[1] in followed}
        self._listing = {k: v for k, v in self._listing.items() if k in followed}

    def _workloads(self, rollout: Rollout) -> dict[str, Workload]:
        drain = rollout.spec.drain
        found = {}
        for node, progress in rollout.nodes.items():
            seen = self._seen.get((rollout.id, node))
            if seen is None:
                found[node] = Workload()
                continue
            asked = self._asked.get(_phase("drain", rollout, node))
            drained = (
                progress.state is NodeState.DRAINING
                and asked is not None
                and seen.jobs is not None
                and seen.counted > asked
                and (drain is None or drain.kind != SLURM or _shows_drained(seen))
            )
            found[node] = Workload(
                jobs=seen.jobs,
                drained=drained,
                held=slurm.is_drained_by_other(seen.slurm, rollout.id),
                resumed=_phase("resume", rollout, node) in self._resumed,
                error=seen.error(),
            )
        return found


def _shows_drained(seen: _Seen) -> bool:
    return seen.slurm is not None and seen.slurm.drained


def _phase(step: str, rollout: Rollout, node: str) -> Phase:
    return (step, rollout.id, node, rollout.nodes[node].granted_at)


def _in_state(rollout: Rollout, state: NodeState) -> list[tuple[str, NodeProgress]]:
    return [(n, p) for n, p in sorted(rollout.nodes.items()) if p.state is state]


def _phases(rollouts: Iterable[Rollout]) -> set[tuple[str, str, str, float | None]]:
    """Each node's state and phase, to tell what a `follow` brings that is new."""
    return {
        (r.id, node, p.state.value, p.granted_at) for r in rollouts for node, p in r.nodes.items()
    }
