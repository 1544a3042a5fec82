"""The operator's side of the cluster API over stdlib `urllib`: apply, diff, nodes, rollouts.

Every call sends the admin token; an answer other than 2xx becomes `ServerError` with the
server's own words (`{"kind", "value"}`), a server out of reach a `RuntimeFailure`.  Also
here: the resolved site a publish sends, made from a site loaded by `hostos.site.load`.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from hostos.errors import RuntimeFailure

if TYPE_CHECKING:
    from hostos.site.load import Site

TIMEOUT = 30.0


class ServerError(RuntimeFailure):
    """The server answered with an error."""

    def __init__(self, server: str, status: int, kind: str, value: str) -> None:
        super().__init__(f"{server}: {status} {kind}: {value}")
        self.status, self.kind, self.value = status, kind, value


class Client:
    def __init__(self, server: str, admin_token: str, timeout: float = TIMEOUT) -> None:
        self.server = server.rstrip("/")
        self.token = admin_token
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """The decoded JSON answer of method path (body sent as JSON)."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(
            self.server + path, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            kind, value = _error_of(exc)
            raise ServerError(self.server, exc.code, kind, value) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RuntimeFailure(f"{self.server}: {reason}") from None
        except ValueError as exc:
            raise RuntimeFailure(f"{self.server}: not a JSON answer ({exc})") from None

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


def _error_of(exc: urllib.error.HTTPError) -> tuple[str, str]:
    try:
        body = json.loads(exc.read())
    except ValueError:
        return "error", str(exc.reason)
    if isinstance(body, dict):
        return str(body.get("kind", "error")), str(body.get("value", exc.reason))
    return "error", str(exc.reason)


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
