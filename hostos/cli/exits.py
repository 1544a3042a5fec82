"""How a hostos command ends: the exit codes, `fail(message, hint)`, and problems shown.

0 ok, 1 a runtime failure (an engine or server away, a unit that did not start), 2 bad
input (the site, an option, a request the server refuses).  Nothing here imports typer:
`hostos supervise` parses its options with argparse on the node and ends the same way.
hostos.errors is imported when a command reads input, not at every command's start-up.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn, TypeVar

if TYPE_CHECKING:
    from hostos.errors import Problem

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_INPUT = 2
T = TypeVar("T")


def say(message: str, hint: str | None = None) -> None:
    """One line on stderr: `hostos: message (hint)`."""
    print(f"hostos: {message}" + (f" ({hint})" if hint else ""), file=sys.stderr)


def fail(message: str, code: int = EXIT_RUNTIME, hint: str | None = None) -> NoReturn:
    say(message, hint)
    raise SystemExit(code)


def show_problems(problems: Sequence[Problem]) -> None:
    """Each problem on a line of its own (file:line:col: key: message (hint)), then the count."""
    for problem in problems:
        print(problem, file=sys.stderr)
    count = len(problems)
    print(f"{count} problem{'s' if count != 1 else ''}", file=sys.stderr)


def guarded(action: Callable[[], T]) -> T:
    """Run action; bad input → its problems and exit 2; a runtime failure → exit 1."""
    from hostos.errors import RuntimeFailure, SiteError

    try:
        return action()
    except SiteError as exc:
        show_problems(exc.problems)
        raise SystemExit(EXIT_INPUT) from None
    except RuntimeFailure as exc:
        fail(str(exc))
