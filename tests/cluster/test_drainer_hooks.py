"""The drainer's generic form with real hook scripts: drain, check and resume write and read
files, run with the server's environment plus the one given; and the hooks directory's
rules, whose breaches run nothing at all."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hostos.cluster.rollout.plan import NodeProgress, NodeState, Rollout, RolloutSpec, State
from hostos.cluster.server.drainer import Drainer, HookError, hook_argv
from hostos.site.drain import Drain

from conftest import write

SCRIPTS = {
    "sched-drain": '#!/bin/sh\necho "$2" > "$HOOK_STATE/drained-$1"\n',
    "sched-jobs": (
        '#!/bin/sh\n[ -e "$HOOK_STATE/jobs-$1" ] || exit 0\n'
        'echo "$(cat "$HOOK_STATE/jobs-$1") job(s) left"; exit 1\n'
    ),
    "sched-resume": '#!/bin/sh\nrm "$HOOK_STATE/drained-$1"\n',
    "slow-jobs": "#!/bin/sh\nsleep 30\n",
}
GENERIC = Drain(
    "commands",
    ("sched-drain", "{node}", "{image}"),
    ("sched-jobs", "{node}"),
    ("sched-resume", "{node}"),
)


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(drain: Drain, **nodes: NodeProgress) -> Rollout:
    spec = RolloutSpec("compute", "img-2", "img-1", drain=drain)
    return Rollout("r1", spec, State.RUNNING, 1, (), nodes, 0.0)


def at(state: NodeState, granted_at: float | None = None) -> NodeProgress:
    return NodeProgress(state, None, granted_at, slot=state is not NodeState.PENDING)


@pytest.fixture
def hooks(tmp_path: Path) -> Path:
    for name, text in SCRIPTS.items():
        write(tmp_path / "hooks" / name, text).chmod(0o755)
    return tmp_path / "hooks"


def test_drain_count_and_resume_with_real_hooks(hooks: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    write(state / "jobs-n1", "2")
    clock = Clock()
    drainer = Drainer(hooks, {"HOOK_STATE": str(state)}, interval=5.0, timeout=10.0, clock=clock)

    def step(**nodes: NodeProgress) -> dict[str, tuple[int | None, bool, bool, str]]:
        rollout = make(GENERIC, **nodes)
        drainer.follow([rollout])
        drainer.run_once()
        clock.now += 5.0
        return {
            n: (w.jobs, w.drained, w.resumed, w.error)
            for n, w in drainer.workloads(rollout).items()
        }

    pending = at(NodeState.PENDING)
    assert step(n1=pending, n2=pending) == {
        "n1": (2, False, False, ""),
        "n2": (0, False, False, ""),
    }
    draining = at(NodeState.DRAINING, 10.0)
    assert step(n1=draining, n2=pending)["n1"] == (2, True, False, "")
    assert (state / "drained-n1").read_text() == "img-2\n"
    (state / "jobs-n1").unlink()
    assert step(n1=draining, n2=pending)["n1"] == (0, True, False, "")
    assert step(n1=at(NodeState.RESUMING, 20.0), n2=pending)["n1"] == (0, False, True, "")
    assert not (state / "drained-n1").exists()


def test_a_hook_that_runs_too_long_is_a_failed_count(hooks: Path) -> None:
    slow = Drain("commands", ("sched-drain", "{node}"), ("slow-jobs", "{node}"))
    drainer = Drainer(hooks, timeout=0.3)
    rollout = make(slow, n1=at(NodeState.PENDING))
    drainer.follow([rollout])
    drainer.run_once()
    assert drainer.workloads(rollout)["n1"].error == "slow-jobs: timed out after 0.3s"
    assert drainer.workloads(rollout)["n1"].jobs is None


def test_only_executables_of_the_hooks_directory_run(hooks: Path, tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    outside = write(tmp_path / "elsewhere" / "evil", f"#!/bin/sh\ntouch {ran}\n")
    outside.chmod(0o755)
    (hooks / "link-out").symlink_to(outside)
    (hooks / "link-in").symlink_to(hooks / "sched-jobs")
    (hooks / "sub").mkdir()
    write(hooks / "plain", f"#!/bin/sh\ntouch {ran}\n").chmod(0o644)
    expected = {
        "link-out": f"link-out: not in {hooks} (it resolves to {outside})",
        "../elsewhere/evil": f"'../elsewhere/evil': not a plain file name in {hooks}",
        str(outside): f"'{outside}': not a plain file name in {hooks}",
        "missing": f"missing: not in {hooks}",
        "sub": f"sub: not an executable file in {hooks}",
        "plain": f"plain: not an executable file in {hooks}",
        "..": f"'..': not a plain file name in {hooks}",
    }
    for program, message in expected.items():
        with pytest.raises(HookError) as caught:
            hook_argv(hooks, [program, "n1"])
        assert str(caught.value) == message
        drain = Drain("commands", (program, "{node}"), (program, "{node}"), (program,))
        drainer = Drainer(hooks)
        rollout = make(drain, n1=at(NodeState.DRAINING, 1.0), n2=at(NodeState.PENDING))
        drainer.follow([rollout])
        drainer.run_once()
        assert {w.error for w in drainer.workloads(rollout).values()} == {message}
    assert not ran.exists()
    with pytest.raises(HookError, match=r"^no drain hooks directory \(hostos serve --drain-hooks"):
        hook_argv(None, ["sched-jobs"])
    real = os.path.realpath(hooks / "sched-jobs")
    assert hook_argv(hooks, ["link-in", "n1"]) == [real, "n1"]
