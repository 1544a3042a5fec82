"""hostos.process: commands are logged, and failures print a command line to paste."""

from __future__ import annotations

import logging
import shlex
import sys
import threading
import time
from pathlib import Path

import pytest

from hostos.errors import RuntimeFailure
from hostos.process import (
    CommandFailed,
    CommandTimedOut,
    run,
    run_bounded,
    run_capped,
    spawn,
    start,
)


def test_run_returns_the_output(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="hostos.process"):
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
        process = spawn(
            [sys.executable, "-c", "import os; print(os.getsid(0) == os.getpid())"],
            log_file=log_file,
        )
    assert process.wait(10) == 0
    assert out.read_text() == "True\n"
    with pytest.raises(CommandFailed, match="is not installed"):
        spawn(["hostos-no-such-tool"])


def test_run_bounded_returns_the_output_or_the_failure() -> None:
    result = run_bounded(["sh", "-c", "echo out; echo err >&2"], timeout=5)
    assert (result.returncode, result.stdout, result.stderr) == (0, "out\n", "err\n")
    with pytest.raises(CommandFailed, match="exit status 3") as caught:
        run_bounded(["sh", "-c", "echo why >&2; exit 3"], timeout=5)
    assert not isinstance(caught.value, CommandTimedOut) and "why" in str(caught.value)


def test_run_bounded_kills_the_whole_process_group_at_the_timeout(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    began = time.monotonic()
    with pytest.raises(CommandTimedOut, match=r"timed out after 0.3s"):
        run_bounded(["sh", "-c", f"sleep 30 & echo $! > {pid_file}; wait"], timeout=0.3)
    assert time.monotonic() - began < 1.5
    child = int(pid_file.read_text())
    time.sleep(0.1)
    assert (
        not Path(f"/proc/{child}").exists()
        or Path(f"/proc/{child}/stat").read_text().split()[2] == "Z"
    )


def test_run_bounded_gives_up_when_cancelled() -> None:
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    began = time.monotonic()
    with pytest.raises(CommandTimedOut, match="cancelled: sleep 30"):
        run_bounded(["sleep", "30"], timeout=30, cancel=cancel)
    assert time.monotonic() - began < 1.5


def test_start_leaves_the_waiting_to_the_caller() -> None:
    process = start(["sh", "-c", "echo said >&2; exit 2"])
    assert process.wait(10) == 2
    assert process.stderr is not None and process.stderr.read() == "said\n"


def test_run_capped_returns_any_exit_status_and_the_environment_given(tmp_path: Path) -> None:
    done = run_capped(
        ["sh", "-c", 'echo "$HOSTOS_X"; echo err >&2; exit 3'],
        timeout=5,
        env={"HOSTOS_X": "given", "PATH": "/usr/bin:/bin"},
    )
    assert (done.returncode, done.stdout, done.stderr) == (3, "given\n", "err\n")


def test_run_capped_refuses_more_output_than_its_limit() -> None:
    began = time.monotonic()
    with pytest.raises(CommandFailed, match="more than 1000 bytes of output") as caught:
        run_capped(["sh", "-c", "yes; sleep 30"], timeout=30, limit=1000)
    assert not isinstance(caught.value, CommandTimedOut)
    assert time.monotonic() - began < 5
    assert run_capped(["head", "-c", "1000", "/dev/zero"], timeout=5, limit=1000).stdout


def test_run_capped_kills_the_process_group_at_the_timeout(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    began = time.monotonic()
    with pytest.raises(CommandTimedOut, match=r"timed out after 0.3s") as caught:
        run_capped(["sh", "-c", f"sleep 30 & echo $! > {pid_file}; wait"], timeout=0.3)
    assert caught.value.why == "timed out after 0.3s"
    assert time.monotonic() - began < 2.5
    child = int(pid_file.read_text())
    time.sleep(0.1)
    assert (
        not Path(f"/proc/{child}").exists()
        or Path(f"/proc/{child}/stat").read_text().split()[2] == "Z"
    )


def test_run_capped_names_what_cannot_run(tmp_path: Path) -> None:
    with pytest.raises(CommandFailed, match="hostos-no-such-tool is not installed"):
        run_capped(["hostos-no-such-tool"], timeout=5)
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(CommandFailed, match=r"cannot run .*not-executable: Permission denied"):
        run_capped([str(script)], timeout=5)
