"""A qemu guest's serial console as the host reads it: each line with the host time
(seconds since qemu started) it arrived at, and waits for a line.  The image bench reads
its boot milestones from it; the e2e tests their guests' progress."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field

from hostos.image.boot import Guest


@dataclass
class Console:
    """Feed it `add` as the Guest's on_line; set `started` to the guest's start."""

    started: float = field(default_factory=time.monotonic)
    lines: list[tuple[float, str]] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)
    echo: bool = True  # print each line with its time as it comes

    def add(self, line: str) -> None:
        stamp = time.monotonic() - self.started
        if self.echo:
            print(f"[{stamp:7.2f}] {line}", flush=True)
        with self.changed:
            self.lines.append((stamp, line))
            self.changed.notify_all()

    def find(self, pattern: str, count: int = 1) -> tuple[float, str] | None:
        """The count-th line matching pattern (a regex), with its time."""
        regex = re.compile(pattern)
        hits = [(t, line) for t, line in self.lines if regex.search(line)]
        return hits[count - 1] if len(hits) >= count else None

    def wait(
        self, pattern: str, timeout: float, guest: Guest | None = None, count: int = 1
    ) -> tuple[float, str] | None:
        """The count-th line matching pattern, waiting up to timeout seconds for it; None
        when it did not come in time or the guest ended first."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                found = self.find(pattern, count)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or (guest is not None and not guest.running()):
                    return None
                self.changed.wait(min(left, 0.5))

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)
