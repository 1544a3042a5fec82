"""The operator's side of the cluster API: apply, diff, nodes, rollouts, node tokens.

Every call goes through hostos.cluster.client with the admin token; an answer other than
2xx becomes its `ServerError` with the server's own words (`{"kind", "value"}`), a server out
of reach its `Unreachable` (both `RuntimeFailure`s).  Also here: the resolved site a publish
sends, made from a site loaded by `hostos.site.load`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from hostos.cluster.client import TIMEOUT, CallFailed, ServerError
from hostos.cluster.client import Client as Http

if TYPE_CHECKING:
    from hostos.site.load import Site

TOKEN_TIMEOUT = 10.0


class Client:
    def __init__(self, server: str, admin_token: str, timeout: float = TIMEOUT) -> None:
        """BadURL (a ValueError) when server is not http://HOST[:PORT] or https://…"""
        self.http = Http(server, admin_token, timeout)

    def call(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
        """The decoded JSON answer of method path (body sent as JSON)."""
        return self.http.call(method, path, body, timeout=timeout)

    # -- the site and the nodes ------------------------------------------------------------

    def publish(self, site: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self.call("POST", "/v1/site", site))

    def diff(self, site: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self.call("POST", "/v1/site/diff", site))

    def current_site(self) -> dict[str, Any] | None:
        try:
            return dict(self.call("GET", "/v1/site"))
        except ServerError as exc:
            if exc.status == 404:
                return None
            raise

    def nodes(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/v1/nodes"))

    # -- rollouts --------------------------------------------------------------------------

    def start_rollout(self, request: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self.call("POST", "/v1/rollouts", request))

    def rollouts(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/v1/rollouts"))

    def rollout(self, role: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/v1/rollouts/{quote(role, safe='')}"))

    def rollout_command(self, role: str, command: str) -> dict[str, Any]:
        return dict(self.call("POST", f"/v1/rollouts/{quote(role, safe='')}/{command}"))

    # -- tokens ----------------------------------------------------------------------------

    def node_token(self, node_id: str) -> str:
        """A new token for node_id (its previous one stops working)."""
        path = f"/v1/tokens/nodes/{quote(node_id, safe='')}"
        answer = self.call("POST", path, timeout=TOKEN_TIMEOUT)
        token = answer.get("token") if isinstance(answer, dict) else None
        if not isinstance(token, str):
            raise CallFailed(self.http.server, "the answer holds no token")
        return token


def site_document(site: Site) -> dict[str, Any]:
    """What `POST /v1/site` takes: each role's resolved spec, and the inventory."""
    from hostos.site.resolve import resolve_role, spec_document

    roles = {name: spec_document(resolve_role(site, name)) for name in sorted(site.roles)}
    nodes: dict[str, dict[str, Any]] = {}
    for node in site.nodes:
        entry: dict[str, Any] = {"role": node.role}
        if node.mac:
            entry["mac"] = node.mac
        if node.labels:
            entry["labels"] = dict(node.labels)
        nodes[node.name] = entry
    return {"roles": roles, "nodes": nodes}
