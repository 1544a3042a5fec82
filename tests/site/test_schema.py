"""`hostos schema` output validates the example files and rejects what the loader rejects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from hostos.site.schema import schema

from conftest import EXAMPLE_SITE

UNIT_FILES = sorted(p for p in EXAMPLE_SITE.glob("*.yaml") if p.name != "nodes.yaml")
ROLE_FILES = sorted((EXAMPLE_SITE / "roles").glob("*.yaml"))


def _check(kind: str, data: Any) -> None:
    jsonschema.validate(data, schema(kind), cls=jsonschema.Draft202012Validator)


@pytest.mark.parametrize("path", UNIT_FILES, ids=lambda p: p.name)
def test_example_units_validate(path: Path) -> None:
    _check("unit", yaml.safe_load(path.read_text()))


@pytest.mark.parametrize("path", ROLE_FILES, ids=lambda p: p.name)
def test_example_roles_validate(path: Path) -> None:
    _check("role", yaml.safe_load(path.read_text()))


def test_example_inventory_validates() -> None:
    _check("nodes", yaml.safe_load((EXAMPLE_SITE / "nodes.yaml").read_text()))


def test_there_are_example_files() -> None:
    assert len(UNIT_FILES) >= 8 and len(ROLE_FILES) >= 5


@pytest.mark.parametrize(
    "unit",
    [
        {"image": "busybox", "imgae": "x"},
        {"image": "busybox", "env": ["A=1"]},
        {"image": "busybox", "restart": "sometimes"},
        {"image": "busybox", "timeout": "soon"},
        {"image": "busybox", "stop_timeout": "soon"},
        {"image": "busybox", "ports": [{"x": 1}]},
    ],
)
def test_schema_rejects_bad_units(unit: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        _check("unit", unit)
