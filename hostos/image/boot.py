"""Boot a host image under qemu with its serial console on stdout: for trying an image on a
workstation and for the e2e tests.

The pure part renders the qemu command and its kernel command line (joined by
hostos.image.netboot); `Guest` runs qemu, streams the console (raw bytes to an output, whole
lines to a callback), and shuts the guest down cleanly by pressing its ACPI power button
over QMP (`system_powerdown`): the node's /init then stops the units and powers off, and
qemu exits 0 (`-no-reboot` turns a reboot or a kernel panic into an exit too).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from hostos.errors import RuntimeFailure
from hostos.image import cpio, netboot

# The serial console, and no reboot loop: panic=-1 reboots at once, -no-reboot makes that
# an exit of qemu.
CONSOLE_CMDLINE = ("console=ttyS0", "panic=-1")
# The first NIC of qemu's user network: the guest is 10.0.2.15 and sees the host as 10.0.2.2.
DEFAULT_MAC = "52:54:00:12:34:56"
LOCAL_SITE = "etc/hostos/site"  # where /init looks for a site carried in the initramfs
# Lines that say the guest did not come up, even when qemu then exits 0.
FAILED = re.compile(r"Kernel panic|hostos-init: error:")


class BootError(RuntimeFailure):
    """The image cannot be booted (missing files, no qemu)."""


@dataclass(frozen=True)
class Image:
    kernel: Path
    initrd: Path
    cmdline: str = ""  # the image's own kernel arguments (from boot.ipxe)


@dataclass(frozen=True)
class Options:
    mem: str = "256M"
    cpus: int = 1
    append: str = ""
    accel: str = "tcg"
    mac: str = DEFAULT_MAC
    forwards: tuple[str, ...] = ()  # host port forwards: "8080:80", "tcp:2222:22"
    qmp: str | None = None  # unix socket for QMP (power button)
    qemu: str = "qemu-system-x86_64"
    extra: tuple[str, ...] = field(default=())  # more qemu arguments, as given


# -- pure ---------------------------------------------------------------------------------


def kernel_cmdline(image_cmdline: str, append: str) -> str:
    """The image's arguments, the serial console, then the caller's: later words win (the
    kernel and /init both take the last value of a repeated key)."""
    return netboot.join_cmdline(image_cmdline, shlex.join(CONSOLE_CMDLINE), append)


def hostfwd(spec: str) -> str:
    """'8080:80' or 'udp:5353:53' → qemu's hostfwd=tcp::8080-:80."""
    parts = spec.split(":")
    proto = "tcp"
    if parts[0] in ("tcp", "udp"):
        proto, parts = parts[0], parts[1:]
    if len(parts) == 1:
        parts = [parts[0], parts[0]]
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise BootError(
            f"cannot read the forward '{spec}' (want HOSTPORT[:GUESTPORT], "
            "optionally after tcp: or udp:)"
        )
    return f"hostfwd={proto}::{parts[0]}-:{parts[1]}"


def qemu_command(image: Image, options: Options, initrd: Path | None = None) -> list[str]:
    """The qemu command line: TCG (or KVM), serial console on stdio, no graphics, exit
    instead of rebooting, a virtio NIC on the user network."""
    netdev = ",".join(["user,id=n0", *(hostfwd(f) for f in options.forwards)])
    command = [
        options.qemu,
        "-accel",
        options.accel,
        "-cpu",
        "max" if options.accel == "tcg" else "host",
        "-m",
        options.mem,
        "-smp",
        str(options.cpus),
        "-nographic",
        "-no-reboot",
        "-kernel",
        str(image.kernel),
        "-initrd",
        str(initrd or image.initrd),
        "-append",
        kernel_cmdline(image.cmdline, options.append),
        "-netdev",
        netdev,
        # romfile=: no iPXE option ROM, the kernel is loaded directly (saves ~0.5 s of TCG)
        "-device",
        f"virtio-net-pci,netdev=n0,mac={options.mac},romfile=",
    ]
    if options.qmp:
        command += ["-qmp", f"unix:{options.qmp},server=on,wait=off"]
    return command + list(options.extra)


def site_archive(site: Path) -> bytes:
    """A cpio (newc) holding the site directory at /etc/hostos/site, to append to the
    initramfs: the kernel unpacks concatenated archives one after the other."""
    entries = [
        cpio.directory("etc"),
        cpio.directory("etc/hostos"),
        cpio.directory(LOCAL_SITE),
        *cpio.tree_entries(site, LOCAL_SITE + "/"),
    ]
    with tempfile.TemporaryFile() as out:
        cpio.write(out, entries, mtime=0)
        out.seek(0)
        return out.read()


# -- the image on disk ---------------------------------------------------------------------


def find_image(directory: Path, kernel: Path | None = None, initrd: Path | None = None) -> Image:
    """vmlinuz, initramfs.img and boot.ipxe's kernel arguments from an image directory."""
    kernel = kernel or directory / netboot.KERNEL
    initrd = initrd or directory / netboot.INITRD
    for path, what in ((kernel, "kernel"), (initrd, "initramfs")):
        if not path.is_file():
            raise BootError(f"no {what} at {path} (build one with `hostos image build`)")
    return Image(kernel, initrd, netboot.image_cmdline(directory))


@contextlib.contextmanager
def initrd_with_site(image: Image, site: Path | None) -> Iterator[Path]:
    """The image's initramfs, or a temporary copy with the site appended."""
    if site is None:
        yield image.initrd
        return
    if not site.is_dir():
        raise BootError(f"the site {site} is not a directory")
    with tempfile.NamedTemporaryFile(prefix="hostos-initrd-", suffix=".img") as out:
        with image.initrd.open("rb") as base:
            while chunk := base.read(1 << 20):
                out.write(chunk)
        out.write(b"\0" * (-out.tell() % 4))
        out.write(site_archive(site))
        out.flush()
        yield Path(out.name)


# -- running qemu --------------------------------------------------------------------------

LineHandler = Callable[[str], None]


class Guest:
    """qemu running an image: console bytes to `output`, each console line to `on_line`."""

    def __init__(
        self,
        command: Sequence[str],
        qmp: str | None = None,
        output: IO[bytes] | None = None,
        on_line: LineHandler | None = None,
        stdin: int | IO[bytes] | None = subprocess.DEVNULL,
    ) -> None:
        self.command = list(command)
        self.qmp = qmp
        self.output = output
        self.on_line = on_line
        self.stdin = stdin
        self.failed = False  # a kernel panic or an /init error went by
        self.started = 0.0
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        try:
            # A session of its own: a Ctrl-C on the terminal reaches us, not qemu, so that it
            # becomes a clean power-off instead of killing the guest.
            self._process = subprocess.Popen(
                self.command,
                stdin=self.stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except FileNotFoundError:
            raise BootError(
                f"{self.command[0]} not found (apt-get install qemu-system-x86)"
            ) from None
        self.started = time.monotonic()
        self._reader = threading.Thread(target=self._read, name="qemu-console", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        fd = self._process.stdout.fileno()
        pending = b""
        while chunk := os.read(fd, 65536):
            if self.output is not None:
                self.output.write(chunk)
                self.output.flush()
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                self._line(line)
        if pending:
            self._line(pending)

    def _line(self, raw: bytes) -> None:
        line = raw.decode(errors="replace").rstrip("\r")
        if FAILED.search(line):
            self.failed = True
        if self.on_line is not None:
            self.on_line(line)

    def send(self, data: bytes) -> None:
        """Type on the serial console (the guest must have been started with stdin=PIPE)."""
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.write(data)
        self._process.stdin.flush()

    def powerdown(self) -> bool:
        """Press the ACPI power button; False when QMP is not there (or qemu is gone)."""
        if self.qmp is None:
            return False
        try:
            qmp_command(self.qmp, "system_powerdown")
        except (OSError, ValueError):
            return False
        return True

    def wait(self, timeout: float | None = None) -> int:
        assert self._process is not None
        code = self._process.wait(timeout)
        if self._reader is not None:
            self._reader.join(5)
        return code

    def stop(self, grace: float = 60.0) -> int:
        """Power off cleanly, within grace seconds; then terminate qemu."""
        if self.running() and self.powerdown():
            with contextlib.suppress(subprocess.TimeoutExpired):
                return self.wait(grace)
        return self.kill()

    def kill(self) -> int:
        assert self._process is not None
        if self.running():
            self._process.terminate()  # qemu restores the terminal on SIGTERM
            try:
                return self.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
        return self.wait()

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None


def qmp_command(path: str, command: str, timeout: float = 5.0) -> dict[str, object]:
    """Run one QMP command on qemu's unix socket; its answer."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        while True:
            try:
                sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        stream = sock.makefile("rwb")
        _qmp_read(stream)  # the greeting
        for execute in ("qmp_capabilities", command):
            stream.write(json.dumps({"execute": execute}).encode() + b"\n")
            stream.flush()
            answer = _qmp_read(stream)
        return answer


def _qmp_read(stream: io.BufferedIOBase) -> dict[str, object]:
    """The next greeting or answer, skipping asynchronous events."""
    while line := stream.readline():
        message = json.loads(line)
        if not isinstance(message, dict):
            continue
        if "error" in message:
            raise ValueError(f"qemu: {message['error']}")
        if "event" not in message:
            return message
    raise ValueError("qemu closed the QMP socket")


def boot(
    image: Image,
    options: Options,
    site: Path | None = None,
    timeout: float | None = None,
    output: IO[bytes] | None = None,
    on_line: LineHandler | None = None,
    interactive: bool = False,
) -> int:
    """Boot until the guest powers off: qemu's exit code, 1 if the console showed a kernel
    panic or an /init error, 124 after the timeout (the guest is powered off first).

    SIGINT and SIGTERM press the power button; a second one ends qemu."""
    with contextlib.ExitStack() as stack:
        if options.qmp is None:
            qmp_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="hostos-qmp-"))
            options = _with_qmp(options, os.path.join(qmp_dir, "qmp.sock"))
        initrd = stack.enter_context(initrd_with_site(image, site))
        guest = Guest(
            qemu_command(image, options, initrd),
            options.qmp,
            output,
            on_line,
            stdin=None if interactive else subprocess.DEVNULL,
        )
        presses = []

        def press(signum: int, frame: object) -> None:
            presses.append(signum)
            if len(presses) == 1 and guest.powerdown():
                return
            guest.kill()

        previous = {s: signal.signal(s, press) for s in (signal.SIGINT, signal.SIGTERM)}
        stack.callback(lambda: [signal.signal(s, h) for s, h in previous.items()])
        guest.start()
        try:
            code = guest.wait(timeout)
        except subprocess.TimeoutExpired:
            guest.stop()
            return 124
        return 1 if code == 0 and guest.failed else code


def _with_qmp(options: Options, path: str) -> Options:
    from dataclasses import replace

    return replace(options, qmp=path)
