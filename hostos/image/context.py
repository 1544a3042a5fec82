"""What the image build's steps share: the settings, and the Context each step reads and fills.

Its own module, so the steps (hostos.image.steps_*) and the step list (hostos.image.build)
import it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hostos.engine.kind import EngineKind
from hostos.image import cpio, prune
from hostos.image.manifest import Package

INIT_DIR = Path(__file__).resolve().parent / "init"
DEFAULT_TAG = "hostos/host:latest"
DEFAULT_CMDLINE = "console=tty0 console=ttyS0,115200"
ROOT_MODES = ("squashfs", "initramfs")


@dataclass(frozen=True)
class BuildSettings:
    dockerfile: Path = Path("Dockerfile")
    context: Path = Path(".")
    out: Path = Path("out")
    engine: EngineKind = EngineKind.auto  # auto: docker when dockerd answers, else podman
    tag: str = DEFAULT_TAG
    build_args: tuple[str, ...] = ()  # KEY=VALUE
    root: str = "squashfs"
    modules: tuple[str, ...] = prune.MODULES  # loaded before the supervisor starts
    later_modules: tuple[str, ...] = prune.LATER_MODULES  # loaded in the background
    rules: prune.Rules = field(default_factory=prune.Rules)
    init_dir: Path = INIT_DIR
    cmdline: str = DEFAULT_CMDLINE
    source_date_epoch: int = 1700000000
    # zstd, not xz: under qemu TCG an xz root made Python start 10 s slower (see docs/design.md)
    squashfs_compression: tuple[str, ...] = (
        "-comp",
        "zstd",
        "-Xcompression-level",
        "19",
        "-b",
        "1M",
    )
    zstd_level: int = 19
    no_cache: bool = False
    work: Path | None = None  # default: a temporary directory, removed at the end


@dataclass
class Context:
    """What the steps share: the settings, the work directory, and what earlier steps found."""

    settings: BuildSettings
    work: Path
    engine: str = ""
    image_id: str = ""
    kernel_version: str = ""
    kernel_package: str = ""
    debian: list[Package] = field(default_factory=list)
    python: list[Package] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)  # kept module paths, in load order
    later_modules: list[str] = field(default_factory=list)  # the rest, loaded in background
    outer_modules: list[str] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)  # bytes, for the manifest's "root"
    archive: list[cpio.Entry] = field(default_factory=list)  # the cpio step writes, zstd packs
    appended: list[cpio.Entry] = field(default_factory=list)  # after it, uncompressed

    @property
    def root(self) -> Path:
        return self.work / "root"

    @property
    def out(self) -> Path:
        return self.settings.out

    def output(self, name: str) -> Path:
        return self.settings.out / name
