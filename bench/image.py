"""Benchmarks of the host image: its size, the least RAM it runs the demo role in, and the
time from qemu's start to the first unit running under the supervisor.

    .venv/bin/python -m bench.image [--image DIR] [--runs 3] [--smp 1,2]
        [--mem 256] [--mem-floor 96] [--write docs/benchmarks.md]

Without --image it builds one first (`hostos image base`, then `hostos image build
--engine docker`, both offline but for the Debian and PyPI registries).  Every boot is the
e2e test's first case: qemu TCG (`-accel tcg -cpu max`), a user-space NFS server
(nfs-ganesha) exporting the site, the unit's image (a docker-archive on the site) and a
data directory; the node mounts its site, the supervisor starts `tick` (no mount) and
`hello` (writes onto the NFS data export, which the benchmark reads on the host), then the
ACPI power button powers it off.  Times are seconds since qemu was started, read from the
serial console as lines arrive (the guest's own uptime is in /init's lines too).

- size: initramfs.img (outer initramfs + root squashfs) and vmlinuz, from manifest.json,
  and the root's uncompressed size.
- boot: --runs boots at --mem MiB per --smp value; the median, min and max of each
  milestone.
- least RAM: the smallest -m (in --mem-step MiB steps from --mem down to --mem-floor) at
  which the same boot still completes: units started, the file on the host, a clean
  power-off (qemu exits 0).

Targets (issue 5): initramfs.img <= 32 MB; runs the demo role in 256 MiB; <= 15 s from
qemu start to the first unit running.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench import cli, nfs, sites
from bench.console import Console
from bench.processes import PYTHON, ROOT
from bench.report import command, commit_line, machine, met, now
from hostos.image.boot import Guest, Image, Options, find_image, qemu_command

MODULE = "bench.image"
log = logging.getLogger(MODULE)  # run as __main__, so not __name__
IMAGE_CLI = [str(PYTHON), "-c", "from hostos.cli.image import image_app; image_app()"]
BOOT_TIMEOUT = 300.0
SECTION = "image-bench"
MILESTONES = {  # name → console line (regex), in boot order
    "kernel": r"Linux version ",
    "/init": r"hostos-init: stage 1",
    "root switched": r"hostos-init: starting node",
    "modules": r"hostos-init: modules:",
    "network": r"hostos-init: network:",
    "site mounted": r"hostos-init: site:",
    "supervisor started": r"hostos-init: starting: ",
    "podman service started": r"started podman service",
    "site loaded": r"event=spec-loaded",
    "engine connected": r"event=engine-connected",
    "first unit running": r"event=unit-started",
    "all units running": r"event=unit-started unit=hello ",  # the one that waits for NFS
}
TARGET_FIRST_UNIT = 15.0
TARGET_SIZE = 32e6


# -- one boot ------------------------------------------------------------------------------


@dataclass
class Boot:
    mem: int
    smp: int
    ok: bool = False
    why: str = ""
    times: dict[str, float] = field(default_factory=dict)
    file_seen: float | None = None
    memory: list[str] = field(default_factory=list)


BOOTS = itertools.count(1)


def boot_once(image: Image, server: nfs.NfsServer, mem: int, smp: int, work: Path) -> Boot:
    # New directories for every boot: nfs-ganesha keeps handing out a removed directory's
    # handle for the same name, and the next guest would find its site gone.
    n = next(BOOTS)
    site, data = f"site-{n}", f"data-{n}"
    (server.export / data).mkdir()
    sites.demo_site(server.export / site, f"10.0.2.2:/export/{data}", server.mount_options())
    append = (
        f"hostos.node={sites.NODE} hostos.site=10.0.2.2:/export/{site} "
        f"hostos.site_opts={server.mount_options()},soft"
    )
    qmp = str(work / "qmp.sock")
    console = Console(echo=False)
    guest = Guest(
        qemu_command(image, Options(mem=f"{mem}M", cpus=smp, append=append, qmp=qmp)),
        qmp,
        on_line=console.add,
    )
    result = Boot(mem, smp)
    guest.start()
    console.started = guest.started
    try:
        result.ok, result.why = _follow(guest, console, server.export / data / "hello.txt", result)
    finally:
        if guest.running():
            guest.kill()
    for name, pattern in MILESTONES.items():
        found = console.find(pattern)
        if found is not None:
            result.times[name] = found[0]
    result.memory = [
        line.split("memory: ", 1)[1]
        for _, line in console.lines
        if "hostos-init" in line and "memory: " in line
    ]
    if not result.ok:
        tail = "\n".join(line for _, line in console.lines[-15:])
        log.info(f"boot at -m {mem} failed: {result.why}\n{tail}")
    return result


def _follow(guest: Guest, console: Console, hello: Path, result: Boot) -> tuple[bool, str]:
    if console.wait(MILESTONES["all units running"], BOOT_TIMEOUT, guest) is None:
        return False, "the units did not all start"
    deadline = time.monotonic() + 60
    while not (hello.exists() and hello.read_text().strip()):
        if time.monotonic() > deadline or not guest.running():
            return False, "hello.txt never appeared on the NFS export"
        time.sleep(0.2)
    result.file_seen = time.monotonic() - console.started
    if not guest.powerdown():
        return False, "qemu's QMP socket did not answer"
    code = guest.wait(180)
    if code != 0 or guest.failed:
        return False, f"qemu exited {code}" + (" after a failure line" if guest.failed else "")
    return True, ""


# -- the image -----------------------------------------------------------------------------


def build_image(out: Path) -> Path:
    for args in (
        ["base", "--engine", "docker"],
        ["build", "--engine", "docker", "--out", str(out), "--tag", "hostos/host:bench"],
    ):
        log.info("hostos image " + " ".join(args))
        subprocess.run([*IMAGE_CLI, *args], cwd=ROOT, check=True)
    return out


@dataclass(frozen=True)
class Sizes:
    initramfs: int
    kernel: int
    root_files: int
    squashfs: int
    outer_cpio: int


def sizes(directory: Path) -> Sizes:
    manifest = json.loads((directory / "manifest.json").read_text())
    files, root = manifest["files"], manifest["root"]
    return Sizes(
        files["initramfs.img"]["size"],
        files["vmlinuz"]["size"],
        root["root_files_bytes"],
        root["squashfs_bytes"],
        root["cpio_bytes"],
    )


# -- runs ----------------------------------------------------------------------------------


@contextmanager
def nfs_server(work: Path) -> Iterator[nfs.NfsServer]:
    missing = nfs.missing_programs()
    if missing:
        raise SystemExit(f"missing {', '.join(missing)} (scripts/setup installs them)")
    with nfs.ganesha(work / "nfs") as server:
        yield server


def least_memory(
    image: Image, server: nfs.NfsServer, start: int, floor: int, step: int, work: Path
) -> tuple[int | None, list[Boot]]:
    """Step down from start until a boot fails; the last size that worked."""
    tried: list[Boot] = []
    best = None
    mem = start
    while mem >= floor:
        log.info(f"least RAM: booting with -m {mem}")
        boot = boot_once(image, server, mem, 1, work)
        tried.append(boot)
        if not boot.ok:
            break
        best = mem
        mem -= step
    return best, tried


def stats(boots: Sequence[Boot], name: str) -> tuple[float, float, float] | None:
    values = [b.times[name] for b in boots if name in b.times]
    if not values:
        return None
    return statistics.median(values), min(values), max(values)


# -- the report ----------------------------------------------------------------------------


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def section(
    size: Sizes,
    runs: dict[int, list[Boot]],
    mem: int,
    least: int | None,
    tried: list[Boot],
    args: argparse.Namespace,
    argv: Sequence[str],
) -> str:
    first = {smp: stats(boots, "first unit running") for smp, boots in runs.items()}
    one_cpu = first.get(1) or next(iter(first.values()), None)
    lines = [
        "## Host image: size, RAM, boot time (issue 5)",
        "",
        "Written by `python -m bench.image --write`; the numbers are never edited by hand. "
        "Reproduce (as root):",
        "",
        "```sh",
        "bash scripts/setup && " + command(MODULE, *argv),
        "```",
        "",
        f"Measured {now()} at {commit_line()}; {args.runs} boots per CPU count; the machine: "
        f"{machine()}; load average {os.getloadavg()[0]:.2f} at the end.",
        "",
        "### Targets",
        "",
        "| target | measured | met |",
        "|---|---:|---|",
        f"| initramfs.img (outer initramfs + root image) ≤ 32 MB | {_mb(size.initramfs)} | "
        f"{met(size.initramfs <= TARGET_SIZE)} |",
        f"| runs the demo role in 256 MiB | least that worked: {least or '?'} MiB | "
        f"{met(least is not None and least <= 256)} |",
    ]
    if one_cpu is not None:
        lines.append(
            f"| qemu start → first unit running ≤ 15 s (TCG, 1 vCPU, median) | "
            f"{one_cpu[0]:.1f} s | {met(one_cpu[0] <= TARGET_FIRST_UNIT)} |"
        )
    lines += [
        "",
        "### Size",
        "",
        "| file | bytes |",
        "|---|---:|",
        f"| initramfs.img (zstd outer initramfs + squashfs root) | {_mb(size.initramfs)} |",
        f"| of which the squashfs root (zstd, 1 MiB blocks) | {_mb(size.squashfs)} |",
        f"| the outer initramfs, uncompressed (busybox, /init, 3 modules) | "
        f"{_mb(size.outer_cpio)} |",
        f"| the root's files, uncompressed | {_mb(size.root_files)} |",
        f"| vmlinuz | {_mb(size.kernel)} |",
        "",
        f"### Boot: seconds since qemu started (-m {mem}, median [min-max])",
        "",
        "| milestone | " + " | ".join(f"{smp} vCPU" for smp in runs) + " |",
        "|---|" + "---:|" * len(runs),
    ]
    for name in MILESTONES:
        cells = []
        for boots in runs.values():
            found = stats(boots, name)
            cells.append(f"{found[0]:.1f} [{found[1]:.1f}-{found[2]:.1f}]" if found else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    seen = {
        smp: [b.file_seen for b in boots if b.file_seen is not None] for smp, boots in runs.items()
    }
    lines.append(
        "| the unit's file read on the host | "
        + " | ".join(f"{statistics.median(v):.1f}" if v else "-" for v in seen.values())
        + " |"
    )
    failed = sum(not b.ok for boots in runs.values() for b in boots)
    lines += [
        "",
        f"{sum(len(b) for b in runs.values())} boots, {failed} failed. "
        "Memory as /init reports it before the supervisor starts: "
        + "; ".join(b.memory[0] for b in runs.get(1, [])[:1] if b.memory)
        + ".",
        "",
        "### Least RAM",
        "",
        "Boots stepping down from -m "
        + str(args.mem)
        + ": "
        + ", ".join(f"{b.mem} MiB {'ok' if b.ok else 'failed (' + b.why + ')'}" for b in tried)
        + ".",
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class Measured:
    size: Sizes
    runs: dict[int, list[Boot]]  # per vCPU count
    least: int | None  # the least -m that worked below --mem (None: none did)
    tried: list[Boot]  # the boots stepping down


def measure(args: argparse.Namespace, work: Path) -> Measured:
    """The image's sizes, --runs boots per --smp value, then the least RAM."""
    directory = args.image or build_image(work / "image")
    image = find_image(directory)
    runs: dict[int, list[Boot]] = {}
    with nfs_server(work) as server:
        for smp in (int(x) for x in args.smp.split(",")):
            for n in range(args.runs):
                log.info("boot %d/%d with %d vCPU", n + 1, args.runs, smp)
                boot = boot_once(image, server, args.mem, smp, work)
                log.info("first unit running at %s", boot.times.get("first unit running"))
                runs.setdefault(smp, []).append(boot)
        least, tried = least_memory(
            image, server, args.mem - args.mem_step, args.mem_floor, args.mem_step, work
        )
    return Measured(sizes(directory), runs, least, tried)


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser(MODULE, __doc__)
    parser.add_argument("--image", type=Path, help="an image directory (default: build one)")
    parser.add_argument("--runs", type=int, default=3, help="boots per vCPU count (default 3)")
    parser.add_argument("--smp", default="1", help="vCPU counts, comma-separated (default 1)")
    parser.add_argument("--mem", type=int, default=256, help="MiB for the timed boots")
    parser.add_argument(
        "--mem-floor", type=int, default=96, help="the least MiB to try (default 96)"
    )
    parser.add_argument(
        "--mem-step", type=int, default=32, help="MiB less at each try (default 32)"
    )
    cli.add_write(parser, SECTION)
    args = parser.parse_args(argv)
    if not all(x.strip().isdigit() for x in args.smp.split(",")):
        parser.error(f"--smp {args.smp!r}: expected vCPU counts, comma-separated (1,2)")
    with tempfile.TemporaryDirectory(prefix="hostos-image-bench.", dir="/var/tmp") as tmp:
        done = measure(args, Path(tmp))
    least, runs = done.least, done.runs
    if least is None and runs.get(1) and all(b.ok for b in runs[1]):
        least = args.mem
    shown = sys.argv[1:] if argv is None else argv
    text = section(done.size, runs, args.mem, least, done.tried, args, shown)
    cli.publish(text, args.write, SECTION)
    return 0


if __name__ == "__main__":
    cli.run(main)
