"""Two `hostos serve` replicas on one etcd: what one writes, the other serves and wakes on."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from server_fixtures import Server, start_server, stop_server

pytestmark = pytest.mark.integration

FLEETLOCK = {"fleet-lock-protocol": "true"}
SITE = {
    "roles": {"compute": {"marker": ""}},
    "nodes": {"cn001": {"role": "compute"}, "cn002": {"role": "compute"}},
}


@pytest.fixture(scope="module")
def replicas(
    etcd_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Server]]:
    store = etcd_url.replace("http://", "etcd://") + f"/replicas-{uuid.uuid4().hex[:12]}"
    first = start_server(tmp_path_factory.mktemp("replica-a"), store)
    try:
        second = start_server(tmp_path_factory.mktemp("replica-b"), store)
        try:
            yield first, second
        finally:
            stop_server(second)
    finally:
        stop_server(first)


def publish(client: httpx.Client, marker: str) -> int:
    body = {**SITE, "roles": {"compute": {"marker": marker}}}
    reply = client.post("/v1/site", json=body)
    assert reply.status_code == 200, reply.text
    return int(reply.json()["generation"])


def test_a_long_poll_on_one_replica_wakes_on_a_publish_on_the_other(
    replicas: tuple[Server, Server],
) -> None:
    a, b = replicas
    with a.client() as admin_a, b.client() as admin_b:
        current = publish(admin_a, "one")
        answers: list[tuple[int, float]] = []

        def poll() -> None:
            reply = admin_b.get("/v1/nodes/cn001/config", params={"after": current, "wait": 20})
            answers.append((reply.json()["generation"], time.monotonic()))

        poller = threading.Thread(target=poll)
        poller.start()
        time.sleep(1.0)
        published = time.monotonic()
        publish(admin_a, "two")
        poller.join(timeout=20)
    assert answers and answers[0][0] == current + 1
    assert answers[0][1] - published < 1.0


def test_slots_and_tokens_are_shared(replicas: tuple[Server, Server]) -> None:
    a, b = replicas
    with a.client() as admin_a, b.client() as admin_b:
        publish(admin_a, "slots")
        token = admin_a.post("/v1/tokens/nodes/cn001").json()["token"]
        with b.client(token) as node_on_b:
            assert node_on_b.get("/v1/nodes/cn001/config").status_code == 200
            mine = {"client_params": {"id": "cn001", "group": "default"}}
            assert node_on_b.post("/v1/pre-reboot", json=mine, headers=FLEETLOCK).json()[
                "holders"
            ] == ["cn001"]
        other = {"client_params": {"id": "cn002", "group": "default"}}
        assert admin_a.post("/v1/pre-reboot", json=other, headers=FLEETLOCK).status_code == 409
        assert admin_a.post("/v1/steady-state", json=mine, headers=FLEETLOCK).status_code == 200
        assert admin_b.post("/v1/pre-reboot", json=other, headers=FLEETLOCK).status_code == 200
