"""`hostos supervise`'s option table, and the two parsers built from it: argparse (the
node's boot path, no typer) and the typer command."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from hostos.cli import supervise
from hostos.cli.main import app
from hostos.cli.options import Option, parser, values
from hostos.cli.supervise import OPTIONS, Args, parse
from hostos.engine.kind import EngineKind

EVERY_OPTION = [
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
ENVIRONMENT = ("HOSTOS_ENGINE", "HOSTOS_NAMESPACE", "HOSTOS_BOOTED_IMAGE")


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def through_typer(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> Args:
    """The Args the typer command hands to supervise."""
    seen: list[Args] = []
    monkeypatch.setattr(supervise, "supervise", lambda args: seen.append(args) or 0)
    result = CliRunner().invoke(app, ["supervise", *argv])
    assert result.exit_code == 0, result.output
    return seen[0]


def test_args_has_one_field_per_row_of_the_table() -> None:
    assert [f.name for f in fields(Args)] == [o.name for o in OPTIONS]


def test_every_row_has_help_and_its_own_flags() -> None:
    flags = [flag for o in OPTIONS for flag in o.flags]
    assert len(flags) == len(set(flags))
    assert all(o.help and o.help[0].islower() for o in OPTIONS)
    assert [o.name for o in OPTIONS if o.positional] == ["site"]


def test_parse_reads_every_option() -> None:
    assert parse(EVERY_OPTION) == Args(
        site="/run/hostos/site",
        node="cn01",
        role=None,
        engine=EngineKind.podman,
        namespace="t",
        socket="/run/s.sock",
        resync=5.0,
        podman_socket="/run/podman/podman.sock",
        server="http://s:8080",
        token_file="/run/hostos/token",
        booted_image="img-3",
        reboot_command="kill 1",
    )


@pytest.mark.parametrize(
    ("argv", "environment"),
    [
        (EVERY_OPTION, {}),
        (["-r", "demo"], {}),
        (["-r", "demo"], {"HOSTOS_ENGINE": "docker", "HOSTOS_NAMESPACE": "bench"}),
        (["-n", "cn01", "-e", "podman", "--namespace", ""], {"HOSTOS_ENGINE": "docker"}),
        (["-n", "cn01"], {"HOSTOS_BOOTED_IMAGE": "img-4"}),
        (["-n", "cn01", "--resync", "0.5"], {"HOSTOS_NAMESPACE": ""}),
    ],
)
def test_both_parsers_give_the_same_args(
    argv: list[str], environment: dict[str, str], clean_environment: pytest.MonkeyPatch
) -> None:
    for name, value in environment.items():
        clean_environment.setenv(name, value)
    assert parse(argv) == through_typer(argv, clean_environment)


def test_defaults_and_environment(clean_environment: pytest.MonkeyPatch) -> None:
    monkeypatch = clean_environment
    assert parse(["-r", "demo"]) == Args.of(role="demo")
    assert Args.of(role="demo").engine is EngineKind.auto
    assert Args.of(role="demo").resync == 60.0
    monkeypatch.setenv("HOSTOS_BOOTED_IMAGE", "img-4")
    assert parse(["-n", "cn01"]).booted_image == "img-4"
    assert parse(["-n", "cn01", "--booted-image", "img-5"]).booted_image == "img-5"
    monkeypatch.delenv("HOSTOS_BOOTED_IMAGE")
    monkeypatch.setenv("HOSTOS_ENGINE", "docker")
    monkeypatch.setenv("HOSTOS_NAMESPACE", "bench")
    assert parse(["-r", "demo"]) == Args.of(role="demo", engine="docker", namespace="bench")
    assert parse(["-r", "demo", "-e", "podman", "--namespace", ""]) == Args.of(
        role="demo", engine="podman", namespace=""
    )


def test_a_table_builds_an_argparse_parser() -> None:
    rows = (
        Option("path", "where", default=".", positional=True),
        Option("count", "how many", type=int, default=3, short="-c", env="T_COUNT"),
        Option("engine", "which", type=EngineKind, default=EngineKind.auto),
    )
    p = parser("t", "a test", rows)
    assert values(rows, vars(p.parse_args([])), {}) == {
        "path": ".",
        "count": 3,
        "engine": EngineKind.auto,
    }
    assert values(rows, vars(p.parse_args(["x", "-c", "5", "--engine", "docker"])), {}) == {
        "path": "x",
        "count": 5,
        "engine": EngineKind.docker,
    }
    assert values(rows, vars(p.parse_args([])), {"T_COUNT": "7"})["count"] == 7
    assert "how many (default 3; or $T_COUNT)" in " ".join(p.format_help().split())


def test_bad_engine_in_the_environment_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOSTOS_ENGINE", "lxc")
    with pytest.raises(SystemExit) as exited:
        parse(["-r", "demo"])
    assert exited.value.code == 2
    assert "HOSTOS_ENGINE=lxc" in capsys.readouterr().err
    assert CliRunner().invoke(app, ["supervise", "-r", "demo"]).exit_code == 2


def test_a_bad_engine_option_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(["-r", "demo", "--engine", "lxc"])
    assert exited.value.code == 2
    assert "invalid choice: 'lxc'" in capsys.readouterr().err


def test_help_from_both_paths() -> None:
    """Every row's help in `hostos supervise --help`, whichever parser answers."""
    command = typer.main.get_command(app).commands["supervise"]  # type: ignore[attr-defined]
    assert {p.name: p.help for p in command.params} == {o.name: o.help for o in OPTIONS}
    assert CliRunner().invoke(app, ["supervise", "--help"]).exit_code == 0
    argparse_help = _hostos("supervise", "--help")
    assert argparse_help.returncode == 0
    text = " ".join(argparse_help.stdout.split())
    assert all(o.help in text for o in OPTIONS), text


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
