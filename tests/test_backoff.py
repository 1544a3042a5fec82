"""hostos.backoff: one policy, and the timings of each of its users kept as they were."""

from __future__ import annotations

import math

import pytest

from hostos.backoff import Backoff
from hostos.cluster.agent import RETRY as AGENT_RETRY
from hostos.engine.shared import PULL_BACKOFF
from hostos.mounts.state import RETRY as MOUNT_RETRY
from hostos.node import crashes
from hostos.node.supervisor import RECONNECT
from hostos.site.model import Restart

MOUNT = Backoff(initial=1.0, factor=2.0, max=60.0, jitter=0.1)


@pytest.mark.parametrize(
    ("attempt", "draw", "delay"),
    [
        (1, 0.5, 1.0),
        (2, 0.5, 2.0),
        (3, 0.5, 4.0),
        (7, 0.5, 60.0),
        (50, 0.5, 60.0),
        (3, 0.0, 3.6),  # the jitter's low end
        (3, 0.999999, 4.4),  # and its high end
        (50, 0.999999, 60.0),  # capped again after the jitter
        (50, 0.0, 54.0),
        (0, 0.5, 1.0),  # 0 counts as the first
        (5000, 0.5, 60.0),  # far past where factor ** n overflows a float
    ],
)
def test_delay(attempt: int, draw: float, delay: float) -> None:
    assert MOUNT.delay(attempt, draw) == pytest.approx(delay, abs=1e-4)


@pytest.mark.parametrize(
    ("policy", "delays"),
    [
        (MOUNT_RETRY, [1, 2, 4, 8, 16, 32, 60, 60]),  # mount retries: 1 s doubling to 60 s
        (RECONNECT, [1, 2, 4, 8, 16, 30, 30, 30]),  # the supervisor's engine reconnect
        (PULL_BACKOFF, [1, 3, 3, 3, 3, 3, 3, 3]),  # pull retries: 1 s, then 3 s
        (AGENT_RETRY, [1, 2, 4, 8, 16, 30, 30, 30]),  # the agent: 1 s doubling to 30 s
        (Backoff(0.0), [0] * 8),
        (Backoff(0.5, factor=1.0), [0.5] * 8),
        (Backoff(2.0, max=5.0), [2, 4, 5, 5, 5, 5, 5, 5]),
    ],
)
def test_the_policies_in_use(policy: Backoff, delays: list[float]) -> None:
    assert [policy.delay(n) for n in range(1, 9)] == delays


def test_the_jitter_of_those_that_have_one() -> None:
    assert (MOUNT_RETRY.jitter, AGENT_RETRY.jitter) == (0.1, 0.1)
    assert RECONNECT.jitter == PULL_BACKOFF.jitter == 0.0


def test_no_overflow_when_there_is_no_cap() -> None:
    assert Backoff(1.0).delay(5000) == math.inf
    assert Backoff(0.0).delay(5000) == 0.0


@pytest.mark.parametrize(
    ("backoff", "delays"),
    [
        # each quick crash after the first waits initial, doubling up to max
        ({"initial": "1s", "max": "8s"}, [1, 2, 4, 8, 8]),
        ({"initial": "5s", "max": "5m"}, [5, 10, 20, 40, 80]),
        ({}, [1, 2, 4, 8, 16]),
    ],
)
def test_the_crash_backoff_of_a_unit(backoff: dict[str, str], delays: list[float]) -> None:
    policy = crashes.backoff(Restart.model_validate({"policy": "always", "backoff": backoff}))
    assert [policy.delay(n) for n in range(1, 6)] == delays
