"""Capture the Slurm outputs a drainer parses, from a real Slurm lab, into a directory.

    sudo .venv/bin/python tests/cluster/slurm_capture.py tests/data/slurm

Runs a Slurm lab (slurm_lab.py) of four nodes, n4 with two CPUs, in two partitions (`all`
of every node, `debug` of n1 and n2, so `sinfo -N` lists those twice), walks the nodes
through the states a rolling reboot meets and writes each command's output as Slurm printed
it, one file per state (README.md in the directory says which is which).
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from netns import Lab
from slurm_lab import SlurmLab

SINFO = ("sinfo", "-h", "-N", "-o", "%N|%T|%E")
SHOW_N1 = ("scontrol", "-o", "show", "node", "n1")
SQUEUE = ("squeue", "-h", "-t", "running,completing,configuring", "-o", "%i|%N")


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    debug = "PartitionName=debug Nodes=n1,n2 Default=NO MaxTime=INFINITE State=UP"
    in_lab(out, walk, 4, cpus={"n4": 2}, extra=[debug])
    in_lab(out, walk_return_to_service_1, 2, return_to_service=1)
    in_lab(out, walk_crashes, 3)


def in_lab(out: Path, steps: Callable[[SlurmLab, Saver], None], count: int, **how: Any) -> None:
    """steps on a Slurm lab of count nodes (SlurmLab options how), every slurmd up."""
    lab = Lab()
    with tempfile.TemporaryDirectory() as tmp:
        slurm = SlurmLab(lab, Path(tmp), **how)
        try:
            for i in range(1, count + 1):
                lab.add(f"n{i}", f"52:54:00:5e:01:{i:02x}")
            slurm.start()
            for node in slurm.nodes:
                slurm.boot(node)
            slurm.wait_states({n: "idle" for n in slurm.nodes})
            steps(slurm, Saver(slurm, out))
        finally:
            slurm.close()
            lab.close()


class Saver:
    def __init__(self, slurm: SlurmLab, out: Path) -> None:
        self.slurm, self.out = slurm, out

    def __call__(self, name: str, argv: tuple[str, ...] = SINFO) -> None:
        """argv's output to out/name; a failing command's exit status and stderr too."""
        done = self.slurm.command(*argv, check=False)
        text = done.stdout
        if done.returncode != 0:
            text += f"exit {done.returncode}, stderr: {done.stderr}"
        (self.out / name).write_text(text)
        print(f"== {name}\n{text}", flush=True)


def walk(slurm: SlurmLab, save: Saver) -> None:

    def until(node: str, state: str, timeout: float = 40.0) -> None:
        slurm.wait_states({node: state}, timeout=timeout)

    save("sinfo-idle.txt")
    wide = slurm.sbatch("-N", "3", "-w", "n1,n2,n3", wrap="sleep 300")
    half = slurm.sbatch("-w", "n4", "-n", "1", wrap="sleep 300")
    slurm.wait_job(wide, "RUNNING")
    slurm.wait_job(half, "RUNNING")
    save("sinfo-allocated-mixed.txt")
    save("squeue-running.txt", SQUEUE)
    for node in ("n1", "n4"):
        slurm.command(
            "scontrol", "update", f"nodename={node}", "state=drain", "reason=hostos rollout r1"
        )
    save("sinfo-draining.txt")
    slurm.command("scancel", wide, half)
    until("n1", "drained")
    until("n4", "drained")
    save("sinfo-drained.txt")
    save("squeue-none.txt", SQUEUE)
    slurm.command("scontrol", "update", "nodename=n3", "state=down", "reason=admin down")
    save("sinfo-down.txt")  # ReturnToService=2: idle again at its next answer
    # n1 (drained) and n2 (idle) lose their slurmd, as a node does while it reboots
    slurm.halt("n1")
    slurm.halt("n2")
    until("n2", "idle*")
    save("sinfo-not-responding.txt")
    until("n2", "down*", timeout=60)
    save("sinfo-not-responding-down.txt")
    slurm.boot("n1")
    slurm.boot("n2")
    until("n2", "idle")
    until("n1", "drained")
    save("sinfo-back-after-reboot.txt")
    save("scontrol-node-drained-rebooted.txt", SHOW_N1)
    for node in ("n1", "n4"):
        slurm.command("scontrol", "update", f"nodename={node}", "state=resume")
    slurm.wait_states({n: "idle" for n in slurm.nodes})
    save("sinfo-resumed.txt")
    save("scontrol-resume-idle.txt", ("scontrol", "update", "nodename=n1", "state=resume"))


def walk_return_to_service_1(slurm: SlurmLab, save: Saver) -> None:
    """A drained node (n1) and an idle one (n2) rebooted, with ReturnToService=1."""
    slurm.command("scontrol", "update", "nodename=n1", "state=drain", "reason=hostos rollout r1")
    slurm.wait_states({"n1": "drained"})
    for node in ("n1", "n2"):
        slurm.halt(node)
        slurm.boot(node)
    slurm.wait_states({"n2": "down"})
    time.sleep(1)
    save("sinfo-rebooted-return-to-service-1.txt")
    save("scontrol-node-drained-rebooted-return-to-service-1.txt", SHOW_N1)
    slurm.command("scontrol", "update", "nodename=n1", "state=resume")
    slurm.command("scontrol", "update", "nodename=n2", "state=resume")
    slurm.wait_states({"n1": "idle", "n2": "idle"})


def walk_crashes(slurm: SlurmLab, save: Saver) -> None:
    """n1 (a job on it) and n2 (draining, a job on it) stop answering, as when they crash."""
    jobs = [slurm.sbatch("-w", node, "--no-requeue", wrap="sleep 300") for node in ("n1", "n2")]
    for job in jobs:
        slurm.wait_job(job, "RUNNING")
    slurm.command("scontrol", "update", "nodename=n2", "state=drain", "reason=hostos rollout r1")
    slurm.halt("n1")
    slurm.halt("n2")
    slurm.wait_states({"n1": "allocated*"}, timeout=40)
    save("sinfo-crashed-busy.txt")
    save("squeue-crashed-busy.txt", SQUEUE)
    for job in jobs:
        slurm.wait_job(job, "NODE_FAIL", timeout=40)
    slurm.wait_states({"n1": "down*"}, timeout=40)
    save("sinfo-crashed-busy-down.txt")
    save("squeue-crashed-busy-down.txt", SQUEUE)
    save("scontrol-job-node-fail.txt", ("scontrol", "-o", "show", "job", jobs[0]))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
