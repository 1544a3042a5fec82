"""The app in-process (httpx's ASGI transport), for settings a real server test does not
start with: boot tokens, a public URL, a store that fails."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hostos.cluster.server.app import Settings, create_app
from hostos.cluster.store.fleet import FleetStore
from hostos.cluster.store.url import open_kv
from hostos.image import netboot

ADMIN = {"Authorization": "Bearer admin"}
SITE = {
    "roles": {"compute": {"image": "img-1"}},
    "nodes": {"cn001": {"role": "compute", "mac": "52:54:00:00:00:01"}},
}


def call(app: Any, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One request; an exception the app re-raises after its 500 is left to the server."""

    async def one() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://asked.test") as c:
            return await c.request(method, url, **kwargs)

    return asyncio.run(one())


@pytest.fixture
def images(tmp_path: Path) -> Path:
    directory = tmp_path / "images" / "img-1"
    directory.mkdir(parents=True)
    (directory / "vmlinuz").write_bytes(b"kernel")
    (directory / "initramfs.img").write_bytes(b"initrd")
    return tmp_path / "images"


def app_with(images: Path, **settings: Any) -> Any:
    app = create_app(
        FleetStore(open_kv("sqlite://:memory:")), Settings("admin", images=images, **settings)
    )
    assert call(app, "POST", "/v1/site", json=SITE, headers=ADMIN).status_code == 200
    assert call(app, "POST", "/v1/images/img-1", headers=ADMIN).status_code == 200
    return app


def test_boot_tokens_work_for_their_node_only(
    images: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = app_with(images, boot_tokens=True)
    with caplog.at_level(logging.INFO, logger="hostos"):
        script = call(app, "GET", "/boot/52-54-00-00-00-01.ipxe").text
    token = netboot.script_args(script)["hostos.token"]
    node = {"Authorization": f"Bearer {token}"}
    assert call(app, "GET", "/v1/nodes/cn001/config", headers=node).status_code == 200
    assert call(app, "GET", "/v1/nodes", headers=node).status_code == 403
    again = netboot.script_args(call(app, "GET", "/boot/52-54-00-00-00-01.ipxe").text)[
        "hostos.token"
    ]
    assert again != token  # a new boot, a new token; the old one stops working
    assert call(app, "GET", "/v1/nodes/cn001/config", headers=node).status_code == 401
    assert "path=/boot/52-54-00-00-00-01.ipxe status=200" in caplog.text
    assert token not in caplog.text and "hostos.token" not in caplog.text


def test_without_boot_tokens_the_script_has_none(images: Path) -> None:
    script = call(app_with(images), "GET", "/boot/52:54:00:00:00:01.ipxe").text
    args = netboot.script_args(script)
    assert "hostos.token" not in args
    assert args["hostos.server"] == "http://asked.test"  # the URL iPXE asked


def test_public_url_goes_into_the_script(images: Path) -> None:
    app = app_with(images, public_url="http://10.0.0.1:8080")
    script = call(app, "GET", "/boot/52-54-00-00-00-01.ipxe").text
    assert netboot.script_args(script)["hostos.server"] == "http://10.0.0.1:8080"
    assert "kernel http://10.0.0.1:8080/images/img-1/vmlinuz " in script


def test_head_of_an_image_file(images: Path) -> None:
    reply = call(app_with(images), "HEAD", "/images/img-1/vmlinuz")
    assert reply.status_code == 200 and reply.headers["content-length"] == "6"


def test_registering_an_image_without_its_files(images: Path) -> None:
    reply = call(app_with(images), "POST", "/v1/images/img-9", headers=ADMIN)
    assert reply.status_code == 404
    assert (
        reply.json()["kind"] == "not_found"
        and "no vmlinuz or initramfs.img" in reply.json()["value"]
    )


class BrokenKV:
    """A store that is away."""

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise ConnectionError("store unreachable")

        return fail


def test_a_failing_store_answers_json(images: Path) -> None:
    app = create_app(FleetStore(BrokenKV()), Settings("admin", images=images))  # type: ignore[arg-type]
    reply = call(app, "GET", "/v1/nodes", headers=ADMIN)
    assert reply.status_code == 500
    assert reply.json() == {"kind": "server_error", "value": "ConnectionError: store unreachable"}


@pytest.mark.parametrize(
    ("body", "status", "kind"),
    [
        ({"roles": [], "nodes": {}}, 400, "bad_request"),
        ({"roles": {}, "nodes": {"n": {"role": "nope"}}}, 400, "bad_request"),
        ("not an object", 422, "bad_request"),
        ({"roles": {"c": {"rollout": {"canary": -1}}}, "nodes": {}}, 400, "bad_request"),
        ({"roles": {"c": {"rollout": {"drain": {"kind": "x"}}}}, "nodes": {}}, 400, "bad_request"),
        (
            {
                "roles": {"c": {"rollout": {"drain": {"kind": "commands", "command": ["/x"]}}}},
                "nodes": {},
            },
            400,
            "bad_request",
        ),
    ],
)
def test_bad_site_bodies(images: Path, body: Any, status: int, kind: str) -> None:
    reply = call(app_with(images), "POST", "/v1/site", json=body, headers=ADMIN)
    assert (reply.status_code, reply.json()["kind"]) == (status, kind)


def test_site_diff_writes_nothing(images: Path) -> None:
    app = app_with(images)
    changed = {"roles": {"compute": {"image": "img-2"}}, "nodes": {}}
    reply = call(app, "POST", "/v1/site/diff", json=changed, headers=ADMIN).json()
    assert reply == {
        "generation": 1,
        "changed": True,
        "roles": {"added": [], "removed": [], "changed": ["compute"]},
        "nodes": {"added": [], "removed": ["cn001"], "changed": []},
    }
    same = call(app, "POST", "/v1/site/diff", json=SITE, headers=ADMIN).json()
    assert same["changed"] is False
    assert call(app, "GET", "/v1/site", headers=ADMIN).json()["generation"] == 1


def test_an_image_whose_arguments_ipxe_would_mangle_is_refused(images: Path) -> None:
    reply = call(
        app_with(images),
        "POST",
        "/v1/images/img-1",
        headers=ADMIN,
        json={"cmdline": "root=${root}"},
    )
    assert reply.status_code == 400 and "cannot go into an iPXE script" in reply.json()["value"]


def test_the_chain_script_leads_to_the_node_script(images: Path) -> None:
    app = app_with(images)
    chain = call(app, "GET", "/boot.ipxe").text
    assert chain.splitlines()[1] == "chain --replace http://asked.test/boot/${netX/mac:hexhyp}.ipxe"
    # what iPXE expands ${netX/mac:hexhyp} to, for cn001's NIC
    script = call(app, "GET", "/boot/52-54-00-00-00-01.ipxe").text
    assert netboot.script_args(script)["hostos.node"] == "cn001"


def test_a_streamed_body_over_the_limit_is_a_json_413(
    images: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b" " * (1 << 20)

    with caplog.at_level(logging.INFO, logger="hostos"):
        reply = call(
            app_with(images),
            "PUT",
            "/v1/nodes/cn001/status",
            content=chunks(),
            headers={**ADMIN, "content-type": "application/json"},
        )
    assert reply.status_code == 413 and reply.json()["kind"] == "too_large"
    assert "path=/v1/nodes/cn001/status status=413" in caplog.text  # logged all the same
