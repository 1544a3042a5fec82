"""The CLI through typer's CliRunner, and the real console script for start-up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml
from typer.testing import CliRunner

from hostos import __version__
from hostos.cli.main import app

from conftest import EXAMPLE_SITE, write

runner = CliRunner()
SITE = str(EXAMPLE_SITE)


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"hostos {__version__}"


def test_validate_example_site() -> None:
    result = runner.invoke(app, ["validate", SITE])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output


def test_validate_bad_site_exits_2_with_one_line_per_problem(site: Path) -> None:
    write(site / "demo-web.yaml", "name: demo-web\nimage: Bad Image\nport: [80]\n")
    result = runner.invoke(app, ["validate", str(site)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == "2 problems"
    assert lines[0].endswith("demo-web.yaml:2:1: image: 'Bad Image' contains spaces")
    assert lines[1].endswith("demo-web.yaml:3:1: port: unknown key (did you mean 'ports'?)")
    assert "Traceback" not in result.output


def test_render_node_json_has_a_hash_per_unit() -> None:
    result = runner.invoke(app, ["render", SITE, "--node", "cn001", "-o", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["node"] == "cn001" and doc["role"] == "compute"
    assert doc["units"][0]["name"] == "munge"
    assert all(len(u["hash"]) == 64 for u in doc["units"])


def test_render_role_yaml() -> None:
    result = runner.invoke(app, ["render", SITE, "--role", "demo"])
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load(result.stdout)
    assert [u["name"] for u in doc["units"]] == ["demo-web", "demo-heartbeat"]


def test_render_needs_exactly_one_target() -> None:
    assert runner.invoke(app, ["render", SITE]).exit_code == 2
    both = runner.invoke(app, ["render", SITE, "--node", "cn001", "--role", "demo"])
    assert both.exit_code == 2
    assert "exactly one of --node or --role" in both.stderr


def test_render_unknown_node_is_bad_input() -> None:
    result = runner.invoke(app, ["render", SITE, "--node", "cn999"])
    assert result.exit_code == 2
    assert "unknown node 'cn999'" in result.stderr


def test_nodes_json_and_table() -> None:
    result = runner.invoke(app, ["nodes", SITE, "-o", "json"])
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert {"name": "stor01", "role": "storage", "mac": "52:54:00:12:34:56", "labels": {}} in rows
    table = runner.invoke(app, ["nodes", SITE]).stdout.splitlines()
    assert table[0].split() == ["NODE", "ROLE", "MAC", "LABELS"]
    assert table[1].split() == ["cn001", "compute", "-", "rack=r01"]


def test_schema_kinds() -> None:
    every = json.loads(runner.invoke(app, ["schema"]).stdout)
    assert set(every) == {"unit", "role", "nodes"}
    unit = json.loads(runner.invoke(app, ["schema", "unit"]).stdout)
    assert unit["additionalProperties"] is False
    assert runner.invoke(app, ["schema", "pod"]).exit_code == 2


def test_console_script_help_starts_fast() -> None:
    code = (
        "import sys, time; t=time.perf_counter(); sys.argv=['hostos','--help']\n"
        "from hostos.cli.main import main\n"
        "try: main()\nexcept SystemExit: pass\n"
        "import sys; print('LOADED', 'pydantic' in sys.modules, 'docker' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "LOADED False False" in out  # the heavy libraries stay unimported for --help
