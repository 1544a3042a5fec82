"""The operator's commands end to end: `hostos publish/diff/nodes --server` and `hostos
rollout …` as subprocesses against a real `hostos serve`, with simulated nodes rebooting."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_fleet import FakeNode, Fleet, wait_for
from server_fixtures import Server, hostos, start_server, stop_server

from hostos.cluster.client import Client

from conftest import EXAMPLE_SITE

pytestmark = pytest.mark.integration

INVENTORY = 'nodes:\n  - {name: "d[1-3]", role: demo}\n'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("cli")
    running = start_server(tmp, f"sqlite://{tmp / 'cluster.db'}")
    try:
        yield running
    finally:
        stop_server(running)


@pytest.fixture
def small_site(tmp_path: Path) -> Path:
    """The example site with three demo nodes d1-d3 for an inventory."""
    target = tmp_path / "site"
    shutil.copytree(EXAMPLE_SITE, target)
    (target / "nodes.yaml").write_text(INVENTORY)
    return target


def cli(server: Server, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "HOSTOS_ADMIN_TOKEN_FILE": str(server.token_file)}
    done = hostos(*args, env=env)
    return done.returncode, done.stdout, done.stderr


def test_publish_diff_nodes_and_a_rollout(server: Server, small_site: Path) -> None:
    url = server.url
    code, out, err = cli(server, "publish", str(small_site), "--server", url)
    assert code == 0, err
    assert out.startswith("published generation ")
    generation = int(out.split()[2])
    code, out, _ = cli(server, "apply", str(small_site), "--server", url)  # the old name
    assert (code, out.strip()) == (0, f"no change (generation {generation})")
    assert (
        cli(server, "diff", str(small_site), "--server", url)[1].strip()
        == f"no change (generation {generation})"
    )

    role = small_site / "roles" / "demo.yaml"
    role.write_text(role.read_text().replace("image: demo-2026.11", "image: img-2"))
    (small_site / "nodes.yaml").write_text(INVENTORY + "  - {name: d4, role: demo}\n")
    code, out, err = cli(server, "diff", str(small_site), "--server", url)
    assert code == 0, err
    assert f"against generation {generation}:" in out
    assert (
        "~ role demo: host image demo-2026.11 → img-2 "
        "(roll it out: hostos rollout start demo --image img-2)" in out
    )
    assert "+ 1 node added: d4" in out
    assert cli(server, "publish", str(small_site), "--server", url, "-o", "json")[0] == 0

    code, out, _ = cli(server, "nodes", "--server", url, "-o", "json")
    listed = {n["id"]: n for n in json.loads(out)}
    assert set(listed) == {"d1", "d2", "d3", "d4"}
    assert {n["state"] for n in listed.values()} == {"unseen"}

    with server.client() as admin:
        assert admin.post("/v1/images/img-2").status_code == 200
        tokens = {n: admin.post(f"/v1/tokens/nodes/{n}").json()["token"] for n in listed}
    fleet = Fleet(server, [FakeNode(n, t) for n, t in sorted(tokens.items())])
    with fleet.running():
        wait_for(lambda: all(n.steady_sent for n in fleet.nodes.values()), 10)
        code, out, _ = cli(server, "nodes", "--server", url)
        assert out.splitlines()[0].split() == [
            "NODE",
            "ROLE",
            "STATE",
            "BOOTED",
            "ASSIGNED",
            "LAST",
            "SEEN",
        ]
        assert out.splitlines()[1].split()[:4] == ["d1", "demo", "up", "img-1"]
        code, out, err = cli(
            server,
            "rollout",
            "start",
            "demo",
            "--image",
            "img-2",
            "--server",
            url,
            "--max-unavailable",
            "50%",
            "--health-timeout",
            "30s",
            "--watch",
        )
    assert code == 0, out + err
    assert "started demo-" in out and "demo img-1 → img-2, 2 at a time" in out
    assert "grant d1 img-2: next in order" in out
    assert "demo: done img-1 → img-2, 4/4 done" in out.splitlines()[-1]

    code, out, _ = cli(server, "rollout", "status", "demo", "--server", url)
    assert code == 0 and out.startswith("rollout demo-")
    assert any(line.split()[:3] == ["d4", "done", "img-2"] for line in out.splitlines())
    code, out, _ = cli(server, "rollout", "status", "--server", url)
    assert out.startswith("demo: done")
    code, _, err = cli(server, "rollout", "pause", "demo", "--server", url)
    assert code == 2 and "cannot pause a rollout that is done" in err
    code, _, err = cli(server, "rollout", "start", "nosuch", "--image", "img-2", "--server", url)
    assert code == 2 and "no role 'nosuch'" in err


@pytest.mark.parametrize("command", ["publish", "apply"])
def test_publish_refuses_a_bad_site_before_sending_it(
    server: Server, small_site: Path, command: str
) -> None:
    unit = small_site / "sshd.yaml"
    unit.write_text(unit.read_text() + "colour: blue\n")
    code, out, err = cli(server, command, str(small_site), "--server", server.url)
    assert code == 2 and not out
    assert "sshd.yaml:" in err and "colour" in err


def current(server: Server) -> dict[str, object]:
    with server.client() as admin:
        answer = admin.get("/v1/site")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


@pytest.mark.parametrize(
    "extra",
    [["--dry-run"], ["--node", "d1"], ["--role", "demo"], ["--engine", "docker"]],
)
def test_apply_server_with_an_option_of_this_machine_publishes_nothing(
    server: Server, small_site: Path, extra: list[str]
) -> None:
    """`apply --server --dry-run` once published the site: now it exits 2, and the server
    keeps the generation it had although the site changed."""
    url = server.url
    assert cli(server, "publish", str(small_site), "--server", url)[0] == 0
    before = current(server)
    role = small_site / "roles" / "demo.yaml"
    role.write_text(role.read_text().replace("image: demo-2026.11", "image: img-9"))
    code, out, err = cli(server, "apply", str(small_site), "--server", url, *extra)
    assert (code, out) == (2, "")
    assert err.startswith("hostos: apply --server publishes the whole site") and extra[0] in err
    assert f"(use hostos diff {small_site} --server {url} " in err
    assert current(server) == before
    code, out, _ = cli(server, "diff", str(small_site), "--server", url)
    assert code == 0 and "host image demo-2026.11 → img-9" in out


def test_commands_without_a_server_or_a_token(
    server: Server, tmp_path: Path, small_site: Path
) -> None:
    done = hostos(
        "rollout", "status", "--server", server.url, "--admin-token-file", str(tmp_path / "missing")
    )
    assert done.returncode == 2 and "admin token file" in done.stderr
    code, _, err = cli(server, "nodes", "--server", "http://127.0.0.1:9")
    assert code == 1 and "127.0.0.1:9" in err
    code, _, err = cli(server, "diff", str(small_site))
    assert code == 2 and "--server" in err
    code, _, err = cli(server, "nodes", "--server", "127.0.0.1:9")
    assert (code, err) == (2, "hostos: 127.0.0.1:9: expected http://HOST[:PORT] or https://…\n")


def test_tokens_issue_prints_a_token_the_server_takes(server: Server, small_site: Path) -> None:
    assert cli(server, "apply", str(small_site), "--server", server.url)[0] == 0
    code, out, err = cli(server, "tokens", "issue", "d1", "--server", server.url)
    assert code == 0, err
    token = out.strip()
    assert token.startswith("hn1.d1.")
    assert Client(server.url, token).request("GET", "/v1/nodes/d1/config?wait=0").status == 200
    assert Client(server.url, token).request("GET", "/v1/nodes/d2/config?wait=0").status == 403
    code, _, err = cli(server, "tokens", "issue", "d1", "--server", "127.0.0.1:9")
    assert code == 2 and "expected http://HOST" in err
