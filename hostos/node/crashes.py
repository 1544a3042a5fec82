"""Crash backoff per unit (pure): restart at once after a long run, exponentially after
quick crashes, and say when the next try is due."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from hostos.backoff import Backoff
from hostos.site.model import Restart

STABLE_AFTER = 10.0  # seconds up after which a crash counts as the first again
FACTOR = 2.0  # each quick crash in a row waits twice as long as the one before


@dataclass(frozen=True)
class Crashes:
    restarts: int = 0  # restarts after an exit, since the supervisor started
    streak: int = 0  # crashes in a row, each soon after its start
    last_exit: int | None = None
    next_retry: float | None = None  # clock time of the next try; None: no retry pending
    started: float | None = None  # clock time of the last start hostos made
    waiting: bool = False  # an exit was seen and the restart it calls for is not done yet


def exited(state: Crashes, policy: Restart, exit_code: int | None, now: float) -> Crashes:
    """A container stopped: when (if ever) to start it again."""
    if not wants_restart(policy, exit_code):
        return dataclasses.replace(state, last_exit=exit_code, next_retry=None, waiting=True)
    quick = state.started is not None and now - state.started < STABLE_AFTER
    streak = state.streak + 1 if quick else 1
    # the first crash restarts at once (as docker does), quick repeats back off
    delay = 0.0 if streak == 1 else backoff(policy).delay(streak - 1)
    return dataclasses.replace(
        state, streak=streak, last_exit=exit_code, next_retry=now + delay, waiting=True
    )


def backoff(policy: Restart) -> Backoff:
    """The unit's `restart.backoff` (initial, max) as the policy of its quick crashes."""
    return Backoff(policy.backoff.initial, FACTOR, policy.backoff.max)


def wants_restart(policy: Restart, exit_code: int | None) -> bool:
    if policy.policy == "no":
        return False
    if policy.policy == "on-failure":
        return exit_code not in (0, None)
    return True


def started(state: Crashes, now: float) -> Crashes:
    return dataclasses.replace(
        state,
        restarts=state.restarts + (1 if state.waiting else 0),
        next_retry=None,
        started=now,
        waiting=False,
    )


def due(state: Crashes, now: float) -> bool:
    return state.next_retry is not None and state.next_retry <= now


def hold(state: Crashes, policy: Restart, now: float) -> str:
    """Why a unit whose container stopped is not started again now ("" when it may be)."""
    if not state.waiting:
        return ""
    if state.next_retry is None:
        return f"exited, restart policy {policy.policy}"
    if state.next_retry > now:
        return f"crash loop: next try in {state.next_retry - now:.1f}s"
    return ""
