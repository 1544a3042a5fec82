"""FleetLock's counting semaphore, as pure functions over a group's `SlotTable`.

The rules (https://coreos.github.io/zincati/development/fleetlock/protocol/): a slot is
owned by the id that took it; locking is recursive (an id that holds a slot gets 200 again)
and so is unlocking (releasing a slot not held is fine).  A group is full when as many ids
hold slots as the limit allows; lowering the limit never takes a slot away from a holder.
"""

from __future__ import annotations

from dataclasses import dataclass

from hostos.cluster.records import SlotTable


@dataclass(frozen=True)
class Outcome:
    ok: bool
    table: SlotTable  # the table to store (== the given one when nothing changed)
    changed: bool
    reason: str  # for the response and the log


def acquire(table: SlotTable | None, node_id: str, group: str, limit: int) -> Outcome:
    """Take (or keep) a slot of group for node_id, at most `limit` holders."""
    current = table or SlotTable((), limit)
    if node_id in current.holders:
        updated = SlotTable(current.holders, limit)
        return Outcome(
            True,
            updated,
            updated != current or table is None,
            f"{node_id} already holds a slot of {group}",
        )
    if len(current.holders) >= limit:
        held = ", ".join(current.holders)
        return Outcome(
            False,
            current,
            False,
            f"group {group} is full: {len(current.holders)} of {limit} slots held by {held}",
        )
    updated = SlotTable((*current.holders, node_id), limit)
    return Outcome(True, updated, True, f"{node_id} took a slot of {group}")


def release(table: SlotTable | None, node_id: str, group: str) -> Outcome:
    """Give back node_id's slot of group; fine when it held none."""
    current = table or SlotTable()
    if node_id not in current.holders:
        return Outcome(True, current, False, f"{node_id} holds no slot of {group}")
    updated = SlotTable(tuple(h for h in current.holders if h != node_id), current.max)
    return Outcome(True, updated, True, f"{node_id} released its slot of {group}")
