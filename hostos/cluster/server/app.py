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
from collections.abc import AsyncIterator, Callable, Mapping
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
from hostos.cluster import auth, pacing
from hostos.cluster.auth import Principal
from hostos.cluster.auth import Scope as Access
from hostos.cluster.records import ImageRecord, NodeRecord, RecordError, SiteDocument
from hostos.cluster.server.answers import HTTP_KINDS, KNOWN, ApiError
from hostos.cluster.server.changes import Changes
from hostos.cluster.server.nodeapi import NodePath, NodeTraffic, node_route, require
from hostos.cluster.store import keys
from hostos.cluster.store.fleet import FleetStore, NotFound
from hostos.image import netboot
from hostos.image.netboot import NodeBoot
from hostos.logfmt import kv
from hostos.site.rollout import rollout_policy

log = logging.getLogger(__name__)
access = logging.getLogger("hostos.access")

MiB = 1 << 20
JSON = "application/json"


@dataclass(frozen=True)
class Settings:
    admin_token: str
    images: Path | None = None  # <images>/<name>/{vmlinuz,initramfs.img,boot.ipxe,…}
    public_url: str | None = None  # hostos.server= for nodes; default: the URL iPXE asked
    boot_tokens: bool = False  # a fresh node token in every boot script (see docs/cluster.md)
    max_body: int = MiB
    max_site_body: int = 16 * MiB
    max_wait: float = 300.0  # seconds a config long-poll may wait
    node_path: bool = True  # heartbeats and long-polls on the lean path (nodeapi.py)
    heartbeat_rate: float = pacing.RATE  # heartbeats/s asked of the whole fleet (pacing.py)


def error_response(status: int, kind: str, value: str) -> JSONResponse:
    return JSONResponse({"kind": kind, "value": value}, status_code=status)


def _add_error_handlers(app: FastAPI) -> None:
    async def api(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.kind, exc.value)

    async def http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        kind = HTTP_KINDS.get(
            exc.status_code, "bad_request" if exc.status_code < 500 else "server_error"
        )
        return error_response(exc.status_code, kind, str(exc.detail))

    async def invalid(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return error_response(422, "bad_request", problems)

    def answer(status: int, kind: str) -> Callable[[Request, Exception], Any]:
        async def handler(_: Request, exc: Exception) -> JSONResponse:
            return error_response(status, kind, str(exc))

        return handler

    app.add_exception_handler(ApiError, api)
    app.add_exception_handler(HTTPException, http)
    app.add_exception_handler(RequestValidationError, invalid)
    for error, status, kind in KNOWN:
        app.add_exception_handler(error, answer(status, kind))

    async def failed(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        return error_response(500, "server_error", f"{type(exc).__name__}: {exc}")

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
    query string or a body, so no token reaches the log. A node's heartbeats and long-polls
    answered 2xx or 304 are logged at debug level: a fleet sends thousands a second."""

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
            routine = status < 400 and node_route(scope) is not None
            level = logging.DEBUG if routine else logging.INFO
            if access.isEnabledFor(level):
                who = scope.get("state", {}).get("principal")
                access.log(
                    level,
                    kv(
                        "http",
                        method=scope["method"],
                        path=scope["path"],
                        status=status,
                        who=str(who) if who else None,
                        ms=round((time.monotonic() - started) * 1000, 1),
                    ),
                )


class TooLargeAsJson(_HttpMiddleware):
    """The body limit answers 413 in plain text before FastAPI's handlers see the request:
    make it the API's JSON error like every other."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        replaced = False

        async def sending(message: Message) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start" and message["status"] == 413:
                replaced = True
                response = error_response(
                    413, "too_large", "the request body is over the limit: 1 MiB, 16 MiB for a site"
                )
                await send({**message, "headers": response.raw_headers})
                await send({"type": "http.response.body", "body": response.body})
            elif not replaced:
                await send(message)

        await self.app(scope, receive, sending)


class _App(FastAPI):
    node_path: NodeTraffic | None = None  # set: the node routes on the lean path
    node_max_body = MiB

    def build_middleware_stack(self) -> ASGIApp:
        """FastAPI's stack (its body limit outermost) inside the access log and the JSON
        413, so that every answer is logged and every error is JSON; the node path between
        the access log and the rest."""
        stack: ASGIApp = TooLargeAsJson(super().build_middleware_stack())
        if self.node_path is not None:
            stack = NodePath(stack, self.node_path, self.node_max_body)
        return AccessLog(stack)


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


JsonBody = Annotated[dict[str, Any], Body()]
FleetLockHeader = Annotated[str | None, Header(alias="fleet-lock-protocol")]


def _caller(request: Request) -> Principal:
    """The authenticated caller (401 without a valid token)."""
    traffic: NodeTraffic = request.app.state.traffic
    who = traffic.authenticate(request.headers.get("authorization"))
    request.state.principal = who
    return who


Who = Annotated[Principal, Depends(_caller)]


def create_app(state: FleetStore, settings: Settings) -> FastAPI:
    changes = Changes(state.kv, prepare=state.generation)
    traffic = NodeTraffic(
        state, changes, settings.admin_token, settings.max_wait, settings.heartbeat_rate
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        changes.start(asyncio.get_running_loop())
        try:
            yield
        finally:
            changes.stop()
            traffic.close()

    app = _App(
        title="hostos cluster server",
        version=__version__,
        lifespan=lifespan,
        max_body_size=settings.max_body,
    )
    app.node_path = traffic if settings.node_path else None
    app.node_max_body = settings.max_body
    app.state.changes = changes
    app.state.traffic = traffic
    _add_error_handlers(app)
    _site_routes(app, state, settings, traffic)
    _node_routes(app, state, traffic)
    _fleetlock_routes(app, state, changes)
    _boot_routes(app, state, settings, traffic)
    return app


# -- the site, images, tokens (admin) ------------------------------------------------------


def checked_site(body: Any) -> SiteDocument:
    """A published site as stored: its shape (RecordError) and each role's rollout policy,
    which the controller reads back at every rollout start (same rules as the site's)."""
    site = SiteDocument.from_json(body)
    for name, role in site.roles.items():
        if isinstance(role, Mapping):
            try:
                rollout_policy(role)
            except ValueError as exc:
                raise RecordError(f"roles.{name}: {exc}") from None
    return site


def _site_routes(app: FastAPI, state: FleetStore, settings: Settings, traffic: NodeTraffic) -> None:
    @app.post("/v1/site", max_body_size=settings.max_site_body)
    def publish(body: JsonBody, who: Who) -> dict[str, Any]:
        """Publish a resolved site: a new generation when its hash changed."""
        require(who, Access.admin)
        published = state.publish(checked_site(body))
        return {
            "generation": published.generation,
            "hash": published.hash,
            "changed": published.changed,
        }

    @app.post("/v1/site/diff", max_body_size=settings.max_site_body)
    def diff(body: JsonBody, who: Who) -> dict[str, Any]:
        """What publishing this site would change (nothing is written)."""
        require(who, Access.admin)
        new, current = checked_site(body), state.generation()
        return {
            "generation": current.generation if current else 0,
            "changed": current is None or current.hash != new.hash(),
            **new.diff(current.site if current else None),
        }

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
        traffic.store_token_hash(node_id, auth.token_hash(token))
        return {"node": node_id, "token": token}

    @app.delete("/v1/tokens/nodes/{node_id}")
    def revoke(node_id: str, who: Who) -> dict[str, bool]:
        require(who, Access.admin)
        return {"revoked": traffic.revoke_token(node_id)}


def read_image(root: Path, name: str, cmdline: str | None) -> ImageRecord:
    """The record of the image in root/name: vmlinuz and initramfs.img must be there; the
    checksums come from manifest.json when it has them, else from the files."""
    directory = root / keys.checked(name, "image name")
    served = (netboot.KERNEL, netboot.INITRD)
    missing = [f for f in served if not (directory / f).is_file()]
    if missing:
        raise NotFound(f"image {name}: no {' or '.join(missing)} in {directory}")
    if cmdline is None:
        cmdline = netboot.image_cmdline(directory)
    listed = _manifest_sums(directory / "manifest.json")
    sums = {f: listed.get(f) or _sha256(directory / f) for f in served}
    return ImageRecord(name, *served, netboot.check_cmdline(cmdline), sums)


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


def _node_routes(app: FastAPI, state: FleetStore, traffic: NodeTraffic) -> None:
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
    def heartbeat(node_id: str, body: JsonBody, who: Who) -> Response:
        """A heartbeat: booted image, unit health, mount state; answers the node record
        (with the image the node should boot)."""
        return Response(traffic.heartbeat(node_id, body, who), media_type=JSON)

    @app.put("/v1/nodes/{node_id}/assignment")
    def assign(node_id: str, body: Assignment, who: Who) -> dict[str, Any]:
        """Assign an image without a reboot slot (a first boot; rollouts use slots)."""
        require(who, Access.admin)
        return state.assign(node_id, body.image).to_json()

    @app.get("/v1/nodes/{node_id}/config", responses={304: {"description": "nothing new"}})
    async def config(
        node_id: str, who: Who, after: int = 0, wait: float = 0, image: str | None = None
    ) -> Response:
        """The node's config once the generation is above `after` (or, with `image`, once
        the assigned image is not `image`); waits up to `wait` seconds, then 304."""
        answer = await traffic.config(node_id, who, after, wait, image)
        return Response(status_code=304) if answer is None else Response(answer, media_type=JSON)


def _known(record: NodeRecord | None, node_id: str) -> NodeRecord:
    if record is None:
        raise NotFound(f"no node '{node_id}' in the inventory or among heartbeats")
    return record


# -- FleetLock -------------------------------------------------------------------------------


def _fleetlock_routes(app: FastAPI, state: FleetStore, changes: Changes) -> None:
    def slot_call(
        body: FleetLockRequest, who: Principal, protocol: str | None, take: bool
    ) -> dict[str, Any]:
        if protocol != "true":
            raise ApiError(400, "missing_header", "fleet-lock-protocol: true is required")
        node_id = keys.checked(body.client_params.id, "client_params.id")
        require(who, Access.fleetlock, node_id)
        # the role from the generation the watcher follows (None before it has one: read)
        group = state.group_of(node_id, body.client_params.group, changes.mirror.generation or None)
        outcome = (state.pre_reboot if take else state.steady_state)(node_id, group)
        if not outcome.ok:
            raise ApiError(409, "failed_lock", outcome.reason)
        return {
            "kind": "ok",
            "value": outcome.reason,
            "group": group,
            "holders": list(outcome.table.holders),
            "max": outcome.table.max,
        }

    @app.post("/v1/pre-reboot")
    def pre_reboot(body: FleetLockRequest, who: Who, protocol: FleetLockHeader = None) -> Any:
        """FleetLock RecursiveLock: take (or keep) a reboot slot of the group."""
        return slot_call(body, who, protocol, take=True)

    @app.post("/v1/steady-state")
    def steady_state(body: FleetLockRequest, who: Who, protocol: FleetLockHeader = None) -> Any:
        """FleetLock UnlockIfHeld: give back the reboot slot, if held."""
        return slot_call(body, who, protocol, take=False)


# -- iPXE, images, health --------------------------------------------------------------------


def _boot_routes(app: FastAPI, state: FleetStore, settings: Settings, traffic: NodeTraffic) -> None:

    @app.get("/boot.ipxe", response_class=PlainTextResponse)
    def chain(request: Request) -> str:
        """For DHCP to hand every node: chains to /boot/<its MAC>.ipxe."""
        return netboot.chain_script(settings.public_url or str(request.base_url))

    @app.get("/boot/{mac}.ipxe", response_class=PlainTextResponse)
    def boot(mac: str, request: Request) -> str:
        """The iPXE script for the node with this MAC (colons or hyphens)."""
        node = state.node_by_mac(mac)
        server = settings.public_url or str(request.base_url).rstrip("/")
        name = node.assigned_image or _role_image(state, node.role)
        image = state.image(name) if name else None
        if image is None:
            why = f"no image for {node.id}" if name is None else f"image {name} not registered"
            return netboot.waiting_script(why, f"{server}/boot/{keys.mac_id(mac)}.ipxe")
        token = None
        if settings.boot_tokens:
            token = auth.new_node_token(node.id)
            traffic.store_token_hash(node.id, auth.token_hash(token))
        return netboot.node_script(
            NodeBoot(
                server_url=server,
                image=image.name,
                node_id=node.id,
                mac_id=keys.mac_id(mac),
                cmdline=image.cmdline,
                kernel=image.kernel,
                initrd=image.initrd,
                token=token,
            )
        )

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
    async def healthz(response: Response) -> dict[str, Any]:
        """Up, the store's revision, the site generation, how many long-polls wait; 503
        when the store watcher is not following (no long-poll would be woken)."""
        revision = await run_in_threadpool(state.kv.revision)
        generation = await run_in_threadpool(state.current_generation)
        following = traffic.changes.following
        if not following:
            response.status_code = 503
        return {
            "ok": following,
            "revision": revision,
            "generation": generation,
            "following": following,
            "waiting": traffic.changes.waiting,
        }  # read in the event loop, which owns it


def _role_image(state: FleetStore, role: str) -> str | None:
    generation = state.generation()
    spec = generation.roles.get(role) if generation and role else None
    image = spec.get("image") if isinstance(spec, dict) else None
    return image if isinstance(image, str) else None
