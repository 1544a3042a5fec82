"""The real host image under qemu (TCG, 256 MiB): the issue's end-to-end cases.

1. A user-space NFS server exports the site (with the unit's image as a docker-archive) and
   a data directory; the node mounts its site, the supervisor mounts the role's data export,
   starts the unit in podman, the unit writes "<hostname> <date>" onto the export, the test
   reads it on the host, then powers the node off with the ACPI button: clean exit 0.
2. The NFS server is unreachable: the node still comes up from a site in its initramfs, the
   unit that needs no mount runs, the one that binds the mount waits, and the console says
   which mount is missing and why.

Timings (seconds since qemu started, from the console) are printed for the report.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from bench import sites
from bench.nfs import NfsServer
from bench.processes import free_port
from hostos.image.boot import Image

pytestmark = pytest.mark.e2e

MEM = "256M"
BOOT_TIMEOUT = 240  # TCG on a busy 2-core machine: generous


def milestones(node: Any, names: dict[str, str]) -> dict[str, float]:
    found = {}
    for name, pattern in names.items():
        hit = node.console.find(pattern)
        if hit is not None:
            found[name] = round(hit[0], 2)
    return found


MILESTONES = {
    "/init": r"hostos-init: (stage 1|starting node)",
    "modules": r"hostos-init: modules:",
    "network": r"hostos-init: network:",
    "site": r"hostos-init: site:",
    "supervisor started": r"hostos-init: starting: ",
    "supervisor up": r"event=started ",
    "engine": r"event=engine-connected",
    "data mounted": r"event=mount mount=data state=mounted",
    "first unit running": r"event=unit-started",
}


def wait_for_file(path: Path, timeout: float, node: Any) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text()
        assert node.guest.running(), "the guest stopped before the unit wrote its file"
        time.sleep(0.5)
    raise AssertionError(f"{path} did not appear within {timeout:g}s:\n{node.console.text()}")


def test_unit_writes_onto_nfs_and_node_powers_off(
    boot: Any, host_image: Image, nfs_server: NfsServer
) -> None:
    export = nfs_server.export
    (export / "data").mkdir()
    sites.demo_site(export / "site", "10.0.2.2:/export/data", nfs_server.mount_options())
    append = (
        f"hostos.node={sites.NODE} hostos.site=10.0.2.2:/export/site "
        f"hostos.site_opts={nfs_server.mount_options()},soft"
    )
    with boot(host_image, append, mem=MEM) as node:
        node.wait_for(r"hostos-init: site: 10\.0\.2\.2:/export/site \(nfs\)", BOOT_TIMEOUT)
        # one reconcile or two: hello waits for the data mount, which may come up later
        node.wait_for(r"event=unit-started unit=tick ", BOOT_TIMEOUT)
        node.wait_for(r"event=unit-started unit=hello ", BOOT_TIMEOUT)
        text = wait_for_file(export / "data" / "hello.txt", 60, node)
        seen_at = round(time.monotonic() - node.console.started, 2)
        assert text.startswith(f"{sites.NODE} "), text
        assert node.power_off(180) == 0
        console = node.console.text()
    memory = [
        line.split("memory: ", 1)[1]
        for _, line in node.console.lines
        if "hostos-init" in line and "memory: " in line
    ]
    times = {**milestones(node, MILESTONES), "file on the host": seen_at}
    print(f"\nTIMINGS (s since qemu start): {times}\nMEMORY: {memory}")
    for line in (
        "hostos-init: poweroff requested",
        "event=unit-stopped unit=hello",
        "event=unit-stopped unit=tick",
        "hostos-init: supervisor stopped",
        "reboot: Power down",
    ):
        assert line in console, line
    assert "hostos-init: error" not in console


def test_unreachable_nfs_node_still_runs_what_it_can(
    boot: Any, host_image: Image, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens there: connection refused, as from a dead server
    site = sites.demo_site(
        tmp_path / "site", "10.0.2.2:/export/data", f"vers=4.1,port={port}", timeout="10s"
    )
    with boot(host_image, f"hostos.node={sites.NODE}", site=site, mem=MEM) as node:
        node.wait_for(r"hostos-init: site: /etc/hostos/site \(local\)", BOOT_TIMEOUT)
        node.wait_for(r"event=unit-started unit=tick ", BOOT_TIMEOUT)
        node.wait_for(r'event=unit-waiting unit=hello reason="waiting for mount data"', 60)
        failed = node.wait_for(r"event=mount mount=data state=failed .*error=", 60)[1]
        assert "10.0.2.2:/export/data" in node.console.text()
        assert "refused" in failed.lower() or "timed out" in failed.lower(), failed
        assert node.power_off(180) == 0
    print(f"\nTIMINGS (s since qemu start): {milestones(node, MILESTONES)}")
