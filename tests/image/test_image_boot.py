"""`hostos image boot`: the pure rendering of the qemu command and kernel command line, the
site archive appended to the initramfs, and the console reader against a fake qemu."""

from __future__ import annotations

import gzip
import io
import json
import os
import socket
import stat
import sys
import threading
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from hostos.image import boot
from hostos.image.boot import BootError, Guest, Image, Options

IMAGE = Image(Path("/img/vmlinuz"), Path("/img/initramfs.img"), "hostos.site=10.0.2.2:/site")


def test_qemu_command_defaults() -> None:
    assert boot.qemu_command(IMAGE, Options()) == [
        "qemu-system-x86_64",
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-m",
        "256M",
        "-smp",
        "1",
        "-nographic",
        "-no-reboot",
        "-kernel",
        "/img/vmlinuz",
        "-initrd",
        "/img/initramfs.img",
        "-append",
        "hostos.site=10.0.2.2:/site console=ttyS0 panic=-1",
        "-netdev",
        "user,id=n0",
        "-device",
        "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56,romfile=",
    ]


def test_qemu_command_options() -> None:
    options = Options(
        mem="1G",
        cpus=2,
        append="hostos.node=cn001 quiet",
        accel="kvm",
        forwards=("8080:80", "udp:5353:53", "2222"),
        qmp="/run/q.sock",
        mac="52:54:00:00:00:07",
        extra=("-snapshot",),
    )
    command = boot.qemu_command(IMAGE, options, initrd=Path("/tmp/with-site.img"))
    assert command[command.index("-cpu") + 1] == "host"
    assert command[command.index("-m") + 1] == "1G"
    assert command[command.index("-smp") + 1] == "2"
    assert command[command.index("-initrd") + 1] == "/tmp/with-site.img"
    assert command[command.index("-append") + 1] == (
        "hostos.site=10.0.2.2:/site console=ttyS0 panic=-1 hostos.node=cn001 quiet"
    )
    assert command[command.index("-netdev") + 1] == (
        "user,id=n0,hostfwd=tcp::8080-:80,hostfwd=udp::5353-:53,hostfwd=tcp::2222-:2222"
    )
    assert "virtio-net-pci,netdev=n0,mac=52:54:00:00:00:07,romfile=" in command
    assert command[-3:] == ["-qmp", "unix:/run/q.sock,server=on,wait=off", "-snapshot"]


@pytest.mark.parametrize("spec", ["80:", "x:80", "tcp:1:2:3", "sctp:80"])
def test_bad_forward(spec: str) -> None:
    with pytest.raises(BootError, match="cannot read the forward"):
        boot.hostfwd(spec)


def test_kernel_cmdline_keeps_order_and_drops_repeats() -> None:
    assert boot.kernel_cmdline("quiet console=ttyS0", "hostos.node=a quiet") == (
        "quiet console=ttyS0 panic=-1 hostos.node=a"
    )
    assert boot.kernel_cmdline("", "") == "console=ttyS0 panic=-1"
    assert boot.kernel_cmdline("", "hostos.site='a b'") == "console=ttyS0 panic=-1 hostos.site=a b"


def test_find_image(tmp_path: Path) -> None:
    with pytest.raises(BootError, match="no kernel at"):
        boot.find_image(tmp_path)
    (tmp_path / "vmlinuz").write_bytes(b"k")
    with pytest.raises(BootError, match="no initramfs at"):
        boot.find_image(tmp_path)
    (tmp_path / "initramfs.img").write_bytes(b"i")
    assert boot.find_image(tmp_path).cmdline == ""
    (tmp_path / "boot.ipxe").write_text("#!ipxe\nkernel vmlinuz hostos.node=x\nboot\n")
    assert boot.find_image(tmp_path) == Image(
        tmp_path / "vmlinuz", tmp_path / "initramfs.img", "hostos.node=x"
    )


def read_newc(data: bytes) -> dict[str, tuple[int, bytes]]:
    """name → (mode, content) of a newc cpio archive."""
    members = {}
    offset = 0
    while True:
        header = data[offset : offset + 110]
        assert header[:6] == b"070701"
        fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name = data[offset + 110 : offset + 110 + namesize - 1].decode()
        offset += 110 + namesize
        offset += -offset % 4
        if name == "TRAILER!!!":
            return members
        members[name] = (mode, data[offset : offset + size])
        offset += size
        offset += -offset % 4


def test_site_archive_puts_the_site_at_etc_hostos_site(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "roles").mkdir(parents=True)
    (site / "nodes.yaml").write_text("nodes: []\n")
    (site / "roles" / "r.yaml").write_text("units: []\n")
    members = read_newc(boot.site_archive(site))
    assert members["etc/hostos/site/nodes.yaml"][1] == b"nodes: []\n"
    assert members["etc/hostos/site/roles/r.yaml"][1] == b"units: []\n"
    for directory in ("etc", "etc/hostos", "etc/hostos/site", "etc/hostos/site/roles"):
        assert stat.S_ISDIR(members[directory][0])


def test_initrd_with_site_appends_after_padding(tmp_path: Path) -> None:
    base = tmp_path / "initramfs.img"
    base.write_bytes(gzip.compress(b"x" * 10))
    site = tmp_path / "site"
    site.mkdir()
    (site / "nodes.yaml").write_text("nodes: []\n")
    image = Image(tmp_path / "vmlinuz", base)
    with boot.initrd_with_site(image, None) as path:
        assert path == base
    with boot.initrd_with_site(image, site) as path:
        data = path.read_bytes()
    start = len(base.read_bytes())
    assert data.startswith(base.read_bytes())
    padded = start + (-start % 4)
    assert data[start:padded] == b"\0" * (padded - start)
    assert "etc/hostos/site/nodes.yaml" in read_newc(data[padded:])
    with (
        pytest.raises(BootError, match="not a directory"),
        boot.initrd_with_site(image, tmp_path / "nope"),
    ):
        pass


FAKE_QEMU = """
import sys, time
print("SeaBIOS\\r")
print("[    2.1] Run /init as init process\\r")
sys.stdout.write("hostos-init: starting\\r\\npartial")
sys.stdout.flush()
time.sleep(0.2)
print(" line\\r")
if len(sys.argv) > 1:
    print(sys.argv[1] + "\\r")
sys.exit(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
"""


def fake_guest(*args: str) -> tuple[Guest, list[str], io.BytesIO]:
    lines: list[str] = []
    output = io.BytesIO()
    guest = Guest([sys.executable, "-c", FAKE_QEMU, *args], output=output, on_line=lines.append)
    return guest, lines, output


def test_guest_streams_bytes_and_lines() -> None:
    guest, lines, output = fake_guest()
    guest.start()
    assert guest.wait(10) == 0
    assert lines == [
        "SeaBIOS",
        "[    2.1] Run /init as init process",
        "hostos-init: starting",
        "partial line",
    ]
    assert output.getvalue().startswith(b"SeaBIOS\r\n")
    assert not guest.failed


@pytest.mark.parametrize(
    "line",
    ["Kernel panic - not syncing: Attempted to kill init!", "hostos-init: error: no hostos.node="],
)
def test_guest_notices_a_failed_boot(line: str) -> None:
    guest, _, _ = fake_guest(line)
    guest.start()
    guest.wait(10)
    assert guest.failed


def test_guest_without_qemu() -> None:
    with pytest.raises(BootError, match="not found"):
        Guest(["/nonexistent/qemu-system-x86_64"]).start()


def test_qmp_command_speaks_the_protocol(tmp_path: Path) -> None:
    path = str(tmp_path / "qmp.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    received: list[str] = []

    def serve() -> None:
        conn, _ = server.accept()
        stream = conn.makefile("rwb")
        stream.write(b'{"QMP": {"version": {}, "capabilities": []}}\n')
        stream.flush()
        for _ in range(2):
            received.append(json.loads(stream.readline())["execute"])
            stream.write(b'{"event": "SOMETHING", "timestamp": {}}\n{"return": {}}\n')
            stream.flush()
        conn.close()

    thread = threading.Thread(target=serve)
    thread.start()
    assert boot.qmp_command(path, "system_powerdown") == {"return": {}}
    thread.join(5)
    server.close()
    assert received == ["qmp_capabilities", "system_powerdown"]


def test_run_reports_timeout_and_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"")
    image = Image(kernel, kernel)
    sleeper = tmp_path / "qemu"
    sleeper.write_text("#!/bin/sh\necho 'hostos-init: error: boom'\nexec sleep 30\n")
    sleeper.chmod(0o755)
    options = Options(qemu=str(sleeper))
    assert boot.boot(image, options, timeout=0.5, output=io.BytesIO()) == 124
    sleeper.write_text("#!/bin/sh\necho 'hostos-init: error: boom'\n")
    assert boot.boot(image, options, output=io.BytesIO()) == 1
    sleeper.write_text("#!/bin/sh\necho fine\nexit 3\n")
    assert boot.boot(image, options, output=io.BytesIO()) == 3
    assert os.path.exists(sleeper)


def boot_app() -> typer.Typer:
    from hostos.cli.image_boot import boot as boot_command

    app = typer.Typer()
    app.callback()(lambda: None)  # keep `boot` a subcommand, as in `hostos image boot`
    app.command("boot")(boot_command)
    return app


def test_boot_command_help_and_missing_image(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(boot_app(), ["boot", "--help"])
    assert result.exit_code == 0
    for option in ("--mem", "--append", "--timeout", "--site", "--forward"):
        assert option in result.output
    result = runner.invoke(boot_app(), ["boot", str(tmp_path)])
    assert result.exit_code == 1
    assert f"no kernel at {tmp_path}/vmlinuz" in result.output


def test_boot_command_runs_qemu_and_passes_its_exit_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "vmlinuz").write_bytes(b"")
    (tmp_path / "initramfs.img").write_bytes(b"")
    seen: dict[str, object] = {}

    def fake_run(image: Image, options: Options, **kwargs: object) -> int:
        seen.update(image=image, options=options, **kwargs)
        return 3

    monkeypatch.setattr(boot, "boot", fake_run)
    result = CliRunner().invoke(
        boot_app(),
        [
            "boot",
            str(tmp_path),
            "--mem",
            "512M",
            "--append",
            "hostos.node=cn001",
            "--timeout",
            "30",
            "-p",
            "8080:80",
            "--site",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 3, result.output
    options = seen["options"]
    assert isinstance(options, Options)
    assert (options.mem, options.append, options.forwards, options.accel) == (
        "512M",
        "hostos.node=cn001",
        ("8080:80",),
        "tcg",
    )
    assert seen["timeout"] == 30 and seen["site"] == tmp_path
