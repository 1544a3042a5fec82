"""One backoff policy (pure): how long to wait after failures in a row.

The first retry waits `initial`, each later one `factor` times the one before, never more
than `max`; `jitter` scales each delay by a factor in [1 - jitter, 1 + jitter] (drawn by the
caller, so the policy stays a function), and the result is capped again.  Used by the crash
backoff (hostos.node.crashes), mount retries (hostos.mounts.state), the supervisor's engine
reconnect, pull retries (hostos.engine.shared) and the cluster agent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

NO_JITTER = 0.5  # the draw that leaves a delay as it is


@dataclass(frozen=True)
class Backoff:
    initial: float  # seconds after the first failure
    factor: float = 2.0
    max: float = math.inf
    jitter: float = 0.0  # each delay is scaled by a factor in [1 - jitter, 1 + jitter]

    def delay(self, attempt: int, draw: float = NO_JITTER) -> float:
        """Seconds to wait after the attempt-th failure in a row (1: the first; 0 counts as
        1); draw in [0, 1) picks the jitter (random.random() in the caller)."""
        base = min(self.max, self._grown(max(0, attempt - 1)))
        return min(self.max, base * (1.0 + self.jitter * (2.0 * draw - 1.0)))

    def _grown(self, steps: int) -> float:
        try:
            return self.initial * float(self.factor) ** steps
        except OverflowError:  # a thousand failures in a row: the cap long reached
            return math.inf if self.initial > 0 else 0.0
