"""The CLI through typer's CliRunner, and the real console script for start-up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
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


def test_a_command_imports_not_the_modules_of_the_others() -> None:
    """A command is made only when asked for (hostos.cli.app.App): the modules and option
    tables of supervise, rollout and image would cost every other command start-up time."""
    code = (
        f"import json, sys; sys.argv=['hostos', 'validate', {SITE!r}]\n"
        "from hostos.cli.main import main\n"
        "try: main()\nexcept SystemExit: pass\n"
        "print(json.dumps([m for m in sys.modules if m.startswith('hostos.cli.')]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    loaded = set(json.loads(out.splitlines()[-1]))
    assert "hostos.cli.main" in loaded
    assert not loaded & {"hostos.cli.cluster", "hostos.cli.image", "hostos.cli.supervise"}


def test_render_shows_the_spec_as_written() -> None:
    result = runner.invoke(app, ["render", SITE, "--role", "demo"])
    assert result.exit_code == 0, result.output
    web = yaml.safe_load(result.stdout)["units"][0]
    assert web["resources"] == {"memory": "32Mi", "pids": 64}
    assert web["health"]["interval"] == "2s" and web["stop_timeout"] == "2s"
    assert "privileged" not in web and "restart" not in web
    full = yaml.safe_load(runner.invoke(app, ["render", SITE, "--role", "demo", "--full"]).stdout)
    web = full["units"][0]
    assert web["privileged"] is False and web["restart"]["backoff"] == {
        "initial": "1s",
        "max": "5m",
    }


def test_render_documents_keep_every_field_in_seconds_and_bytes() -> None:
    as_yaml = runner.invoke(app, ["render", SITE, "--role", "demo", "-o", "yaml"])
    as_json = runner.invoke(app, ["render", SITE, "--role", "demo", "-o", "json"])
    assert as_yaml.exit_code == as_json.exit_code == 0
    assert yaml.safe_load(as_yaml.stdout) == json.loads(as_json.stdout)
    web = json.loads(as_json.stdout)["units"][0]
    assert web["resources"]["memory"] == 32 * 2**20 and web["stop_timeout"] == 2.0
    assert web["privileged"] is False


def test_nodes_yaml_is_the_json_document() -> None:
    as_yaml = runner.invoke(app, ["nodes", SITE, "-o", "yaml"])
    assert as_yaml.exit_code == 0
    assert yaml.safe_load(as_yaml.stdout) == json.loads(
        runner.invoke(app, ["nodes", SITE, "-o", "json"]).stdout
    )


@pytest.mark.parametrize(
    "extra",
    [
        ["--dry-run"],
        ["--node", "cn001"],
        ["--role", "demo"],
        ["--engine", "docker"],
        ["-e", "podman"],
    ],
)
def test_apply_server_refuses_the_options_of_this_machine(extra: list[str]) -> None:
    result = runner.invoke(app, ["apply", SITE, "--server", "http://127.0.0.1:9", *extra])
    assert result.exit_code == 2
    flag = {"-e": "--engine"}.get(extra[0], extra[0])
    assert result.stderr.startswith("hostos: apply --server publishes the whole site")
    assert flag in result.stderr
    assert f"use hostos diff {SITE} --server http://127.0.0.1:9" in result.stderr


def test_apply_server_takes_the_engine_from_the_environment_without_complaint(
    tmp_path: Path,
) -> None:
    """HOSTOS_ENGINE set for this machine's commands is no reason to refuse a publish: it
    gets as far as the admin token."""
    result = runner.invoke(
        app,
        [
            "apply",
            SITE,
            "--server",
            "http://127.0.0.1:9",
            "--admin-token-file",
            str(tmp_path / "none"),
        ],
        env={"HOSTOS_ENGINE": "docker", "HOSTOS_NAMESPACE": "x"},
    )
    assert result.exit_code == 2
    assert "admin token file" in result.stderr


@pytest.mark.parametrize("command", ["publish", "diff"])
def test_publish_and_diff_need_a_server(command: str) -> None:
    result = runner.invoke(app, [command, SITE], env={"HOSTOS_SERVER": ""})
    assert result.exit_code == 2
    assert result.stderr == f"hostos: {command} needs --server URL (or HOSTOS_SERVER)\n"
