"""`hostos image build`: the Dockerfile's root filesystem, pruned and packed for a RAM boot.

A flat list of small named steps over one Context, each timed:

    check tools → engine build → export rootfs → read packages → take kernel →
    prune files → prune python → prune modules → prune libraries → busybox links →
    write init → squashfs → outer initramfs → cpio → zstd → boot.ipxe → manifest

Outputs in --out: vmlinuz, initramfs.img, boot.ipxe, manifest.json.

The root (`--root`):
- squashfs (default): the pruned root becomes /root.squashfs inside a small outer
  initramfs (busybox, the loop/squashfs/overlay modules, /init).  /init loop-mounts it
  read-only under an overlay with a tmpfs upper layer and switch_roots into it: the root
  stays compressed in RAM, so the node needs the least memory, and runc can pivot_root.
- initramfs: the whole pruned root is the initramfs; /init bind-mounts / elsewhere and
  moves it over / (zero copy, but the root is unpacked in RAM: about 3x the memory).

/init and its defaults come from hostos/image/init/ (copied into the root, paths kept;
files starting with `#!` made executable); in squashfs mode the same /init is the outer
initramfs's /init too, with /etc/hostos/modules listing what it loads there.

Same inputs → same bytes: entries sorted, owner root, mtimes SOURCE_DATE_EPOCH, zstd and
squashfs without timestamps; the engine's build cache keeps the exported root the same.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from hostos.image import steps_engine as engine
from hostos.image import steps_pack as pack
from hostos.image import steps_prune as trim
from hostos.image.context import ROOT_MODES, BuildSettings, Context

StepFunction = Callable[[Context], str | None]


@dataclass(frozen=True)
class Step:
    name: str
    run: StepFunction


def steps() -> list[Step]:
    return [
        Step("check tools", engine.check_tools),
        Step("engine build", engine.engine_build),
        Step("export rootfs", engine.export_rootfs),
        Step("read packages", trim.read_packages),
        Step("take kernel", trim.take_kernel),
        Step("prune files", trim.prune_files),
        Step("prune python", trim.prune_python),
        Step("prune modules", trim.prune_modules),
        Step("prune libraries", trim.prune_libraries),
        Step("busybox links", trim.busybox_links),
        Step("write init", pack.write_init),
        Step("squashfs", pack.make_squashfs),
        Step("outer initramfs", pack.outer_initramfs),
        Step("cpio", pack.write_cpio),
        Step("zstd", pack.compress),
        Step("boot.ipxe", pack.write_ipxe),
        Step("manifest", pack.write_manifest),
    ]


@dataclass(frozen=True)
class Timing:
    name: str
    seconds: float
    note: str


class Progress:
    """One line per step: `step NAME … 1.2s NOTE`; on a terminal the line shows while it runs."""

    def __init__(self, stream: TextIO = sys.stdout) -> None:
        self.stream = stream
        self.live = stream.isatty()

    def start(self, name: str) -> None:
        if self.live:
            self.stream.write(f"step {name} …")
            self.stream.flush()

    def done(self, timing: Timing) -> None:
        line = f"step {timing.name:<17} {timing.seconds:6.1f}s  {timing.note}".rstrip()
        self.stream.write(("\r\033[K" if self.live else "") + line + "\n")
        self.stream.flush()

    def failed(self, name: str) -> None:
        if self.live:
            self.stream.write(f"\r\033[Kstep {name} failed\n")
            self.stream.flush()


def build(
    settings: BuildSettings, progress: Progress | None = None
) -> tuple[Context, list[Timing]]:
    """Run every step; the context (outputs are in settings.out) and each step's time."""
    if settings.root not in ROOT_MODES:
        raise ValueError(f"root must be one of {', '.join(ROOT_MODES)}")
    report = progress or Progress()
    timings = []
    with _work_dir(settings) as work:
        ctx = Context(settings, work)
        for step in steps():
            report.start(step.name)
            started = time.monotonic()
            try:
                note = step.run(ctx) or ""
            except BaseException:
                report.failed(step.name)
                raise
            timing = Timing(step.name, time.monotonic() - started, note)
            report.done(timing)
            timings.append(timing)
    return ctx, timings


@contextmanager
def _work_dir(settings: BuildSettings) -> Iterator[Path]:
    if settings.work is not None:
        shutil.rmtree(settings.work, ignore_errors=True)
        settings.work.mkdir(parents=True)
        yield settings.work
        return
    work = Path(tempfile.mkdtemp(prefix="hostos-image.", dir="/var/tmp"))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
