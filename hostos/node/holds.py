"""What holds units back: the planner's third input, beside desired and observed.

The supervisor knows two things the engine does not: which role mounts are ready, and
which units its crash backoff (or their restart policy) keeps stopped.  It hands them to
`hostos.node.plan.plan` as `Holds`, which turns the actions they stop, and those of the
dependents, into WAIT actions.  `hostos plan` and `apply` read the same holds from a
running supervisor's status (`hostos.node.status.NodeStatus.holds`), so they print what
the supervisor will do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Holds:
    """What keeps units from being created or started now."""

    mounts: frozenset[str] = frozenset()  # role mounts not ready: the units they bind wait
    # unit → why its stopped container stays stopped (crash backoff, restart policy)
    stopped: Mapping[str, str] = field(default_factory=dict)


NO_HOLDS = Holds()
