"""`hostos serve` and `hostos tokens` options: bad ones exit 2 with one line, before any
server starts; `hostos --help` imports none of the server's libraries."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hostos.cli.main import app
from hostos.cluster.server.serve import BadOption, parse_listen

runner = CliRunner()
SERVER_MODULES = ("fastapi", "uvicorn", "starlette", "httpx", "etcd3gw")


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "admin-token"
    path.write_text("s3cret\n")
    return path


BAD = [
    (["--store", "bogus://x"], "--store: unsupported store URL 'bogus://x'"),
    (["--store", "sqlite://relative.db"], "--store: bad SQLite store URL"),
    (["--store", "etcd://nohost"], "--store: bad etcd store URL"),
    (["--listen", "8080"], "--listen '8080': expected HOST:PORT"),
    (["--listen", "0.0.0.0:99999"], "--listen '0.0.0.0:99999': expected HOST:PORT"),
    (["--images", "/nonexistent/images"], "--images /nonexistent/images: not a directory"),
    (["--public-url", "10.0.0.1:8080"], "--public-url '10.0.0.1:8080': expected http://"),
    (["--heartbeat-rate", "0"], "--heartbeat-rate 0: expected heartbeats a second above 0"),
    (["--drain-hooks", "/nonexistent/hooks"], "--drain-hooks /nonexistent/hooks: not a directory"),
    (["--drain-interval", "0"], "--drain-interval 0: expected seconds from 0.1 to 3600"),
    (["--drain-interval", "nan"], "--drain-interval nan: expected seconds from 0.1 to 3600"),
]


@pytest.mark.parametrize(("args", "message"), BAD)
def test_bad_serve_options_exit_2_with_one_line(
    args: list[str], message: str, token_file: Path, tmp_path: Path
) -> None:
    store = ["--store", f"sqlite://{tmp_path / 'c.db'}"] if "--store" not in args else []
    result = runner.invoke(app, ["serve", "--admin-token-file", str(token_file), *store, *args])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"hostos: {message}"), result.stderr


def test_missing_admin_token_file(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "serve",
            "--store",
            f"sqlite://{tmp_path / 'c.db'}",
            "--admin-token-file",
            str(tmp_path / "none"),
        ],
    )
    assert result.exit_code == 2
    assert (
        result.stderr == f"hostos: admin token file {tmp_path / 'none'}: "
        "No such file or directory\n"
    )


def test_bogus_store_from_the_real_command(token_file: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hostos",
            "serve",
            "--store",
            "bogus://x",
            "--admin-token-file",
            str(token_file),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "hostos: --store: unsupported store URL 'bogus://x': use sqlite:///PATH or "
        "etcd://HOST:PORT[/prefix]"
    ]


def test_a_port_in_use_is_refused_before_anything_starts(token_file: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(
            app,
            [
                "serve",
                "--listen",
                f"127.0.0.1:{port}",
                "--store",
                f"sqlite://{tmp_path / 'c.db'}",
                "--admin-token-file",
                str(token_file),
            ],
        )
    assert result.exit_code == 2
    assert result.stderr == f"hostos: --listen 127.0.0.1:{port}: Address already in use\n"


def test_tokens_issue_needs_the_admin_token(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "tokens",
            "issue",
            "cn001",
            "--server",
            "http://127.0.0.1:1",
            "--admin-token-file",
            str(tmp_path / "none"),
        ],
    )
    assert result.exit_code == 2
    assert "admin token file" in result.stderr


def test_tokens_issue_without_a_server_is_a_runtime_failure(token_file: Path) -> None:
    result = runner.invoke(
        app,
        [
            "tokens",
            "issue",
            "cn001",
            "--server",
            "http://127.0.0.1:1",
            "--admin-token-file",
            str(token_file),
        ],
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("hostos: http://127.0.0.1:1: ")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1:8080", "127.0.0.1", 8080),
        (":9000", "0.0.0.0", 9000),
        ("[::1]:8080", "::1", 8080),
        ("localhost:1", "localhost", 1),
    ],
)
def test_parse_listen(text: str, host: str, port: int) -> None:
    assert parse_listen(text) == (host, port)


@pytest.mark.parametrize("text", ["", "8080", "host:", "host:0", "host:http"])
def test_parse_listen_refuses(text: str) -> None:
    with pytest.raises(BadOption):
        parse_listen(text)


def test_help_imports_no_server_library() -> None:
    code = (
        "import sys; sys.argv=['hostos','--help']\n"
        "from hostos.cli.main import main\n"
        "try: main()\nexcept SystemExit: pass\n"
        f"print('LOADED', sorted(m for m in {SERVER_MODULES!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "LOADED []" in out
    assert "serve" in out and "tokens" in out


@pytest.mark.parametrize("command", [["serve"], ["tokens", "issue"], ["tokens"]])
def test_help_of_the_server_commands(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_the_server_raises_its_open_file_limit_to_the_hard_one() -> None:
    """A fleet's connections need more than the usual soft limit of 1,024."""
    code = (
        "import resource; from hostos.cluster.server.serve import raise_file_limit; "
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 4096)); "
        "print(raise_file_limit(), *resource.getrlimit(resource.RLIMIT_NOFILE))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["4096", "4096", "4096"]


def test_the_server_keeps_full_collections_rare() -> None:
    code = (
        "import gc; from hostos.cluster.server.serve import quiet_gc, GC_FULL; quiet_gc(); "
        "print(gc.get_threshold()[2] == GC_FULL > 10, gc.get_freeze_count() > 1000)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "True"]
