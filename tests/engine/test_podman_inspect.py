"""The podman adapter asks again when an inspect meets a container that is exiting."""

from __future__ import annotations

from typing import Any

import pytest

from hostos.engine import podman
from hostos.engine.http import StatusError

RACE = "read /proc/10907/cgroup: no such process"


@pytest.mark.parametrize(
    ("status", "explanation", "retried"),
    [
        (500, RACE, True),
        (500, "read /proc/42/stat: no such process", True),
        (404, RACE, False),  # a 4xx is the caller's: asking again changes nothing
        (500, "no such container", False),
        (500, "something else went wrong", False),
    ],
)
def test_what_counts_as_the_exiting_race(status: int, explanation: str, retried: bool) -> None:
    assert podman.exiting_race(StatusError("podman: x", status, explanation)) is retried


def engine_answering(answers: list[Any], monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[str]]:
    """A PodmanEngine whose reads give `answers` in turn (an exception is raised)."""
    monkeypatch.setattr(podman, "INSPECT_RETRY_DELAY", 0.0)
    engine = podman.PodmanEngine("unix:///nonexistent.sock", api_version="4.3.1")
    asked: list[str] = []

    def get(path: str, what: str, **options: Any) -> Any:
        asked.append(path)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(engine._http, "get_json", get)
    return engine, asked


def test_an_inspect_that_meets_the_race_is_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    race = StatusError(f"podman: inspect container c1: {RACE}", 500, RACE)
    engine, asked = engine_answering([race, {"Id": "c1"}], monkeypatch)
    assert engine._inspect("c1") == {"Id": "c1"}
    assert len(asked) == 2


def test_the_race_is_not_retried_forever(monkeypatch: pytest.MonkeyPatch) -> None:
    race = StatusError(f"podman: inspect container c1: {RACE}", 500, RACE)
    engine, asked = engine_answering([race] * podman.INSPECT_ATTEMPTS, monkeypatch)
    with pytest.raises(StatusError, match="no such process"):
        engine._inspect("c1")
    assert len(asked) == podman.INSPECT_ATTEMPTS


def test_other_errors_fail_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    gone = StatusError("podman: inspect container c1: no such container", 404, "no such container")
    engine, asked = engine_answering([gone, {"Id": "c1"}], monkeypatch)
    with pytest.raises(StatusError, match="no such container"):
        engine._inspect("c1")
    assert len(asked) == 1
