"""The drain rollout's simulated jobs: the hook scripts run by sh as the server would run
them, the seeded jobs, the bound, and the figures drawn from the hooks' events."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from bench.cluster import jobs
from bench.cluster.fleet import ROLLOUT_ROLE, site
from hostos.site.drain import Drain
from hostos.site.rollout import rollout_policy


def hook(hooks: Path, name: str, node: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(hooks / name), node], capture_output=True, text=True, timeout=10, check=False
    )


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path, Path]:
    hooks, state, job_dir = tmp_path / "hooks", tmp_path / "state", tmp_path / "jobs"
    jobs.write_hooks(hooks, state, job_dir)
    return hooks, state, job_dir


def test_check_says_a_job_runs_until_its_end_time(dirs: tuple[Path, Path, Path]) -> None:
    hooks, _, job_dir = dirs
    now = time.time()
    ends = jobs.start_jobs(job_dir, {"n00001": 30.0, "n00002": 0.0}, now - 1.0)
    assert ends == {"n00001": now + 29.0, "n00002": now - 1.0}
    running = hook(hooks, jobs.CHECK_HOOK, "n00001")
    assert (running.returncode, running.stdout) == (1, "1\n")
    assert hook(hooks, jobs.CHECK_HOOK, "n00002").returncode == 0  # ended
    assert hook(hooks, jobs.CHECK_HOOK, "n00003").returncode == 0  # never had one
    assert 28.0 < jobs.job_left(job_dir, "n00001") <= 29.0
    assert jobs.job_left(job_dir, "n00002") == jobs.job_left(job_dir, "n00003") == 0.0


def test_a_new_start_replaces_the_jobs(dirs: tuple[Path, Path, Path]) -> None:
    _, _, job_dir = dirs
    jobs.start_jobs(job_dir, {"n00001": 30.0}, time.time())
    jobs.start_jobs(job_dir, {"n00002": 30.0}, time.time())
    assert sorted(p.name for p in job_dir.iterdir()) == ["n00002"]


def test_drain_and_resume_mark_the_node_and_log_when(dirs: tuple[Path, Path, Path]) -> None:
    hooks, state, _ = dirs
    before = time.time()
    assert hook(hooks, jobs.DRAIN_HOOK, "n00007").returncode == 0
    assert (state / "drained" / "n00007").exists()
    assert hook(hooks, jobs.DRAIN_HOOK, "n00007").returncode == 0  # again: the first counts
    assert hook(hooks, jobs.RESUME_HOOK, "n00007").returncode == 0
    assert not (state / "drained" / "n00007").exists()
    drained, resumed = jobs.hook_times(state, "drain"), jobs.hook_times(state, "resume")
    assert list(drained) == list(resumed) == ["n00007"]
    assert before <= drained["n00007"] <= resumed["n00007"] <= time.time()


@pytest.mark.parametrize("node", ["", "../n1", "a/b", ".hidden"])
def test_hooks_refuse_a_node_id_that_could_be_a_path(
    dirs: tuple[Path, Path, Path], node: str
) -> None:
    hooks, state, _ = dirs
    for name in jobs.HOOKS:
        done = hook(hooks, name, node)
        assert done.returncode == 2, (name, done)
    assert not (state / "events").exists()


def test_the_drain_is_the_generic_form_naming_the_hooks() -> None:
    assert Drain.from_json(jobs.DRAIN.to_json()) == jobs.DRAIN
    assert [jobs.DRAIN.argv(step, "n00001")[0] for step in ("command", "check", "resume")] == [
        *jobs.HOOKS
    ]
    body = site(["n00000", "n00001"], 1, 4, jobs.role_rollout())
    assert body["roles"][ROLLOUT_ROLE]["rollout"] == {"drain": jobs.DRAIN.to_json()}
    assert rollout_policy(body["roles"][ROLLOUT_ROLE]).drain == jobs.DRAIN
    assert "rollout" not in site(["n00000"], 1, 4)["roles"][ROLLOUT_ROLE]


def test_jobs_are_drawn_seeded_up_to_the_longest() -> None:
    nodes = [f"n{i:05d}" for i in range(200)]
    drawn = jobs.draw_jobs(nodes, 0.3, 10.0, seed=1)
    assert len(drawn) == 60 and set(drawn) <= set(nodes)
    assert all(0 <= length <= 10.0 for length in drawn.values())
    assert jobs.draw_jobs(nodes, 0.3, 10.0, seed=1) == drawn
    assert jobs.draw_jobs(nodes, 0.3, 10.0, seed=2) != drawn
    assert jobs.draw_jobs(nodes, 0.0, 10.0, seed=1) == {}


def test_the_bound_is_the_reboots_or_the_longest_job_then_its_reboot() -> None:
    assert jobs.drain_bound(200, 20, 2.0, 9.5) == 20.0
    assert jobs.drain_bound(200, 20, 2.0, 30.0) == 32.0
    assert jobs.drain_bound(201, 20, 2.0, 0.0) == 22.0
