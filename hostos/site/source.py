"""Read YAML documents with the position of every key, refusing what is not text.

The loader works on plain values (dicts, lists, scalars) and keeps, beside
them, a map from key path to source location, so that every later check can
name the file, line and column of what it rejects.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any

import yaml

from hostos.errors import Location, Path_, Problem, SiteError, key_path
from hostos.site.merge import Located, locate

MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 64  # levels of nesting in one document
MAX_EXPANSION = 10  # aliases may repeat a document's values this many times over…
MIN_CHECKED_VALUES = 10_000  # …once it holds more values than this
_YAML_HINTS = {
    "found character '\\t' that cannot start any token": "indent with spaces, not tabs",
    "mapping values are not allowed here": "check the indentation, or quote a value holding ': '",
}


@dataclass
class Document:
    """One YAML file: its data and where each key path stands in it."""

    file: str
    data: Any
    positions: dict[Path_, Location] = field(default_factory=dict)

    def where(self, path: Path_) -> Location:
        return locate(self.positions, path, Location(self.file, 1, 1))

    def located(self) -> Located:
        """A copy of the data with its positions, ready to merge and validate."""
        return Located(copy.deepcopy(self.data), dict(self.positions), Location(self.file, 1, 1))


def read_text(file: str, max_bytes: int = MAX_FILE_BYTES) -> str:
    """The file's text, or SiteError if it is too big, binary, not UTF-8 or empty."""
    where = Location(file)
    try:
        size = os.stat(file).st_size
        if size > max_bytes:
            raise SiteError(
                [
                    Problem(
                        where,
                        "",
                        f"file is {size} bytes, larger than the {max_bytes} bytes hostos reads",
                        "a unit, role or inventory file is a few kilobytes",
                    )
                ]
            )
        with open(file, "rb") as handle:
            raw = handle.read(max_bytes + 1)
    except OSError as exc:
        raise SiteError([Problem(where, "", f"cannot read: {exc.strerror}")]) from None
    if b"\0" in raw:
        raise SiteError(
            [
                Problem(
                    _byte_location(file, raw, raw.index(b"\0")),
                    "",
                    "binary file (NUL byte)",
                    "site files are UTF-8 YAML",
                )
            ]
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SiteError(
            [
                Problem(
                    _byte_location(file, raw, exc.start),
                    "",
                    f"not UTF-8 (byte 0x{raw[exc.start]:02x})",
                    "save the file as UTF-8",
                )
            ]
        ) from None
    return text.removeprefix("\ufeff")


def _byte_location(file: str, raw: bytes, offset: int) -> Location:
    line = raw[:offset].count(b"\n") + 1
    return Location(file, line, offset - (raw.rfind(b"\n", 0, offset) + 1) + 1)


def load_document(file: str) -> Document:
    """Parse one YAML file into a Document; SiteError on any problem."""
    text = read_text(file)
    node, loader = _compose(file, text)
    if node is None:
        raise SiteError(
            [
                Problem(
                    Location(file, 1, 1),
                    "",
                    "empty file" if not text.strip() else "the file holds only comments",
                    "write the definition or delete the file",
                )
            ]
        )
    builder = _Builder(file, loader)
    data = builder.value(node, ())
    if builder.problems:
        raise SiteError(builder.problems)
    return Document(file, data, builder.positions)


# libyaml composes about ten times faster; the pure-Python parser words the errors, so a
# file the fast one refuses is parsed again by the slow one for the message.
_FAST_LOADER: Any = getattr(yaml, "CSafeLoader", None)


def _compose(file: str, text: str) -> tuple[yaml.Node | None, Any]:
    if _FAST_LOADER is not None:
        fast = _FAST_LOADER(text)
        try:
            return fast.get_single_node(), fast
        except (yaml.YAMLError, RecursionError):
            pass
        finally:
            fast.dispose()
    loader = yaml.SafeLoader(text)
    try:
        return loader.get_single_node(), loader
    except yaml.MarkedYAMLError as exc:
        raise SiteError([_yaml_problem(file, exc)]) from None
    except RecursionError:
        raise SiteError([_too_deep(_deepest(file, text), "")]) from None
    finally:
        loader.dispose()


def _yaml_problem(file: str, exc: yaml.MarkedYAMLError) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    where = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
    message = " ".join(str(part) for part in (exc.context, exc.problem) if part)
    if "expected a single document" in message:
        return Problem(where, "", "more than one YAML document", "one definition per file")
    problem = str(exc.problem or exc.context)
    hint = _YAML_HINTS.get(problem, "")
    start = exc.context_mark
    if not hint and exc.problem and exc.context and start:
        hint = f"{exc.context} that starts at line {start.line + 1}, column {start.column + 1}"
    for end in ("'<stream end>'", "end of stream"):
        problem = problem.replace(end, "the end of the file")
    return Problem(where, "", f"YAML syntax: {problem}", hint)


def _deepest(file: str, text: str) -> Location:
    """Where the text first nests deeper than MAX_DEPTH levels."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            mark = event.start_mark
            if depth > MAX_DEPTH and mark is not None:
                return Location(file, mark.line + 1, mark.column + 1)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return Location(file, 1, 1)


def _too_deep(where: Location, key: str) -> Problem:
    return Problem(
        where, key, "values nested too deeply", f"hostos reads at most {MAX_DEPTH} levels"
    )


class _Builder:
    """Turns composed YAML nodes into plain values, recording positions."""

    def __init__(self, file: str, loader: Any) -> None:
        self.file = file
        self.loader = loader
        self.positions: dict[Path_, Location] = {}
        self.problems: list[Problem] = []
        self.count = 0  # values built, aliases expanded
        self.seen: set[int] = set()  # nodes met, each alias counted once
        self.open: set[int] = set()  # collections being built, to catch recursive aliases

    def mark(self, node: yaml.Node) -> Location:
        return Location(self.file, node.start_mark.line + 1, node.start_mark.column + 1)

    def value(self, node: yaml.Node, path: Path_) -> Any:
        self.positions.setdefault(path, self.mark(node))
        self.check_expansion(path)
        self.seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path)
        refused = self.refuse(node, path)
        if refused is not None:
            self.problems.append(refused)
            return None
        self.open.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self.mapping(node, path)
            return [self.value(item, (*path, i)) for i, item in enumerate(node.value)]
        finally:
            self.open.discard(id(node))

    def refuse(self, node: yaml.Node, path: Path_) -> Problem | None:
        """A problem if this collection contains itself or lies too deep."""
        if id(node) in self.open:
            return Problem(
                self.positions[path],
                key_path(path),
                "an alias refers to a value that contains it",
                "a YAML anchor cannot hold itself",
            )
        if len(path) >= MAX_DEPTH:
            return _too_deep(self.positions[path], key_path(path[:1]))
        return None

    def check_expansion(self, path: Path_) -> None:
        """SiteError when aliases blow the document up (a 'billion laughs')."""
        self.count += 1
        if self.count > MIN_CHECKED_VALUES and self.count > MAX_EXPANSION * len(self.seen):
            top = path[:1]
            bomb = Problem(
                self.positions.get(top, Location(self.file, 1, 1)),
                key_path(top),
                f"aliases expand the document more than {MAX_EXPANSION}-fold",
                "write the values out instead of nesting aliases",
            )
            raise SiteError([*self.problems, bomb])

    def scalar(self, node: yaml.ScalarNode, path: Path_) -> Any:
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            self.problems.append(
                Problem(self.mark(node), key_path(path), f"bad value: {exc.problem}")
            )
            return None

    def mapping(self, node: yaml.MappingNode, path: Path_) -> dict[str, Any]:
        try:
            self.loader.flatten_mapping(node)
        except yaml.constructor.ConstructorError as exc:
            self.problems.append(
                Problem(self.mark(node), key_path(path), f"bad merge: {exc.problem}")
            )
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.problems.append(
                    Problem(self.mark(key_node), key_path(path), "keys must be plain strings")
                )
                continue
            key = str(key_node.value)
            if key in result:
                first = self.positions[(*path, key)]
                self.problems.append(
                    Problem(
                        self.mark(key_node),
                        key_path((*path, key)),
                        "duplicate key",
                        f"first set at line {first.line}",
                    )
                )
                continue
            self.positions[(*path, key)] = self.mark(key_node)
            result[key] = self.value(value_node, (*path, key))
        return result
