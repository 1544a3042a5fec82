"""The node path (nodeapi.NodePath) answers as FastAPI's routes do: the same requests through
both, in-process with the app's lifespan running (the watcher and its mirror)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from hostos.cluster import pacing
from hostos.cluster.server.app import Settings, create_app
from hostos.cluster.store.fleet import FleetStore
from hostos.cluster.store.url import open_kv

ADMIN = {"Authorization": "Bearer admin"}


def site(marker: str) -> dict[str, Any]:
    return {
        "roles": {"compute": {"image": "img-1", "env": {"M": marker}}},
        "nodes": {
            "cn001": {"role": "compute", "labels": {"rack": "r1"}},
            "cn002": {"role": "compute"},
        },
    }


@pytest.fixture
def images(tmp_path: Path) -> Path:
    for name in ("img-1", "img-2"):
        directory = tmp_path / name
        directory.mkdir()
        (directory / "vmlinuz").write_bytes(b"kernel")
        (directory / "initramfs.img").write_bytes(b"initrd")
    return tmp_path


def shape(reply: httpx.Response) -> tuple[int, Any]:
    """Status and body; an error's kind only (the wording of validation errors differs),
    a node record without its clock and its pace."""
    if reply.status_code == 304 or not reply.content:
        return reply.status_code, None
    body = reply.json()
    if reply.status_code >= 400:
        return reply.status_code, body["kind"]
    if isinstance(body, dict):
        body.pop("last_seen", None)
        body.pop("heartbeat_seconds", None)  # as the mirror has followed: test_..._pace
    return reply.status_code, body


async def later(seconds: float, call: Any) -> httpx.Response:
    await asyncio.sleep(seconds)
    reply: httpx.Response = await call
    return reply


async def session(node_path: bool, images: Path) -> list[tuple[int, Any]]:
    app = create_app(
        FleetStore(open_kv("sqlite://:memory:")),
        Settings("admin", images=images, node_path=node_path),
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await requests(c)


async def requests(c: httpx.AsyncClient) -> list[tuple[int, Any]]:
    for path, body in (
        ("/v1/site", site("1")),
        ("/v1/images/img-1", None),
        ("/v1/images/img-2", None),
    ):
        assert (await c.post(path, json=body, headers=ADMIN)).status_code == 200
    assert (
        await c.put("/v1/nodes/cn001/assignment", json={"image": "img-1"}, headers=ADMIN)
    ).status_code == 200
    token = (await c.post("/v1/tokens/nodes/cn001", headers=ADMIN)).json()["token"]
    node = {"Authorization": f"Bearer {token}"}
    status, config = "/v1/nodes/cn001/status", "/v1/nodes/cn001/config"
    beat = {"booted_image": "img-1", "boot_id": "b1", "units": {"app": "healthy"}}
    answers = [
        await c.put(status, json=beat, headers=node),
        await c.put(status, content=b"[1]", headers=node),
        await c.put(status, content=b"{not json", headers=node),
        await c.put(status, json={"units": 5}, headers=node),
        await c.put(status, content=b"{" + b" " * (1 << 20) + b"}", headers=node),
        await c.put("/v1/nodes/cn002/status", json=beat, headers=node),
        await c.put(status, json=beat),
        await c.put(status, json=beat, headers={"Authorization": "Bearer hn1.cn001.forged"}),
        await c.get(config, headers=node),
        await c.get(config + "?after=1&wait=0.2", headers=node),
        await c.get(config + "?after=x", headers=node),
        await c.get("/v1/nodes/cn002/config", headers=node),
        await c.get(config + "?after=1&wait=0.2", headers=ADMIN),
    ]
    # a publish answers a waiting long-poll; an assignment answers one that names the image
    polled, _ = await asyncio.gather(
        c.get(config + "?after=1&wait=10", headers=node),
        later(0.3, c.post("/v1/site", json=site("2"), headers=ADMIN)),
    )
    answers.append(polled)
    polled, _ = await asyncio.gather(
        c.get(config + "?after=2&wait=10&image=img-1", headers=node),
        later(0.3, c.put("/v1/nodes/cn001/assignment", json={"image": "img-2"}, headers=ADMIN)),
    )
    answers.append(polled)
    # a heartbeat changes the node's record, not what that long-poll waits for
    polled, _ = await asyncio.gather(
        c.get(config + "?after=2&wait=1&image=img-2", headers=node),
        later(0.3, c.put(status, json=beat, headers=node)),
    )
    answers.append(polled)
    # a node the newest generation leaves out: 404 at once, even while waiting
    assert (
        await c.post(
            "/v1/site", json={**site("3"), "nodes": {"cn002": {"role": "compute"}}}, headers=ADMIN
        )
    ).status_code == 200
    answers.append(await c.get(config + "?after=2&wait=5", headers=node))
    assert (await c.delete("/v1/tokens/nodes/cn001", headers=ADMIN)).status_code == 200
    answers.append(await c.put(status, json=beat, headers=node))  # revoked: at once
    return [shape(a) for a in answers]


def test_both_paths_answer_alike(images: Path) -> None:
    lean = asyncio.run(session(True, images))
    assert lean == asyncio.run(session(False, images))
    config = {
        "generation": 1,
        "hash": lean[8][1]["hash"],
        "node": "cn001",
        "role": "compute",
        "spec": {"image": "img-1", "env": {"M": "1"}},
        "labels": {"rack": "r1"},
        "assigned_image": "img-1",
    }
    assert lean[8] == (200, config)
    statuses = [status for status, _ in lean]
    assert statuses == [
        200,
        422,
        422,
        400,
        413,
        403,
        401,
        401,
        200,
        304,
        422,
        403,
        304,
        200,
        200,
        304,
        404,
        401,
    ]
    assert lean[0][1]["booted_image"] == "img-1" and lean[0][1]["id"] == "cn001"
    assert lean[13][1]["generation"] == 2 and lean[13][1]["spec"]["env"] == {"M": "2"}
    assert lean[14][1]["assigned_image"] == "img-2"


async def paced_beats(node_path: bool, images: Path) -> list[float]:
    """The pace each heartbeat answers with while the fleet grows from one node record to
    three, at 4 heartbeats a second."""
    app = create_app(
        FleetStore(open_kv("sqlite://:memory:")),
        Settings("admin", images=images, node_path=node_path, heartbeat_rate=4.0),
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            assert (await c.post("/v1/site", json=site("1"), headers=ADMIN)).status_code == 200
            token = (await c.post("/v1/tokens/nodes/cn001", headers=ADMIN)).json()["token"]
            node = {"Authorization": f"Bearer {token}"}
            paces = []
            for grown in ("cn002", "cn003"):
                paces.append(await _pace_after(c, node, len(paces) + 1))
                assert (await c.post("/v1/images/img-1", headers=ADMIN)).status_code == 200
                assert (
                    await c.put(
                        f"/v1/nodes/{grown}/assignment", json={"image": "img-1"}, headers=ADMIN
                    )
                ).status_code == 200
            paces.append(await _pace_after(c, node, 3))
            listed = (await c.get("/v1/nodes", headers=ADMIN)).json()
            assert [n["heartbeat_seconds"] for n in listed if n["id"] == "cn001"] == [0.8]
            return paces


async def _pace_after(c: httpx.AsyncClient, node: dict[str, str], records: int) -> float:
    """The pace of cn001's heartbeat once the mirror holds `records` node records."""
    wanted, pace = pacing.heartbeat_seconds(records, 4.0), -1.0
    for _ in range(100):  # the mirror follows the store within the watch's delay
        reply = await c.put("/v1/nodes/cn001/status", json={"booted_image": "img-1"}, headers=node)
        assert reply.status_code == 200, reply.text
        pace = reply.json()["heartbeat_seconds"]
        if pace == wanted:
            break
        await asyncio.sleep(0.02)
    return float(pace)


def test_heartbeats_answer_the_fleets_pace(images: Path) -> None:
    for node_path in (True, False):
        assert asyncio.run(paced_beats(node_path, images)) == [0.3, 0.5, 0.8]
