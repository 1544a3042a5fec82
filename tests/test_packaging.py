"""A built wheel carries what an installed hostos needs beside its modules."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import ROOT


def test_the_wheel_carries_the_image_init_tree(tmp_path: Path) -> None:
    """`hostos image build` copies hostos/image/init/ into every image: a wheel without it
    builds images that cannot boot."""
    source = tmp_path / "src"  # a copy: building leaves build/ and *.egg-info behind
    shutil.copytree(
        ROOT / "hostos", source / "hostos", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), str(source)],
        check=True, capture_output=True, cwd=tmp_path,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("hostos-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    init = ROOT / "hostos" / "image" / "init"
    wanted = {p.relative_to(ROOT).as_posix() for p in init.rglob("*") if p.is_file()}
    assert "hostos/image/init/init" in wanted
    assert wanted <= names, sorted(wanted - names)
    assert "hostos/py.typed" in names
