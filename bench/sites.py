"""The site definitions qemu guests run (the e2e tests' and the image bench's), and the
busybox image they run it from.

No registry is reachable from a guest: the unit's image is a docker-archive written here
from the host's static busybox and read by the guest from the site itself
(`image: docker-archive:/run/hostos/site/images/busybox.tar`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import textwrap
from pathlib import Path

BUSYBOX = Path("/usr/bin/busybox")
ARCHIVE = "images/busybox.tar"
IMAGE = "docker-archive:/run/hostos/site/" + ARCHIVE  # the site's path in the guest
NODE = "e2e-node1"
ROLE = "e2e"


def _add(
    tar: tarfile.TarFile,
    name: str,
    data: bytes = b"",
    mode: int = 0o644,
    kind: bytes = tarfile.REGTYPE,
    link: str = "",
) -> None:
    info = tarfile.TarInfo(name)
    info.mode, info.type, info.linkname, info.size = mode, kind, link, len(data)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data) if data else None)


def _layer() -> bytes:
    applets = os.popen(f"{BUSYBOX} --list").read().split()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for directory in ("bin", "data", "etc", "proc", "sys", "dev", "tmp", "root", "run"):
            _add(tar, directory, mode=0o1777 if directory == "tmp" else 0o755, kind=tarfile.DIRTYPE)
        _add(tar, "bin/busybox", BUSYBOX.read_bytes(), 0o755)
        for applet in applets:
            if applet != "busybox":
                _add(tar, f"bin/{applet}", mode=0o777, kind=tarfile.SYMTYPE, link="busybox")
        _add(tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        _add(tar, "etc/group", b"root:x:0:\n")
    return out.getvalue()


def busybox_archive(path: Path, tag: str = "localhost/hostos/e2e-busybox:1") -> str:
    """Write a one-layer docker-archive of busybox to path; its image ID (config digest)."""
    layer = _layer()
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created_by": "hostos e2e: static busybox"}],
        },
        sort_keys=True,
    ).encode()
    config_id = hashlib.sha256(config).hexdigest()
    manifest = json.dumps(
        [{"Config": f"{config_id}.json", "RepoTags": [tag], "Layers": [f"{diff_id[7:]}/layer.tar"]}]
    ).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        _add(tar, f"{config_id}.json", config)
        _add(tar, f"{diff_id[7:]}", kind=tarfile.DIRTYPE, mode=0o755)
        _add(tar, f"{diff_id[7:]}/layer.tar", layer)
        _add(tar, "manifest.json", manifest)
    return "sha256:" + config_id


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())


def demo_site(site: Path, data_source: str, data_options: str, timeout: str = "20s") -> Path:
    """A role with the NFS data mount and two units: `hello` writes
    "<hostname> <date>" into /data/hello.txt (needs the mount), `tick` needs nothing."""
    busybox_archive(site / ARCHIVE)
    options = ", ".join(data_options.split(","))
    write(
        site / "nodes.yaml",
        f"""
        nodes:
          - {{name: {NODE}, role: {ROLE}}}
        """,
    )
    write(
        site / "roles" / f"{ROLE}.yaml",
        f"""
        role: {ROLE}
        mounts:
          - {{name: data, type: nfs4, source: "{data_source}", target: /data,
             options: [{options}], timeout: {timeout}}}
        units: [hello, tick]
        """,
    )
    write(
        site / "hello.yaml",
        f"""
        image: {IMAGE}
        command:
          - sh
          - -c
          - echo "$(hostname) $(date)" > /data/hello.txt && exec sleep 100000
        network: host
        mounts:
          - {{mount: data, target: /data}}
        stop_timeout: 5s
        """,
    )
    write(
        site / "tick.yaml",
        f"""
        image: {IMAGE}
        command: ["sh", "-c", "while :; do echo tick; sleep 5; done"]
        network: none
        stop_timeout: 5s
        """,
    )
    return site
