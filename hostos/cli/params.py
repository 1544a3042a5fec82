"""typer parameters made from the option table (hostos.cli.options), and the options the
commands share: the site, --node, --role, --engine, --namespace, --output, --server.

`table_command` makes a typer command from a table of options: a function whose signature
typer reads is built from the rows, so `hostos supervise` has one list of options for its
argparse path and its typer command alike.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import typer

from hostos.cli.options import ENGINE, NAMESPACE, NODE, ROLE, SITE, SOCKET, Option
from hostos.cli.output import OUTPUT_HELP, Format
from hostos.engine.kind import EngineKind


def info(option: Option) -> Any:
    """The typer.Argument or typer.Option of a row: its help, flags, variable, metavar."""
    if option.positional:
        return typer.Argument(help=option.help, metavar=option.metavar)
    return typer.Option(*option.flags, help=option.help, envvar=option.env, metavar=option.metavar)


def annotated(option: Option) -> Any:
    """The typer annotation of a row: its type (optional when it has no default) and info."""
    kind: Any = option.type if option.default is not None else option.type | None
    return Annotated[kind, info(option)]


def table_command(
    name: str, doc: str, options: Sequence[Option], body: Callable[..., None]
) -> Callable[..., None]:
    """A function typer takes as a command: keyword parameters from options, which it
    hands to body by name."""

    def command(**given: Any) -> None:
        body(**given)

    parameters = [
        inspect.Parameter(
            o.name, inspect.Parameter.KEYWORD_ONLY, default=o.default, annotation=annotated(o)
        )
        for o in options
    ]
    made: Any = command  # typer reads the signature and annotations set here
    made.__signature__ = inspect.Signature(parameters)
    made.__annotations__ = {p.name: p.annotation for p in parameters}
    made.__name__ = made.__qualname__ = name
    made.__doc__ = doc
    return command


SiteArg = Annotated[str, info(SITE)]
NodeOpt = Annotated[str | None, info(NODE)]
RoleOpt = Annotated[str | None, info(ROLE)]
EngineOpt = Annotated[EngineKind, info(ENGINE)]
NamespaceOpt = Annotated[str, info(NAMESPACE)]
SocketOpt = Annotated[str | None, info(SOCKET)]
OutputOpt = Annotated[Format, typer.Option("--output", "-o", help=OUTPUT_HELP)]

SERVER_HELP = "a hostos serve: http://HOST:PORT"
ServerOpt = Annotated[str, typer.Option(envvar="HOSTOS_SERVER", help=SERVER_HELP, metavar="URL")]
AdminTokenOpt = Annotated[
    str,
    typer.Option(
        envvar="HOSTOS_ADMIN_TOKEN_FILE", help="a file holding the admin token", metavar="FILE"
    ),
]
DEFAULT_ADMIN_TOKEN_FILE = "/etc/hostos/admin-token"
