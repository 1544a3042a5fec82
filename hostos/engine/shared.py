"""Behaviour both adapters share: pull retries and build failure messages."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from hostos.backoff import Backoff
from hostos.engine.base import EngineError, ImageNotFound, Progress

PULL_ATTEMPTS = 3
PULL_BACKOFF = Backoff(initial=1.0, factor=3.0, max=3.0)  # 1 s, then 3 s between attempts


def with_retries(
    ref: str,
    attempt: Callable[[], None],
    progress: Progress,
    backoff: Backoff = PULL_BACKOFF,
    attempts: int = PULL_ATTEMPTS,
) -> None:
    """Run a pull attempt until it succeeds, up to `attempts` times.

    A registry that is briefly unreachable is common while a cluster boots; an
    image that does not exist (ImageNotFound) will not appear by waiting, so that
    fails at once.
    """
    for number in range(1, attempts + 1):
        try:
            attempt()
            return
        except ImageNotFound:
            raise
        except EngineError as exc:
            if number == attempts:
                raise EngineError(f"{exc} (after {attempts} attempts)") from exc
            delay = backoff.delay(number)
            progress(f"pull {ref}: attempt {number} failed ({exc}); retrying in {delay:g}s")
            time.sleep(delay)


def build_error(engine: str, what: str, step: str, error: str, tail: Sequence[str]) -> str:
    """ "<engine>: build … failed at 'STEP': error", then the build's last output lines."""
    where = f" at {step!r}" if step else ""
    output = "\n".join(line for line in tail if line != step and line not in error)
    message = f"{engine}: {what} failed{where}: {error.strip()}"
    return f"{message}\n{output}" if output else message
