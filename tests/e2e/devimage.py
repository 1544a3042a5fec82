"""A small hand-made initramfs for booting /init under qemu without the full host image:
static busybox, hostos/image/init/, the kernel modules /init loads, and a stand-in for
`hostos` (a shell script).  It boots in seconds, so the e2e tests of /init itself (network,
site, power-off, rescue, the squashfs root) do not need `hostos image build`.

The kernel is Debian's, fetched once with `apt-get download` into a cache directory.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hostos.image import cpio

ROOT = Path(__file__).resolve().parents[2]
INIT_TREE = ROOT / "hostos" / "image" / "init"
BUSYBOX = Path("/usr/bin/busybox")
CACHE = Path(os.environ.get("HOSTOS_E2E_CACHE", "/var/cache/hostos/e2e"))
# In load order for each; dependencies come from modprobe --show-depends.
MODULES = ("virtio_pci", "virtio_net", "evdev", "button", "nfsv4", "overlay")
OUTER_MODULES = ("loop", "squashfs", "overlay")


@dataclass(frozen=True)
class Kernel:
    version: str
    root: Path  # holds boot/vmlinuz-VERSION and lib/modules/VERSION

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.version}"

    @property
    def modules(self) -> Path:
        return self.root / "lib" / "modules" / self.version


def kernel_package() -> str:
    out = subprocess.run(
        ["apt-cache", "depends", "linux-image-amd64"], check=True, capture_output=True, text=True
    ).stdout
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Depends: linux-image-"):
            return line.split(": ", 1)[1]
    raise RuntimeError("apt-cache knows no linux-image-amd64 dependency")


def ensure_kernel(cache: Path = CACHE) -> Kernel:
    """Debian's kernel, unpacked (not installed) under the cache, with modules.dep."""
    package = kernel_package()
    version = package.removeprefix("linux-image-")
    root = cache / package
    if not (root / "lib" / "modules" / version / "modules.dep").is_file():
        download = cache / "download"
        shutil.rmtree(download, ignore_errors=True)
        download.mkdir(parents=True)
        subprocess.run(
            ["apt-get", "download", package], cwd=download, check=True, capture_output=True
        )
        deb = next(download.glob("*.deb"))
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        subprocess.run(["depmod", "-b", str(root), version], check=True)
        shutil.rmtree(download)
    return Kernel(version, root)


def module_order(kernel: Kernel, names: tuple[str, ...]) -> list[str]:
    """Module paths relative to lib/modules/VERSION, dependencies first, each once."""
    order: list[str] = []
    for name in names:
        out = subprocess.run(
            ["modprobe", "-d", str(kernel.root), "-S", kernel.version, "--show-depends", name],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        for line in out.splitlines():
            words = line.split()
            if words[:1] == ["insmod"]:
                rel = str(Path(words[1]).relative_to(kernel.modules))
                if rel not in order:
                    order.append(rel)
    return order


def _busybox_entries() -> list[cpio.Entry]:
    entries = [cpio.directory(d) for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin")]
    entries.append(cpio.Entry("bin/busybox", stat.S_IFREG | 0o755, source=BUSYBOX))
    listing = subprocess.run(
        [str(BUSYBOX), "--list-full"], check=True, capture_output=True, text=True
    ).stdout
    for path in listing.split():
        if path != "bin/busybox":
            target = os.path.relpath("bin/busybox", os.path.dirname(path))
            entries.append(cpio.Entry(path, stat.S_IFLNK | 0o777, target.encode()))
    return entries


def _base_entries() -> list[cpio.Entry]:
    dirs = ("dev", "proc", "sys", "run", "tmp", "root", "etc", "var", "var/lib", "mnt")
    return [
        *(cpio.directory(d) for d in dirs),
        cpio.char_device("dev/console", 5, 1),
        cpio.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
        cpio.file("etc/group", b"root:x:0:\n"),
        cpio.file("etc/hosts", b"127.0.0.1 localhost\n"),
    ]


def _module_entries(kernel: Kernel, order: list[str]) -> list[cpio.Entry]:
    base = f"lib/modules/{kernel.version}"
    entries = [cpio.directory("lib"), cpio.directory("lib/modules"), cpio.directory(base)]
    for rel in order:
        parts = Path(rel).parts
        for i in range(1, len(parts)):
            entries.append(cpio.directory(f"{base}/{'/'.join(parts[:i])}"))
        entries.append(
            cpio.Entry(f"{base}/{rel}", stat.S_IFREG | 0o644, source=kernel.modules / rel)
        )
    listing = "".join(line + "\n" for line in order).encode()
    entries += [cpio.directory("etc/hostos"), cpio.file("etc/hostos/modules", listing)]
    return entries


STUB_HOSTOS = """#!/bin/busybox sh
# A stand-in for `hostos supervise` in the hand-made initramfs: it shows what /init gave it,
# writes a line into the NFS data export when the site asks for one (stub-data file), exits
# once when asked (stub-exit: the status), and idles until SIGTERM, as the supervisor does.
echo "stub-supervisor: $*"
echo "stub-supervisor: site holds $(ls /run/hostos/site | tr '\\n' ' ')"
trap 'echo "stub-supervisor: stopping"; exit 0' TERM
if [ -f /run/hostos/site/stub-exit ] && [ ! -f /run/stub-exited ]; then
    touch /run/stub-exited
    read -r code < /run/hostos/site/stub-exit
    echo "stub-supervisor: exiting with $code"
    exit "$code"
fi
if [ -f /run/hostos/site/stub-data ]; then
    read -r source options < /run/hostos/site/stub-data
    mkdir -p /data
    if mount -t nfs -o "$options" "$source" /data; then
        echo "$(hostname) $(date)" > /data/hello.txt &&
            echo "stub-supervisor: wrote /data/hello.txt"
    else
        echo "stub-supervisor: cannot mount $source"
    fi
fi
while :; do sleep 1 & wait $!; done
"""


def build(
    kernel: Kernel, out: Path, *, squashfs: bool = False, extra: dict[str, bytes] | None = None
) -> Path:
    """Pack the initramfs (gzip) to out.  squashfs=True packs the root as /root.squashfs in
    an outer initramfs, as the image build does."""
    root_entries = [
        *_base_entries(),
        *_busybox_entries(),
        *cpio.tree_entries(INIT_TREE),
        *_module_entries(kernel, module_order(kernel, MODULES)),
        cpio.directory("usr/local"),
        cpio.directory("usr/local/bin"),
        cpio.file("usr/local/bin/hostos", STUB_HOSTOS.encode(), 0o755),
    ]
    root_entries += [cpio.file(path, data) for path, data in (extra or {}).items()]
    entries = _outer_entries(kernel, root_entries, out.parent) if squashfs else root_entries
    raw = io.BytesIO()
    cpio.write(raw, entries, mtime=0)
    out.write_bytes(gzip.compress(raw.getvalue(), compresslevel=1, mtime=0))
    return out


def _outer_entries(kernel: Kernel, root_entries: list[cpio.Entry], work: Path) -> list[cpio.Entry]:
    """A squashfs of the root, inside an initramfs with busybox, /init and the outer modules."""
    tree = work / "squashfs-root"
    shutil.rmtree(tree, ignore_errors=True)
    raw = io.BytesIO()
    cpio.write(raw, root_entries, mtime=0)
    tree.mkdir()
    subprocess.run(
        ["cpio", "-idm", "--quiet", "--no-absolute-filenames"],
        cwd=tree,
        input=raw.getvalue(),
        check=True,
    )
    image = work / "root.squashfs"
    image.unlink(missing_ok=True)
    subprocess.run(
        ["mksquashfs", str(tree), str(image), "-comp", "zstd", "-noappend", "-quiet", "-all-root"],
        check=True,
        capture_output=True,
    )
    shutil.rmtree(tree)
    return [
        *_base_entries(),
        *_busybox_entries(),
        cpio.Entry("init", stat.S_IFREG | 0o755, source=INIT_TREE / "init"),
        *_module_entries(kernel, module_order(kernel, OUTER_MODULES)),
        cpio.Entry("root.squashfs", stat.S_IFREG | 0o644, source=image),
    ]
