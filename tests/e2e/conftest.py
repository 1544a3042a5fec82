"""e2e fixtures: qemu guests with a readable console, a user-space NFS server, the kernel and
the hand-made initramfs for testing /init alone, and the real host image.

The real image is built once per session with `hostos image base` and `hostos image build`,
or taken from HOSTOS_E2E_IMAGE (a directory with vmlinuz and initramfs.img) to iterate fast.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import devimage
import pytest

from bench import console, nfs
from hostos.image.boot import Guest, Image, Options, initrd_with_site, qemu_command

ROOT = Path(__file__).resolve().parents[2]
IMAGE_CLI = [sys.executable, "-c", "from hostos.cli.image import image_app; image_app()"]


def _need(*programs: str) -> None:
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)} (scripts/setup installs them)")


# -- the console ---------------------------------------------------------------------------


class Console(console.Console):
    """The guest's console lines (bench.console, shared with the image bench), and a wait
    that fails the test."""

    def wait_for(
        self, pattern: str, timeout: float, guest: Guest | None = None, count: int = 1
    ) -> tuple[float, str]:
        """The count-th line matching pattern, waiting up to timeout seconds for it."""
        found = self.wait(pattern, timeout, guest, count)
        if found is None:
            tail = "\n".join(line for _, line in self.lines[-40:])
            raise AssertionError(
                f"no console line matching {pattern!r} within {timeout:g}s; last lines:\n{tail}"
            )
        return found


def poll(what: str, probe: Any, console: Console, guest: Guest, timeout: float) -> Any:
    """probe's first truthy answer, asked every second while the guest runs; fails the
    test with the console's tail if the guest stops or timeout seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        assert guest.running(), f"qemu ended while waiting for {what}:\n{console.text()[-4000:]}"
        time.sleep(1)
    raise AssertionError(f"no {what} within {timeout:g}s:\n{console.text()[-6000:]}")


@dataclass
class Booted:
    guest: Guest
    console: Console

    def wait_for(self, pattern: str, timeout: float = 120, count: int = 1) -> tuple[float, str]:
        return self.console.wait_for(pattern, timeout, self.guest, count)

    def poll(self, what: str, probe: Any, timeout: float) -> Any:
        return poll(what, probe, self.console, self.guest, timeout)

    def power_off(self, timeout: float = 180) -> int:
        """Press the power button; qemu's exit code once the guest is off."""
        assert self.guest.powerdown(), "qemu's QMP socket did not answer"
        return self.guest.wait(timeout)


@pytest.fixture
def boot(tmp_path: Path) -> Iterator[object]:
    """boot(image, append, site=None, mem="256M", stdin=None, forwards=()) → a running
    Booted guest (forwards: host ports into it, as `hostos image boot --forward`); every
    guest still running at the end of the test is killed."""
    guests: list[Guest] = []

    @contextlib.contextmanager
    def start(
        image: Image,
        append: str,
        site: Path | None = None,
        mem: str = "256M",
        stdin: int | None = subprocess.DEVNULL,
        forwards: tuple[str, ...] = (),
    ) -> Iterator[Booted]:
        qmp = str(tmp_path / f"qmp{len(guests)}.sock")
        options = Options(mem=mem, append=append, qmp=qmp, forwards=forwards)
        with initrd_with_site(image, site) as initrd:
            console = Console()
            guest = Guest(
                qemu_command(image, options, initrd), qmp, on_line=console.add, stdin=stdin
            )
            guests.append(guest)
            guest.start()
            console.started = guest.started
            try:
                yield Booted(guest, console)
            finally:
                if guest.running():
                    guest.kill()

    yield start
    for guest in guests:
        if guest.running():
            guest.kill()


# -- NFS -----------------------------------------------------------------------------------


@pytest.fixture
def nfs_server(tmp_path: Path) -> Iterator[nfs.NfsServer]:
    """nfs-ganesha exporting a temporary directory as /export (10.0.2.2:/export in a guest)."""
    if nfs.missing_programs():
        pytest.fail(
            f"missing {', '.join(nfs.missing_programs())}: apt-get install "
            + " ".join(nfs.PACKAGES)
            + " (scripts/setup installs them)"
        )
    with nfs.ganesha(tmp_path / "nfs") as server:
        yield server


# -- images --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kernel() -> devimage.Kernel:
    _need("qemu-system-x86_64", "apt-get", "depmod", "modprobe")
    return devimage.ensure_kernel()


@pytest.fixture(scope="session")
def dev_image(kernel: devimage.Kernel, tmp_path_factory: pytest.TempPathFactory) -> Image:
    """busybox + hostos/image/init + a stub supervisor: boots in seconds."""
    out = tmp_path_factory.mktemp("dev-image") / "initramfs.img"
    devimage.build(kernel, out)
    return Image(kernel.vmlinuz, out)


@pytest.fixture(scope="session")
def dev_squashfs_image(kernel: devimage.Kernel, tmp_path_factory: pytest.TempPathFactory) -> Image:
    _need("mksquashfs", "cpio")
    out = tmp_path_factory.mktemp("dev-squashfs-image") / "initramfs.img"
    devimage.build(kernel, out, squashfs=True)
    return Image(kernel.vmlinuz, out)


def _image(*args: str, timeout: float) -> None:
    result = subprocess.run(
        [*IMAGE_CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    print(result.stdout, result.stderr, sep="\n")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="session")
def host_image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    """The real host image: `hostos image base` then `hostos image build`, once a session
    (HOSTOS_E2E_IMAGE=DIR uses an image built before)."""
    from hostos.image.boot import find_image

    _need("qemu-system-x86_64")
    given = os.environ.get("HOSTOS_E2E_IMAGE")
    if given:
        return find_image(Path(given))
    if os.geteuid() != 0:
        pytest.skip("building the host image needs root")
    _need("mmdebstrap", "mksquashfs", "zstd")
    _image("base", "--engine", "docker", timeout=900)
    out = tmp_path_factory.mktemp("host-image") / "out"
    _image(
        "build", "--engine", "docker", "--out", str(out), "--tag", "hostos/host:e2e", timeout=2400
    )
    return find_image(out)
