"""The key layout of the cluster store, and how values are written under it.

```
site/current              {"generation": N}
site/gen/<N>              {"generation", "hash", "published_at", "body", "chunks"}
site/blob/<body>/<i>      chunk i of generation N's roles and nodes
nodes/<id>                NodeRecord
images/<name>             ImageRecord
rollouts/current/<role>   a rollout (rollout.py)
rollouts/history/<id>     finished rollouts
fleetlock/<group>         SlotTable
tokens/nodes/<id>         {"sha256": hex} of the node's token
```

Values are canonical JSON (sorted keys, no spaces), so an unchanged record written again
is the same bytes.  Names that become one path segment (node ids, groups, image names) are
checked here: no `/`, nothing empty, nothing a URL or a kernel command line would mangle.
"""

from __future__ import annotations

import json
import re
from typing import Any

from hostos.hashing import canonical_json

SITE_CURRENT = "site/current"
SITE_GEN = "site/gen/"
SITE_BLOB = "site/blob/"
CHUNK = 512 * 1024  # bytes per blob chunk: etcd takes 1.5 MiB per request by default
NODES = "nodes/"
IMAGES = "images/"
ROLLOUTS_CURRENT = "rollouts/current/"
ROLLOUTS_HISTORY = "rollouts/history/"
FLEETLOCK = "fleetlock/"
NODE_TOKENS = "tokens/nodes/"

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
MAC = re.compile(r"^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$")


class BadName(ValueError):
    """A node id, group or image name that cannot be one key segment."""


def checked(name: str, what: str = "name") -> str:
    if not NAME.match(name) or ".." in name:
        raise BadName(f"'{name}' is not a valid {what} (letters, digits, . _ : -; at most 128)")
    return name


def mac_id(mac: str) -> str:
    """A MAC in the node-id form: lower case, hyphens (`52-54-00-12-34-56`)."""
    if not MAC.match(mac):
        raise BadName(f"'{mac}' is not a MAC address")
    return mac.lower().replace(":", "-")


def site_gen(generation: int) -> str:
    return f"{SITE_GEN}{generation}"


def site_blob(body: str, index: int) -> str:
    return f"{SITE_BLOB}{body}/{index}"


def chunks(value: bytes, size: int = CHUNK) -> list[bytes]:
    return [value[i : i + size] for i in range(0, len(value), size)] or [b""]


def node(node_id: str) -> str:
    return NODES + checked(node_id, "node id")


def image(name: str) -> str:
    return IMAGES + checked(name, "image name")


def rollout(role: str) -> str:
    return ROLLOUTS_CURRENT + checked(role, "role")


def fleetlock(group: str) -> str:
    return FLEETLOCK + checked(group, "group")


def node_token(node_id: str) -> str:
    return NODE_TOKENS + checked(node_id, "node id")


def last_segment(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def encode(value: Any) -> bytes:
    return canonical_json(value).encode()


def decode(raw: bytes) -> Any:
    return json.loads(raw)
