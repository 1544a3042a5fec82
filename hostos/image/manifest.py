"""manifest.json: what a host image is made of, and the checksums of its files.

Pure except for hashing files and reading the package databases of the exported
root (done before pruning deletes them).  The manifest holds only what the
inputs decide (no build time, no durations), so building the same inputs twice
gives the same manifest byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
FORMAT = 1
CHUNK = 1 << 20


@dataclass(frozen=True, order=True)
class Package:
    """An installed package: a Debian package or a Python distribution."""

    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name} {self.version}"


def parse_dpkg_status(text: str) -> list[Package]:
    """The installed packages of a dpkg status file, sorted by name."""
    packages = []
    for stanza in text.split("\n\n"):
        fields = _fields(stanza)
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            packages.append(Package(fields["Package"], fields.get("Version", "")))
    return sorted(packages)


def parse_metadata(text: str) -> Package | None:
    """Name and version from a Python distribution's METADATA (email header format)."""
    header = text.split("\n\n", 1)[0]
    fields = _fields(header)
    if "Name" not in fields or "Version" not in fields:
        return None
    return Package(fields["Name"], fields["Version"])


def _fields(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in stanza.splitlines():
        if not line or line[0].isspace() or ":" not in line:
            continue  # continuation lines (Description, Conffiles) carry nothing we need
        key, _, value = line.partition(":")
        fields.setdefault(key, value.strip())
    return fields


def python_packages(site_dirs: Iterable[Path]) -> list[Package]:
    """The Python distributions installed in these site directories, sorted."""
    found = set()
    for site in site_dirs:
        for metadata in sorted(site.glob("*.dist-info/METADATA")):
            package = parse_metadata(metadata.read_text(errors="replace"))
            if package is not None:
                found.add(package)
    return sorted(found)


def file_entry(path: Path) -> dict[str, Any]:
    """sha256 and size of one output file."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return {"sha256": digest.hexdigest(), "size": path.stat().st_size}


def build_manifest(
    *,
    image_id: str,
    files: Mapping[str, Path],
    kernel_version: str,
    kernel_package: str,
    debian: Iterable[Package],
    python: Iterable[Package],
    hostos_version: str,
    root: Mapping[str, Any],
) -> dict[str, Any]:
    """The manifest document: file checksums, kernel, packages, versions."""
    return {
        "format": FORMAT,
        "image_id": image_id,
        "hostos_version": hostos_version,
        "kernel": {"version": kernel_version, "package": kernel_package},
        "files": {name: file_entry(path) for name, path in sorted(files.items())},
        "root": dict(root),
        "packages": {
            "debian": [str(p) for p in sorted(debian)],
            "python": [str(p) for p in sorted(python)],
        },
    }


def dumps(manifest: Mapping[str, Any]) -> str:
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"


def verify(out_dir: Path) -> list[str]:
    """What does not match between manifest.json and the files beside it (empty: all good)."""
    manifest = json.loads((out_dir / MANIFEST).read_text())
    problems = []
    for name, want in sorted(manifest["files"].items()):
        path = out_dir / name
        if not path.is_file():
            problems.append(f"{name}: missing")
            continue
        got = file_entry(path)
        for key in ("size", "sha256"):
            if got[key] != want[key]:
                problems.append(f"{name}: {key} {got[key]} != {want[key]} in {MANIFEST}")
    return problems
