"""The merge rule of `extends` and `overrides`: maps merge, lists replace, null removes.

Values carry source positions beside them, so a merged document still knows
which file and line each key came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hostos.errors import Location, Path_


def merge(base: Any, over: Any) -> Any:
    """`over` laid on `base`: dicts merge key by key, anything else is replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = merge(out[key], value)
            else:
                out[key] = value
        return out
    return over


@dataclass
class Located:
    """Plain data and the location of each key path in it (possibly across files)."""

    data: Any
    positions: dict[Path_, Location] = field(default_factory=dict)
    default: Location = field(default_factory=lambda: Location(""))

    def where(self, path: Path_) -> Location:
        return locate(self.positions, path, self.default)

    def overlay(self, over: Located, from_prefix: Path_ = ()) -> Located:
        """This merged with `over` (its part below from_prefix), positions following."""
        positions = dict(self.positions)
        n = len(from_prefix)
        for path, where in over.positions.items():
            if path[:n] == from_prefix and len(path) > n:
                positions[path[n:]] = where
        part = over.data
        for key in from_prefix:
            part = part[key]
        return Located(merge(self.data, part), positions, self.default)


def locate(positions: dict[Path_, Location], path: Path_, default: Location) -> Location:
    """The location of path, or of its nearest ancestor that has one."""
    for end in range(len(path), -1, -1):
        found = positions.get(tuple(path[:end]))
        if found is not None:
            return found
    return default
