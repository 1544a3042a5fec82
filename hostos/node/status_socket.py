"""Where a supervisor serves its status (hostos.node.status): one socket per namespace.

A module of its own so that `apply` and `plan` can look for a supervisor before they import
the status types: with none running here, they need nothing else of the status.
"""

from __future__ import annotations

import os

SOCKET_DIR = "/run/hostos"


def socket_path(namespace: str = "") -> str:
    name = f"supervisor-{namespace}.sock" if namespace else "supervisor.sock"
    return os.path.join(SOCKET_DIR, name)
