"""Engine replies → Observed values and normalised events (no engine needed)."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import pytest

from hostos.backoff import Backoff
from hostos.engine.base import EngineError, ImageNotFound
from hostos.engine.docker import _loaded_names, split_archive
from hostos.engine.observe import (
    demux_frames,
    docker_inspected,
    docker_listed,
    libpod_listed,
    normalize_event,
    parse_docker_status,
)
from hostos.engine.shared import build_error, with_retries


@pytest.mark.parametrize(
    ("status", "health", "exit_code"),
    [
        ("Up 3 seconds", None, None),
        ("Up 3 seconds (healthy)", "healthy", None),
        ("Up About a minute (unhealthy)", "unhealthy", None),
        ("Up Less than a second (health: starting)", "starting", None),
        ("Up 2 hours (Paused)", None, None),
        ("Exited (0) 5 minutes ago", None, 0),
        ("Exited (137) 2 seconds ago", None, 137),
        ("Restarting (1) 3 seconds ago", None, 1),
        ("Created", None, None),
        ("Dead", None, None),
        ("Removal In Progress", None, None),
        ("", None, None),
    ],
)
def test_parse_docker_status(status: str, health: str | None, exit_code: int | None) -> None:
    assert parse_docker_status(status) == (health, exit_code)


def docker_row(**fields: Any) -> dict[str, Any]:
    return {
        "Id": "c1",
        "Names": ["/hostos-web"],
        "Image": "sha256:i1",
        "ImageID": "sha256:i1",
        "Labels": {"io.hostos.owner": "hostos", "io.hostos.unit": "web"},
        "State": "running",
        "Status": "Up 3 seconds (healthy)",
        **fields,
    }


def test_docker_listed_running() -> None:
    observed = docker_listed(docker_row())
    assert (
        observed.id,
        observed.name,
        observed.state,
        observed.health,
        observed.exit_code,
        observed.image_id,
        observed.unit,
        observed.owned,
    ) == ("c1", "hostos-web", "running", "healthy", None, "sha256:i1", "web", True)


def test_docker_listed_exited_has_exit_code_and_no_health() -> None:
    observed = docker_listed(docker_row(State="exited", Status="Exited (3) 1 second ago"))
    assert (observed.state, observed.exit_code, observed.health) == ("exited", 3, None)


def test_docker_listed_tolerates_missing_fields() -> None:
    observed = docker_listed({"Id": "c2"})
    assert (observed.name, observed.labels, observed.state, observed.image_id) == ("", {}, "", "")


def inspect_doc(state: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "Id": "c1",
        "Name": "/hostos-web",
        "Image": "sha256:i1",
        "RestartCount": 0,
        "Config": {"Labels": {"io.hostos.owner": "hostos"}},
        "State": state,
        **fields,
    }


def test_inspected_running_with_health() -> None:
    observed = docker_inspected(
        inspect_doc(
            {
                "Status": "running",
                "ExitCode": 0,
                "StartedAt": "2026-01-01T00:00:01.5Z",
                "FinishedAt": "0001-01-01T00:00:00Z",
                "Health": {"Status": "healthy"},
            }
        )
    )
    assert (
        observed.name,
        observed.state,
        observed.health,
        observed.exit_code,
        observed.started_at,
        observed.finished_at,
    ) == ("hostos-web", "running", "healthy", None, "2026-01-01T00:00:01.5Z", None)


@pytest.mark.parametrize(
    ("engine_state", "state"),
    [
        ("exited", "exited"),
        ("stopped", "exited"),
        ("configured", "created"),
        ("created", "created"),
        ("running", "running"),
        ("paused", "paused"),
    ],
)
def test_inspected_states_use_docker_names(engine_state: str, state: str) -> None:
    observed = docker_inspected(
        inspect_doc({"Status": engine_state, "ExitCode": 3, "Health": {"Status": "unhealthy"}})
    )
    assert observed.state == state
    assert observed.exit_code == (3 if state == "exited" else None)
    assert observed.health == ("unhealthy" if state == "running" else None)


def test_inspected_podman_empty_health_is_none() -> None:
    observed = docker_inspected(inspect_doc({"Status": "running", "Health": {"Status": ""}}))
    assert observed.health is None


def libpod_row(**fields: Any) -> dict[str, Any]:
    return {
        "Id": "c1",
        "Names": ["hostos-web"],
        "ImageID": "i1",
        "Labels": {},
        "State": "running",
        "Status": "",
        "ExitCode": 0,
        "StartedAt": 1767225600,
        "ExitedAt": -62135596800,
        **fields,
    }


@pytest.mark.parametrize(
    ("fields", "state", "health", "exit_code", "started", "finished"),
    [
        ({}, "running", None, None, "2026-01-01T00:00:00Z", None),
        ({"Status": "healthy"}, "running", "healthy", None, "2026-01-01T00:00:00Z", None),
        (
            {"State": "exited", "ExitCode": 3, "Status": "starting", "ExitedAt": 1767225601},
            "exited",
            None,
            3,
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:01Z",
        ),
        ({"State": "stopped", "ExitCode": 137}, "exited", None, 137, "2026-01-01T00:00:00Z", None),
        ({"State": "created", "StartedAt": -62135596800}, "created", None, None, None, None),
    ],
    ids=["running", "healthy", "exited", "stopped", "created"],
)
def test_libpod_listed(
    fields: dict[str, Any],
    state: str,
    health: str | None,
    exit_code: int | None,
    started: str | None,
    finished: str | None,
) -> None:
    observed = libpod_listed(libpod_row(**fields))
    assert (
        observed.name,
        observed.state,
        observed.health,
        observed.exit_code,
        observed.started_at,
        observed.finished_at,
    ) == ("hostos-web", state, health, exit_code, started, finished)


def test_normalize_docker_event() -> None:
    event = normalize_event(
        {
            "status": "health_status: healthy",
            "id": "c1",
            "Type": "container",
            "Action": "health_status: healthy",
            "time": 1700000000,
            "timeNano": 1700000000500000000,
            "Actor": {"ID": "c1", "Attributes": {"name": "hostos-web", "io.hostos.unit": "web"}},
        }
    )
    assert event == {
        "time": 1700000000.5,
        "type": "container",
        "action": "health_status: healthy",
        "id": "c1",
        "name": "hostos-web",
        "attributes": {"name": "hostos-web", "io.hostos.unit": "web"},
    }


@pytest.mark.parametrize(
    ("raw", "action"),
    [
        ({"Action": "died"}, "die"),
        ({"Action": "start"}, "start"),
        ({"Action": "health_status", "HealthStatus": "healthy"}, "health_status: healthy"),
        ({"status": "create"}, "create"),
    ],
)
def test_normalize_podman_actions(raw: dict[str, Any], action: str) -> None:
    assert (
        normalize_event({"Actor": {"ID": "c1", "Attributes": {}}, "time": 5, **raw})["action"]
        == action
    )


def test_normalize_event_without_nanoseconds() -> None:
    assert normalize_event({"Action": "start", "time": 1700000000})["time"] == 1700000000.0


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxI", stream, len(payload)) + payload


def test_demux_frames_across_chunk_boundaries() -> None:
    data = frame(1, b"hello\n") + frame(2, b"oops\n") + frame(1, b"")
    chunks = [data[i : i + 3] for i in range(0, len(data), 3)]
    assert list(demux_frames(chunks)) == [b"hello\n", b"oops\n", b""]


def test_demux_frames_keeps_a_truncated_tail() -> None:
    assert list(demux_frames([frame(1, b"ok") + b"\x01\x00"])) == [b"ok", b"\x01\x00"]


@pytest.mark.parametrize(
    ("archive", "want"),
    [
        ("docker-archive:/tmp/a.tar", ("docker-archive", "/tmp/a.tar")),
        ("oci-archive:/tmp/a.tar", ("oci-archive", "/tmp/a.tar")),
        ("/tmp/a.tar", (None, "/tmp/a.tar")),
    ],
)
def test_split_archive(archive: str, want: tuple[str | None, str]) -> None:
    assert split_archive(archive) == want


def test_loaded_names() -> None:
    text = "Loaded image: hostos/busybox:latest\nLoaded image ID: sha256:abc\nnoise\n"
    assert _loaded_names(text) == ["hostos/busybox:latest", "sha256:abc"]


def flaky(failures: list[Exception]) -> Callable[[], None]:
    """An attempt that raises the given errors in turn, then succeeds."""

    def attempt() -> None:
        if failures:
            raise failures.pop(0)

    return attempt


def test_with_retries_succeeds_after_transient_failures() -> None:
    lines: list[str] = []
    with_retries(
        "r:1",
        flaky([EngineError("refused"), EngineError("refused")]),
        lines.append,
        backoff=Backoff(0.0),
    )
    assert lines == [
        "pull r:1: attempt 1 failed (refused); retrying in 0s",
        "pull r:1: attempt 2 failed (refused); retrying in 0s",
    ]


def test_with_retries_gives_up_after_three_attempts() -> None:
    with pytest.raises(EngineError, match=r"^refused \(after 3 attempts\)$"):
        with_retries(
            "r:1", flaky([EngineError("refused")] * 3), lambda _: None, backoff=Backoff(0.0)
        )


def test_with_retries_does_not_retry_a_missing_image() -> None:
    failures: list[Exception] = [ImageNotFound("manifest unknown"), EngineError("x")]
    with pytest.raises(ImageNotFound):
        with_retries("r:1", flaky(failures), lambda _: None, backoff=Backoff(0.0))
    assert len(failures) == 1


def test_build_error_names_the_step_and_shows_the_output() -> None:
    message = build_error(
        "docker",
        "build t:1 from ctx",
        "Step 3/3 : RUN make",
        "The command '/bin/sh -c make' returned a non-zero code: 2",
        ["Step 3/3 : RUN make", "make: *** No rule to make target"],
    )
    assert message == (
        "docker: build t:1 from ctx failed at 'Step 3/3 : RUN make': "
        "The command '/bin/sh -c make' returned a non-zero code: 2\n"
        "make: *** No rule to make target"
    )
