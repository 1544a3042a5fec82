"""The typer app as a newcomer reads its help: commands in the order they are used, flags
without a type beside them.

typer lists a group's sub-apps after its commands and shows `<bool>` after every flag
(--dry-run, --help); `App` makes every command and group with the classes below, which
list commands in the group's `order` and show a flag as just its name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import typer
from typer.core import TyperCommand, TyperGroup, TyperOption
from typer.models import CommandFunctionType


def _bare_flags(params: list[Any]) -> None:
    """A flag takes no value: show no type for one (typer would show `<bool>`)."""
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""


class _BareFlags:
    """Flags of a command or group, --help included, show no type."""

    params: list[Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _bare_flags(self.params)

    def get_help_option(self, ctx: Any) -> TyperOption | None:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        _bare_flags([option])
        return option  # type: ignore[no-any-return]


class Command(_BareFlags, TyperCommand):
    pass


class Group(_BareFlags, TyperGroup):
    """Commands in `order`, those not named there after them in the order they were made."""

    order: ClassVar[tuple[str, ...]] = ()

    def list_commands(self, ctx: Any) -> list[str]:
        made = list(self.commands)
        rank = {name: index for index, name in enumerate(self.order)}
        return sorted(made, key=lambda name: (rank.get(name, len(rank)), made.index(name)))


class App(typer.Typer):
    """A typer app whose commands are `Command`s and whose group is `group` (a Group)."""

    def __init__(self, *, help: str, group: type[Group] = Group) -> None:
        super().__init__(
            cls=group,
            help=help,
            no_args_is_help=True,
            add_completion=False,
            pretty_exceptions_enable=False,
        )

    def command(
        self, *args: Any, **kwargs: Any
    ) -> Callable[[CommandFunctionType], CommandFunctionType]:
        kwargs.setdefault("cls", Command)
        return super().command(*args, **kwargs)
