"""How commands print what they found: one `--output` choice for every command, JSON and
YAML documents, and aligned plain-text tables.

`table` is each command's view for people (a table, lines, or for `render` a YAML spec
written the way a person writes one); `json` and `yaml` are the same complete document for
programs, in either notation.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from enum import StrEnum
from typing import Any


class Format(StrEnum):
    """What `--output/-o` asks for."""

    table = "table"
    json = "json"
    yaml = "yaml"

    @property
    def document(self) -> bool:
        """json or yaml: a document for programs rather than the view for people."""
        return self is not Format.table


OUTPUT_HELP = "table: for people; json or yaml: the whole document, for programs"


def emit(value: Any, output: Format) -> None:
    """value as the document output asks for (json or yaml)."""
    if output is Format.yaml:
        emit_yaml(value)
    else:
        emit_json(value)


def emit_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=False))


def emit_yaml(value: Any) -> None:
    import yaml  # only for the commands that print YAML: keeps `hostos --help` fast

    print(yaml.safe_dump(value, sort_keys=False, default_flow_style=False), end="")


def print_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    for row in [header, *rows]:
        line = "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False))
        print(line.rstrip(), file=sys.stdout)
