"""`hostos status` from a supervisor's status API: what it serves, as the table shows it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hostos.cli.main import app
from hostos.cli.report import status_table, when
from hostos.node.status import MountStatus, NodeStatus, UnitStatus
from hostos.node.status_server import StatusServer

IMAGE = "sha256:" + "b" * 64
STATUS = NodeStatus(
    role="compute",
    generation=2,
    reconciled=2,
    engine="docker",
    units=(
        UnitStatus(
            "munge",
            role="compute",
            state="running",
            since="2024-05-01T10:00:00.123456789Z",
            image=IMAGE,
            image_ref="hostos/busybox:latest",
            container_id="0123456789abcdef",
        ),
        UnitStatus("slurmd", role="compute", state="absent", waiting="waiting for mount apps"),
    ),
    mounts=(MountStatus("apps", "failed", last_error="mount: no route to host"),),
)


@pytest.fixture
def berlin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize(
    ("rfc3339", "shown"),
    [
        ("2024-05-01T10:00:00.123456789Z", "2024-05-01 12:00:00+02:00"),  # docker's
        ("2024-01-01T10:00:00Z", "2024-01-01 11:00:00+01:00"),  # winter time
        ("2024-05-01T10:00:00+00:00", "2024-05-01 12:00:00+02:00"),
        (None, "-"),
        ("yesterday", "yesterday"),  # not a time: shown as it came
    ],
)
def test_times_are_shown_in_the_local_zone_with_it(
    berlin: None, rfc3339: str | None, shown: str
) -> None:
    assert when(rfc3339) == shown


def test_the_table_names_the_image_and_its_id(berlin: None) -> None:
    header, [munge, slurmd] = status_table(STATUS.units)
    row = dict(zip(header, munge, strict=True))
    assert row["IMAGE"] == "hostos/busybox:latest@bbbbbbbbbbbb"
    assert row["SINCE"] == "2024-05-01 12:00:00+02:00"
    assert dict(zip(header, slurmd, strict=True))["IMAGE"] == "-"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "supervisor.sock")
    server = StatusServer(path, lambda: STATUS)
    server.start()
    yield path
    server.stop()


def test_status_reads_the_supervisor(served: str, berlin: None) -> None:
    result = CliRunner().invoke(app, ["status", "--socket", served])
    assert result.exit_code == 0, result.output
    lines = [" ".join(line.split()) for line in result.output.splitlines()]
    assert lines[1] == (
        "munge compute running - 0 2024-05-01 12:00:00+02:00 "
        "hostos/busybox:latest@bbbbbbbbbbbb 0123456789ab"
    )
    assert lines[3:] == [
        "slurmd: waiting for mount apps",
        "mount apps: failed (mount: no route to host)",
    ]


def test_status_json_is_the_units_json_form(served: str) -> None:
    result = CliRunner().invoke(app, ["status", "--socket", served, "-o", "json"])
    assert result.exit_code == 0, result.output
    units = json.loads(result.output)
    assert [UnitStatus.from_json(u) for u in units] == list(STATUS.units)
    assert units[0]["image_ref"] == "hostos/busybox:latest"
