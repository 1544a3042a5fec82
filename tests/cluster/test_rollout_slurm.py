"""The built-in Slurm drain's commands and parsers, on outputs of a real slurmctld
(tests/data/slurm/drain-cycle: how they were made is in its README)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hostos.cluster.rollout import slurm
from hostos.cluster.rollout.slurm import NodeSlurmState

from conftest import ROOT

DATA = ROOT / "tests" / "data" / "slurm" / "drain-cycle"
RID = "compute-1764870000-ab12cd"  # the rollout whose drain the captures show


def captured(name: str) -> str:
    return (DATA / f"{name}.txt").read_text()


def states(step: str) -> dict[str, tuple[str, str]]:
    return {n: (s.state, s.reason) for n, s in slurm.parse_sinfo(captured(f"sinfo-{step}")).items()}


def test_the_commands_are_argv_lists_for_scontrol_sinfo_and_squeue() -> None:
    assert slurm.drain_argv("cn001", "r1") == [
        "scontrol",
        "update",
        "nodename=cn001",
        "state=drain",
        "reason=hostos rollout r1",
    ]
    assert slurm.resume_argv("cn001") == ["scontrol", "update", "nodename=cn001", "state=resume"]
    assert slurm.sinfo_argv() == ["sinfo", "-h", "-N", "-o", "%N|%T|%E"]
    assert slurm.squeue_argv() == [
        "squeue",
        "-h",
        "-t",
        "running,completing,configuring,suspended",
        "-o",
        "%i|%N",
    ]


def test_sinfo_through_a_drain_cycle() -> None:
    # a node in two partitions is listed twice: once in the result
    assert states("busy") == {
        "d1": ("mixed", ""),
        "d2": ("idle", ""),
        "d3": ("allocated", ""),
    }
    assert states("draining") == {
        "d1": ("draining", f"hostos rollout {RID}"),
        "d2": ("allocated", ""),
        "d3": ("draining", "bad DIMM | ticket 42"),  # a `|` inside the reason
    }
    assert states("not-responding")["d3"] == ("drained*", "bad DIMM | ticket 42")
    assert states("completing")["d2"] == ("completing", "")
    assert states("drained")["d1"] == ("drained", f"hostos rollout {RID}")
    assert states("down")["d2"] == ("down", "power supply")
    assert states("down-not-responding")["d2"] == ("down*", "Not responding")
    assert states("resumed")["d1"] == ("idle", "")


def test_drained_busy_and_whose_drain() -> None:
    draining = slurm.parse_sinfo(captured("sinfo-draining"))
    assert draining["d1"].drained and draining["d1"].busy
    assert slurm.ours(draining["d1"].reason, RID)
    assert slurm.is_drained_by_other(draining["d1"], RID) == ""
    assert slurm.is_drained_by_other(draining["d3"], RID) == "bad DIMM | ticket 42"
    assert slurm.is_drained_by_other(draining["d3"], "another") == "bad DIMM | ticket 42"
    assert slurm.is_drained_by_other(draining["d1"], "another") == f"hostos rollout {RID}"
    assert not draining["d2"].drained and draining["d2"].busy
    lost = slurm.parse_sinfo(captured("sinfo-not-responding"))["d3"]
    assert lost.drained and not lost.busy and lost.parts == ("drained",)
    down = slurm.parse_sinfo(captured("sinfo-down"))["d2"]
    assert not down.drained and not down.busy  # down, not drained: nobody's drain
    assert slurm.is_drained_by_other(down, RID) == ""
    assert slurm.is_drained_by_other(None, RID) == ""
    assert not slurm.parse_sinfo(captured("sinfo-completing"))["d2"].drained
    assert slurm.parse_sinfo(captured("sinfo-completing"))["d2"].busy


@pytest.mark.parametrize(
    ("state", "drained", "busy"),
    [
        ("idle+drain", True, False),
        ("mixed+drain", True, True),
        ("draining@", True, True),
        ("drained$", True, False),
        ("allocated*", False, True),
        ("idle~", False, False),
        ("planned", False, False),
    ],
)
def test_flags_and_suffixes(state: str, drained: bool, busy: bool) -> None:
    node = NodeSlurmState(state, "why")
    assert (node.drained, node.busy) == (drained, busy)


def test_a_drain_without_a_reason_is_held_by_its_state() -> None:
    assert slurm.is_drained_by_other(NodeSlurmState("drained"), "r1") == "drained"


def test_jobs_per_node_expands_hostlists() -> None:
    assert slurm.jobs_per_node(captured("squeue-busy")) == Counter({"d1": 1, "d3": 1})
    assert slurm.jobs_per_node(captured("squeue-multinode")) == Counter({"d1": 1, "d2": 1, "d3": 1})
    assert slurm.jobs_per_node(captured("squeue-completing")) == Counter({"d1": 1, "d2": 1})
    assert slurm.jobs_per_node(captured("squeue-suspended")) == Counter({"d1": 1})
    assert slurm.jobs_per_node(captured("squeue-drained")) == Counter()
    text = "10|n[01-03,07],m5\n11|n02\n12_[1-3]|\n13|n[02-03]\n"
    assert slurm.jobs_per_node(text) == Counter({"n01": 1, "n02": 3, "n03": 2, "n07": 1, "m5": 1})


def test_jobs_on_a_node_reads_sinfo_and_squeue_together() -> None:
    sinfo = slurm.parse_sinfo(captured("sinfo-completing"))
    jobs = slurm.jobs_per_node(captured("squeue-completing"))
    assert slurm.jobs_on("d2", sinfo["d2"], jobs) == 1
    assert slurm.jobs_on("d2", sinfo["d2"], Counter()) == 1  # still completing: busy
    idle = slurm.parse_sinfo(captured("sinfo-drained"))
    assert slurm.jobs_on("d1", idle["d1"], Counter()) == 0
    assert slurm.jobs_on("d9", None, jobs) is None  # Slurm does not know it
    suspended = slurm.parse_sinfo(captured("sinfo-suspended"))  # sinfo says idle
    assert slurm.jobs_on("d1", suspended["d1"], slurm.jobs_per_node(captured("squeue-suspended")))


def test_malformed_lines_are_skipped() -> None:
    sinfo = "garbage\n|idle|none\nn1||none\nn 2|idle|none\nn3|idle|none\n\n"
    assert slurm.parse_sinfo(sinfo) == {"n3": NodeSlurmState("idle")}
    squeue = "1\n2|n[3-1]\n3|n[1-2\n4|bad name\n|n1\n5|n[1-2]|x\n6|n1\n"
    assert slurm.jobs_per_node(squeue) == Counter({"n1": 1})


def test_too_many_lines_is_an_error_not_a_short_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slurm, "MAX_LINES", 3)
    with pytest.raises(slurm.SlurmOutputError, match="more than 3"):
        slurm.jobs_per_node("1|n1\n2|n1\n3|n1\n4|n1\n")
    with pytest.raises(slurm.SlurmOutputError):
        slurm.parse_sinfo("n1|idle|none\n" * 4)


@given(st.text(max_size=300))
def test_any_text_parses_without_crashing(text: str) -> None:
    slurm.parse_sinfo(text)
    slurm.jobs_per_node(text)
