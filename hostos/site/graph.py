"""Dependency graphs: pure functions over name → dependencies mappings.

The one copy of the ordering rules: the site's start order, the executor's levels, the
stop order of shutdown and `hostos down` (levels of the reversed graph), the dependents a
waiting unit holds back, and the cycle the site's checks refuse.  A graph maps each node
to the nodes it depends on, in the order they were written; a dependency that is not a
node of the graph is ignored (a role mount, a unit of another plan), and so is a node's
dependency on itself.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

Graph = Mapping[str, Sequence[str]]


def levels(graph: Graph) -> list[list[str]]:
    """Nodes in rounds, each node in the first round after every node it depends on; a
    round keeps the graph's order.  Nodes on a cycle, and what depends on them, come last
    in one round (the site's checks refuse cycles; this only keeps a stop from failing)."""
    done: set[str] = set()
    pending = list(graph)
    rounds: list[list[str]] = []
    while pending:
        ready = [n for n in pending if all(_met(d, n, graph, done) for d in graph[n])]
        rounds.append(ready or pending)
        done.update(rounds[-1])
        pending = [n for n in pending if n not in done]
    return rounds


def _met(dep: str, node: str, graph: Graph, done: set[str]) -> bool:
    return dep in done or dep not in graph or dep == node


def start_order(graph: Graph) -> list[str]:
    """Every node after what it depends on; ties keep the graph's order.
    ValueError naming the cycle when there is one."""
    cycle = find_cycle(graph)
    if cycle:
        raise ValueError(f"dependency cycle: {' → '.join(cycle)}")
    return [node for level in levels(graph) for node in level]


def reverse(graph: Graph) -> dict[str, list[str]]:
    """node → the nodes that depend on it, in the graph's order."""
    return {
        node: [other for other, deps in graph.items() if node in deps and other != node]
        for node in graph
    }


def blocked(graph: Graph, stuck: Collection[str]) -> dict[str, str]:
    """The nodes that depend, directly or through others, on a stuck node: node → the
    first of its dependencies that is stuck or blocked in turn.  Stuck nodes are left out."""
    out: dict[str, str] = {}
    for level in levels(graph):
        for node in level:
            if node in stuck:
                continue
            dep = next((d for d in graph[node] if d != node and (d in stuck or d in out)), None)
            if dep is not None:
                out[node] = dep
    return out


def find_cycle(graph: Graph) -> list[str]:
    """One cycle as [a, b, …, a], or [] if the graph has none."""
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for dep in graph.get(node, []):
            if dep == node:
                continue
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []
