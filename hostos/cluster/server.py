"""The cluster server's HTTP API: `create_app(state, settings)`, and `serve()` for the CLI.

Admin endpoints publish the site, list nodes, register images, assign them and issue node
tokens; nodes long-poll their config, send heartbeats and take reboot slots through the
FleetLock protocol; iPXE fetches boot scripts and images without a token.  Every error is
JSON `{"kind": …, "value": …}` (FleetLock's shape).  OpenAPI: `/openapi.json`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Header, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hostos import __version__
from hostos.cluster import auth, ipxe, keys
from hostos.cluster.auth import Principal
from hostos.cluster.auth import Scope as Access
from hostos.cluster.changes import SITE, Changes, node_topic
from hostos.cluster.records import Heartbeat, ImageRecord, NodeRecord, RecordError, SiteDocument
from hostos.cluster.state import Contention, NodeConfig, NotFound, State
from hostos.logfmt import kv

log = logging.getLogger(__name__)
access = logging.getLogger("hostos.access")

MiB = 1 << 20


@dataclass(frozen=True)
class Settings:
    admin_token: str
    images: Path | None = None  # <images>/<name>/{vmlinuz,initramfs.img,boot.ipxe,…}
    public_url: str | None = None  # hostos.server= for nodes; default: the URL iPXE asked
    boot_tokens: bool = False  # a fresh node token in every boot script (see docs/cluster.md)
    max_body: int = MiB
    max_site_body: int = 16 * MiB
    max_wait: float = 300.0  # seconds a config long-poll may wait


class ApiError(Exception):
    def __init__(self, status: int, kind: str, value: str) -> None:
        super().__init__(value)
        self.status, self.kind, self.value = status, kind, value


def error_response(status: int, kind: str, value: str) -> JSONResponse:
    return JSONResponse({"kind": kind, "value": value}, status_code=status)


HTTP_KINDS = {401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 413: "too_large"}


def _add_error_handlers(app: FastAPI) -> None:
    async def api(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.kind, exc.value)

    async def http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        kind = HTTP_KINDS.get(exc.status_code, "bad_request" if exc.status_code < 500 else
                              "server_error")
        return error_response(exc.status_code, kind, str(exc.detail))

    async def invalid(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors())
        return error_response(422, "bad_request", problems)

    async def bad_value(_: Request, exc: Exception) -> JSONResponse:
        return error_response(400, "bad_request", str(exc))

    async def not_found(_: Request, exc: Exception) -> JSONResponse:
        return error_response(404, "not_found", str(exc))

    async def contended(_: Request, exc: Exception) -> JSONResponse:
        return error_response(503, "contention", str(exc))

    app.add_exception_handler(ApiError, api)
    app.add_exception_handler(HTTPException, http)
    app.add_exception_handler(RequestValidationError, invalid)
    for error in (RecordError, keys.BadName, ipxe.ScriptError):
        app.add_exception_handler(error, bad_value)
    async def failed(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed: %s: %s", request.method, request.url.path,
                  type(exc).__name__, exc)
        return error_response(500, "server_error", f"{type(exc).__name__}: {exc}")

    app.add_exception_handler(NotFound, not_found)
    app.add_exception_handler(Contention, contended)
    app.add_exception_handler(Exception, failed)  # the store away, a bug: still JSON


class _HttpMiddleware:
    """An ASGI middleware for HTTP requests; anything else (lifespan) passes through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.http(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class AccessLog(_HttpMiddleware):
    """One logfmt line per request: method, path, status, time, caller. Never headers, the
    query string or a body, so no token reaches the log."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started, status = time.monotonic(), 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            who = scope.get("state", {}).get("principal")
            access.info(kv("http", method=scope["method"], path=scope["path"], status=status,
                           ms=round((time.monotonic() - started) * 1000, 1),
                           who=str(who) if who else None))


class TooLargeAsJson(_HttpMiddleware):
    """The body limit answers 413 in plain text before FastAPI's handlers see the request:
    make it the API's JSON error like every other."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        replaced = False

        async def sending(message: Message) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start" and message["status"] == 413:
                replaced = True
                response = error_response(413, "too_large", "the request body is over the "
                                          "limit: 1 MiB, 16 MiB for a site")
                await send({**message, "headers": response.raw_headers})
                await send({"type": "http.response.body", "body": response.body})
            elif not replaced:
                await send(message)

        await self.app(scope, receive, sending)


class _App(FastAPI):
    def build_middleware_stack(self) -> ASGIApp:
        """FastAPI's stack (its body limit outermost) inside the access log and the JSON
        413, so that every answer is logged and every error is JSON."""
        return AccessLog(TooLargeAsJson(super().build_middleware_stack()))


# -- request bodies (their OpenAPI schemas) -------------------------------------------------

class ClientParams(BaseModel):
    id: str
    group: str = "default"


class FleetLockRequest(BaseModel):
    client_params: ClientParams


class Assignment(BaseModel):
    image: str


class ImageRegistration(BaseModel):
    cmdline: str | None = None  # default: the kernel arguments of the image's boot.ipxe


Caller = Callable[[Request], Principal]
JsonBody = Annotated[dict[str, Any], Body()]
FleetLockHeader = Annotated[str | None, Header(alias="fleet-lock-protocol")]


def _caller(request: Request) -> Principal:
    """The authenticated caller (401 without a valid token)."""
    authenticate: Caller = request.app.state.authenticate
    return authenticate(request)


Who = Annotated[Principal, Depends(_caller)]


def create_app(state: State, settings: Settings) -> FastAPI:
    changes = Changes(state.kv)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        changes.start(asyncio.get_running_loop())
        try:
            yield
        finally:
            changes.stop()

    app = _App(title="hostos cluster server", version=__version__, lifespan=lifespan,
                  max_body_size=settings.max_body)
    app.state.changes = changes
    _add_error_handlers(app)
    app.state.authenticate = _authenticator(state, settings)
    _site_routes(app, state, settings)
    _node_routes(app, state, settings, changes)
    _fleetlock_routes(app, state)
    _boot_routes(app, state, settings, changes)
    return app


def _authenticator(state: State, settings: Settings) -> Caller:
    admin_hash = auth.token_hash(settings.admin_token)

    def caller(request: Request) -> Principal:
        token = auth.bearer(request.headers.get("authorization"))
        if token is None:
            raise ApiError(401, "unauthorized", "this needs a bearer token")
        node_id = auth.token_node(token)
        try:
            stored = state.token_hash(node_id) if node_id else None
        except keys.BadName:
            stored = None
        who = auth.identify(token, admin_hash, stored)
        if who is None:
            raise ApiError(401, "unauthorized", "the token is not the admin's or a node's")
        request.state.principal = who
        return who

    return caller


def require(who: Principal, scope: Access, node_id: str | None = None) -> None:
    if not auth.allowed(who, scope, node_id):
        target = f" for node {node_id}" if node_id else ""
        raise ApiError(403, "forbidden", f"{who} may not do this{target}")


# -- the site, images, tokens (admin) ------------------------------------------------------

def _site_routes(app: FastAPI, state: State, settings: Settings) -> None:
    @app.post("/v1/site", max_body_size=settings.max_site_body)
    def publish(body: JsonBody, who: Who) -> dict[str, Any]:
        """Publish a resolved site: a new generation when its hash changed."""
        require(who, Access.admin)
        published = state.publish(SiteDocument.from_json(body))
        return {"generation": published.generation, "hash": published.hash,
                "changed": published.changed}

    @app.post("/v1/site/diff", max_body_size=settings.max_site_body)
    def diff(body: JsonBody, who: Who) -> dict[str, Any]:
        """What publishing this site would change (nothing is written)."""
        require(who, Access.admin)
        new, current = SiteDocument.from_json(body), state.generation()
        return {"generation": current.generation if current else 0,
                "changed": current is None or current.hash != new.hash(),
                **new.diff(current.site if current else None)}

    @app.get("/v1/site")
    def current_site(who: Who) -> dict[str, Any]:
        """The current generation, as published."""
        require(who, Access.admin)
        generation = state.generation()
        if generation is None:
            raise NotFound("no site has been published")
        return generation.to_json()

    @app.get("/v1/images")
    def images(who: Who) -> list[dict[str, Any]]:
        require(who, Access.admin)
        return [i.to_json() for i in state.images()]

    @app.post("/v1/images/{name}")
    def register(name: str, who: Who, body: ImageRegistration | None = None) -> dict[str, Any]:
        """Register the image in <images>/<name>/ (files checked and hashed)."""
        require(who, Access.admin)
        if settings.images is None:
            raise ApiError(409, "no_images", "the server runs without --images")
        cmdline = body.cmdline if body else None
        return state.register_image(read_image(settings.images, name, cmdline)).to_json()

    @app.post("/v1/tokens/nodes/{node_id}")
    def issue(node_id: str, who: Who) -> dict[str, str]:
        """A new token for the node (the previous one stops working)."""
        require(who, Access.admin)
        token = auth.new_node_token(keys.checked(node_id, "node id"))
        state.store_token_hash(node_id, auth.token_hash(token))
        return {"node": node_id, "token": token}

    @app.delete("/v1/tokens/nodes/{node_id}")
    def revoke(node_id: str, who: Who) -> dict[str, bool]:
        require(who, Access.admin)
        return {"revoked": state.revoke_token(node_id)}


def read_image(root: Path, name: str, cmdline: str | None) -> ImageRecord:
    """The record of the image in root/name: vmlinuz and initramfs.img must be there; the
    checksums come from manifest.json when it has them, else from the files."""
    from hostos.image.boot import INITRD, IPXE, KERNEL, ipxe_cmdline

    directory = root / keys.checked(name, "image name")
    missing = [f for f in (KERNEL, INITRD) if not (directory / f).is_file()]
    if missing:
        raise NotFound(f"image {name}: no {' or '.join(missing)} in {directory}")
    if cmdline is None:
        script = directory / IPXE
        cmdline = ipxe_cmdline(script.read_text()) if script.is_file() else ""
    listed = _manifest_sums(directory / "manifest.json")
    sums = {f: listed.get(f) or _sha256(directory / f) for f in (KERNEL, INITRD)}
    return ImageRecord(name, KERNEL, INITRD, ipxe.check_cmdline(cmdline), sums)


def _manifest_sums(path: Path) -> dict[str, str]:
    try:
        files = json.loads(path.read_text()).get("files", {})
        return {name: str(entry["sha256"]) for name, entry in files.items()}
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return {}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(MiB), b""):
            digest.update(block)
    return digest.hexdigest()


# -- nodes -----------------------------------------------------------------------------------

def _node_routes(app: FastAPI, state: State, settings: Settings, changes: Changes) -> None:
    @app.get("/v1/nodes")
    def nodes(who: Who) -> list[dict[str, Any]]:
        """Every node the inventory or a heartbeat knows."""
        require(who, Access.admin)
        return [n.to_json() for n in state.nodes()]

    @app.get("/v1/nodes/{node_id}")
    def node(node_id: str, who: Who) -> dict[str, Any]:
        require(who, Access.node_read, node_id)
        return _known(state.node(node_id), node_id).to_json()

    @app.put("/v1/nodes/{node_id}/status")
    def heartbeat(node_id: str, body: JsonBody, who: Who) -> dict[str, Any]:
        """A heartbeat: booted image, unit health, mount state; answers the node record
        (with the image the node should boot)."""
        require(who, Access.node_write, node_id)
        keys.checked(node_id, "node id")
        return state.heartbeat(node_id, Heartbeat.from_json(body)).to_json()

    @app.put("/v1/nodes/{node_id}/assignment")
    def assign(node_id: str, body: Assignment, who: Who) -> dict[str, Any]:
        """Assign an image without a reboot slot (a first boot; rollouts use slots)."""
        require(who, Access.admin)
        return state.assign(node_id, body.image).to_json()

    @app.get("/v1/nodes/{node_id}/config", responses={304: {"description": "nothing new"}})
    async def config(node_id: str, who: Who, after: int = 0, wait: float = 0,
                     image: str | None = None) -> Any:
        """The node's config once the generation is above `after` (or, with `image`, once
        the assigned image is not `image`); waits up to `wait` seconds, then 304."""
        require(who, Access.node_read, node_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, min(wait, settings.max_wait))
        # the node's own record changes with each heartbeat: follow it only for `image`
        topics = [SITE] if image is None else [SITE, node_topic(node_id)]
        while True:
            future = changes.subscribe(topics)
            try:
                ready = await run_in_threadpool(_ready_config, state, node_id, after, image)
                if ready is not None:
                    return ready.to_json()
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return Response(status_code=304)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(future, remaining)
            finally:
                changes.unsubscribe(future)


def _known(record: NodeRecord | None, node_id: str) -> NodeRecord:
    if record is None:
        raise NotFound(f"no node '{node_id}' in the inventory or among heartbeats")
    return record


def _ready_config(state: State, node_id: str, after: int, image: str | None) -> NodeConfig | None:
    """The config to answer now, None to wait; NotFound when a newer generation has no
    such node."""
    config = state.config(node_id)
    if config is None:
        current = state.current_generation()
        if current > after:
            raise NotFound(f"node '{node_id}' is not in site generation {current}")
        return None
    if config.generation > after or (image is not None and config.assigned_image != image):
        return config
    return None


# -- FleetLock -------------------------------------------------------------------------------

def _fleetlock_routes(app: FastAPI, state: State) -> None:
    def slot_call(body: FleetLockRequest, who: Principal, protocol: str | None,
                  take: bool) -> dict[str, Any]:
        if protocol != "true":
            raise ApiError(400, "missing_header", "fleet-lock-protocol: true is required")
        node_id = keys.checked(body.client_params.id, "client_params.id")
        require(who, Access.fleetlock, node_id)
        group = state.group_of(node_id, body.client_params.group)
        outcome = (state.pre_reboot if take else state.steady_state)(node_id, group)
        if not outcome.ok:
            raise ApiError(409, "failed_lock", outcome.reason)
        return {"kind": "ok", "value": outcome.reason, "group": group,
                "holders": list(outcome.table.holders), "max": outcome.table.max}

    @app.post("/v1/pre-reboot")
    def pre_reboot(body: FleetLockRequest, who: Who, protocol: FleetLockHeader = None) -> Any:
        """FleetLock RecursiveLock: take (or keep) a reboot slot of the group."""
        return slot_call(body, who, protocol, take=True)

    @app.post("/v1/steady-state")
    def steady_state(body: FleetLockRequest, who: Who, protocol: FleetLockHeader = None) -> Any:
        """FleetLock UnlockIfHeld: give back the reboot slot, if held."""
        return slot_call(body, who, protocol, take=False)


# -- iPXE, images, health --------------------------------------------------------------------

def _boot_routes(app: FastAPI, state: State, settings: Settings, changes: Changes) -> None:

    @app.get("/boot.ipxe", response_class=PlainTextResponse)
    def chain(request: Request) -> str:
        """For DHCP to hand every node: chains to /boot/<its MAC>.ipxe."""
        return ipxe.chain_script(settings.public_url or str(request.base_url))

    @app.get("/boot/{mac}.ipxe", response_class=PlainTextResponse)
    def boot(mac: str, request: Request) -> str:
        """The iPXE script for the node with this MAC (colons or hyphens)."""
        node = state.node_by_mac(mac)
        server = settings.public_url or str(request.base_url).rstrip("/")
        name = node.assigned_image or _role_image(state, node.role)
        image = state.image(name) if name else None
        if image is None:
            why = f"no image for {node.id}" if name is None else f"image {name} not registered"
            return ipxe.waiting_script(why, f"{server}/boot/{keys.mac_id(mac)}.ipxe")
        token = None
        if settings.boot_tokens:
            token = auth.new_node_token(node.id)
            state.store_token_hash(node.id, auth.token_hash(token))
        return ipxe.boot_script(image, node_id=node.id, mac_id=keys.mac_id(mac),
                                server_url=server, token=token)

    @app.api_route("/images/{name}/{file}", methods=["GET", "HEAD"])
    def image_file(name: str, file: str) -> FileResponse:
        """A file of an image, with Range requests (206) for iPXE and curl."""
        path = None
        if settings.images is not None:
            path = settings.images / keys.checked(name, "image name") / keys.checked(file, "file")
        if path is None or not path.is_file():
            raise NotFound(f"no file {file} in image {name}")
        return FileResponse(path, media_type="application/octet-stream")

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Up, the store's revision, the site generation, how many long-polls wait."""
        revision = await run_in_threadpool(state.kv.revision)
        generation = await run_in_threadpool(state.current_generation)
        return {"ok": True, "revision": revision, "generation": generation,
                "waiting": changes.waiting}  # read in the event loop, which owns it


def _role_image(state: State, role: str) -> str | None:
    generation = state.generation()
    spec = generation.roles.get(role) if generation and role else None
    image = spec.get("image") if isinstance(spec, dict) else None
    return image if isinstance(image, str) else None
