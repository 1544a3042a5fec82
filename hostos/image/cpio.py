"""A reproducible cpio archive in the "newc" format the kernel unpacks as initramfs.

Entries are sorted by path (a directory always before what it holds), owned by
root, stamped with one fixed mtime and numbered in that order, so a tree packs to
the same bytes every time.  Device nodes are written from their description, so
/dev/console needs no mknod on the build host (and a `docker export` that turned
it into an empty regular file cannot leak into the image).  Hard links are stored
as separate files: simpler, and the kernel's unpacker does not care.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

TRAILER = "TRAILER!!!"
MAGIC = b"070701"


@dataclass(frozen=True)
class Entry:
    """One archive member: a path relative to the root, without a leading slash."""

    path: str
    mode: int  # type and permission bits, as in st_mode
    data: bytes = b""  # file content, or a symlink's target
    rdev: tuple[int, int] = (0, 0)  # major, minor of a device node
    source: Path | None = None  # read the content from here at write time instead

    @property
    def size(self) -> int:
        return self.source.stat().st_size if self.source is not None else len(self.data)


def directory(path: str, perm: int = 0o755) -> Entry:
    return Entry(path, stat.S_IFDIR | perm)


def char_device(path: str, major: int, minor: int, perm: int = 0o600) -> Entry:
    return Entry(path, stat.S_IFCHR | perm, rdev=(major, minor))


def file(path: str, data: bytes, perm: int = 0o644) -> Entry:
    return Entry(path, stat.S_IFREG | perm, data)


def tree_entries(root: Path, prefix: str = "") -> Iterator[Entry]:
    """Entries for every file, directory, symlink and device under root (root itself left out).

    Ownership and times are not read: the archive normalises them.
    """
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        for name in [*dirnames, *sorted(filenames)]:
            path = base / name
            rel = prefix + path.relative_to(root).as_posix()
            info = path.lstat()
            mode = info.st_mode
            if stat.S_ISLNK(mode):
                yield Entry(rel, mode, os.readlink(path).encode())
            elif stat.S_ISREG(mode):
                yield Entry(rel, mode, source=path)
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                yield Entry(rel, mode, rdev=(os.major(info.st_rdev), os.minor(info.st_rdev)))
            else:  # directories, fifos, sockets
                yield Entry(rel, mode)


def ordered(entries: Iterable[Entry]) -> list[Entry]:
    """Sorted by path, the last of several entries for one path winning."""
    by_path = {e.path.strip("/"): e for e in entries}
    return [by_path[p] for p in sorted(by_path)]


def write(stream: BinaryIO, entries: Iterable[Entry], mtime: int) -> int:
    """Write the archive; returns its size in bytes."""
    written = 0
    for ino, entry in enumerate(ordered(entries), start=1):
        written += _member(stream, entry.path.strip("/"), entry, ino, mtime)
    written += _member(stream, TRAILER, Entry(TRAILER, 0), 0, 0)
    return written


def _member(stream: BinaryIO, name: str, entry: Entry, ino: int, mtime: int) -> int:
    encoded = name.encode() + b"\0"
    data = entry.source.read_bytes() if entry.source is not None else entry.data
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    fields = (ino, entry.mode, 0, 0, nlink, mtime, len(data), 0, 0, *entry.rdev, len(encoded), 0)
    header = MAGIC + b"".join(b"%08X" % value for value in fields)
    chunk = header + encoded
    chunk += b"\0" * (-len(chunk) % 4)
    stream.write(chunk)
    stream.write(data)
    padding = -len(data) % 4
    stream.write(b"\0" * padding)
    return len(chunk) + len(data) + padding
