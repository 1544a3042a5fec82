"""The `hostos` program: `supervise` through its own small parser, the rest through typer.

A node starts `hostos supervise` at every boot, and importing typer and click costs
seconds under emulation before the first unit can start (hostos.supervise_cmd says more).
Every `hostos supervise` takes this path, on a node and on a workstation alike, so the two
behave the same.
"""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:2] == ["supervise"]:
        from hostos.supervise_cmd import main as supervise

        sys.exit(supervise(sys.argv[2:]))
    from hostos.cli import main as cli

    cli()
