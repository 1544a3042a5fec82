"""Problems found in user input, and the one exception that carries them.

Every problem names where it is (file, line, column), the key path inside the
document, a message and an optional hint.  The CLI prints one line per problem
and exits 2; nothing else in hostos formats input errors.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

Path_ = tuple[str | int, ...]


@dataclass(frozen=True, order=True)
class Location:
    file: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        if self.line <= 0:
            return self.file
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True, order=True)
class Problem:
    where: Location
    key: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        text = f"{self.where}: "
        if self.key:
            text += f"{self.key}: "
        text += self.message
        if self.hint:
            text += f" ({self.hint})"
        return text


class SiteError(Exception):
    """Bad input: one or more problems, all reported at once."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = sorted(set(problems))
        super().__init__("\n".join(str(p) for p in self.problems))


class RuntimeFailure(Exception):
    """Something outside the input failed (engine, network, a command); exit code 1."""


def key_path(path: Path_) -> str:
    """Render ("mounts", 0, "target") as "mounts[0].target"."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A hint naming the closest choice, or "" when nothing is close."""
    close = difflib.get_close_matches(word, sorted(set(choices)), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else ""
