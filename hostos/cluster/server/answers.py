"""The server's errors as answers: JSON `{"kind": …, "value": …}` (FleetLock's shape).

One table says which exception becomes which status and kind, for FastAPI's handlers and for
the node path (`nodeapi.py`) alike.
"""

from __future__ import annotations

import json

from hostos.cluster.records import RecordError
from hostos.cluster.store import keys
from hostos.cluster.store.fleet import Contention, NotFound
from hostos.image import netboot


class ApiError(Exception):
    def __init__(self, status: int, kind: str, value: str) -> None:
        super().__init__(value)
        self.status, self.kind, self.value = status, kind, value


HTTP_KINDS = {
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
}

# exception → (status, kind); the value is the exception's text
KNOWN: tuple[tuple[type[Exception], int, str], ...] = (
    (RecordError, 400, "bad_request"),
    (keys.BadName, 400, "bad_request"),
    (netboot.ScriptError, 400, "bad_request"),
    (NotFound, 404, "not_found"),
    (Contention, 503, "contention"),
)


def error_body(kind: str, value: str) -> bytes:
    return json.dumps({"kind": kind, "value": value}).encode()


def known(exc: Exception) -> tuple[int, str, str] | None:
    """(status, kind, value) of an exception the API answers; None for any other (a 500)."""
    if isinstance(exc, ApiError):
        return exc.status, exc.kind, exc.value
    for kind, status, name in KNOWN:
        if isinstance(exc, kind):
            return status, name, str(exc)
    return None
