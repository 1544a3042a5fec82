"""A real `hostos serve` (subprocess, loopback port, SQLite then etcd) over real HTTP."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import httpx
import pytest
import server_fixtures
from server_fixtures import ADMIN_TOKEN, KERNEL, Server, hostos, node_client

pytestmark = pytest.mark.integration
server = server_fixtures.server  # the fixtures, by the names the tests ask for
admin = server_fixtures.admin

FLEETLOCK = {"fleet-lock-protocol": "true"}


def site(nodes: dict[str, str], marker: str = "") -> dict[str, object]:
    """A resolved site: node → role, each role with one unit."""
    roles = {
        role: {"role": role, "image": "img-1", "units": [{"name": "u", "marker": marker}]}
        for role in set(nodes.values())
    }
    return {
        "roles": roles,
        "nodes": {
            n: {"role": r, "mac": f"52:54:00:00:00:{i:02x}"}
            for i, (n, r) in enumerate(sorted(nodes.items()), start=1)
        },
    }


NODES = {"cn001": "compute", "cn002": "compute", "st001": "storage", "lp001": "login"}


def publish(admin: httpx.Client, marker: str) -> int:
    reply = admin.post("/v1/site", json=site(NODES, marker))
    assert reply.status_code == 200, reply.text
    return int(reply.json()["generation"])


def test_publish_is_idempotent_per_hash(admin: httpx.Client) -> None:
    first = publish(admin, "idem")
    again = admin.post("/v1/site", json=site(NODES, "idem")).json()
    assert again == {"generation": first, "hash": again["hash"], "changed": False}
    assert publish(admin, "idem-2") == first + 1
    assert admin.get("/v1/site").json()["generation"] == first + 1


def test_long_poll_returns_within_a_second_of_a_publish(
    server: Server, admin: httpx.Client
) -> None:
    current = publish(admin, "before-poll")
    answers: list[tuple[httpx.Response, float]] = []

    def poll() -> None:
        with node_client(server, admin, "lp001") as node:
            reply = node.get("/v1/nodes/lp001/config", params={"after": current, "wait": 20})
            answers.append((reply, time.monotonic()))

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(1.0)  # the poll is waiting by now
    assert not answers
    published_at = time.monotonic()
    publish(admin, "after-poll")
    poller.join(timeout=20)
    reply, answered_at = answers[0]
    assert reply.status_code == 200, reply.text
    assert answered_at - published_at < 1.0
    config = reply.json()
    assert (config["generation"], config["node"], config["role"]) == (current + 1, "lp001", "login")
    assert config["spec"]["units"][0]["marker"] == "after-poll"


def server_threads(server: Server) -> int:
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))


def test_many_long_polls_cost_no_thread_each(server: Server, admin: httpx.Client) -> None:
    current = publish(admin, "many-before")
    with node_client(server, admin, "lp001") as node:
        token = node.headers["authorization"]
    polls = 200

    async def scenario() -> list[int]:
        limits = httpx.Limits(max_connections=polls + 10)
        async with httpx.AsyncClient(
            base_url=server.url, limits=limits, timeout=60, headers={"Authorization": token}
        ) as client:
            waiting = [
                asyncio.create_task(
                    client.get("/v1/nodes/lp001/config", params={"after": current, "wait": 30})
                )
                for _ in range(polls)
            ]
            deadline = time.monotonic() + 20
            while (await client.get("/healthz")).json()["waiting"] < polls:
                assert time.monotonic() < deadline, "the long-polls never all waited"
                await asyncio.sleep(0.1)
            assert server_threads(server) < polls // 2
            published = time.monotonic()
            await asyncio.to_thread(publish, admin, "many-after")
            replies = await asyncio.gather(*waiting)
            assert time.monotonic() - published < 10  # a loaded 2-core machine: ~2 s
            return [r.json()["generation"] for r in replies]

    assert asyncio.run(scenario()) == [current + 1] * polls


def test_long_poll_answers_at_once_when_behind_and_304_after_wait(
    server: Server, admin: httpx.Client
) -> None:
    current = publish(admin, "behind")
    with node_client(server, admin, "cn002") as node:
        started = time.monotonic()
        assert (
            node.get("/v1/nodes/cn002/config", params={"after": 0, "wait": 30}).json()["generation"]
            == current
        )
        assert time.monotonic() - started < 2
        waited = node.get("/v1/nodes/cn002/config", params={"after": current, "wait": 0.5})
        assert waited.status_code == 304


def test_heartbeat_then_nodes_shows_it(server: Server, admin: httpx.Client) -> None:
    publish(admin, "beat")
    with node_client(server, admin, "cn001") as node:
        beat = {
            "booted_image": "img-1",
            "units": {"u": "healthy"},
            "mounts": {"home": "mounted"},
            "boot_id": "b-1",
            "generation": 3,
        }
        reply = node.put("/v1/nodes/cn001/status", json=beat)
        assert reply.status_code == 200, reply.text
        assert reply.json()["role"] == "compute"
    listed = {n["id"]: n for n in admin.get("/v1/nodes").json()}
    assert set(NODES) <= set(listed)
    assert listed["cn001"]["units"] == {"u": "healthy"}
    assert listed["cn001"]["booted_image"] == "img-1"
    assert listed["cn001"]["last_seen"] > time.time() - 60
    assert listed["cn002"]["last_seen"] == 0  # listed by the inventory, never heard from


def test_fleetlock_group_of_one(server: Server, admin: httpx.Client) -> None:
    publish(admin, "fleetlock")
    body = {"client_params": {"id": "st001", "group": "storage"}}
    with node_client(server, admin, "st001") as node:
        assert node.post("/v1/pre-reboot", json=body, headers=FLEETLOCK).status_code == 200
        assert node.post("/v1/pre-reboot", json=body, headers=FLEETLOCK).status_code == 200
        other = {"client_params": {"id": "st002", "group": "storage"}}
        full = admin.post("/v1/pre-reboot", json=other, headers=FLEETLOCK)
        assert full.status_code == 409
        assert full.json()["kind"] == "failed_lock"
        assert "st001" in full.json()["value"]
        assert node.post("/v1/steady-state", json=body, headers=FLEETLOCK).status_code == 200
        assert node.post("/v1/steady-state", json=body, headers=FLEETLOCK).status_code == 200
    assert admin.post("/v1/pre-reboot", json=other, headers=FLEETLOCK).status_code == 200
    assert admin.post("/v1/steady-state", json=other, headers=FLEETLOCK).status_code == 200


def test_fleetlock_default_group_is_the_role_and_the_header_is_required(
    server: Server, admin: httpx.Client
) -> None:
    publish(admin, "groups")
    body = {"client_params": {"id": "cn002", "group": "default"}}
    missing = admin.post("/v1/pre-reboot", json=body)
    assert missing.status_code == 400 and missing.json()["kind"] == "missing_header"
    taken = admin.post("/v1/pre-reboot", json=body, headers=FLEETLOCK).json()
    assert (taken["group"], taken["holders"]) == ("compute", ["cn002"])
    assert admin.post("/v1/steady-state", json=body, headers=FLEETLOCK).json()["holders"] == []
    bad = admin.post("/v1/pre-reboot", json={"client_params": {}}, headers=FLEETLOCK)
    assert bad.status_code == 422 and bad.json()["kind"] == "bad_request"


def test_scopes(server: Server, admin: httpx.Client) -> None:
    publish(admin, "scopes")
    with (
        node_client(server, admin, "cn001") as node,
        server.client(None) as anonymous,
        server.client("hn1.cn001.forged") as forged,
    ):
        assert node.get("/v1/nodes/cn001/config").status_code == 200
        other = node.get("/v1/nodes/cn002/config")
        assert other.status_code == 403 and other.json()["kind"] == "forbidden"
        assert node.put("/v1/nodes/cn002/status", json={}).status_code == 403
        assert node.get("/v1/nodes").status_code == 403
        assert node.post("/v1/site", json=site(NODES)).status_code == 403
        assert node.post("/v1/tokens/nodes/cn001").status_code == 403
        lock = {"client_params": {"id": "cn002", "group": "compute"}}
        assert node.post("/v1/pre-reboot", json=lock, headers=FLEETLOCK).status_code == 403
        for client in (anonymous, forged):
            reply = client.get("/v1/nodes/cn001/config")
            assert reply.status_code == 401 and reply.json()["kind"] == "unauthorized"
        assert anonymous.get("/v1/nodes").status_code == 401
        health = anonymous.get("/healthz")
        assert health.status_code == 200 and health.json()["following"] is True


def test_a_reissued_token_replaces_the_old_one(server: Server, admin: httpx.Client) -> None:
    with node_client(server, admin, "cn002") as old, node_client(server, admin, "cn002") as new:
        assert old.get("/v1/nodes/cn002").status_code == 401
        assert new.get("/v1/nodes/cn002").status_code == 200
        assert admin.delete("/v1/tokens/nodes/cn002").json() == {"revoked": True}
        assert new.get("/v1/nodes/cn002").status_code == 401


def test_bodies_over_the_limit_get_413(server: Server, admin: httpx.Client) -> None:
    big = json.dumps({"units": {"u": "x" * (1 << 20)}})
    reply = admin.put(
        "/v1/nodes/cn001/status", content=big, headers={"content-type": "application/json"}
    )
    assert reply.status_code == 413 and reply.json()["kind"] == "too_large"
    large_site = site(NODES, "y" * (2 << 20))  # a site may be 16 MiB
    assert admin.post("/v1/site", json=large_site).status_code == 200


def test_images_range_requests(server: Server) -> None:
    with server.client(None) as anonymous:
        whole = anonymous.get("/images/img-1/vmlinuz")
        assert whole.status_code == 200 and whole.content == KERNEL
        part = anonymous.get("/images/img-1/vmlinuz", headers={"Range": "bytes=100-355"})
        assert part.status_code == 206
        assert part.headers["content-range"] == f"bytes 100-355/{len(KERNEL)}"
        assert part.content == KERNEL[100:356]
        tail = anonymous.get("/images/img-1/vmlinuz", headers={"Range": "bytes=-10"})
        assert tail.status_code == 206 and tail.content == KERNEL[-10:]
        beyond = anonymous.get(
            "/images/img-1/vmlinuz", headers={"Range": f"bytes={len(KERNEL) + 5}-"}
        )
        assert beyond.status_code == 416
        assert anonymous.get("/images/img-1/nothing").status_code == 404
        assert anonymous.get("/images/..%2F..%2Fetc/passwd").status_code in (400, 404)


def test_boot_script_of_the_assigned_image(server: Server, admin: httpx.Client) -> None:
    publish(admin, "boot")
    for name in ("img-1", "img-2"):
        registered = admin.post(f"/v1/images/{name}")
        assert registered.status_code == 200, registered.text
    assert registered.json()["cmdline"] == "console=ttyS0 quiet"
    mac = "52-54-00-00-00-01"  # cn001 in the inventory
    first = server.client(None).get(f"/boot/{mac}.ipxe").text  # the role's image
    assert f"kernel {server.url}/images/img-1/vmlinuz console=ttyS0 quiet " in first
    assert admin.put("/v1/nodes/cn001/assignment", json={"image": "img-2"}).status_code == 200
    script = server.client(None).get("/boot/52:54:00:00:00:01.ipxe").text
    kernel = next(line for line in script.splitlines() if line.startswith("kernel "))
    assert kernel.split()[1] == f"{server.url}/images/img-2/vmlinuz"
    for arg in (
        "hostos.node=cn001",
        f"hostos.server={server.url}",
        "hostos.image=img-2",
        f"BOOTIF=01-{mac}",
        "initrd=initramfs.img",
    ):
        assert arg in kernel.split()
    assert f"initrd --name initramfs.img {server.url}/images/img-2/initramfs.img" in script
    assert httpx.get(kernel.split()[1]).content == KERNEL
    unknown = server.client(None).get("/boot/52-54-00-ff-ff-ff.ipxe").text
    assert "no image for 52-54-00-ff-ff-ff" in unknown and "chain --replace" in unknown


def test_tokens_issue_command(server: Server) -> None:
    issued = hostos(
        "tokens",
        "issue",
        "st001",
        "--server",
        server.url,
        "--admin-token-file",
        str(server.token_file),
    )
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    with server.client(token) as node:
        assert node.get("/v1/nodes/st001").status_code == 200
    refused = hostos(
        "tokens",
        "issue",
        "st/001",
        "--server",
        server.url,
        "--admin-token-file",
        str(server.token_file),
    )
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert "400" in refused.stderr or "404" in refused.stderr


def test_openapi_lists_the_api(server: Server) -> None:
    paths = httpx.get(server.url + "/openapi.json").json()["paths"]
    for path in (
        "/v1/site",
        "/v1/nodes",
        "/v1/nodes/{node_id}/config",
        "/v1/nodes/{node_id}/status",
        "/v1/pre-reboot",
        "/v1/steady-state",
        "/boot/{mac}.ipxe",
        "/images/{name}/{file}",
        "/healthz",
    ):
        assert path in paths


def test_zz_tokens_never_reach_the_log(server: Server, admin: httpx.Client) -> None:
    """Last in the module: by now every test's tokens went through this server."""
    with node_client(server, admin, "cn001") as node:
        assert node.get("/v1/nodes/cn001/config").status_code == 200
        assert node.get("/v1/nodes/cn002/config").status_code == 403
        token = node.headers["authorization"].split()[1]
    log = server.log_text()
    # a node's routine traffic is logged at debug level, anything else at info
    assert "event=http method=GET path=/v1/nodes/cn001/config status=200" not in log
    assert "event=http method=GET path=/v1/nodes/cn002/config status=403 who=node:cn001" in log
    for secret in (ADMIN_TOKEN, token, "hn1.", "Bearer", "hostos.token="):
        assert secret not in log
