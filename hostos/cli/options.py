"""Command-line options as a table: name, type, default, help, environment variable.

One row per option, read by both parsers: argparse here (the node's boot path,
hostos.cli.supervise, which must not import typer) and typer in hostos.cli.params.  The
rows that several commands share (the site, --node, --engine …) are written once, here.
This module imports neither typer nor click, and argparse only when a parser is made
(every typer command reads the shared rows).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from hostos.engine.kind import EngineKind

if TYPE_CHECKING:
    import argparse


@dataclass(frozen=True)
class Option:
    """One option (or, positional, the one argument) of a command."""

    name: str  # the parameter's name; the flag is --name-with-dashes
    help: str
    type: type[Any] = str  # str, float, int or a StrEnum (its values are the choices)
    default: Any = None
    short: str | None = None  # e.g. "-n"
    env: str | None = None  # read when the command line leaves the option out
    metavar: str | None = None  # what the help shows for the value
    positional: bool = False

    @property
    def flags(self) -> tuple[str, ...]:
        long = "--" + self.name.replace("_", "-")
        return (long, self.short) if self.short else (long,)

    @property
    def choices(self) -> tuple[str, ...] | None:
        if isinstance(self.type, type) and issubclass(self.type, StrEnum):
            return tuple(member.value for member in self.type)
        return None


SITE = Option(
    "site",
    "site directory (unit files, roles/, nodes.yaml)",
    default="units",
    metavar="SITE",
    positional=True,
)
NODE = Option("node", "a node of the inventory", short="-n", metavar="NAME")
ROLE = Option("role", "a role", short="-r", metavar="ROLE")
ENGINE = Option(
    "engine",
    "auto: a reachable docker socket, else podman (started privately if need be)",
    type=EngineKind,
    default=EngineKind.auto,
    short="-e",
    env="HOSTOS_ENGINE",
)
NAMESPACE = Option(
    "namespace",
    "keep apart several hostos instances on one engine (tests, a demo)",
    default="",
    env="HOSTOS_NAMESPACE",
    metavar="NAME",
)
SOCKET = Option(
    "socket",
    "the supervisor's status socket (default /run/hostos/supervisor.sock)",
    metavar="PATH",
)


def parser(prog: str, description: str, options: Sequence[Option]) -> argparse.ArgumentParser:
    """An argparse parser for options; every value it leaves out is None (see values)."""
    import argparse

    p = argparse.ArgumentParser(prog=prog, description=description)
    for option in options:
        if option.positional:
            p.add_argument(option.name, nargs="?", metavar=option.metavar, help=option.help)
            continue
        p.add_argument(
            *option.flags,
            dest=option.name,
            type=option.type if option.choices is None else str,
            choices=option.choices,
            metavar=option.metavar,
            help=_help_line(option),
        )
    return p


def _help_line(option: Option) -> str:
    """The help with what typer's help shows beside it: the default and the variable."""
    extra = []
    if option.default not in (None, ""):
        extra.append(f"default {option.default}")
    if option.env:
        extra.append(f"or ${option.env}")
    return option.help + (f" ({'; '.join(extra)})" if extra else "")


class BadEnvironment(ValueError):
    """A variable of the environment holds no value the option takes."""


def values(
    options: Sequence[Option], given: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Each option's value: as given, else from its variable (an empty one counts as unset),
    else its default; enum values as their type."""
    environ = os.environ if environ is None else environ
    out = {}
    for option in options:
        value = given.get(option.name)
        if value is None and option.env:
            value = _from_environment(option, environ)
        if value is None:
            value = option.default
        out[option.name] = option.type(value) if option.choices and value is not None else value
    return out


def _from_environment(option: Option, environ: Mapping[str, str]) -> Any:
    text = environ.get(option.env or "") or None
    if text is None:
        return None
    if option.choices and text not in option.choices:
        raise BadEnvironment(f"{option.env}={text}: want one of {', '.join(option.choices)}")
    try:
        return option.type(text)
    except ValueError:
        raise BadEnvironment(f"{option.env}={text}: not a {option.type.__name__}") from None
