"""The command line every bench shares: its parser, its log lines on stderr, the one error
that stops a run, and how a finished run's section is printed and written."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from bench import report

log = logging.getLogger("bench")


class BenchError(Exception):
    """The benchmark cannot go on (a tool failed, a process did not start, a phase did not
    finish, the engine was left in a wrong state); the message says which."""


def parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """A bench's parser, `python -m bench.NAME`, described by its docstring's first
    paragraph."""
    first = (doc or "").strip().split("\n\n")[0]
    return argparse.ArgumentParser(prog=f"python -m {module}", description=" ".join(first.split()))


def add_write(parser: argparse.ArgumentParser, section: str) -> None:
    parser.add_argument(
        "--write",
        type=Path,
        metavar="FILE",
        help=f"replace the {section} section of FILE (created if missing)",
    )


def need_root(parser: argparse.ArgumentParser) -> None:
    if os.geteuid() != 0:
        parser.error("run as root: the engines' sockets are root's")


def publish(section: str, path: Path | None, name: str, intro: str = "") -> None:
    """Print a run's section; with a path, also replace the marked section `name` there."""
    print(section)
    if path is not None:
        report.write_section(path, name, section, intro)
        log.info("wrote %s", path)


def run(main: Callable[[], int]) -> NoReturn:
    """A bench's entry point: log lines as `bench.MODULE: message` on stderr; a BenchError
    that main did not handle ends the run with exit 1, Ctrl-C with 130."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    try:
        code = main()
    except BenchError as exc:
        log.error("FAILED: %s", exc)
        code = 1
    except KeyboardInterrupt:
        log.error("interrupted")
        code = 130
    sys.exit(code)
