"""The `hostos` program: `supervise` through its own small parser, the rest through typer.

A node starts `hostos supervise` at every boot, and importing typer and click costs
seconds under emulation before the first unit can start (hostos.cli.supervise says more).
Every `hostos supervise` takes this path, on a node and on a workstation alike, so the two
behave the same.
"""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:2] == ["supervise"]:
        from hostos.cli.supervise import main as supervise

        sys.exit(supervise(sys.argv[2:]))
    from hostos.cli.main import main as cli

    cli()
