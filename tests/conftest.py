from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_SITE = ROOT / "units"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A writable copy of the example site."""
    target = tmp_path / "site"
    shutil.copytree(EXAMPLE_SITE, target)
    return target


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
