"""Which engine hostos uses: the `--engine` choice every command and the connection share.

A module of its own, so that a command line offers `--engine` without importing the
engine protocol and its values (hostos.engine.base), which only the commands that reach
an engine need.
"""

from enum import StrEnum


class EngineKind(StrEnum):
    """Which engine to use: auto takes a reachable Docker socket, else Podman."""

    auto = "auto"
    docker = "docker"
    podman = "podman"
