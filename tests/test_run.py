"""hostos.run: commands are logged, and failures print a command line to paste."""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path

import pytest

from hostos.errors import RuntimeFailure
from hostos.run import CommandFailed, run, spawn


def test_run_returns_the_output(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="hostos.run"):
        result = run(["sh", "-c", "echo out; echo err >&2"])
    assert (result.returncode, result.stdout, result.stderr) == (0, "out\n", "err\n")
    assert "run: sh -c 'echo out; echo err >&2'" in caplog.text


def test_a_failure_shows_the_command_quoted_for_a_shell_and_its_stderr() -> None:
    cmd = ["sh", "-c", "echo 'it broke' >&2; exit 4", "arg with space"]
    with pytest.raises(CommandFailed) as caught:
        run(cmd)
    message = str(caught.value)
    assert message.splitlines()[0] == f"exit status 4: {shlex.join(cmd)}"
    assert "it broke" in message
    assert isinstance(caught.value, RuntimeFailure) and caught.value.cmd == cmd


def test_check_false_returns_the_failure() -> None:
    assert run(["sh", "-c", "exit 3"], check=False).returncode == 3


def test_a_missing_program_is_named() -> None:
    with pytest.raises(CommandFailed, match="hostos-no-such-tool is not installed"):
        run(["hostos-no-such-tool", "--version"])


def test_a_timeout_is_reported() -> None:
    with pytest.raises(CommandFailed, match=r"timed out after 0.2s: sleep 5"):
        run(["sleep", "5"], timeout=0.2)


def test_spawn_runs_in_the_background_in_its_own_session(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with open(out, "wb") as log_file:
        process = spawn([sys.executable, "-c", "import os; print(os.getsid(0) == os.getpid())"],
                        log_file=log_file)
    assert process.wait(10) == 0
    assert out.read_text() == "True\n"
    with pytest.raises(CommandFailed, match="is not installed"):
        spawn(["hostos-no-such-tool"])
