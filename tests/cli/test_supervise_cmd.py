"""The typer-free `hostos supervise` parser: the same options as the typer command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer

from hostos.cli import main as cli
from hostos.cli.supervise import Args, parse, parser


def _typer_options() -> set[str]:
    command = typer.main.get_command(cli.app).commands["supervise"]  # type: ignore[attr-defined]
    return {name for param in command.params for name in param.opts if name.startswith("-")}


def _argparse_options() -> set[str]:
    return {
        name
        for action in parser()._actions
        for name in action.option_strings
        if name not in ("-h", "--help")
    }


def test_both_parsers_take_the_same_options() -> None:
    assert _argparse_options() == _typer_options()


def test_parse_reads_every_option() -> None:
    args = parse(
        [
            "/run/hostos/site",
            "--node",
            "cn01",
            "--engine",
            "podman",
            "--namespace",
            "t",
            "--socket",
            "/run/s.sock",
            "--resync",
            "5",
            "--podman-socket",
            "/run/podman/podman.sock",
            "--server",
            "http://s:8080",
            "--token-file",
            "/run/hostos/token",
            "--booted-image",
            "img-3",
            "--reboot-command",
            "kill 1",
        ]
    )
    assert args == Args(
        "/run/hostos/site",
        "cn01",
        None,
        "podman",
        "t",
        "/run/s.sock",
        5.0,
        "/run/podman/podman.sock",
        "http://s:8080",
        "/run/hostos/token",
        "img-3",
        "kill 1",
    )


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOSTOS_ENGINE", raising=False)
    monkeypatch.delenv("HOSTOS_NAMESPACE", raising=False)
    monkeypatch.delenv("HOSTOS_BOOTED_IMAGE", raising=False)
    assert parse(["-r", "demo"]) == Args(role="demo")
    monkeypatch.setenv("HOSTOS_BOOTED_IMAGE", "img-4")
    assert parse(["-n", "cn01"]).booted_image == "img-4"
    assert parse(["-n", "cn01", "--booted-image", "img-5"]).booted_image == "img-5"
    monkeypatch.delenv("HOSTOS_BOOTED_IMAGE")
    monkeypatch.setenv("HOSTOS_ENGINE", "docker")
    monkeypatch.setenv("HOSTOS_NAMESPACE", "bench")
    assert parse(["-r", "demo"]) == Args(role="demo", engine="docker", namespace="bench")
    assert parse(["-r", "demo", "-e", "podman", "--namespace", ""]) == Args(
        role="demo", engine="podman", namespace=""
    )


def test_bad_engine_in_the_environment_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOSTOS_ENGINE", "lxc")
    with pytest.raises(SystemExit) as exited:
        parse(["-r", "demo"])
    assert exited.value.code == 2
    assert "HOSTOS_ENGINE=lxc" in capsys.readouterr().err


def _hostos(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hostos", *args], capture_output=True, text=True, timeout=60
    )


def test_supervise_needs_a_node_or_a_role() -> None:
    result = _hostos("supervise", "units")
    assert result.returncode == 2
    assert result.stderr == "hostos: give exactly one of --node or --role\n"


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--server", "http://127.0.0.1:9", "--role", "r"], "the server names the node's role"),
        (["--server", "http://127.0.0.1:9", "--node", "cn01"], "--server needs --token-file"),
        (
            ["--server", "http://127.0.0.1:9", "--node", "cn01", "--token-file", "/nonexistent"],
            "token file /nonexistent",
        ),
        (["--server", "ftp://x", "--node", "cn01", "--token-file", "TOKEN"], "ftp://x: expected"),
        (["--node", "cn01", "--token-file", "TOKEN"], "go with --server"),
    ],
)
def test_supervise_server_options_are_checked(tmp_path: Path, args: list[str], said: str) -> None:
    token = tmp_path / "token"
    token.write_text("hn1.cn01.secret\n")
    result = _hostos("supervise", *[str(token) if a == "TOKEN" else a for a in args])
    assert result.returncode == 2, result.stderr
    assert said in result.stderr and "secret" not in result.stderr


def test_supervise_refuses_a_bad_site_with_file_and_line(tmp_path: Path) -> None:
    site = tmp_path
    (site / "roles").mkdir()
    (site / "web.yaml").write_text("image: busybox\nrestrat: always\n")
    (site / "roles" / "r.yaml").write_text("units: [web]\n")
    result = _hostos(
        "supervise", str(site), "--role", "r", "--engine", "docker", "--namespace", "never-started"
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"{site / 'web.yaml'}:2:1: restrat: "), lines
    assert lines[-1] == "1 problem"


def test_supervise_does_not_import_typer() -> None:
    code = (
        "import sys; sys.argv = ['hostos', 'supervise', '--help']\n"
        "from hostos.cli.launch import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('typer' in sys.modules, 'click' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.splitlines()[-1] == "False False", result.stdout + result.stderr
