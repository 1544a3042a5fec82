"""Build steps that talk to the container engine: check, build, export the root filesystem."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from hostos.engine.kind import EngineKind
from hostos.errors import RuntimeFailure
from hostos.process import run

if TYPE_CHECKING:
    from hostos.image.context import Context

DOCKER_URL = "unix:///var/run/docker.sock"
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")
BASE_IMAGE = "debian:bookworm-slim"
HOST_TOOLS = {
    "tar": "apt-get install tar",
    "zstd": "apt-get install zstd",
    "mksquashfs": "apt-get install squashfs-tools",
}


def choose_engine(kind: EngineKind) -> str:
    """docker or podman: `auto` takes docker when dockerd answers, else podman."""
    if kind != EngineKind.auto:
        return str(kind)
    from hostos.engine.probe import ping

    url = os.environ.get("DOCKER_HOST") or DOCKER_URL
    if shutil.which("docker") and ping(url) is not None:
        return "docker"
    if shutil.which("podman"):
        return "podman"
    raise RuntimeFailure(
        "no engine to build with: dockerd does not answer and podman is not "
        "installed (install podman, or start dockerd)"
    )


def check_tools(ctx: Context) -> str:
    """Named pre-flight checks, each with its own hint, all reported at once."""
    problems = []
    if os.geteuid() != 0:
        problems.append("not root: unpacking a root filesystem needs root (run with sudo)")
    tools = dict(HOST_TOOLS)
    if ctx.settings.root == "initramfs":
        del tools["mksquashfs"]
    problems += [
        f"{tool} is missing ({hint})" for tool, hint in tools.items() if shutil.which(tool) is None
    ]
    if not ctx.settings.dockerfile.is_file():
        problems.append(f"no Dockerfile at {ctx.settings.dockerfile}")
    if problems:
        raise RuntimeFailure("cannot build the host image:\n  " + "\n  ".join(problems))
    ctx.engine = choose_engine(ctx.settings.engine)
    if BASE_IMAGE in ctx.settings.dockerfile.read_text() and not _has_image(
        ctx.engine, _engine_ref(ctx.engine, BASE_IMAGE)
    ):
        raise RuntimeFailure(
            f"{ctx.engine} has no {BASE_IMAGE} and no registry may be reachable"
            f" (run: hostos image base --engine {ctx.engine})"
        )
    return ctx.engine


def _engine_ref(engine: str, tag: str) -> str:
    from hostos.image.base import engine_ref

    return engine_ref(engine, tag)


def _has_image(engine: str, ref: str) -> bool:
    return run([engine, "image", "inspect", ref], check=False).returncode == 0


def engine_build(ctx: Context) -> str:
    s = ctx.settings
    cmd = [
        ctx.engine,
        "build",
        "--file",
        str(s.dockerfile),
        "--tag",
        s.tag,
        "--build-arg",
        f"SOURCE_DATE_EPOCH={s.source_date_epoch}",
    ]
    certs = local_ca_certificates()
    if certs and not any(a.startswith("EXTRA_CA_CERTS=") for a in s.build_args):
        cmd += ["--build-arg", f"EXTRA_CA_CERTS={certs}"]
    for arg in s.build_args:
        cmd += ["--build-arg", arg]
    if s.no_cache:
        cmd.append("--no-cache")
    run([*cmd, str(s.context)])
    image_id = run([ctx.engine, "image", "inspect", "--format", "{{.Id}}", s.tag]).stdout.strip()
    ctx.image_id = image_id if ":" in image_id else f"sha256:{image_id}"  # podman: bare hex
    return ctx.image_id.removeprefix("sha256:")[:12]


def local_ca_certificates(directory: Path = LOCAL_CA_DIR) -> str:
    """The CA certificates this machine's admin added (Debian keeps them here): a site's
    TLS-inspecting proxy must be trusted inside the build too, or pip cannot reach PyPI."""
    if not directory.is_dir():
        return ""
    pems = [p.read_text().strip() for p in sorted(directory.rglob("*.crt")) if p.is_file()]
    return "\n".join(pem for pem in pems if "BEGIN CERTIFICATE" in pem)


def export_rootfs(ctx: Context) -> str:
    """The image's root filesystem, unpacked into the work directory."""
    tarball = ctx.work / "rootfs.tar"
    container = run([ctx.engine, "create", ctx.image_id, "/bin/true"]).stdout.strip()
    try:
        run([ctx.engine, "export", "--output", str(tarball), container])
    finally:
        run([ctx.engine, "rm", "--force", container], check=False)
    size = tarball.stat().st_size
    ctx.root.mkdir()
    run(
        [
            "tar",
            "--extract",
            "--file",
            str(tarball),
            "--directory",
            str(ctx.root),
            "--numeric-owner",
            "--same-permissions",
            "--same-owner",
        ]
    )
    tarball.unlink()
    ctx.sizes["exported"] = size
    return f"{size / 1e6:.1f} MB"
