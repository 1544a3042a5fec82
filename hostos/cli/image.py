"""`hostos image …`: build the host image's base, build the image, boot it under qemu.

A Typer sub-app; hostos/cli/main.py mounts it with `app.add_typer(image_app, name="image")`.
Heavy imports stay inside the commands.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from hostos.cli.app import App
from hostos.cli.exits import fail
from hostos.cli.image_boot import boot
from hostos.engine.kind import EngineKind

image_app = App(help="The host image: a Debian base offline, the RAM-boot image, a qemu boot.")


class BaseEngine(StrEnum):
    docker = "docker"
    podman = "podman"
    both = "both"


class Compression(StrEnum):
    xz = "xz"
    zstd = "zstd"


SQUASHFS_OPTIONS = {
    Compression.xz: ("-comp", "xz", "-Xbcj", "x86", "-b", "1M"),
    Compression.zstd: ("-comp", "zstd", "-Xcompression-level", "19", "-b", "1M"),
}


class RootMode(StrEnum):
    squashfs = "squashfs"
    initramfs = "initramfs"


@image_app.command("base")
def base(
    engine: Annotated[
        BaseEngine, typer.Option("--engine", "-e", help="where to import it")
    ] = BaseEngine.both,
    suite: Annotated[str, typer.Option(help="Debian suite", metavar="SUITE")] = "bookworm",
    tag: Annotated[str, typer.Option(help="image name", metavar="TAG")] = "debian:bookworm-slim",
    sources: Annotated[
        list[Path] | None,
        typer.Option(
            "--sources", help="apt source files (default: this machine's)", metavar="FILE"
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="build it even if the engine has it")
    ] = False,
) -> None:
    """Build debian:bookworm-slim with mmdebstrap from this machine's apt sources and import it
    (no image registry needed)."""
    from hostos.errors import RuntimeFailure
    from hostos.image.base import BaseSettings, build_base

    engines = ("docker", "podman") if engine == BaseEngine.both else (engine.value,)
    settings = BaseSettings(
        suite=suite, tag=tag, engines=engines, sources=tuple(sources or ()), force=force
    )
    try:
        build_base(settings, say=typer.echo)
    except RuntimeFailure as exc:
        fail(str(exc))


@image_app.command("build")
def build(
    dockerfile: Annotated[
        Path, typer.Option("--dockerfile", "-f", help="the host OS", metavar="FILE")
    ] = Path("Dockerfile"),
    context: Annotated[
        Path | None,
        typer.Option(help="build context (default: the Dockerfile's directory)", metavar="DIR"),
    ] = None,
    engine: Annotated[
        EngineKind,
        typer.Option(
            "--engine", "-e", help="build with; auto: docker when dockerd answers, else podman"
        ),
    ] = EngineKind.auto,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="output directory", metavar="DIR")
    ] = Path("out"),
    root: Annotated[
        RootMode,
        typer.Option(
            help="squashfs: root image under an overlay (least RAM); initramfs: the whole root "
            "unpacked"
        ),
    ] = RootMode.squashfs,
    compression: Annotated[
        Compression,
        typer.Option(help="of the root image: zstd reads fast (boot time), xz is 4 MB smaller"),
    ] = Compression.zstd,
    build_arg: Annotated[
        list[str] | None,
        typer.Option(
            "--build-arg",
            help="KEY=VALUE for the Dockerfile, e.g. NODE_ENGINE=docker (repeatable)",
            metavar="KEY=VALUE",
        ),
    ] = None,
    module: Annotated[
        list[str] | None,
        typer.Option(
            "--module",
            "-m",
            help="another kernel module to keep (with its dependencies; repeatable)",
            metavar="MODULE",
        ),
    ] = None,
    cmdline: Annotated[
        str | None, typer.Option(help="kernel arguments in boot.ipxe", metavar="ARGS")
    ] = None,
    tag: Annotated[str | None, typer.Option(help="tag of the built image", metavar="TAG")] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="build without the engine's cache")
    ] = False,
    work: Annotated[
        Path | None,
        typer.Option(
            help="keep intermediate files here (default: a temporary directory, removed)",
            metavar="DIR",
        ),
    ] = None,
) -> None:
    """Build the host image: vmlinuz, initramfs.img, boot.ipxe, manifest.json in --out."""
    from dataclasses import replace

    from hostos.errors import RuntimeFailure
    from hostos.image.build import Progress, megabytes
    from hostos.image.build import build as run_build
    from hostos.image.context import BuildSettings

    defaults = BuildSettings()
    settings = replace(
        defaults,
        dockerfile=dockerfile,
        context=context or dockerfile.resolve().parent,
        engine=engine,
        out=out,
        root=root.value,
        build_args=tuple(build_arg or ()),
        modules=(*defaults.modules, *(module or ())),
        cmdline=defaults.cmdline if cmdline is None else cmdline,
        tag=tag or defaults.tag,
        no_cache=no_cache,
        work=work,
        squashfs_compression=SQUASHFS_OPTIONS[compression],
    )
    try:
        ctx, timings = run_build(settings, Progress())
    except RuntimeFailure as exc:
        fail(str(exc))
        return
    total = sum(t.seconds for t in timings)
    sizes = {name: ctx.output(name).stat().st_size for name in ("vmlinuz", "initramfs.img")}
    typer.echo(
        f"{out}: vmlinuz {megabytes(sizes['vmlinuz'])}, initramfs.img "
        f"{megabytes(sizes['initramfs.img'])}, {megabytes(sum(sizes.values()))} in all, "
        f"built in {total:.1f}s"
    )


image_app.command("boot")(boot)
