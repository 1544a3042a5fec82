"""How often a fleet's agents send heartbeats, and when a node counts as silent.

A fixed interval makes the heartbeat load grow with the fleet: 10,000 nodes at 10 s are
1,000 writes a second, more than a small server and its store keep up with next to a rollout.
As Nomad scales its heartbeat TTLs with the cluster's size, the server paces the fleet: each
heartbeat's answer (the node record) carries `heartbeat_seconds`, the fleet's size over the
heartbeat rate the server is sized for, and the agent waits the larger of that and its own
interval (10 s by default) before the next one.  So nothing changes below `rate * 10 s`
nodes (2,000 at the default 200/s), and a 10,000-node fleet sends 200 heartbeats a second at
a 50 s interval.

A node is silent (the rollout planner counts it out, `hostos nodes` shows it stale) when it
missed `MISSED` heartbeats at the interval it was told, and never sooner than `SILENT_AFTER`:
a paced fleet is not called silent for heartbeats it was asked not to send.
"""

from __future__ import annotations

import math
from typing import Any

RATE = 200.0  # heartbeats a second asked of the whole fleet (hostos serve --heartbeat-rate)
SILENT_AFTER = 60.0  # seconds: a node silent for less is never counted out
MISSED = 3  # heartbeats missed at the paced interval after which a node is silent
PACE_MAX = 3600.0  # seconds: a longer pace in an answer is taken for a broken one


def heartbeat_seconds(nodes: int, rate: float = RATE) -> float:
    """The least interval to ask of each of `nodes` agents for `rate` heartbeats a second in
    all, rounded up to a tenth of a second (0 for an empty fleet)."""
    if nodes <= 0:
        return 0.0
    return math.ceil(nodes / rate * 10) / 10


def asked(answer: Any) -> float:
    """The pace a heartbeat's answer asks (its `heartbeat_seconds`); 0 for none: an older
    server's answer, or a value no agent should follow."""
    pace = answer.get("heartbeat_seconds") if isinstance(answer, dict) else None
    if not isinstance(pace, int | float) or isinstance(pace, bool) or not 0 <= pace <= PACE_MAX:
        return 0.0
    return float(pace)


def silent_after(interval: float, floor: float = SILENT_AFTER) -> float:
    """Seconds without a heartbeat after which a node told `interval` counts as silent."""
    return max(floor, MISSED * interval)


def is_silent(last_seen: float, interval: float, now: float, floor: float = SILENT_AFTER) -> bool:
    return now - last_seen > silent_after(interval, floor)
