"""The node traffic of the server: heartbeats and config long-polls, on a lean ASGI path.

A fleet's agents send nearly every request the server gets: a heartbeat every few seconds
each, and a long-poll each that a publish answers all at once.  Through FastAPI's stack
(routing, dependency injection, body validation, its exception, body-limit and telemetry
middleware) those cost about twice the CPU of the work itself (py-spy, 300 heartbeats/s), so
`NodePath`, a small ASGI app in front of that stack, answers the two routes itself and hands
everything else on.  FastAPI still declares both routes (their OpenAPI schema) and calls the
same `NodeTraffic` methods, so both paths give the same answers; `Settings.node_path=False`
serves them through FastAPI alone (the tests run both).

`NodeTraffic` answers from memory where it can: tokens and long-poll readiness from the
watcher's mirror (`mirror.py`), a role's spec encoded once per generation.  Heartbeats are
written in batches (`beats.py`); the store reads of a long-poll without a wait run in a
thread pool of their own.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hostos.cluster import auth, pacing
from hostos.cluster.auth import Principal
from hostos.cluster.auth import Scope as Access
from hostos.cluster.records import Heartbeat, NodeRecord
from hostos.cluster.server.answers import ApiError, error_body, known
from hostos.cluster.server.beats import HeartbeatWriter
from hostos.cluster.server.changes import SITE, Changes, node_topic
from hostos.cluster.store import keys
from hostos.cluster.store.fleet import FleetStore, NodeConfig, NotFound, config_of

log = logging.getLogger("hostos.cluster.server.app")

T = TypeVar("T")
STORE_THREADS = 16  # store reads of long-polls answered at once (a fleet starting up)
SPECS_CACHED = 64  # encoded role specs kept: (generation, role) pairs


def require(who: Principal, scope: Access, node_id: str | None = None) -> None:
    if not auth.allowed(who, scope, node_id):
        target = f" for node {node_id}" if node_id else ""
        raise ApiError(403, "forbidden", f"{who} may not do this{target}")


class NodeTraffic:
    """Authentication, heartbeats and config long-polls, for both HTTP paths."""

    def __init__(
        self,
        state: FleetStore,
        changes: Changes,
        admin_token: str,
        max_wait: float,
        heartbeat_rate: float = pacing.RATE,
    ) -> None:
        self.state, self.changes, self.max_wait = state, changes, max_wait
        self.heartbeat_rate = heartbeat_rate
        self._admin_hash = auth.token_hash(admin_token)
        self._specs: dict[tuple[int, str, str], bytes] = {}
        self._pool = ThreadPoolExecutor(STORE_THREADS, thread_name_prefix="store")
        self._beats = HeartbeatWriter(state)

    def close(self) -> None:
        self._beats.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def in_thread(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, call, *args)

    # -- who calls ------------------------------------------------------------------------

    def authenticate(self, header: str | None) -> Principal:
        """The caller of an `Authorization` header; 401 without a valid token. A node token
        is checked against the mirror's hash, and against the store when the mirror has no
        hash for the node or another one (a token issued or rotated a moment ago)."""
        token = auth.bearer(header)
        if token is None:
            raise ApiError(401, "unauthorized", "this needs a bearer token")
        node_id = auth.token_node(token)
        mirrored = self.changes.mirror.tokens.get(node_id) if node_id else None
        who = auth.identify(token, self._admin_hash, mirrored)
        if who is None and node_id:
            try:
                stored = self.state.token_hash(node_id)
            except keys.BadName:
                stored = None
            if stored != mirrored:
                who = auth.identify(token, self._admin_hash, stored)
        if who is None:
            raise ApiError(401, "unauthorized", "the token is not the admin's or a node's")
        return who

    def store_token_hash(self, node_id: str, digest: str) -> None:
        """Store a node's new token hash; this process's mirror knows it at once."""
        self.state.store_token_hash(node_id, digest)
        self.changes.mirror.tokens[node_id] = digest

    def revoke_token(self, node_id: str) -> bool:
        """Revoke a node's token: at once here, within the watch's delay on other replicas."""
        self.changes.mirror.tokens.pop(node_id, None)
        return self.state.revoke_token(node_id)

    # -- heartbeats -----------------------------------------------------------------------

    def heartbeat(self, node_id: str, body: Any, who: Principal) -> bytes:
        """A heartbeat from a thread (FastAPI's route): the node's record once stored."""
        return encode_record(self._beats.submit(*self._beat(node_id, body, who)).result())

    async def heartbeat_answer(self, node_id: str, body: Any, who: Principal) -> bytes:
        """A heartbeat from the event loop, queued for the next batch (beats.py)."""
        return encode_record(await self._beats.submit_async(*self._beat(node_id, body, who)))

    def _beat(self, node_id: str, body: Any, who: Principal) -> tuple[str, Heartbeat, int | None]:
        require(who, Access.node_write, node_id)
        keys.checked(node_id, "node id")
        mirror = self.changes.mirror
        known = mirror.generation or None  # 0: not followed yet, read it
        pace = pacing.heartbeat_seconds(len(mirror.assigned), self.heartbeat_rate)
        return node_id, replace(Heartbeat.from_json(body), interval=pace), known

    # -- config long-polls ----------------------------------------------------------------

    async def config(
        self, node_id: str, who: Principal, after: int, wait: float, image: str | None
    ) -> bytes | None:
        """The node's config, encoded, once its generation is above `after` (or, with
        `image`, once the assigned image is not `image`); None when `wait` seconds passed
        first. An answer at once comes from the store; whether to wait, and the answer
        after a wake, from the mirror, which the watcher updates before it wakes anyone."""
        require(who, Access.node_read, node_id)
        keys.checked(node_id, "node id")
        if wait <= 0:
            ready = await self.in_thread(_stored_config, self.state, node_id, after, image)
            return None if ready is None else self.encode(ready)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(wait, self.max_wait)
        # the node's own topic wakes on a new assignment only (the mirror's rule)
        topics = [SITE] if image is None else [SITE, node_topic(node_id)]
        first = True
        while True:
            future = self.changes.subscribe(topics)
            try:
                ready = self._mirrored_config(node_id, after, image)
                if ready is not None and first:
                    # answered at once: the mirror may lag a write just made (a publish a
                    # moment ago), so the store says what is current; a woken poll needs
                    # no such read, the watcher updated the mirror before waking it
                    ready = await self.in_thread(_stored_config, self.state, node_id, after, image)
                first = False
                if ready is not None:
                    return self.encode(ready)
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                # a timer that completes the future (cheaper than wait_for's task and
                # callbacks, for 10,000 waiters woken at once)
                timer = loop.call_later(remaining, _expire, future)
                try:
                    await future
                finally:
                    timer.cancel()
            finally:
                self.changes.unsubscribe(future)

    def _mirrored_config(self, node_id: str, after: int, image: str | None) -> NodeConfig | None:
        mirror = self.changes.mirror
        site = self.state.generation(mirror.generation) if mirror.generation else None
        config = config_of(site, node_id, mirror.assigned.get(node_id)) if site else None
        return ready_config(config, mirror.generation, node_id, after, image)

    def encode(self, config: NodeConfig) -> bytes:
        """config as JSON; the role's spec (the bulk) encoded once per generation."""
        key = (config.generation, config.hash, config.role)
        spec = self._specs.get(key)
        if spec is None:
            if len(self._specs) >= SPECS_CACHED:
                self._specs.clear()
            spec = self._specs[key] = json.dumps(config.spec, separators=(",", ":")).encode()
        rest = json.dumps(
            {k: v for k, v in config.to_json().items() if k != "spec"}, separators=(",", ":")
        ).encode()
        return b'{"spec":' + spec + b"," + rest[1:]


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def encode_record(record: NodeRecord) -> bytes:
    return json.dumps(record.to_json(), separators=(",", ":")).encode()


def _stored_config(
    state: FleetStore, node_id: str, after: int, image: str | None
) -> NodeConfig | None:
    return ready_config(state.config(node_id), state.current_generation(), node_id, after, image)


def ready_config(
    config: NodeConfig | None, current: int, node_id: str, after: int, image: str | None
) -> NodeConfig | None:
    """The config to answer now, None to wait; NotFound when a generation newer than `after`
    does not list the node."""
    if config is None:
        if current > after:
            raise NotFound(f"node '{node_id}' is not in site generation {current}")
        return None
    if config.generation > after or (image is not None and config.assigned_image != image):
        return config
    return None


# -- the ASGI path --------------------------------------------------------------------------


class NodePath:
    """`PUT /v1/nodes/<id>/status` and `GET /v1/nodes/<id>/config` answered here; every other
    request goes to app."""

    def __init__(self, app: ASGIApp, traffic: NodeTraffic, max_body: int) -> None:
        self.app, self.traffic, self.max_body = app, traffic, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = node_route(scope) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        try:
            status, body = await self._answer(route, scope, receive)
        except Exception as exc:  # every error is an answer
            status, body = _failure(exc, scope)
        headers = (
            [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            if body
            else []
        )
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _answer(
        self, route: tuple[str, str], scope: Scope, receive: Receive
    ) -> tuple[int, bytes]:
        what, node_id = route
        who = self.traffic.authenticate(_header(scope, b"authorization"))
        scope.setdefault("state", {})["principal"] = who
        if what == "status":
            body = await _json_body(receive, self.max_body)
            return 200, await self.traffic.heartbeat_answer(node_id, body, who)
        after, wait, image = _config_query(scope["query_string"])
        answer = await self.traffic.config(node_id, who, after, wait, image)
        return (304, b"") if answer is None else (200, answer)


def node_route(scope: Scope) -> tuple[str, str] | None:
    """("status" | "config", node id) for the two node routes, None for any other request."""
    parts = scope["path"].split("/")
    if len(parts) != 5 or parts[:3] != ["", "v1", "nodes"] or not parts[3]:
        return None
    method, what = scope["method"], parts[4]
    if (method, what) in (("PUT", "status"), ("GET", "config")):
        return what, parts[3]
    return None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def _json_body(receive: Receive, limit: int) -> Any:
    chunks, size = [], 0
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "bad_request", "the client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(
                413, "too_large", "the request body is over the limit: 1 MiB, 16 MiB for a site"
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    try:
        body = json.loads(b"".join(chunks))
    except ValueError as exc:
        raise ApiError(422, "bad_request", f"body: JSON decode error: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(422, "bad_request", "body: Input should be a valid dictionary")
    return body


def _config_query(raw: bytes) -> tuple[int, float, str | None]:
    query = dict(parse_qsl(raw.decode("latin-1")))
    try:
        after, wait = int(query.get("after", 0)), float(query.get("wait", 0))
    except ValueError:
        raise ApiError(422, "bad_request", "after and wait: expected numbers") from None
    return after, wait, query.get("image")


def _failure(exc: Exception, scope: Scope) -> tuple[int, bytes]:
    answer = known(exc)
    if answer is None:
        log.error("%s %s failed: %s: %s", scope["method"], scope["path"], type(exc).__name__, exc)
        answer = 500, "server_error", f"{type(exc).__name__}: {exc}"
    status, kind, value = answer
    return status, error_body(kind, value)
