"""Build steps that pack the pruned root: /init, squashfs, cpio, zstd, boot.ipxe, manifest."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from hostos import __version__
from hostos.errors import RuntimeFailure
from hostos.image import cpio, netboot
from hostos.image.manifest import MANIFEST, build_manifest, dumps
from hostos.image.steps_prune import applet_paths, megabytes, remove, tree_size
from hostos.image.steps_prune import write_modules_list as write_list
from hostos.process import run

if TYPE_CHECKING:
    from hostos.image.context import Context

SQUASHFS = "root.squashfs"
CPIO = "initramfs.cpio"
APPENDED = "root-image.cpio"
SKIPPED_INIT_FILES = ("README*", "*.md", "__pycache__", "*.pyc")
# Merged /usr: a file for /lib/x goes to /usr/lib/x (the image's /lib is a symlink).
MERGED = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}


def write_init(ctx: Context) -> str:
    """Copy hostos/image/init/ into the root (paths kept); refuse a tree without /init."""
    source = ctx.settings.init_dir
    files = sorted(
        p for p in source.rglob("*") if p.is_file() and not _skipped(p.relative_to(source))
    )
    if not (source / "init").is_file():
        raise RuntimeFailure(
            f"{source} holds no init script: an image without /init cannot boot "
            "(this hostos install lacks its package data; reinstall it)"
        )
    for path in files:
        data = path.read_bytes()
        executable = data.startswith(b"#!") or bool(path.stat().st_mode & stat.S_IXUSR)
        _install(ctx.root / merged_usr(path.relative_to(source).as_posix()), data, executable)
    return f"{len(files)} files from {source}"


def _skipped(rel: Path) -> bool:
    return any(
        rel.match(p) or any(Path(part).match(p) for part in rel.parts) for p in SKIPPED_INIT_FILES
    )


def merged_usr(rel: str) -> str:
    """A path as it lies under merged /usr: lib/x → usr/lib/x."""
    head, sep, rest = rel.partition("/")
    return f"{MERGED[head]}{sep}{rest}" if head in MERGED else rel


def _install(path: Path, data: bytes, executable: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    path.write_bytes(data)
    path.chmod(0o755 if executable else 0o644)


def _clear_dev(root: Path) -> None:
    """/dev holds only what the archive declares (the export may carry stale files)."""
    dev = root / "dev"
    if dev.is_dir():
        for entry in dev.iterdir():
            remove(entry)
    dev.mkdir(exist_ok=True)


def make_squashfs(ctx: Context) -> str:
    ctx.sizes["root_files"] = tree_size(ctx.root)
    if ctx.settings.root != "squashfs":
        return "skipped (--root initramfs)"
    _clear_dev(ctx.root)
    image = ctx.work / SQUASHFS
    epoch = str(ctx.settings.source_date_epoch)
    run(
        [
            "mksquashfs",
            str(ctx.root),
            str(image),
            "-noappend",
            "-no-progress",
            "-quiet",
            *ctx.settings.squashfs_compression,
            "-all-root",
            "-no-xattrs",
            "-mkfs-time",
            epoch,
            "-all-time",
            epoch,
            "-p",
            "dev/console c 600 0 0 5 1",
        ]
    )
    ctx.sizes["squashfs"] = image.stat().st_size
    return f"{megabytes(ctx.sizes['root_files'])} → {megabytes(ctx.sizes['squashfs'])}"


def outer_initramfs(ctx: Context) -> str:
    """What the kernel unpacks: the outer initramfs (squashfs), or the whole root."""
    if ctx.settings.root == "initramfs":
        _clear_dev(ctx.root)
        ctx.archive = [*cpio.tree_entries(ctx.root), cpio.char_device("dev/console", 5, 1)]
        return f"{len(ctx.archive)} entries (the whole root)"
    ctx.archive = outer_entries(ctx)
    ctx.appended = root_image_entries(ctx)
    return f"{len(ctx.archive)} entries, modules: " + " ".join(
        Path(m).name.split(".")[0] for m in ctx.outer_modules
    )


def outer_entries(ctx: Context) -> list[cpio.Entry]:
    """busybox and its applets, the modules that mount the root image, /init, the image."""
    root = ctx.root
    moddir = f"usr/lib/modules/{ctx.kernel_version}"
    entries = [
        cpio.directory(d)
        for d in (
            "dev",
            "proc",
            "sys",
            "run",
            "tmp",
            "newroot",
            "etc",
            "etc/hostos",
            "usr",
            "usr/bin",
            "usr/sbin",
            "usr/lib",
            "usr/lib/modules",
            moddir,
        )
    ]
    entries += [
        cpio.Entry(name, stat.S_IFLNK | 0o777, target.encode())
        for name, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"))
    ]
    entries.append(cpio.char_device("dev/console", 5, 1))
    entries.append(
        cpio.Entry("usr/bin/busybox", stat.S_IFREG | 0o755, source=root / "usr/bin/busybox")
    )
    listing = run([str(root / "usr/bin/busybox"), "--list-full"]).stdout
    for applet in applet_paths(listing):
        target = "busybox" if applet.startswith("usr/bin/") else "../bin/busybox"
        entries.append(cpio.Entry(applet, stat.S_IFLNK | 0o777, target.encode()))
    entries.append(cpio.Entry("init", stat.S_IFREG | 0o755, source=root / "init"))
    for module in ctx.outer_modules:
        parts = Path(module).parts
        entries += [cpio.directory("/".join((moddir, *parts[:i]))) for i in range(1, len(parts))]
        entries.append(
            cpio.Entry(f"{moddir}/{module}", stat.S_IFREG | 0o644, source=root / moddir / module)
        )
    modules_list = ctx.work / "outer-modules"
    write_list(modules_list, ctx.outer_modules)
    entries.append(cpio.Entry("etc/hostos/modules", stat.S_IFREG | 0o644, source=modules_list))
    return entries


def root_image_entries(ctx: Context) -> list[cpio.Entry]:
    """The root image, in an archive of its own appended uncompressed: it is compressed
    already, and the kernel unpacks concatenated archives one after the other."""
    return [cpio.Entry(SQUASHFS, stat.S_IFREG | 0o644, source=ctx.work / SQUASHFS)]


def write_cpio(ctx: Context) -> str:
    epoch = ctx.settings.source_date_epoch
    with (ctx.work / CPIO).open("wb") as stream:
        ctx.sizes["cpio"] = cpio.write(stream, ctx.archive, epoch)
    if not ctx.appended:
        return megabytes(ctx.sizes["cpio"])
    with (ctx.work / APPENDED).open("wb") as stream:
        ctx.sizes["appended_cpio"] = cpio.write(stream, ctx.appended, epoch)
    return f"{megabytes(ctx.sizes['cpio'])} + {megabytes(ctx.sizes['appended_cpio'])} appended"


def compress(ctx: Context) -> str:
    """zstd (no timestamps in the frame; the kernel reads it: CONFIG_RD_ZSTD), then the
    uncompressed archive that holds the root image, on a 4-byte boundary."""
    ctx.out.mkdir(parents=True, exist_ok=True)
    target = ctx.output(netboot.INITRD)
    level = ctx.settings.zstd_level
    run(
        [
            "zstd",
            "--quiet",
            "--force",
            "--no-progress",
            "-T0",
            *(["--ultra"] if level > 19 else []),
            f"-{level}",
            str(ctx.work / CPIO),
            "-o",
            str(target),
        ]
    )
    (ctx.work / CPIO).unlink()
    compressed = target.stat().st_size
    appended = ctx.work / APPENDED
    if appended.exists():
        with target.open("ab") as out, appended.open("rb") as raw:
            out.write(b"\0" * (-compressed % 4))
            shutil.copyfileobj(raw, out, 1 << 20)
        appended.unlink()
    note = f"{megabytes(ctx.sizes['cpio'])} → {megabytes(compressed)}"
    return note + (
        f", {megabytes(target.stat().st_size)} with the root image" if ctx.appended else ""
    )


def write_ipxe(ctx: Context) -> str:
    shutil.copyfile(ctx.work / netboot.KERNEL, ctx.output(netboot.KERNEL))
    ctx.output(netboot.IPXE).write_text(
        netboot.image_script(ctx.kernel_version, ctx.image_id, ctx.settings.cmdline)
    )
    return ctx.settings.cmdline


def write_manifest(ctx: Context) -> str:
    root = {
        "mode": ctx.settings.root,
        **{f"{k}_bytes": v for k, v in sorted(ctx.sizes.items()) if k != "exported"},
    }
    manifest = build_manifest(
        image_id=ctx.image_id,
        files={name: ctx.output(name) for name in netboot.FILES},
        kernel_version=ctx.kernel_version,
        kernel_package=ctx.kernel_package,
        debian=ctx.debian,
        python=ctx.python,
        hostos_version=__version__,
        root=root,
    )
    ctx.output(MANIFEST).write_text(dumps(manifest))
    total = sum(f["size"] for f in manifest["files"].values())
    return f"{megabytes(total)} in all"
