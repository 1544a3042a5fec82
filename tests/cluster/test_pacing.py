"""Heartbeat pacing (pacing.py) and where it is followed: the heartbeat's record, the agent's
interval, `hostos nodes`' stale, the rollout planner's silent nodes. Pure code, no server."""

from __future__ import annotations

from typing import Any

import pytest

from hostos.cli.cluster import node_state
from hostos.cluster import agent, pacing
from hostos.cluster.records import Heartbeat, NodeRecord
from hostos.cluster.rollout.plan import NodeView, RolloutSpec, start


@pytest.mark.parametrize(
    ("nodes", "rate", "seconds"),
    [
        (0, 200.0, 0.0),
        (1, 200.0, 0.1),
        (300, 200.0, 1.5),
        (2000, 200.0, 10.0),
        (2001, 200.0, 10.1),
        (10_000, 200.0, 50.0),
        (10_000, 1000.0, 10.0),
        (3, 4.0, 0.8),
    ],
)
def test_heartbeat_seconds_spreads_the_fleet_over_the_rate(
    nodes: int, rate: float, seconds: float
) -> None:
    assert pacing.heartbeat_seconds(nodes, rate) == seconds
    if nodes:  # never above the rate: the fleet at that interval sends at most `rate`/s
        assert nodes / seconds <= rate


@pytest.mark.parametrize(
    ("interval", "after"), [(0.0, 60.0), (10.0, 60.0), (20.0, 60.0), (50.0, 150.0), (300.0, 900.0)]
)
def test_silent_after_three_paced_beats_never_under_a_minute(interval: float, after: float) -> None:
    assert pacing.silent_after(interval) == after
    assert not pacing.is_silent(1000.0, interval, 1000.0 + after)
    assert pacing.is_silent(1000.0, interval, 1000.0 + after + 0.1)


def test_the_pace_is_the_servers_not_the_agents() -> None:
    beat = Heartbeat.from_json({"booted_image": "g1", "interval": 99, "heartbeat_seconds": 99})
    assert beat.interval == 0.0  # a node cannot set its own pace
    record = Heartbeat(booted_image="g1", interval=50.0).applied_to(NodeRecord("cn1"), 7.0)
    assert record.heartbeat_seconds == 50.0
    assert NodeRecord.from_json(record.to_json()) == record
    assert NodeRecord.from_json({"id": "cn1"}).heartbeat_seconds == 0.0  # an older record


def paced_agent() -> agent.Agent:
    settings = agent.Settings(
        "http://127.0.0.1:1", "cn001", "hn1.cn001.secret", timing=agent.Timing(heartbeat=10.0)
    )
    return agent.Agent(settings, lambda: {})


@pytest.mark.parametrize(
    ("answer", "interval"),
    [
        ({"heartbeat_seconds": 50.0}, 50.0),  # a large fleet: the server's pace
        ({"heartbeat_seconds": 1.5}, 10.0),  # a small one: the agent's own interval
        ({"heartbeat_seconds": 0}, 10.0),
        ({}, 10.0),  # an older server
        ({"heartbeat_seconds": "50"}, 10.0),
        ({"heartbeat_seconds": True}, 10.0),
        ({"heartbeat_seconds": -5}, 10.0),
        ({"heartbeat_seconds": 1e9}, 10.0),  # past PACE_MAX: a broken server
        ([], 10.0),
    ],
)
def test_the_agent_beats_at_the_longer_of_its_interval_and_the_pace(
    answer: Any, interval: float
) -> None:
    node = paced_agent()
    node._follow_pace({"heartbeat_seconds": 30.0})
    assert node.interval() == 30.0
    node._follow_pace(answer)
    assert node.interval() == interval


def test_nodes_shows_a_paced_node_stale_after_three_of_its_beats() -> None:
    record = {"id": "cn1", "booted_image": "g1", "last_seen": 1000.0}
    assert node_state(record, 1061.0) == "stale"
    paced = {**record, "heartbeat_seconds": 50.0}
    assert node_state(paced, 1061.0) == "up"
    assert node_state(paced, 1149.0) == "up"
    assert node_state(paced, 1151.0) == "stale"
    assert node_state({**paced, "last_seen": 0}, 1061.0) == "unseen"


def test_the_planner_counts_a_paced_node_heard_from() -> None:
    """Canaries are chosen among the nodes heard from: a node 100 s silent at a 50 s pace is
    one of them, the same node unpaced is not."""
    rollout = RolloutSpec("compute", "g2", "g1", max_unavailable=1, canary=1)
    quiet = NodeView("a", "g1", healthy=True, last_seen=900.0, heartbeat=50.0)
    heard = NodeView("b", "g1", healthy=True, last_seen=1000.0)
    assert start(rollout, [quiet, heard], 1000.0).canaries == ("a",)
    unpaced = NodeView("a", "g1", healthy=True, last_seen=900.0)
    assert start(rollout, [unpaced, heard], 1000.0).canaries == ("b",)
