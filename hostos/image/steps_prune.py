"""Build steps that read and trim the exported root: packages, kernel, files, modules, libraries.

The rules themselves are pure and live in hostos.image.prune; these steps walk the
tree, apply them, and say how much went.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from hostos.errors import RuntimeFailure
from hostos.image import netboot, prune
from hostos.image.manifest import parse_dpkg_status, python_packages
from hostos.process import run

if TYPE_CHECKING:
    from hostos.image.context import Context

SITE_DIRS = ("usr/local/lib/python3.11/dist-packages", "usr/lib/python3/dist-packages")
PYTHON_DIRS = ("usr/lib/python3.11", "usr/local/lib/python3.11", "usr/lib/python3")
MODULES_LIST = "etc/hostos/modules"
LATER_MODULES_LIST = "etc/hostos/modules.later"
MODULE_INDEXES_KEPT = (
    "modules.dep",
    "modules.order",
    "modules.alias",
    "modules.builtin",
    "modules.softdep",
    "modules.devname",
)


def read_packages(ctx: Context) -> str:
    """Package lists for the manifest, read before pruning deletes the databases."""
    status = ctx.root / "var/lib/dpkg/status"
    ctx.debian = parse_dpkg_status(status.read_text()) if status.is_file() else []
    ctx.python = python_packages(ctx.root / d for d in SITE_DIRS)
    versions = sorted(p.name for p in (ctx.root / "usr/lib/modules").glob("*") if p.is_dir())
    if len(versions) != 1:
        raise RuntimeFailure(f"want exactly one kernel in /usr/lib/modules, found {versions}")
    ctx.kernel_version = versions[0]
    package = ctx.root / "boot/package"
    ctx.kernel_package = package.read_text().strip() if package.is_file() else ""
    return f"{len(ctx.debian)} deb, {len(ctx.python)} python, kernel {ctx.kernel_version}"


def take_kernel(ctx: Context) -> str:
    vmlinuz = ctx.root / "boot/vmlinuz"
    if not vmlinuz.is_file():
        raise RuntimeFailure(
            "the image has no /boot/vmlinuz (the Dockerfile's kernel stage puts it there)"
        )
    shutil.move(vmlinuz, ctx.work / netboot.KERNEL)
    return megabytes((ctx.work / netboot.KERNEL).stat().st_size)


def prune_files(ctx: Context) -> str:
    before = tree_size(ctx.root)
    victims = list(_dropped(ctx.root, ctx.settings.rules))
    for path in victims:
        remove(path)
    return f"{len(victims)} paths, {megabytes(before)} → {megabytes(tree_size(ctx.root))}"


def _dropped(root: Path, rules: prune.Rules) -> Iterator[Path]:
    """What the rules drop; a dropped directory is listed once, unless it holds a keep."""
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        rel_dir = base.relative_to(root).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        descend = []
        for name in sorted(dirnames):
            rel = prefix + name
            if not rules.drops(rel):
                descend.append(name)
            elif rules.keeps_below(rel) and not (base / name).is_symlink():
                descend.append(name)  # drop what is inside, but the keeps
            else:
                yield base / name
        dirnames[:] = descend
        for name in sorted(filenames):
            if rules.drops(prefix + name):
                yield base / name


def prune_python(ctx: Context) -> str:
    """Only bytecode for modules that have it (sourceless imports), stale caches removed."""
    paths = [rel for d in PYTHON_DIRS for rel in _files(ctx.root, d)]
    moves = prune.sourceless(paths, ctx.settings.rules)
    for move in moves:
        os.replace(ctx.root / move.pyc, ctx.root / move.target)
        (ctx.root / move.source).unlink()
    stale = 0
    for d in PYTHON_DIRS:
        for cache in sorted((ctx.root / d).rglob("__pycache__")):
            stale += _clean_cache(cache)
    return f"{len(moves)} modules as bytecode, {stale} stale .pyc removed"


def _clean_cache(cache: Path) -> int:
    removed = 0
    for pyc in cache.iterdir():
        module = pyc.name.split(".", 1)[0]
        if not (cache.parent / f"{module}.py").exists():
            pyc.unlink()
            removed += 1
    if not any(cache.iterdir()):
        cache.rmdir()
    return removed


def _files(root: Path, top: str) -> Iterator[str]:
    for dirpath, _, filenames in os.walk(root / top):
        rel = Path(dirpath).relative_to(root).as_posix()
        for name in filenames:
            yield f"{rel}/{name}"


def prune_modules(ctx: Context) -> str:
    """Keep the configured modules and their dependencies; rewrite the indexes for them."""
    moddir = ctx.root / "usr/lib/modules" / ctx.kernel_version
    dep_text = (moddir / "modules.dep").read_text()
    deps = prune.parse_modules_dep(dep_text)
    builtin = _read(moddir / "modules.builtin").split()
    choice = prune.select_modules(deps, ctx.settings.modules, builtin)
    later = prune.select_modules(deps, ctx.settings.later_modules, builtin)
    missing = [*choice.missing, *later.missing]
    if missing:
        raise RuntimeFailure(
            f"kernel {ctx.kernel_version} has no modules named {', '.join(missing)}"
        )
    outer = prune.select_modules(deps, prune.OUTER_MODULES, builtin)
    keep = set(choice.load_order) | set(later.load_order) | set(outer.load_order)
    dropped = 0
    for module in deps:
        if module not in keep:
            (moddir / module).unlink(missing_ok=True)
            dropped += 1
    _remove_empty_dirs(moddir)
    for index in moddir.iterdir():
        unused_index = (
            index.is_file()
            and index.name.startswith("modules.")
            and index.name not in MODULE_INDEXES_KEPT
        )
        if unused_index or index.name in ("build", "source"):
            remove(index)
    (moddir / "modules.dep").write_text(prune.filter_module_list(dep_text, keep))
    (moddir / "modules.order").write_text(
        prune.filter_module_list(_read(moddir / "modules.order"), keep)
    )
    (moddir / "modules.alias").write_text(
        prune.filter_modules_alias(_read(moddir / "modules.alias"), keep)
    )
    ctx.modules = choice.load_order
    ctx.later_modules = [m for m in later.load_order if m not in set(choice.load_order)]
    ctx.outer_modules = outer.load_order
    write_modules_list(ctx.root / MODULES_LIST, ctx.modules)
    write_modules_list(ctx.root / LATER_MODULES_LIST, ctx.later_modules)
    return f"kept {len(keep)}, dropped {dropped} ({megabytes(tree_size(moddir))})"


def write_modules_list(path: Path, modules: list[str]) -> None:
    """/etc/hostos/modules: what /init loads with insmod, in this order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# Written by hostos image build: modules /init loads, dependencies first.\n"
    path.write_text(header + "".join(m + "\n" for m in modules))


def _read(path: Path) -> str:
    return path.read_text() if path.is_file() else ""


def _remove_empty_dirs(top: Path) -> None:
    for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
        path = Path(dirpath)
        if path != top and not any(path.iterdir()):
            path.rmdir()


def prune_libraries(ctx: Context) -> str:
    """Drop the shared libraries that no kept program, module or library needs."""
    rules = ctx.settings.rules
    elves = {}
    for rel, path in _regular_files(ctx.root):
        with path.open("rb") as stream:
            if stream.read(4) != prune.ELF_MAGIC:
                continue
        elf = prune.read_elf(path.read_bytes())
        if elf is not None:
            elves[rel] = elf
    in_lib_dir = {rel for rel in elves if rel.rpartition("/")[0] in prune.LIB_DIRS}
    dlopened = {rel for rel in elves if any(prune.glob_regex(g).match(rel) for g in rules.dlopened)}
    roots = (set(elves) - in_lib_dir) | dlopened
    needed = prune.library_closure(elves, roots) | dlopened
    victims = sorted(in_lib_dir - needed)
    for rel in victims:
        (ctx.root / rel).unlink()
    dangling = _remove_dangling_links(ctx.root, (*prune.LIB_DIRS, *prune.BIN_DIRS))
    return f"{len(victims)} libraries and {dangling} dangling links removed"


def _regular_files(root: Path) -> Iterator[tuple[str, Path]]:
    for dirpath, _, filenames in os.walk(root):
        base = Path(dirpath)
        for name in filenames:
            path = base / name
            if path.is_file() and not path.is_symlink():
                yield path.relative_to(root).as_posix(), path


def _remove_dangling_links(root: Path, dirs: tuple[str, ...]) -> int:
    removed = 0
    for d in dirs:
        top = root / d
        if not top.is_dir() or top.is_symlink():
            continue
        for path in sorted(top.iterdir()):
            if path.is_symlink() and resolve_inside(root, path) is None:
                path.unlink()
                removed += 1
    return removed


def resolve_inside(root: Path, link: Path) -> Path | None:
    """Where a path inside the root leads, symlinks read as the node would; None if nowhere."""
    parts = list(link.relative_to(root).parts)
    current = root
    hops = 0
    while parts:
        part = parts.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            current = current.parent if current != root else root
            continue
        candidate = current / part
        if candidate.is_symlink():
            hops += 1
            if hops > 40:
                return None
            target = os.readlink(candidate)
            if target.startswith("/"):
                current = root
            parts = [p for p in target.split("/") if p] + parts
            continue
        if not candidate.exists():
            return None
        current = candidate
    return current


def busybox_links(ctx: Context) -> str:
    """busybox applets stand in for every command the pruning took away."""
    busybox = ctx.root / "usr/bin/busybox"
    if not busybox.is_file():
        raise RuntimeFailure("the image has no /usr/bin/busybox (install busybox-static)")
    made = 0
    for applet in applet_paths(run([str(busybox), "--list-full"]).stdout):
        path = ctx.root / applet
        if path.exists() or path.is_symlink():
            continue
        path.symlink_to("busybox" if applet.startswith("usr/bin/") else "../bin/busybox")
        made += 1
    return f"{made} applets"


def applet_paths(listing: str) -> list[str]:
    """`busybox --list-full` as paths under merged /usr: bin/sh → usr/bin/sh."""
    paths = []
    for line in listing.split():
        head, _, name = line.strip("/").rpartition("/")
        if name == "busybox":
            continue  # Debian's list names busybox itself: never a link to itself
        if head in ("bin", "usr/bin"):
            paths.append(f"usr/bin/{name}")
        elif head in ("sbin", "usr/sbin"):
            paths.append(f"usr/sbin/{name}")
    return sorted(set(paths))


def tree_size(top: Path) -> int:
    """Bytes in the regular files under top."""
    return sum(path.stat().st_size for _, path in _regular_files(top))


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
