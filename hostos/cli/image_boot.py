"""`hostos image boot`: a function the image sub-app registers as a command,
`image_app.command("boot")(boot)`.  Heavy imports stay inside."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from hostos.cli.exits import fail, say


def boot(
    directory: Annotated[
        Path,
        typer.Argument(
            help="an image directory: vmlinuz, initramfs.img (boot.ipxe gives the kernel "
            "arguments)",
            metavar="DIR",
        ),
    ] = Path("."),
    mem: Annotated[
        str, typer.Option("--mem", "-m", help="guest RAM, as qemu's -m (256M, 1G)", metavar="SIZE")
    ] = "256M",
    append: Annotated[
        str,
        typer.Option(
            "--append",
            "-a",
            help="more kernel arguments, e.g. "
            "'hostos.node=cn001 hostos.site=10.0.2.2:/export/site'",
            metavar="ARGS",
        ),
    ] = "",
    timeout: Annotated[
        float | None,
        typer.Option(help="seconds before the guest is powered off (exit 124)", metavar="SECONDS"),
    ] = None,
    site: Annotated[
        Path | None,
        typer.Option(
            help="a site directory to carry in the initramfs (/etc/hostos/site): no NFS needed",
            metavar="SITE",
        ),
    ] = None,
    cpus: Annotated[int, typer.Option(help="virtual CPUs", metavar="N")] = 1,
    forward: Annotated[
        list[str] | None,
        typer.Option(
            "--forward",
            "-p",
            help="host port to guest port, e.g. 8080:80 (repeatable)",
            metavar="HOST:GUEST",
        ),
    ] = None,
    kvm: Annotated[bool, typer.Option("--kvm", help="use KVM instead of TCG")] = False,
    kernel: Annotated[
        Path | None, typer.Option(help="another kernel than DIR/vmlinuz", metavar="FILE")
    ] = None,
    initrd: Annotated[
        Path | None, typer.Option(help="another initramfs than DIR/initramfs.img", metavar="FILE")
    ] = None,
) -> None:
    """Boot a host image under qemu, serial console on this terminal, until it powers off.

    Ctrl-C (or SIGTERM) presses the guest's power button: /init stops the units and powers
    off; a second Ctrl-C ends qemu.  On a terminal the console is interactive (with
    hostos.shell=1 or hostos.rescue=1 on --append): Ctrl-A x then quits qemu."""
    import sys

    from hostos.image.boot import BootError, Options, find_image
    from hostos.image.boot import boot as boot_image

    try:
        image = find_image(directory, kernel, initrd)
        options = Options(
            mem=mem,
            cpus=cpus,
            append=append,
            accel="kvm" if kvm else "tcg",
            forwards=tuple(forward or ()),
        )
        interactive = sys.stdin.isatty()
        if interactive:
            typer.echo(
                "hostos: Ctrl-A x quits qemu; Ctrl-A c then system_powerdown "
                "powers the node off cleanly",
                err=True,
            )
        code = _restoring_terminal(
            lambda: boot_image(
                image,
                options,
                site=site,
                timeout=timeout,
                output=sys.stdout.buffer,
                interactive=interactive,
            )
        )
    except BootError as exc:
        fail(str(exc))
    if code == 124:
        say(f"timed out after {timeout:g}s")
    raise typer.Exit(code)


def _restoring_terminal(action: Callable[[], int]) -> int:
    """qemu puts a terminal in raw mode; put it back even if qemu is killed."""
    import sys
    import termios

    saved = None
    if sys.stdin.isatty():
        saved = termios.tcgetattr(sys.stdin.fileno())
    try:
        return action()
    finally:
        if saved is not None:
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)
