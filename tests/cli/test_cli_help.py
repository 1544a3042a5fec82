"""The CLI as a newcomer meets it: every parameter explained, flags shown bare, commands
in the order they are used, and README's command table complete."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from hostos.cli.main import Commands, app

README = Path(__file__).resolve().parents[2] / "README.md"


def command_tree() -> Iterator[tuple[str, typer.core.TyperCommand | typer.core.TyperGroup]]:
    """Every command and group of the app with its full name (`rollout start`)."""
    root = typer.main.get_command(app)
    todo: list[tuple[str, typer.core.TyperCommand | typer.core.TyperGroup]] = [("", root)]
    while todo:
        name, command = todo.pop()
        yield name, command
        for child, sub in getattr(command, "commands", {}).items():
            todo.append((f"{name} {child}".strip(), sub))


def leaf_commands() -> list[str]:
    return sorted(name for name, command in command_tree() if not hasattr(command, "commands"))


# What typer shows for a value when nothing better is given: a bare Python type.
BARE_TYPE = re.compile(r"<(bool|str|int|float|path|list\[\w+\])>")


@pytest.mark.parametrize("name", [name for name, _ in command_tree()])
def test_every_parameter_has_help_and_flags_show_no_type(name: str) -> None:
    command = dict(command_tree())[name]
    ctx = typer.Context(command)
    assert command.help, f"{name or 'hostos'} has no help"
    for param in command.get_params(ctx):
        where = f"hostos {name} {param.opts[0]}"
        assert getattr(param, "help", None), f"{where} has no help line"
        if getattr(param, "is_flag", False):
            assert not param.metavar, f"{where} is a flag but shows {param.metavar!r}"
            assert not param.secondary_opts, f"{where} has a --no- twin"
        elif param.param_type_name == "argument":
            assert param.metavar and param.metavar.isupper(), f"{where} has no NAME"
        else:
            shown = param.display_type_rich(ctx)  # type: ignore[attr-defined]
            assert not BARE_TYPE.fullmatch(shown), f"{where} shows {shown}: give it a metavar"


@pytest.mark.parametrize("name", ["", "apply", "rollout start", "image build", "supervise"])
def test_help_shows_no_bool_metavar(name: str) -> None:
    result = CliRunner().invoke(app, [*name.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output


def test_commands_are_listed_in_the_order_they_are_used() -> None:
    root = typer.main.get_command(app)
    listed = root.list_commands(typer.Context(root))  # type: ignore[attr-defined]
    assert listed == list(Commands.order)
    help_text = CliRunner().invoke(app, ["--help"]).output
    shown = [line.split()[1] for line in help_text.splitlines() if re.match(r"│ [a-z]+ ", line)]
    assert shown == list(Commands.order)


def test_readme_command_table_lists_every_command() -> None:
    table = README.read_text().split("## Command reference", 1)[1].split("\n\n", 2)[1]
    rows = re.findall(r"^\| `hostos ([a-z -]+?)(?: [A-Z\[(]|`)", table, flags=re.M)
    documented = {row.strip() for row in rows}
    missing = [
        name
        for name in leaf_commands()
        if name not in documented and not any(d.startswith(name + " ") for d in documented)
    ]
    assert not missing, f"README's command table lacks: {missing}"
