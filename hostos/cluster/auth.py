"""Who may do what: the admin token, per-node tokens, and the scope rules.

The admin token comes from a file (`--admin-token-file`).  Node tokens are issued by the
admin (`hostos tokens issue NODE`): `hn1.<node id>.<secret>`, so the server finds the one
stored hash to compare with without a scan.  Only the sha256 of a token is stored; every
comparison goes through `hmac.compare_digest`.

Scopes: the admin may do everything.  A node token may read `/v1/nodes/<its id>/…`, write its
own heartbeat, and take or give back a FleetLock slot under its own id; anything else is
forbidden (403).  No token, or one that matches nothing: 401.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

TOKEN_PREFIX = "hn1."


class Scope(StrEnum):
    admin = "admin"  # site, inventory, images, tokens, rollouts
    node_read = "node-read"  # GET /v1/nodes/<id>/…
    node_write = "node-write"  # PUT /v1/nodes/<id>/status
    fleetlock = "fleetlock"  # pre-reboot / steady-state with client_params.id


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the admin, or one node."""

    node_id: str | None  # None: the admin

    @property
    def is_admin(self) -> bool:
        return self.node_id is None

    def __str__(self) -> str:
        return "admin" if self.node_id is None else f"node:{self.node_id}"


ADMIN = Principal(None)


class AdminTokenError(ValueError):
    """The admin token file is missing, unreadable or empty."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same_hash(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def read_admin_token(path: str | Path) -> str:
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise AdminTokenError(f"admin token file {path}: {exc.strerror or exc}") from None
    if not token or any(c.isspace() for c in token):
        raise AdminTokenError(f"admin token file {path}: expected one token on one line")
    return token


def new_node_token(node_id: str) -> str:
    return f"{TOKEN_PREFIX}{node_id}.{secrets.token_urlsafe(32)}"


def token_node(token: str) -> str | None:
    """The node id a node token names (not yet checked), or None for any other token."""
    if not token.startswith(TOKEN_PREFIX) or token.count(".") < 2:
        return None
    node_id = token[len(TOKEN_PREFIX) :].rsplit(".", 1)[0]
    return node_id or None


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer …` header."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def identify(token: str | None, admin_hash: str, stored_node_hash: str | None) -> Principal | None:
    """Who presents token: admin_hash is the admin token's hash; stored_node_hash the hash
    stored for the node the token names (token_node), None when there is none."""
    if not token:
        return None
    presented = token_hash(token)
    if same_hash(presented, admin_hash):
        return ADMIN
    node_id = token_node(token)
    if (
        node_id is not None
        and stored_node_hash is not None
        and same_hash(presented, stored_node_hash)
    ):
        return Principal(node_id)
    return None


def allowed(principal: Principal, scope: Scope, node_id: str | None = None) -> bool:
    """May principal act in scope on node_id (the path's or the FleetLock client's id)?"""
    if principal.is_admin:
        return True
    if scope is Scope.admin:
        return False
    return node_id is not None and node_id == principal.node_id
