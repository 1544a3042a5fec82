"""`hostos image base`: debian:bookworm-slim made locally, for sites without an image registry.

mmdebstrap builds a minbase root from this machine's own apt sources (the same
mirrors, proxies and keys apt uses here), the way the official slim image is
made: merged /usr, no recommends, no documentation or translations (dpkg
path-excludes that stay in the image, so later `apt-get install` in a Dockerfile
skips them too), apt caches and lists cleaned.  The tarball is imported into the
engines as `debian:bookworm-slim` (podman: `docker.io/library/debian:bookworm-slim`),
so `FROM debian:bookworm-slim` builds without a pull.  SOURCE_DATE_EPOCH makes the
tarball reproducible for the same mirror content.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hostos.errors import RuntimeFailure
from hostos.process import run

log = logging.getLogger(__name__)

APT_SOURCES = Path("/etc/apt/sources.list")
APT_SOURCES_DIR = Path("/etc/apt/sources.list.d")
MERGED_USR_HOOK = Path("/usr/share/mmdebstrap/hooks/merged-usr")

# What the official slim image leaves out (its /etc/dpkg/dpkg.cfg.d/docker), kept in the image.
DPKG_EXCLUDES = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/lintian/*",
    "path-exclude=/usr/share/linda/*",
    "path-exclude=/usr/share/groff/*",
)
APT_OPTIONS = ('APT::Install-Recommends "false"', 'Acquire::Languages "none"')
# Host-specific files mmdebstrap copies in; engines give containers their own.
RESET_HOOK = 'rm -f "$1/etc/hostname" "$1/etc/resolv.conf"; : > "$1/etc/resolv.conf"'


@dataclass(frozen=True)
class BaseSettings:
    suite: str = "bookworm"
    tag: str = "debian:bookworm-slim"
    engines: tuple[str, ...] = ("docker",)
    sources: tuple[Path, ...] = ()  # apt source files; default: this machine's
    source_date_epoch: int = 1700000000
    force: bool = False


def machine_sources() -> list[Path]:
    """The apt source files this machine's apt reads (enabled ones only)."""
    files = [APT_SOURCES] if APT_SOURCES.is_file() else []
    if APT_SOURCES_DIR.is_dir():
        files += sorted(
            p
            for p in APT_SOURCES_DIR.iterdir()
            if p.suffix in (".list", ".sources") and p.is_file()
        )
    return files


def engine_ref(engine: str, tag: str) -> str:
    """The name an engine stores the tag under: podman spells out docker.io/library/."""
    if engine == "podman" and "/" not in tag.split(":")[0]:
        return f"docker.io/library/{tag}"
    return tag


def mmdebstrap_command(settings: BaseSettings, sources: Sequence[Path], target: Path) -> list[str]:
    """The mmdebstrap command line that writes the base root to `target` (a .tar)."""
    cmd = [
        "mmdebstrap",
        "--variant=minbase",
        "--format=tar",
        "--quiet",
        f"--hook-dir={MERGED_USR_HOOK}",
    ]
    cmd += [f"--dpkgopt={opt}" for opt in DPKG_EXCLUDES]
    cmd += [f"--aptopt={opt}" for opt in APT_OPTIONS]
    cmd += [f"--customize-hook={RESET_HOOK}", settings.suite, str(target)]
    return cmd + [str(s) for s in sources]


def import_command(engine: str, tarball: Path, ref: str) -> list[str]:
    change = 'CMD ["bash"]'
    if engine == "podman":
        return ["podman", "import", "--quiet", "--change", change, str(tarball), ref]
    return ["docker", "import", "--change", change, str(tarball), ref]


def has_image(engine: str, ref: str) -> bool:
    return run([engine, "image", "inspect", ref], check=False).returncode == 0


def build_base(settings: BaseSettings, say: Callable[[str], None] = print) -> list[str]:
    """Build and import the base where it is missing (or always with force); the refs made."""
    todo = [
        e
        for e in settings.engines
        if settings.force or not has_image(e, engine_ref(e, settings.tag))
    ]
    for engine in sorted(set(settings.engines) - set(todo)):
        say(f"{engine}: {engine_ref(engine, settings.tag)} is there (--force builds it again)")
    if not todo:
        return []
    sources = list(settings.sources) or machine_sources()
    if not sources:
        raise RuntimeFailure(
            "no apt sources on this machine (/etc/apt/sources.list.d/*) "
            "and none given with --sources"
        )
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(settings.source_date_epoch)}
    made = []
    with tempfile.TemporaryDirectory(prefix="hostos-base.") as work:
        tarball = Path(work) / "rootfs.tar"
        say(f"mmdebstrap {settings.suite} from {', '.join(map(str, sources))}")
        run(mmdebstrap_command(settings, sources, tarball), env=env)
        say(f"rootfs.tar: {tarball.stat().st_size / 1e6:.1f} MB")
        for engine in todo:
            ref = engine_ref(engine, settings.tag)
            run(import_command(engine, tarball, ref))
            say(f"{engine}: imported {ref}")
            made.append(ref)
    return made
