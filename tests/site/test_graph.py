"""The dependency-graph rules (hostos.site.graph), as tables: graph in, order out."""

from __future__ import annotations

import pytest

from hostos.site.graph import Graph, blocked, find_cycle, levels, reverse, start_order

CHAIN = {"web": ["app"], "app": ["db"], "db": []}
DIAMOND = {"top": ["left", "right"], "left": ["base"], "right": ["base"], "base": []}


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({}, []),
        ({"a": [], "b": []}, [["a", "b"]]),
        (CHAIN, [["db"], ["app"], ["web"]]),
        (DIAMOND, [["base"], ["left", "right"], ["top"]]),
        # a round keeps the graph's order, not the alphabet's
        ({"z": [], "a": ["z"], "m": []}, [["z", "m"], ["a"]]),
        # the longest way decides the round: c waits for b, which waits for a
        ({"c": ["a", "b"], "b": ["a"], "a": []}, [["a"], ["b"], ["c"]]),
        # a dependency outside the graph (a role mount) and one on itself are ignored
        ({"app": ["apps-mount", "app"], "db": []}, [["app", "db"]]),
        # a cycle, and what depends on it, come last in one round
        ({"a": ["b"], "b": ["a"], "c": ["a"], "d": []}, [["d"], ["a", "b", "c"]]),
    ],
)
def test_levels(graph: Graph, expected: list[list[str]]) -> None:
    assert levels(graph) == expected


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        (CHAIN, ["db", "app", "web"]),
        (DIAMOND, ["base", "left", "right", "top"]),
        ({"x": [], "b": ["x"], "a": []}, ["x", "a", "b"]),
    ],
)
def test_start_order(graph: Graph, expected: list[str]) -> None:
    assert start_order(graph) == expected


def test_start_order_refuses_a_cycle_naming_it() -> None:
    with pytest.raises(ValueError, match="dependency cycle: a → b → a"):
        start_order({"a": ["b"], "b": ["a"]})


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        (CHAIN, {"web": [], "app": ["web"], "db": ["app"]}),
        (DIAMOND, {"top": [], "left": ["top"], "right": ["top"], "base": ["left", "right"]}),
        ({"a": ["a", "mount"]}, {"a": []}),
    ],
)
def test_reverse(graph: Graph, expected: dict[str, list[str]]) -> None:
    assert reverse(graph) == expected


def test_stop_order_is_the_levels_of_the_reversed_graph() -> None:
    """Dependents stop first: what nothing depends on, then what those depended on."""
    graph = {"db": [], "app": ["db"], "web": ["app"], "exporter": []}
    assert levels(reverse(graph)) == [["web", "exporter"], ["app"], ["db"]]


@pytest.mark.parametrize(
    ("graph", "stuck", "expected"),
    [
        (CHAIN, set(), {}),
        (CHAIN, {"db"}, {"app": "db", "web": "app"}),
        (CHAIN, {"app"}, {"web": "app"}),
        (DIAMOND, {"right"}, {"top": "right"}),
        (DIAMOND, {"base"}, {"left": "base", "right": "base", "top": "left"}),
        # the first dependency that waits is named, in the order they were written
        ({"x": ["a", "b"], "a": [], "b": []}, {"a", "b"}, {"x": "a"}),
        # a stuck node outside the graph (a unit not acted on) still holds its dependents
        ({"app": ["db"]}, {"db"}, {"app": "db"}),
        # a stuck node is not listed, even when what it depends on is stuck too
        (CHAIN, {"db", "app"}, {"web": "app"}),
    ],
)
def test_blocked(graph: Graph, stuck: set[str], expected: dict[str, str]) -> None:
    assert blocked(graph, stuck) == expected


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        (CHAIN, []),
        (DIAMOND, []),
        ({"a": ["a"]}, []),  # on itself: ignored, as dependency_graph drops it
        ({"a": ["b"], "b": ["c"], "c": ["a"]}, ["a", "b", "c", "a"]),
        ({"x": ["y"], "y": ["z"], "z": ["y"]}, ["y", "z", "y"]),
        ({"a": ["outside"]}, []),
    ],
)
def test_find_cycle(graph: Graph, expected: list[str]) -> None:
    assert find_cycle(graph) == expected
