"""The typer app as a newcomer reads its help: commands in the order they are used, flags
without a type beside them; and each command made only when it is asked for.

typer lists a group's sub-apps after its commands and shows `<bool>` after every flag
(--dry-run, --help); `App` makes every command and group with the classes below, which
list commands in the group's `order` and show a flag as just its name.

typer makes the click command of every command and sub-app of an app (reading each
signature) before it runs the one asked for, and a sub-app's module is imported to mount
it: start-up time that every command paid for all the others.  An App hands typer none of
them: each is kept as a `Register` and made by typer the first time it is asked for (by
name on the command line, in a help listing, by shell completion); see Later.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, ClassVar

import typer
from typer.core import TyperCommand, TyperGroup, TyperOption
from typer.models import CommandFunctionType

if TYPE_CHECKING:
    from typer._click import Command as ClickCommand  # what a group's commands are

Register = Callable[[typer.Typer], None]  # adds one command or sub-app to the app it is given


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
    """Commands in `order`, those not named there after them in the order they were made;
    those in `later` (its App's) are made when first asked for (see Later)."""

    order: ClassVar[tuple[str, ...]] = ()
    later: ClassVar[Mapping[str, Register]] = {}  # each App's group class has its own

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = Later(self.commands, self.later)

    def list_commands(self, ctx: Any) -> list[str]:
        made = list(self.commands)
        rank = {name: index for index, name in enumerate(self.order)}
        return sorted(made, key=lambda name: (rank.get(name, len(rank)), made.index(name)))


class Later(MutableMapping[str, "ClickCommand"]):
    """A group's commands by name: those typer made, then those made when first asked for.

    A later command is registered on a typer app of its own, as it would have been on the
    group's, and typer makes it from there: the same command, help and behaviour."""

    def __init__(self, made: Mapping[str, ClickCommand], later: Mapping[str, Register]) -> None:
        self._later = dict(later)
        self._commands: dict[str, ClickCommand | None] = {**made, **dict.fromkeys(later)}

    def __getitem__(self, name: str) -> ClickCommand:
        command = self._commands[name]
        if command is None:
            command = self._commands[name] = _made(name, self._later[name])
        return command

    def __setitem__(self, name: str, command: ClickCommand) -> None:
        self._commands[name] = command

    def __delitem__(self, name: str) -> None:
        del self._commands[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._commands)

    def __len__(self) -> int:
        return len(self._commands)


def _made(name: str, register: Register) -> ClickCommand:
    alone = typer.Typer(add_completion=False)  # what typer makes commands with: as an App's
    register(alone)
    return typer.main.get_group(alone).commands[name]


def _no_options() -> None:
    """An App is a group even with one command (typer, which sees none, would not know)."""


class App(typer.Typer):
    """A typer app whose commands are `Command`s, made when first asked for, and whose
    group is `group` (a Group).

    command() and add_typer() keep what they are given in `later`, as does add_later(),
    for a command or sub-app whose module is imported only when it is asked for."""

    def __init__(self, *, help: str, group: type[Group] = Group) -> None:
        self.later: dict[str, Register] = {}
        super().__init__(
            cls=type(group.__name__, (group,), {"later": self.later}),  # this App's own
            help=help,
            no_args_is_help=True,
            add_completion=False,
            pretty_exceptions_enable=False,
        )
        self.callback()(_no_options)

    def command(
        self, name: str | None = None, **kwargs: Any
    ) -> Callable[[CommandFunctionType], CommandFunctionType]:
        kwargs.setdefault("cls", Command)

        def keep(function: CommandFunctionType) -> CommandFunctionType:
            def register(app: typer.Typer) -> None:
                app.command(name, **kwargs)(function)

            self.add_later(name or typer.main.get_command_name(function.__name__), register)
            return function

        return keep

    def add_typer(self, typer_instance: typer.Typer, **kwargs: Any) -> None:
        """Mount typer_instance as the group `name` (required: without one, typer would make
        its commands this app's own, all at once)."""

        def register(app: typer.Typer) -> None:
            app.add_typer(typer_instance, **kwargs)

        self.add_later(kwargs["name"], register)

    def add_later(self, name: str, register: Register) -> None:
        """Command or sub-app `name`, which register adds to the app it is given."""
        self.later[name] = register
