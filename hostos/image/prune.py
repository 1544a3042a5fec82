"""What the host image leaves out: pure rules over relative paths, kernel modules and ELF files.

Everything here works on relative POSIX paths ("usr/share/doc") and file contents
handed in by the caller, never on the disk, so the rules are tested as tables
(tests/image/test_image_build.py); hostos.image.steps_prune applies them to a tree.

- Path rules: globs to drop (`*` stays within one path segment, `**` spans any),
  globs to keep inside what is dropped, and the programs kept in the bin directories
  (the rest of the bin directories goes; busybox applets stand in for them).
- Python: a module compiled to `__pycache__/m.cpython-311.pyc` keeps only the bytecode,
  moved to `m.pyc` beside where `m.py` was (sourceless import), except packages whose
  source we keep for readable tracebacks (hostos itself).
- Kernel modules: a configured set plus its dependencies from modules.dep, in load order.
- Shared libraries: those some kept ELF file needs (DT_NEEDED, transitively), plus a few
  that are opened with dlopen; the other libraries go.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache

PY_TAG = "cpython-311"

BIN_DIRS = ("usr/bin", "usr/sbin", "usr/local/bin", "usr/local/sbin", "usr/games")
LIB_DIRS = ("usr/lib/x86_64-linux-gnu", "usr/lib", "usr/lib64", "usr/local/lib")

# Documentation, translations, package-manager state, and what only a full system uses.
DROP = (
    "boot",
    "home/*",
    "media",
    "mnt/*",
    "opt/*",
    "srv",
    "var/cache/*",
    "var/log/*",
    "var/lib/apt",
    "var/lib/dpkg",
    "var/lib/systemd",
    "var/lib/pam",
    "var/backups/*",
    "var/lib/ucf",
    "var/mail",
    "etc/apt",
    "etc/dpkg",
    "etc/cron.*",
    "etc/logrotate.d",
    "etc/init.d",
    "etc/rc?.d",
    "etc/systemd",
    "etc/update-motd.d",
    "etc/pam.d",
    "etc/security",
    "etc/kernel",
    "etc/selinux",
    "etc/X11",
    "etc/gss",
    "etc/gai.conf",
    "etc/profile.d",
    "usr/include",
    "usr/src",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/i18n",
    "usr/lib/locale",
    "usr/share/lintian",
    "usr/share/linda",
    "usr/share/bug",
    "usr/share/menu",
    "usr/share/bash-completion",
    "usr/share/zsh",
    "usr/share/fish",
    "usr/share/common-licenses",
    "usr/share/debconf",
    "usr/share/perl",
    "usr/share/perl5",
    "usr/share/pixmaps",
    "usr/share/gcc",
    "usr/share/gdb",
    "usr/share/dpkg",
    "usr/share/pam",
    "usr/share/pam-configs",
    "usr/share/keyrings",
    "usr/share/gnupg",
    "usr/share/polkit-1",
    "usr/share/python3",
    "usr/share/readline",
    "usr/share/tabset",
    "usr/share/terminfo",
    "usr/share/base-files",
    "usr/share/base-passwd",
    "usr/share/zoneinfo",
    "usr/share/mime",
    "usr/share/applications",
    "usr/share/systemd",
    "usr/share/dbus-1",
    "usr/share/sensible-utils",
    "usr/share/info",
    "usr/share/util-linux",
    "usr/share/binfmts",
    "usr/share/debianutils",
    "usr/lib/apt",
    "usr/lib/dpkg",
    "usr/lib/systemd",
    "usr/lib/udev",
    "usr/lib/tmpfiles.d",
    "usr/lib/sysusers.d",
    "usr/lib/mime",
    "usr/lib/python3/dist-packages/*",
    "usr/lib/x86_64-linux-gnu/perl*",
    "usr/lib/x86_64-linux-gnu/gconv",
    "usr/lib/x86_64-linux-gnu/security",
    "usr/lib/x86_64-linux-gnu/e2fsprogs",
    "usr/lib/x86_64-linux-gnu/gio",
    "usr/lib/x86_64-linux-gnu/engines-3",
    "usr/lib/x86_64-linux-gnu/ossl-modules",
    "usr/lib/x86_64-linux-gnu/libpython3*",
    "usr/libexec/podman/rootlessport",
    "usr/lib/podman/rootlessport",
    "usr/libexec/dpkg",
    "usr/libexec/coreutils",
    "usr/lib/x86_64-linux-gnu/coreutils",
    # helpers and plugins in library directories that would keep big libraries alive
    # (the krb5 plugin alone needs libcrypto, glib's helpers libgio)
    "usr/lib/x86_64-linux-gnu/krb5",
    "usr/lib/x86_64-linux-gnu/glib-2.0",
    "usr/lib/x86_64-linux-gnu/sasl2",
    "usr/lib/x86_64-linux-gnu/xtables/libebt_*",
    "usr/lib/x86_64-linux-gnu/xtables/libarpt_*",
    "usr/lib/valgrind",
    "usr/lib/terminfo",
    "usr/lib/lsb",
    "usr/lib/binfmt.d",
    "usr/games",
    "usr/share/initramfs-tools",
    "usr/share/doc-base",
    "usr/share/glib-2.0",
    "usr/share/libgcrypt20",
    "usr/share/dict",
    # Python: what a service never imports, and modules whose libraries we drop.
    "usr/lib/python3.11/test",
    "usr/lib/python3.11/idlelib",
    "usr/lib/python3.11/tkinter",
    "usr/lib/python3.11/lib2to3",
    "usr/lib/python3.11/ensurepip",
    "usr/lib/python3.11/pydoc_data",
    "usr/lib/python3.11/turtledemo",
    "usr/lib/python3.11/turtle.py",
    "usr/lib/python3.11/distutils",
    "usr/lib/python3.11/config-*",
    "usr/lib/python3.11/sqlite3",
    "usr/lib/python3.11/curses",
    "usr/lib/python3.11/dbm/gnu.py",
    "usr/lib/python3.11/__phello__",
    "usr/lib/python3.11/site-packages",
    "usr/lib/python3.11/lib-dynload/_sqlite3*",
    "usr/lib/python3.11/lib-dynload/_ssl*",
    "usr/lib/python3.11/lib-dynload/_hashlib*",
    "usr/lib/python3.11/lib-dynload/_tkinter*",
    "usr/lib/python3.11/lib-dynload/_test*",
    "usr/lib/python3.11/lib-dynload/_xxtest*",
    "usr/lib/python3.11/lib-dynload/_curses*",
    "usr/lib/python3.11/lib-dynload/_dbm*",
    "usr/lib/python3.11/lib-dynload/_gdbm*",
    "usr/lib/python3.11/lib-dynload/readline*",
    "usr/lib/python3.11/lib-dynload/_codecs_[cjkth]*",
    "usr/lib/python3.11/lib-dynload/xxlimited*",
    "usr/lib/python3.11/lib-dynload/_ctypes_test*",
    "usr/lib/python3.11/lib-dynload/audioop*",
    "usr/lib/python3.11/lib-dynload/nis*",
    "usr/lib/python3.11/lib-dynload/_crypt*",
    "usr/lib/python3.11/crypt.py",
    "usr/lib/python3.11/lib-dynload/ossaudiodev*",
    "usr/lib/python3.11/lib-dynload/_lsprof*",
    "usr/lib/python3.11/lib-dynload/_xxsubinterpreters*",
    "usr/lib/python3.11/xmlrpc",
    "usr/lib/python3.11/wsgiref",
    "usr/lib/python3.11/venv",
    "usr/lib/python3.11/pydoc.py",
    "**/__pycache__/*.opt-1.pyc",
    "**/__pycache__/*.opt-2.pyc",
    "**/*.pyi",
    # compiled speed-ups with a pure-Python twin beside them (hostos reads small YAML files,
    # and talks to podman over a unix socket: no charset detection worth 0.5 MB)
    "usr/local/lib/python3.11/dist-packages/yaml/_yaml.*.so",
    "usr/local/lib/python3.11/dist-packages/charset_normalizer/*.so",
    "usr/local/lib/python3.11/dist-packages/pydantic/v1",
    "usr/local/lib/python3.11/dist-packages/pydantic/mypy.py",
    "usr/local/lib/python3.11/dist-packages/*.dist-info/RECORD",
    "usr/local/lib/python3.11/dist-packages/*.dist-info/licenses",
    "usr/local/lib/python3.11/dist-packages/*.dist-info/LICENSE*",
)

# Kept although a DROP pattern covers them.
KEEP = (
    "usr/share/zoneinfo/UTC",
    "usr/share/zoneinfo/Etc",
    "usr/share/zoneinfo/Etc/UTC",
)

# Programs kept in BIN_DIRS (globs on the file name); the rest of those directories goes.
PROGRAMS = (
    "busybox",
    "hostos",
    "python3",
    "python3.11",
    "mount",
    "umount",
    "mountpoint",
    "podman",
    "runc",
    "conmon",
    "crun",
    "iptables",
    "iptables-nft",
    "iptables-restore",
    "iptables-save",
    "iptables-nft-restore",
    "iptables-nft-save",
    "ip6tables",
    "ip6tables-nft",
    "ip6tables-restore",
    "ip6tables-save",
    "ip6tables-nft-restore",
    "ip6tables-nft-save",
    "xtables-nft-multi",
    "nft",
    "dockerd",
    "docker",
    "containerd",
    "containerd-shim-runc-v2",
    "docker-init",
    "docker-proxy",
)

# Libraries opened with dlopen (or by the loader itself): never in a DT_NEEDED list.
DLOPENED = (
    "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so*",
    "usr/lib64/*",
    "usr/lib/x86_64-linux-gnu/libgcc_s.so*",  # glibc loads it for thread cancellation
    "usr/lib/x86_64-linux-gnu/libnss_files.so*",
    "usr/lib/x86_64-linux-gnu/libnss_dns.so*",
    "usr/lib/x86_64-linux-gnu/xtables/*",  # iptables extensions
)

# Kernel modules /init loads before it starts the supervisor: the NIC, NFS for the site and
# the role mounts, overlay for container storage, the power button.  Dependencies come from
# modules.dep.
MODULES = (
    # before anything that needs libcrc32c: it asks the crypto API for crc32c when it loads
    # (a softdep, which insmod does not follow); the generic one works on any CPU
    "crc32c_generic",
    "virtio_pci",
    "virtio_net",
    "virtio_blk",
    "virtio_console",
    "virtio_rng",
    "net_failover",
    "overlay",
    "squashfs",
    "loop",
    "nfsv4",
    "nfsv3",
    "nfs",
    "sunrpc",
    "e1000",
    "evdev",
    "button",
)

# Modules for bridge networking and published ports, which units on `network: host` or
# `none` never need: /init loads them in the background at the lowest priority once the
# supervisor runs (/etc/hostos/modules.later), and the kernel loads any of them on demand
# before that (busybox modprobe reads the kept modules.alias), so they stay off the boot's
# critical path: about a second under emulation.
LATER_MODULES = (
    "bridge",
    "veth",
    "tun",
    "nf_tables",
    "nft_compat",
    "nft_chain_nat",
    "nft_ct",
    "nft_masq",
    "nf_nat",
    "nf_conntrack",
    "x_tables",
    "xt_MASQUERADE",
    "xt_addrtype",
    "xt_comment",
    "xt_conntrack",
    "xt_mark",
    "xt_nat",
    "xt_tcpudp",
    "xt_multiport",
    "ipt_REJECT",
    "ip6t_REJECT",
    "ip_tables",
    "ip6_tables",
    "iptable_nat",
    "iptable_filter",
    "ip6table_nat",
    "ip6table_filter",
    "br_netfilter",
)

OUTER_MODULES = ("loop", "squashfs", "overlay")


@dataclass(frozen=True)
class Rules:
    """Which paths of the exported root go: drop globs, keep exceptions, kept programs."""

    drop: tuple[str, ...] = DROP
    keep: tuple[str, ...] = KEEP
    programs: tuple[str, ...] = PROGRAMS
    keep_source: tuple[str, ...] = ("usr/local/lib/python3.11/dist-packages/hostos/**",)
    dlopened: tuple[str, ...] = DLOPENED
    _compiled: dict[str, re.Pattern[str]] = field(default_factory=dict, compare=False, repr=False)

    def drops(self, path: str) -> bool:
        """Whether `path` (relative, no leading slash) goes: it or a directory above it
        matches a drop glob, and neither it nor a directory above it matches a keep glob."""
        parent, _, name = path.rpartition("/")
        if parent in BIN_DIRS and not _any(self.programs, name):
            return True
        above = _ancestors(path)
        return any(_any(self.drop, p) for p in above) and not any(_any(self.keep, p) for p in above)

    def keeps_below(self, directory: str) -> bool:
        """Whether a keep exception lies inside a dropped directory: look inside it."""
        return any(k.startswith(directory + "/") for k in self.keep)

    def keeps_source(self, path: str) -> bool:
        return _any(self.keep_source, path)


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A path glob as a regex: `*` and `?` within a segment, `**` across segments."""
    return _glob_regex(pattern)


@cache
def _glob_regex(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out.append(pattern[i : end + 1])
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _ancestors(path: str) -> list[str]:
    """ "a/b/c" -> ["a", "a/b", "a/b/c"]."""
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _any(patterns: Iterable[str], path: str) -> bool:
    return any(_glob_regex(p).match(path) for p in patterns)


# --- Python bytecode -------------------------------------------------------------------


@dataclass(frozen=True)
class PycMove:
    """Replace a module's source by its bytecode: move `pyc` to `target`, delete `source`."""

    pyc: str
    target: str
    source: str


def sourceless(paths: Iterable[str], rules: Rules = Rules()) -> list[PycMove]:
    """The moves that leave only bytecode for each module compiled in `paths`, sorted."""
    present = set(paths)
    moves = []
    suffix = f".{PY_TAG}.pyc"
    for path in present:
        head, _, name = path.rpartition("/__pycache__/")
        if not name.endswith(suffix) or not head:
            continue
        module = name[: -len(suffix)]
        source = f"{head}/{module}.py"
        if source in present and not rules.keeps_source(source):
            moves.append(PycMove(pyc=path, target=f"{head}/{module}.pyc", source=source))
    return sorted(moves, key=lambda m: m.pyc)


# --- kernel modules ----------------------------------------------------------------------


def module_name(path: str) -> str:
    """`kernel/fs/nfs/nfsv4.ko(.xz)` -> `nfsv4`; dashes and underscores are the same name."""
    name = path.rpartition("/")[2]
    name = re.sub(r"\.ko(\.(xz|gz|zst))?$", "", name)
    return name.replace("-", "_")


def parse_modules_dep(text: str) -> dict[str, list[str]]:
    """modules.dep: each module's path -> the paths it depends on."""
    deps = {}
    for line in text.splitlines():
        module, sep, rest = line.partition(":")
        if sep:
            deps[module.strip()] = rest.split()
    return deps


@dataclass(frozen=True)
class ModuleChoice:
    load_order: list[str]  # module paths, dependencies first
    builtin: list[str]  # asked for, but compiled into the kernel
    missing: list[str]  # asked for, and nowhere


def select_modules(
    deps: Mapping[str, Sequence[str]], wanted: Iterable[str], builtin: Iterable[str] = ()
) -> ModuleChoice:
    """The wanted modules and everything they need from modules.dep, in load order."""
    by_name = {module_name(path): path for path in deps}
    builtin_names = {module_name(path) for path in builtin}
    order: list[str] = []
    seen: set[str] = set()

    def visit(path: str) -> None:
        if path in seen:
            return
        seen.add(path)
        for dep in deps.get(path, ()):
            visit(dep)
        order.append(path)

    found_builtin, missing = [], []
    for name in dict.fromkeys(n.replace("-", "_") for n in wanted):
        if name in by_name:
            visit(by_name[name])
        elif name in builtin_names:
            found_builtin.append(name)
        else:
            missing.append(name)
    return ModuleChoice(order, found_builtin, missing)


def filter_module_list(text: str, keep: Iterable[str]) -> str:
    """modules.dep, modules.order and the like, with only the lines about kept modules."""
    kept = set(keep)
    lines = [line for line in text.splitlines() if line.partition(":")[0].strip() in kept]
    return "".join(line + "\n" for line in lines)


def filter_modules_alias(text: str, keep: Iterable[str]) -> str:
    """modules.alias (`alias PATTERN NAME`) with only the kept modules' aliases."""
    names = {module_name(p) for p in keep}
    lines = [
        line
        for line in text.splitlines()
        if line.startswith("#") or (line.split() and line.split()[-1].replace("-", "_") in names)
    ]
    return "".join(line + "\n" for line in lines)


# --- ELF shared libraries ---------------------------------------------------------------


@dataclass(frozen=True)
class Elf:
    """What the dynamic section of an ELF file says."""

    soname: str | None
    needed: tuple[str, ...]


ELF_MAGIC = b"\x7fELF"
PT_LOAD, PT_DYNAMIC = 1, 2
DT_NULL, DT_NEEDED, DT_STRTAB, DT_SONAME = 0, 1, 5, 14


def read_elf(data: bytes) -> Elf | None:
    """DT_NEEDED and DT_SONAME of a 64-bit little-endian ELF; None if not one or static."""
    if len(data) < 64 or data[:4] != ELF_MAGIC or data[4] != 2 or data[5] != 1:
        return None
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    loads, dynamic = [], None
    for i in range(phnum):
        start = phoff + i * phentsize
        if start + 56 > len(data):
            return None
        p_type, _, offset, vaddr, _, filesz = struct.unpack_from("<IIQQQQ", data, start)
        if p_type == PT_LOAD:
            loads.append((vaddr, offset, filesz))
        elif p_type == PT_DYNAMIC:
            dynamic = (offset, filesz)
    if dynamic is None:
        return None
    entries = _dynamic_entries(data, *dynamic)
    strtab = next((v for tag, v in entries if tag == DT_STRTAB), None)
    if strtab is None:
        return None
    base = _file_offset(loads, strtab)
    if base is None:
        return None
    needed = tuple(_string(data, base + v) for tag, v in entries if tag == DT_NEEDED)
    soname = next((_string(data, base + v) for tag, v in entries if tag == DT_SONAME), None)
    return Elf(soname, needed)


def _dynamic_entries(data: bytes, offset: int, size: int) -> list[tuple[int, int]]:
    entries = []
    for start in range(offset, min(offset + size, len(data) - 15), 16):
        tag, value = struct.unpack_from("<qQ", data, start)
        if tag == DT_NULL:
            break
        entries.append((tag, value))
    return entries


def _file_offset(loads: Sequence[tuple[int, int, int]], vaddr: int) -> int | None:
    for start, offset, size in loads:
        if start <= vaddr < start + size:
            return offset + vaddr - start
    return None


def _string(data: bytes, offset: int) -> str:
    end = data.find(b"\0", offset)
    return data[offset : end if end >= 0 else len(data)].decode(errors="replace")


def library_closure(elves: Mapping[str, Elf], roots: Iterable[str]) -> set[str]:
    """The paths of the libraries that the roots need, directly or through other libraries.

    `elves` maps each ELF file's path to what it says; a DT_NEEDED name is found by the
    SONAME of a library in LIB_DIRS (or, failing that, by its file name there).
    """
    provides: dict[str, str] = {}
    for path, elf in sorted(elves.items()):
        parent, _, name = path.rpartition("/")
        if parent in LIB_DIRS:
            provides.setdefault(name, path)
            if elf.soname:
                provides[elf.soname] = path
    needed: set[str] = set()
    todo = list(roots)
    while todo:
        found = elves.get(todo.pop())
        for soname in found.needed if found else ():
            lib = provides.get(soname)
            if lib is not None and lib not in needed:
                needed.add(lib)
                todo.append(lib)
    return needed
