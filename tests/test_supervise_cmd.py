"""The typer-free `hostos supervise` parser: the same options as the typer command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer

from hostos import cli
from hostos.supervise_cmd import Args, parse, parser


def _typer_options() -> set[str]:
    command = typer.main.get_command(cli.app).commands["supervise"]  # type: ignore[attr-defined]
    return {name for param in command.params for name in param.opts if name.startswith("-")}


def _argparse_options() -> set[str]:
    return {name for action in parser()._actions for name in action.option_strings
            if name not in ("-h", "--help")}


def test_both_parsers_take_the_same_options() -> None:
    assert _argparse_options() == _typer_options()


def test_parse_reads_every_option() -> None:
    args = parse(["/run/hostos/site", "--node", "cn01", "--engine", "podman",
                  "--namespace", "t", "--socket", "/run/s.sock", "--resync", "5",
                  "--podman-socket", "/run/podman/podman.sock"])
    assert args == Args("/run/hostos/site", "cn01", None, "podman", "t", "/run/s.sock", 5.0,
                        "/run/podman/podman.sock")


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOSTOS_ENGINE", raising=False)
    monkeypatch.delenv("HOSTOS_NAMESPACE", raising=False)
    assert parse(["-r", "demo"]) == Args(role="demo")
    monkeypatch.setenv("HOSTOS_ENGINE", "docker")
    monkeypatch.setenv("HOSTOS_NAMESPACE", "bench")
    assert parse(["-r", "demo"]) == Args(role="demo", engine="docker", namespace="bench")
    assert parse(["-r", "demo", "-e", "podman", "--namespace", ""]) == Args(
        role="demo", engine="podman", namespace="")


def test_bad_engine_in_the_environment_is_refused(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HOSTOS_ENGINE", "lxc")
    with pytest.raises(SystemExit) as exited:
        parse(["-r", "demo"])
    assert exited.value.code == 2
    assert "HOSTOS_ENGINE=lxc" in capsys.readouterr().err


def _hostos(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hostos", *args], capture_output=True,
                          text=True, timeout=60)


def test_supervise_needs_a_node_or_a_role() -> None:
    result = _hostos("supervise", "units")
    assert result.returncode == 2
    assert result.stderr == "hostos: give exactly one of --node or --role\n"


def test_supervise_refuses_a_bad_site_with_file_and_line(tmp_path: Path) -> None:
    site = tmp_path
    (site / "roles").mkdir()
    (site / "web.yaml").write_text("image: busybox\nrestrat: always\n")
    (site / "roles" / "r.yaml").write_text("units: [web]\n")
    result = _hostos("supervise", str(site), "--role", "r", "--engine", "docker",
                     "--namespace", "never-started")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"{site / 'web.yaml'}:2:1: restrat: "), lines
    assert lines[-1] == "1 problem"


def test_supervise_does_not_import_typer() -> None:
    code = ("import sys; sys.argv = ['hostos', 'supervise', '--help']\n"
            "from hostos.launch import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('typer' in sys.modules, 'click' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.stdout.splitlines()[-1] == "False False", result.stdout + result.stderr
