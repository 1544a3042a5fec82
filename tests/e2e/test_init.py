"""/init under qemu on the hand-made initramfs (busybox, the init tree, a stub supervisor):
network, the NFS site, a clean power-off by the ACPI button, the squashfs root, failures
and the rescue shell.  Each boot takes about 10 s of TCG."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from bench.nfs import NfsServer
from hostos.image.boot import Image

pytestmark = pytest.mark.e2e

STUB = "stub-supervisor: supervise /run/hostos/site"


def site_on_nfs(server: NfsServer) -> str:
    (server.export / "site").mkdir()
    (server.export / "data").mkdir()
    (server.export / "site" / "nodes.yaml").write_text("nodes: []\n")
    # the stub mounts this and writes data/hello.txt into it
    (server.export / "site" / "stub-data").write_text(
        f"10.0.2.2:/export/data {server.mount_options()}\n"
    )
    return f"hostos.site=10.0.2.2:/export/site hostos.site_opts={server.mount_options()},soft"


def test_nfs_site_dhcp_and_power_button(boot: Any, dev_image: Image, nfs_server: NfsServer) -> None:
    append = f"hostos.node=cn001 quiet {site_on_nfs(nfs_server)}"
    with boot(dev_image, append) as node:
        node.wait_for(r"hostos-init: network: eth0 10\.0\.2\.15/24 via 10\.0\.2\.2 \(dhcp\)", 60)
        node.wait_for(r"hostos-init: site: 10\.0\.2\.2:/export/site \(nfs\) on /run/hostos/site")
        node.wait_for(f"{STUB} --node cn001 --engine podman")
        node.wait_for("stub-supervisor: wrote /data/hello.txt")
        assert (nfs_server.export / "data" / "hello.txt").read_text().startswith("cn001 ")
        assert node.power_off(60) == 0
        text = node.console.text()
    for line in (
        "hostos-init: poweroff requested",
        "stub-supervisor: stopping",
        "hostos-init: supervisor stopped",
        "reboot: Power down",
    ):
        assert line in text
    assert "still running after SIGTERM" not in text
    assert "hostos-init: error" not in text


def test_squashfs_root_static_ip_and_local_site(
    boot: Any, dev_squashfs_image: Image, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "nodes.yaml").write_text("nodes: []\n")
    append = "hostos.role=compute quiet ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off"
    with boot(dev_squashfs_image, append, site=site) as node:
        node.wait_for("hostos-init: stage 1: mounting /root.squashfs under a tmpfs overlay", 60)
        node.wait_for(r"hostos-init: network: eth0 10\.0\.2\.15/24 via 10\.0\.2\.2 \(ip=\)")
        node.wait_for(r"hostos-init: site: /etc/hostos/site \(local\) on /run/hostos/site")
        node.wait_for(f"{STUB} --role compute")
        node.wait_for("stub-supervisor: site holds nodes.yaml")
        assert node.power_off(60) == 0


def test_failure_says_why_and_powers_off(boot: Any, dev_image: Image, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    with boot(dev_image, "quiet ip=off", site=site) as node:
        node.wait_for(
            "hostos-init: error: no hostos.node= or hostos.role= on the kernel command line", 60
        )
        node.wait_for("add hostos.rescue=1 to the kernel command line for a rescue shell")
        assert node.guest.wait(30) == 0  # powered off by itself
        assert node.guest.failed


def test_rescue_shell_on_request(boot: Any, dev_image: Image) -> None:
    append = "quiet hostos.node=cn001 hostos.site=/nonexistent hostos.rescue=1 ip=off"
    with boot(dev_image, append, stdin=subprocess.PIPE) as node:
        node.wait_for("hostos-init: error: the site /nonexistent is not a directory", 60)
        node.wait_for("starting a rescue shell")
        time.sleep(1)
        node.guest.send(b"echo rescue-$((6 * 7))\n")
        node.wait_for("rescue-42", 30)
        node.guest.send(b"exit\n")
        assert node.guest.wait(30) == 0


def test_unreachable_nfs_site_is_retried_and_reported(boot: Any, dev_image: Image) -> None:
    """No server: /init keeps trying (saying why) and still powers off on the button."""
    append = (
        "quiet hostos.node=cn001 hostos.site=10.0.2.2:/export/site "
        "hostos.site_opts=vers=4.1,port=9,soft"
    )
    with boot(dev_image, append) as node:
        node.wait_for(
            r"hostos-init: waiting for the site 10\.0\.2\.2:/export/site: .*"
            r"retrying in 2s",
            90,
        )
        node.wait_for("retrying in 4s", 60)
        assert node.power_off(60) == 0
        assert "hostos-init: poweroff requested" in node.console.text()


@pytest.mark.parametrize("seconds", [3])
def test_site_wait_gives_up(boot: Any, dev_image: Image, seconds: int) -> None:
    append = (
        f"quiet hostos.node=cn001 hostos.site=10.0.2.2:/export/site "
        f"hostos.site_opts=vers=4.1,port=9,soft hostos.site_wait={seconds}"
    )
    with boot(dev_image, append) as node:
        node.wait_for(r"hostos-init: error: cannot mount the site 10\.0\.2\.2:/export/site", 90)
        assert node.guest.wait(30) == 0


def test_supervisor_restarted_and_console_poweroff(
    boot: Any, dev_image: Image, tmp_path: Path
) -> None:
    """A supervisor that dies is started again; `poweroff` typed in the console shell
    (hostos.shell=1) goes through PID 1 like the power button."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "stub-exit").write_text("3\n")
    append = "quiet hostos.node=cn001 hostos.shell=1 ip=off"
    with boot(dev_image, append, site=site, stdin=subprocess.PIPE) as node:
        node.wait_for("stub-supervisor: exiting with 3", 60)
        node.wait_for(
            r"hostos-init: error: the supervisor exited \(status 3\); "
            r"starting it again in 1s"
        )
        node.wait_for(f"{STUB} --node cn001", 30, count=2)
        node.guest.send(b"poweroff\n")
        assert node.guest.wait(60) == 0
        text = node.console.text()
    assert "hostos-init: poweroff requested" in text
    assert "stub-supervisor: stopping" in text
