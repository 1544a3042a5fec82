"""A qemu node netboots through iPXE from `hostos serve` and completes a rollout to a second
image (issue 6's e2e case).

qemu's user network hands the NIC's iPXE (Debian's ipxe-qemu ROM) the DHCP boot file
`http://10.0.2.2:PORT/boot.ipxe`; the server's script chains to /boot/<mac>.ipxe, which
loads the node's assigned image over HTTP with `hostos.server=` and a boot token on the
kernel command line. /init starts the supervisor as the server's agent: it heartbeats the
booted image, takes a FleetLock slot when the rollout assigns img-2, reboots (qemu runs
without -no-reboot, so the guest resets and netboots again), comes back on img-2 and
reports steady-state: the rollout is done.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.processes import free_port
from hostos.image.boot import Guest, Image

from conftest import Console, poll

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
MAC = "52:54:00:12:34:56"
TIMEOUT = 600.0  # two netboots under TCG on a busy machine


def _images(root: Path, image: Image) -> Path:
    """img-1 and img-2: the same host image under two names (a rollout needs a change)."""
    for name in ("img-1", "img-2"):
        directory = root / name
        directory.mkdir(parents=True)
        (directory / "vmlinuz").symlink_to(image.kernel)
        (directory / "initramfs.img").symlink_to(image.initrd)
        (directory / "boot.ipxe").write_text(
            f"#!ipxe\nkernel vmlinuz initrd=initramfs.img {image.cmdline} console=ttyS0\n"
            "initrd initramfs.img\nboot\n"
        )
    return root


def _site(root: Path) -> Path:
    (root / "roles").mkdir(parents=True)
    (root / "nodes.yaml").write_text(f'nodes:\n  - {{name: n1, mac: "{MAC}", role: r}}\n')
    (root / "roles" / "r.yaml").write_text("image: img-1\nunits: []\n")
    return root


@pytest.fixture
def server(tmp_path: Path, host_image: Image) -> Iterator[tuple[str, httpx.Client]]:
    port = free_port()
    token = "admin-" + uuid.uuid4().hex
    (tmp_path / "admin-token").write_text(token + "\n")
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hostos",
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--store",
            f"sqlite:///{tmp_path / 'cluster.db'}",
            "--admin-token-file",
            str(tmp_path / "admin-token"),
            "--images",
            str(_images(tmp_path / "images", host_image)),
            "--public-url",
            f"http://10.0.2.2:{port}",
            "--boot-tokens",
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "hostos serve did not answer"
            time.sleep(0.2)
        for name in ("img-1", "img-2"):
            client.post(f"/v1/images/{name}").raise_for_status()
        published = subprocess.run(
            [
                sys.executable,
                "-m",
                "hostos",
                "apply",
                str(_site(tmp_path / "site")),
                "--server",
                url,
                "--admin-token-file",
                str(tmp_path / "admin-token"),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert published.returncode == 0, published.stdout + published.stderr
        yield url, client
    finally:
        client.close()
        process.terminate()
        process.wait(30)
        log.close()
        print((tmp_path / "server.log").read_text()[-3000:])


def _node(client: httpx.Client) -> dict[str, Any]:
    nodes = client.get("/v1/nodes").json()
    listed = nodes.get("nodes", nodes) if isinstance(nodes, dict) else nodes
    return next((n for n in listed if n.get("id") == "n1"), {})


def _rollout_state(client: httpx.Client) -> str:
    reply = client.get("/v1/rollouts/r")
    return str(reply.json().get("state", "")) if reply.status_code == 200 else ""


def _wait(what: str, check: Any, console: Console, guest: Guest) -> Any:
    return poll(what, check, console, guest, TIMEOUT)


def test_a_node_netboots_from_the_server_and_rolls_to_a_second_image(
    server: tuple[str, httpx.Client], tmp_path: Path
) -> None:
    url, client = server
    port = url.rsplit(":", 1)[1]
    qmp = str(tmp_path / "qmp.sock")
    command = [
        "qemu-system-x86_64",
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-m",
        "256M",
        "-nographic",
        "-boot",
        "n",
        "-netdev",
        f"user,id=n0,bootfile=http://10.0.2.2:{port}/boot.ipxe",
        "-device",
        f"virtio-net-pci,netdev=n0,mac={MAC}",
        "-qmp",
        f"unix:{qmp},server=on,wait=off",
    ]
    console = Console()
    guest = Guest(command, qmp, on_line=console.add)
    guest.start()
    console.started = guest.started
    try:
        _wait(
            "heartbeat on img-1",
            lambda: _node(client).get("booted_image") == "img-1",
            console,
            guest,
        )
        started = client.post(
            "/v1/rollouts",
            json={"role": "r", "image": "img-2", "max_unavailable": 1, "health_timeout": TIMEOUT},
        )
        assert started.status_code in (200, 201), started.text
        _wait("the rollout done", lambda: _rollout_state(client) == "done", console, guest)
        assert _node(client).get("booted_image") == "img-2"
        assert len(console.text().split("Linux version")) - 1 == 2  # booted twice
        assert "hostos-init: reboot" in console.text()
        assert guest.powerdown()
        assert guest.wait(180) == 0
    finally:
        if guest.running():
            guest.kill()
    text = console.text()
    assert "hostos.token=" not in "".join(
        line for line in text.splitlines() if "hostos-init" in line or "event=" in line
    )
    print(f"\nnetboot rollout: done at {round(time.monotonic() - guest.started, 1)} s")
