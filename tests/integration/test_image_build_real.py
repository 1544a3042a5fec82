"""`hostos image base` and `hostos image build` on the real Docker engine.

Lean on purpose: the base image is reused when Docker has it, the engine's build cache
does the rest after the first run.  The pruned root the build leaves in --work is checked
in a chroot (Python starts, hostos answers); a second build of the same inputs (all cached)
must give the same bytes.  Booting the image is
the e2e tests' business (tests/e2e/).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hostos.image.manifest import verify

from conftest import ROOT

pytestmark = pytest.mark.integration

# `hostos image …` without depending on where hostos/cli/main.py mounts the sub-app.
IMAGE_CLI = [sys.executable, "-c", "from hostos.cli.image import image_app; image_app()"]
OUTPUTS = {"vmlinuz", "initramfs.img", "boot.ipxe", "manifest.json"}
TARGET_BYTES = 32 * 1024 * 1024  # outer initramfs + root image, the budget


def image(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*IMAGE_CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    print(result.stdout, result.stderr, sep="\n")
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0:
        pytest.skip("building the host image needs root")
    for tool in ("mmdebstrap", "mksquashfs", "zstd"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (scripts/setup installs it)")
    image("base", "--engine", "docker", timeout=600)
    top = tmp_path_factory.mktemp("image")
    image(
        "build",
        "--engine",
        "docker",
        "--out",
        str(top / "out"),
        "--work",
        str(top / "work"),
        timeout=1800,
    )
    return top


def test_build_writes_the_four_files_and_a_matching_manifest(built: Path) -> None:
    out = built / "out"
    assert {p.name for p in out.iterdir()} == OUTPUTS
    assert verify(out) == []
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["image_id"].startswith("sha256:")
    assert manifest["kernel"]["version"].endswith("-amd64")
    debian = [p.split()[0] for p in manifest["packages"]["debian"]]
    python = [p.split()[0].lower() for p in manifest["packages"]["python"]]
    assert {"podman", "crun", "busybox-static", "python3"} <= set(debian)
    assert {"hostos", "pydantic", "podman"} <= set(python)
    assert "docker" not in python  # podman-only image: no docker-py
    sizes = {name: entry["size"] for name, entry in manifest["files"].items()}
    print(f"sizes: {sizes}, total {sum(sizes.values()) / 1e6:.1f} MB, root: {manifest['root']}")
    assert sizes["initramfs.img"] <= TARGET_BYTES
    ipxe = (out / "boot.ipxe").read_text()
    assert ipxe.startswith("#!ipxe\n") and "initrd initramfs.img" in ipxe


def test_the_same_inputs_build_the_same_bytes(built: Path) -> None:
    again = built / "again"
    image("build", "--engine", "docker", "--out", str(again), timeout=1800)
    first = json.loads((built / "out/manifest.json").read_text())
    second = json.loads((again / "manifest.json").read_text())
    if first["image_id"] != second["image_id"]:
        pytest.skip("the sources changed between the two builds")
    assert second["files"] == first["files"]


def test_the_pruned_root_runs_python_and_hostos(built: Path) -> None:
    root = built / "work/root"
    assert (root / "init").is_file() and os.access(root / "init", os.X_OK)
    assert not (root / "usr/share/doc").exists()
    assert not (root / "var/lib/dpkg").exists()
    help_text = subprocess.run(
        ["chroot", str(root), "/usr/local/bin/hostos", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert help_text.returncode == 0, help_text.stderr
    assert "supervise" in help_text.stdout
    imports = subprocess.run(
        [
            "chroot",
            str(root),
            "/usr/bin/python3",
            "-c",
            "import hostos.node.supervisor, hostos.engine.podman, hostos.node.events, "
            "hostos.engine.connect",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert imports.returncode == 0, imports.stderr
    supervise = subprocess.run(
        ["chroot", str(root), "/usr/local/bin/hostos", "supervise", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert supervise.stdout.startswith("usage: hostos supervise"), supervise.stderr
    for program in ("podman", "crun", "conmon", "iptables", "mount", "sh", "insmod"):
        assert (
            subprocess.run(
                ["chroot", str(root), "/bin/sh", "-c", f"command -v {program}"],
                capture_output=True,
                timeout=30,
            ).returncode
            == 0
        ), program
