"""The host image build without an engine: prune rules, module and library selection,
the cpio writer, the manifest, and the reproducibility of packing."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from hostos.errors import RuntimeFailure
from hostos.image import cpio, prune
from hostos.image.base import BaseSettings, engine_ref, mmdebstrap_command
from hostos.image.context import BuildSettings, Context
from hostos.image.manifest import (
    Package,
    build_manifest,
    dumps,
    parse_dpkg_status,
    parse_metadata,
    verify,
)
from hostos.image.steps_engine import local_ca_certificates
from hostos.image.steps_pack import (
    compress,
    merged_usr,
    outer_entries,
    root_image_entries,
    write_cpio,
    write_init,
)
from hostos.image.steps_prune import _dropped, applet_paths, resolve_inside

# --- path rules -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("usr/share/doc", "usr/share/doc", True),
        ("usr/share/doc", "usr/share/doc/x", False),
        ("var/cache/*", "var/cache/apt", True),
        ("var/cache/*", "var/cache/apt/archives", False),
        (
            "**/__pycache__/*.opt-1.pyc",
            "usr/lib/python3.11/__pycache__/os.cpython-311.opt-1.pyc",
            True,
        ),
        ("**/__pycache__/*.opt-1.pyc", "__pycache__/os.cpython-311.opt-1.pyc", True),
        (
            "usr/lib/python3.11/lib-dynload/_codecs_[cjkth]*",
            "usr/lib/python3.11/lib-dynload/_codecs_jp.cpython-311-x86_64-linux-gnu.so",
            True,
        ),
        (
            "usr/lib/python3.11/lib-dynload/_codecs_[cjkth]*",
            "usr/lib/python3.11/lib-dynload/_codecs_iso2022.so",
            False,
        ),
        ("etc/rc?.d", "etc/rc2.d", True),
        ("a.b", "axb", False),
    ],
)
def test_glob(pattern: str, path: str, matches: bool) -> None:
    assert bool(prune.glob_regex(pattern).match(path)) is matches


@pytest.mark.parametrize(
    ("path", "dropped"),
    [
        ("usr/share/doc", True),
        ("usr/share/man", True),
        ("usr/share/locale", True),
        ("var/lib/dpkg", True),
        ("var/lib/apt", True),
        ("var/cache/debconf", True),
        ("usr/bin/ls", True),  # coreutils: busybox stands in
        ("usr/bin/perl", True),
        ("usr/sbin/iptables-legacy", True),
        ("usr/bin/podman", False),
        ("usr/sbin/runc", False),
        ("usr/bin/python3.11", False),
        ("usr/local/bin/hostos", False),
        ("usr/sbin/iptables", False),
        ("usr/bin/busybox", False),
        ("usr/share/zoneinfo/Europe", True),
        ("usr/share/zoneinfo/UTC", False),
        ("usr/share/containers/seccomp.json", False),
        ("etc/containers/policy.json", False),
        ("usr/lib/python3.11/json/__init__.py", False),
        ("usr/lib/python3.11/lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so", True),
        ("usr/lib/python3.11/test", True),
        ("usr/local/lib/python3.11/dist-packages/pydantic/v1", True),
        ("usr/local/lib/python3.11/dist-packages/pydantic/main.py", False),
        ("usr/libexec/podman/rootlessport", True),
        ("usr/libexec/podman/conmon", False),
        ("usr/lib/modules/6.1.0-1-amd64/kernel/fs/overlayfs/overlay.ko", False),
    ],
)
def test_rules(path: str, dropped: bool) -> None:
    assert prune.Rules().drops(path) is dropped


def _tree(root: Path, files: list[str]) -> None:
    for rel in files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)


def test_walk_drops_whole_directories_but_keeps_exceptions(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        [
            "usr/share/doc/a/copyright",
            "usr/share/zoneinfo/UTC",
            "usr/share/zoneinfo/Etc/UTC",
            "usr/share/zoneinfo/Europe/Paris",
            "usr/share/zoneinfo/zone.tab",
            "usr/bin/ls",
            "usr/bin/podman",
            "etc/hostname",
        ],
    )
    (tmp_path / "usr/bin/sh").symlink_to("dash")
    dropped = sorted(p.relative_to(tmp_path).as_posix() for p in _dropped(tmp_path, prune.Rules()))
    assert dropped == [
        "usr/bin/ls",
        "usr/bin/sh",
        "usr/share/doc",
        "usr/share/zoneinfo/Europe",
        "usr/share/zoneinfo/zone.tab",
    ]


def test_sourceless_keeps_only_bytecode_except_kept_sources() -> None:
    paths = [
        "usr/lib/python3.11/os.py",
        "usr/lib/python3.11/__pycache__/os.cpython-311.pyc",
        "usr/lib/python3.11/__pycache__/os.cpython-311.opt-1.pyc",
        "usr/lib/python3.11/orphan.py",
        "usr/local/lib/python3.11/dist-packages/hostos/cli.py",
        "usr/local/lib/python3.11/dist-packages/hostos/__pycache__/cli.cpython-311.pyc",
        "usr/lib/python3.11/__pycache__/gone.cpython-311.pyc",
    ]
    assert prune.sourceless(paths) == [
        prune.PycMove(
            pyc="usr/lib/python3.11/__pycache__/os.cpython-311.pyc",
            target="usr/lib/python3.11/os.pyc",
            source="usr/lib/python3.11/os.py",
        )
    ]


# --- kernel modules ----------------------------------------------------------------------

MODULES_DEP = """\
kernel/fs/nfs/nfsv4.ko: kernel/fs/nfs/nfs.ko kernel/net/sunrpc/sunrpc.ko kernel/fs/lockd/lockd.ko
kernel/fs/nfs/nfs.ko: kernel/fs/lockd/lockd.ko kernel/net/sunrpc/sunrpc.ko
kernel/fs/lockd/lockd.ko: kernel/net/sunrpc/sunrpc.ko
kernel/net/sunrpc/sunrpc.ko:
kernel/fs/overlayfs/overlay.ko:
kernel/drivers/block/loop.ko:
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/sound/snd.ko:
"""


def test_select_modules_in_load_order() -> None:
    deps = prune.parse_modules_dep(MODULES_DEP)
    choice = prune.select_modules(
        deps,
        ["virtio-net", "nfsv4", "overlay", "squashfs", "nope"],
        builtin=["kernel/fs/squashfs/squashfs.ko"],
    )
    assert choice.load_order == [
        "kernel/net/core/failover.ko",
        "kernel/drivers/net/net_failover.ko",
        "kernel/drivers/net/virtio_net.ko",
        "kernel/net/sunrpc/sunrpc.ko",
        "kernel/fs/lockd/lockd.ko",
        "kernel/fs/nfs/nfs.ko",
        "kernel/fs/nfs/nfsv4.ko",
        "kernel/fs/overlayfs/overlay.ko",
    ]
    assert choice.builtin == ["squashfs"]
    assert choice.missing == ["nope"]


def test_module_indexes_are_filtered() -> None:
    keep = {"kernel/fs/overlayfs/overlay.ko", "kernel/drivers/block/loop.ko"}
    assert prune.filter_module_list(MODULES_DEP, keep) == (
        "kernel/fs/overlayfs/overlay.ko:\nkernel/drivers/block/loop.ko:\n"
    )
    aliases = (
        "# Aliases\nalias fs-overlay overlay\nalias snd-card-0 snd\nalias block-major-7-* loop\n"
    )
    assert prune.filter_modules_alias(aliases, keep) == (
        "# Aliases\nalias fs-overlay overlay\nalias block-major-7-* loop\n"
    )


def test_module_name() -> None:
    assert prune.module_name("kernel/net/bridge/br_netfilter.ko.xz") == "br_netfilter"
    assert prune.module_name("kernel/crypto/crc32c-generic.ko") == "crc32c_generic"


# --- shared libraries --------------------------------------------------------------------


def test_read_elf_of_this_python() -> None:
    libc = Path("/usr/lib/x86_64-linux-gnu/libc.so.6")
    if not libc.is_file():
        pytest.skip("not a Debian x86_64 machine")
    elf = prune.read_elf(libc.read_bytes())
    assert elf is not None and elf.soname == "libc.so.6"
    assert prune.read_elf(b"#!/bin/sh\n" * 10) is None


def test_library_closure_follows_needed_names() -> None:
    lib = "usr/lib/x86_64-linux-gnu"
    elves = {
        "usr/bin/podman": prune.Elf(None, ("libgpgme.so.11", "libc.so.6")),
        f"{lib}/libgpgme.so.11.30.0": prune.Elf("libgpgme.so.11", ("libassuan.so.0",)),
        f"{lib}/libassuan.so.0.8.5": prune.Elf("libassuan.so.0", ("libc.so.6",)),
        f"{lib}/libc.so.6": prune.Elf("libc.so.6", ()),
        f"{lib}/libperl.so.5.36": prune.Elf("libperl.so.5.36", ("libc.so.6",)),
    }
    assert prune.library_closure(elves, ["usr/bin/podman"]) == {
        f"{lib}/libgpgme.so.11.30.0",
        f"{lib}/libassuan.so.0.8.5",
        f"{lib}/libc.so.6",
    }


def test_resolve_inside_reads_links_as_the_node_would(tmp_path: Path) -> None:
    _tree(tmp_path, ["usr/lib/x86_64-linux-gnu/libz.so.1.2.13"])
    (tmp_path / "lib").symlink_to("usr/lib")
    lib = tmp_path / "usr/lib/x86_64-linux-gnu"
    (lib / "libz.so.1").symlink_to("/lib/x86_64-linux-gnu/libz.so.1.2.13")
    (lib / "libgone.so.1").symlink_to("libgone.so.1.0")
    assert resolve_inside(tmp_path, lib / "libz.so.1") == lib / "libz.so.1.2.13"
    assert resolve_inside(tmp_path, lib / "libgone.so.1") is None


def test_applet_paths_under_merged_usr() -> None:
    assert applet_paths("/bin/sh\nsbin/ip\nusr/bin/awk\nlinuxrc\nbin/busybox\n") == [
        "usr/bin/awk",
        "usr/bin/sh",
        "usr/sbin/ip",
    ]
    assert merged_usr("lib/hostos/x") == "usr/lib/hostos/x"
    assert merged_usr("etc/hostos/init.conf") == "etc/hostos/init.conf"


# --- cpio --------------------------------------------------------------------------------


def read_newc(data: bytes) -> list[tuple[str, int, int, bytes, tuple[int, int]]]:
    """(name, mode, mtime, data, rdev) of each member, the trailer left out."""
    members, offset = [], 0
    while True:
        assert data[offset : offset + 6] == cpio.MAGIC
        fields = [int(data[offset + 6 + 8 * i : offset + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = fields[11], fields[6]
        name_start = offset + 110
        name = data[name_start : name_start + namesize - 1].decode()
        body = name_start + namesize + (-(110 + namesize) % 4)
        if name == cpio.TRAILER:
            return members
        members.append(
            (name, fields[1], fields[5], data[body : body + filesize], (fields[9], fields[10]))
        )
        offset = body + filesize + (-filesize % 4)


def test_cpio_is_sorted_normalised_and_declares_devices(tmp_path: Path) -> None:
    _tree(tmp_path, ["b/z", "a-b", "a/c"])
    (tmp_path / "a/link").symlink_to("c")
    os.utime(tmp_path / "b/z", (1, 1))
    entries = [
        *cpio.tree_entries(tmp_path),
        cpio.char_device("dev/console", 5, 1),
        cpio.directory("dev"),
    ]
    stream = io.BytesIO()
    size = cpio.write(stream, entries, mtime=1234)
    data = stream.getvalue()
    assert size == len(data) and size % 4 == 0
    members = read_newc(data)
    assert [m[0] for m in members] == [
        "a",
        "a-b",
        "a/c",
        "a/link",
        "b",
        "b/z",
        "dev",
        "dev/console",
    ]
    assert {m[2] for m in members} == {1234}
    by_name = {m[0]: m for m in members}
    assert by_name["a/link"][3] == b"c" and stat.S_ISLNK(by_name["a/link"][1])
    assert stat.S_ISCHR(by_name["dev/console"][1]) and by_name["dev/console"][4] == (5, 1)
    assert by_name["b/z"][3] == b"b/z"


@pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio is not installed")
def test_cpio_unpacks_with_gnu_cpio(tmp_path: Path) -> None:
    stream = io.BytesIO()
    cpio.write(
        stream,
        [
            cpio.directory("etc"),
            cpio.file("etc/x", b"hello\n"),
            cpio.Entry("etc/y", stat.S_IFLNK | 0o777, b"x"),
        ],
        mtime=0,
    )
    listing = (
        subprocess.run(
            ["cpio", "-t", "--quiet"], input=stream.getvalue(), capture_output=True, check=True
        )
        .stdout.decode()
        .split()
    )
    assert listing == ["etc", "etc/x", "etc/y"]


# --- packing twice gives the same bytes ----------------------------------------------------


def _context(tmp_path: Path, name: str) -> Context:
    work = tmp_path / name
    (work / "root").mkdir(parents=True)
    ctx = Context(BuildSettings(out=work / "out"), work)
    _tree(ctx.root, ["usr/bin/busybox", "etc/hostos/modules", "usr/lib/python3.11/os.pyc"])
    return ctx


@pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd is not installed")
def test_packing_the_same_tree_twice_gives_the_same_sha256(tmp_path: Path) -> None:
    digests = set()
    for name, mtime in (("one", 1), ("two", 2_000_000_000)):
        ctx = _context(tmp_path, name)
        for path in ctx.root.rglob("*"):
            os.utime(path, (mtime, mtime), follow_symlinks=False)
        ctx.archive = [*cpio.tree_entries(ctx.root), cpio.char_device("dev/console", 5, 1)]
        write_cpio(ctx)
        compress(ctx)
        digests.add(hashlib.sha256(ctx.output("initramfs.img").read_bytes()).hexdigest())
    assert len(digests) == 1


@pytest.mark.skipif(not Path("/usr/bin/busybox").is_file(), reason="busybox is not installed")
def test_outer_initramfs_holds_busybox_init_modules_and_the_root_image(tmp_path: Path) -> None:
    ctx = _context(tmp_path, "outer")
    shutil.copy("/usr/bin/busybox", ctx.root / "usr/bin/busybox")
    (ctx.root / "init").write_text("#!/bin/sh\n")
    moddir = ctx.root / "usr/lib/modules/6.1.0-9-amd64"
    _tree(moddir, ["kernel/drivers/block/loop.ko", "kernel/fs/squashfs/squashfs.ko"])
    (ctx.work / "root.squashfs").write_bytes(b"hsqs")
    ctx.kernel_version = "6.1.0-9-amd64"
    ctx.outer_modules = ["kernel/drivers/block/loop.ko", "kernel/fs/squashfs/squashfs.ko"]
    ctx.archive = outer_entries(ctx)
    ctx.appended = root_image_entries(ctx)
    write_cpio(ctx)
    compress(ctx)
    image = ctx.output("initramfs.img").read_bytes()
    frame = subprocess.run(["zstd", "-dc"], input=image, capture_output=True).stdout
    members = {m[0]: m for m in read_newc(frame)}
    assert stat.S_ISREG(members["usr/bin/busybox"][1]) and members["usr/bin/busybox"][3]
    assert members["usr/bin/sh"][3] == b"busybox" and members["bin"][3] == b"usr/bin"
    assert stat.S_ISCHR(members["dev/console"][1])
    assert members["etc/hostos/modules"][3].decode().splitlines()[1:] == ctx.outer_modules
    assert "usr/lib/modules/6.1.0-9-amd64/kernel/fs/squashfs/squashfs.ko" in members
    assert "root.squashfs" not in members  # it follows uncompressed, on a 4-byte boundary
    start = image.rindex(b"root.squashfs\0") - 110  # the newc header before the name
    assert start % 4 == 0
    assert [m[0] for m in read_newc(image[start:])] == ["root.squashfs"]


# --- /init ---------------------------------------------------------------------------------


def test_write_init_copies_the_init_directory(tmp_path: Path) -> None:
    init_dir = tmp_path / "init"
    _tree(init_dir, ["etc/hostos/init.conf", "lib/hostos/helper", "README.md"])
    (init_dir / "init").write_text("#!/bin/sh\nexec hostos\n")
    (init_dir / "lib/hostos/helper").write_text("#!/bin/sh\n")
    ctx = _context(tmp_path, "w")
    ctx = Context(BuildSettings(init_dir=init_dir), ctx.work)
    assert write_init(ctx) == f"3 files from {init_dir}"
    assert (ctx.root / "init").stat().st_mode & 0o777 == 0o755
    assert (ctx.root / "usr/lib/hostos/helper").stat().st_mode & 0o777 == 0o755
    assert (ctx.root / "etc/hostos/init.conf").stat().st_mode & 0o777 == 0o644
    assert not (ctx.root / "README.md").exists()


@pytest.mark.parametrize("files", [[], ["etc/hostos/init.conf"]])
def test_write_init_refuses_a_tree_without_init(tmp_path: Path, files: list[str]) -> None:
    init_dir = tmp_path / "init"
    init_dir.mkdir()
    _tree(init_dir, files)
    ctx = _context(tmp_path, "p")
    ctx = Context(BuildSettings(init_dir=init_dir), ctx.work)
    with pytest.raises(RuntimeFailure, match="holds no init script"):
        write_init(ctx)
    assert not (ctx.root / "init").exists()


# --- manifest ------------------------------------------------------------------------------

DPKG_STATUS = """\
Package: podman
Status: install ok installed
Version: 4.3.1+ds1-8+deb12u1
Description: engine
 long text: with a colon

Package: removed-one
Status: deinstall ok config-files
Version: 1.0

Package: busybox-static
Status: install ok installed
Version: 1:1.35.0-4
"""


def test_package_lists() -> None:
    assert parse_dpkg_status(DPKG_STATUS) == [
        Package("busybox-static", "1:1.35.0-4"),
        Package("podman", "4.3.1+ds1-8+deb12u1"),
    ]
    metadata = "Metadata-Version: 2.1\nName: pydantic\nVersion: 2.14.3\n\nName: not this\n"
    assert parse_metadata(metadata) == Package("pydantic", "2.14.3")
    assert parse_metadata("Metadata-Version: 2.1\n") is None


def test_manifest_checksums_and_verify(tmp_path: Path) -> None:
    (tmp_path / "vmlinuz").write_bytes(b"kernel")
    (tmp_path / "initramfs.img").write_bytes(b"initramfs")
    manifest = build_manifest(
        image_id="sha256:abc",
        files={"vmlinuz": tmp_path / "vmlinuz", "initramfs.img": tmp_path / "initramfs.img"},
        kernel_version="6.1.0-56-amd64",
        kernel_package="linux-image-6.1.0-56-amd64 6.1.192-2",
        debian=[Package("podman", "4.3.1")],
        python=[Package("hostos", "0.1.0")],
        hostos_version="0.1.0",
        root={"mode": "squashfs"},
    )
    assert manifest["files"]["vmlinuz"] == {
        "sha256": hashlib.sha256(b"kernel").hexdigest(),
        "size": 6,
    }
    assert manifest["packages"] == {"debian": ["podman 4.3.1"], "python": ["hostos 0.1.0"]}
    (tmp_path / "manifest.json").write_text(dumps(manifest))
    assert verify(tmp_path) == []
    (tmp_path / "vmlinuz").write_bytes(b"kernel!")
    assert [p.split(":")[0] for p in verify(tmp_path)] == ["vmlinuz", "vmlinuz"]


# --- base and engine helpers -----------------------------------------------------------------


def test_mmdebstrap_command_uses_the_given_sources(tmp_path: Path) -> None:
    sources = tmp_path / "debian.sources"
    cmd = mmdebstrap_command(BaseSettings(), [sources], tmp_path / "root.tar")
    assert cmd[:3] == ["mmdebstrap", "--variant=minbase", "--format=tar"]
    assert "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr" in cmd
    assert "--dpkgopt=path-exclude=/usr/share/man/*" in cmd
    assert cmd[-3:] == ["bookworm", str(tmp_path / "root.tar"), str(sources)]
    assert engine_ref("podman", "debian:bookworm-slim") == "docker.io/library/debian:bookworm-slim"
    assert engine_ref("docker", "debian:bookworm-slim") == "debian:bookworm-slim"


def test_local_ca_certificates(tmp_path: Path) -> None:
    assert local_ca_certificates(tmp_path / "none") == ""
    pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"
    (tmp_path / "b.crt").write_text(pem + "\n")
    (tmp_path / "a.crt").write_text("not a certificate")
    assert local_ca_certificates(tmp_path) == pem


def test_image_help_starts_without_heavy_imports() -> None:
    code = (
        "import sys; from hostos.cli.image import image_app; "
        "print(sorted(m for m in ('pydantic', 'docker', 'podman', 'yaml') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
