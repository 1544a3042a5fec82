"""Fault tests of `hostos supervise` on real engines: crashes, kills, bad edits, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hostos.engine.base import Engine, EngineError
from hostos.node.converge import down, owned
from hostos.node.status import read_status
from hostos.node.status_socket import socket_path

from conftest import write

pytestmark = pytest.mark.integration

BASE = "hostos/busybox:latest"
# Stops at once on SIGTERM, so stops and recreates take no stop timeout.
SERVICE = (
    f"image: {BASE}\n"
    "command: [sh, -c, 'trap \"exit 0\" TERM; while :; do sleep 0.2; done']\n"
    "stop_timeout: 3s\n"
)


def wait_until(check: Callable[[], Any], timeout: float = 30, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what or check}")


class Node:
    """A site, and a supervisor process converging it into its own namespace."""

    def __init__(self, engine: Engine, root: Path) -> None:
        self.engine = engine
        self.root = root
        self.namespace = "s" + uuid.uuid4().hex[:8]
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root.parent / f"supervise-{self.namespace}.log"

    def units(self, units: dict[str, str], role_extra: str = "") -> None:
        for old in self.root.glob("*.yaml"):
            if old.stem not in units:
                old.unlink()
        for name, text in units.items():
            write(self.root / f"{name}.yaml", text)
        write(self.root / "roles" / "r.yaml", f"role: r\nunits: [{', '.join(units)}]\n{role_extra}")

    def start(self, *extra: str) -> None:
        args = [
            sys.executable,
            "-m",
            "hostos",
            "supervise",
            str(self.root),
            "--role",
            "r",
            "--engine",
            self.engine.name,
            "--namespace",
            self.namespace,
            "--resync",
            "5",
            *extra,
        ]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self.proc = None
        return code

    def status(self) -> dict[str, Any] | None:
        """The supervisor's status in its JSON form, as the status API serves it."""
        live = read_status(socket_path(self.namespace))
        return live.to_json() if live is not None else None

    def unit_status(self, unit: str) -> dict[str, Any]:
        status = self.status() or {"units": []}
        return next((u for u in status["units"] if u["unit"] == unit), {})

    def containers(self) -> list[Any]:
        return owned(self.engine, self.namespace)

    def running(self) -> dict[str, str]:
        """unit → container ID of the running containers (inspected: fresh state)."""
        out = {}
        try:
            listed = self.containers()
        except EngineError:
            return out
        for container in listed:
            try:
                seen = self.engine.inspect(container.id)
            except EngineError:  # removed meanwhile (a recreate swapping containers)
                continue
            if seen.running and seen.unit:
                out[seen.unit] = seen.id
        return out

    def converged(self, units: set[str]) -> bool:
        try:
            containers = self.containers()
        except EngineError:  # the engine is away (a test restarting it)
            return False
        names = sorted(c.name for c in containers)
        expected = sorted(f"hostos-{self.namespace}-{u}" for u in units)
        return names == expected and set(self.running()) == units

    def settled(self) -> bool:
        """The supervisor has reconciled the spec it loaded last."""
        status = self.status()
        return (
            bool(status)
            and status["generation"] >= 1
            and status["reconciled"] == status["generation"]
        )

    def logs(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


@pytest.fixture
def node(engine: Engine, tmp_path: Path) -> Iterator[Node]:
    made = Node(engine, tmp_path / "site")
    yield made
    print(f"--- {made.log.name} (tail) ---\n{made.logs()[-6000:]}")  # shown when a test fails
    if made.proc is not None:  # SIGTERM first: a private podman service goes with it
        made.proc.terminate()
        try:
            made.proc.wait(20)
        except subprocess.TimeoutExpired:
            made.proc.kill()
            made.proc.wait()
    down(engine, namespace=made.namespace)


def test_crash_loop_backs_off_and_others_are_unaffected(node: Node) -> None:
    crasher = (
        f"image: {BASE}\ncommand: [sh, -c, 'exit 3']\n"
        "restart: {policy: always, backoff: {initial: 1s, max: 4s}}\n"
    )
    node.units({"ok": SERVICE, "crash": crasher})
    node.start()
    wait_until(
        lambda: node.unit_status("crash").get("restarts", 0) >= 3,
        40,
        "three restarts of the crashing unit",
    )
    crash = wait_until(lambda: (s := node.unit_status("crash")).get("waiting") and s, 10)
    assert crash["last_exit"] == 3
    assert "crash loop: next try in" in crash["waiting"]
    ok = node.unit_status("ok")
    assert ok["state"] == "running" and ok["restarts"] == 0
    assert "event=unit-waiting unit=crash" in node.logs()


def test_kill_of_a_container_is_repaired(node: Node) -> None:
    node.units({"a": SERVICE, "b": SERVICE})
    node.start()
    wait_until(lambda: node.converged({"a", "b"}), 30, "converged")
    first = node.running()
    subprocess.run([node.engine.name, "kill", first["a"]], check=True, capture_output=True)
    wait_until(
        lambda: (
            node.unit_status("a").get("restarts") == 1
            and node.unit_status("a").get("state") == "running"
        ),
        15,
        "a restarted",
    )
    assert node.running() == first  # the same containers, started again
    assert node.unit_status("b")["restarts"] == 0


def test_kill_9_mid_apply_then_restart_leaves_no_duplicates(node: Node) -> None:
    units = {f"u{i:02d}": SERVICE for i in range(10)}
    node.units(units)
    node.start()
    wait_until(lambda: len(node.containers()) >= 2, 30, "apply under way")
    node.stop(signal.SIGKILL)
    node.units({**units, "u00": SERVICE + "env: {CHANGED: 'yes'}\n"})  # and a recreate too
    node.start()
    # converged on the new spec: the restarted supervisor's first reconcile is over (the
    # containers made before the kill look converged while u00's recreate is still to come)
    wait_until(lambda: node.converged(set(units)) and node.settled(), 60, "converged after restart")
    names = [c.name for c in node.containers()]
    assert len(names) == len(set(names)) == 10
    assert not any(name.endswith(".next") for name in names)


def test_bad_edit_keeps_everything_running_and_the_next_edit_converges(node: Node) -> None:
    node.units({"a": SERVICE, "b": SERVICE})
    node.start()
    wait_until(lambda: node.converged({"a", "b"}), 30, "converged")
    before = node.running()
    write(node.root / "a.yaml", SERVICE + "resources: {memroy: 64Mi}\n")
    (node.root / "b.yaml").write_text("image: [unclosed\n")
    status = wait_until(
        lambda: (s := node.status()) and s["site_error"] and s, 10, "the bad edit seen"
    )
    assert "a.yaml:4:" in status["site_error"] and "memroy" in status["site_error"]
    time.sleep(1)
    assert node.running() == before  # nothing stopped or recreated
    assert "event=site-invalid" in node.logs()
    write(node.root / "a.yaml", SERVICE + "env: {V: '2'}\n")
    write(node.root / "b.yaml", SERVICE)
    wait_until(
        lambda: (r := node.running()).keys() == {"a", "b"} and r["a"] != before["a"],
        20,
        "a recreated after the good edit",
    )
    assert node.running()["b"] == before["b"]


def test_sigterm_stops_dependents_first(node: Node) -> None:
    node.units(
        {"db": SERVICE, "app": SERVICE + "requires: [db]\n", "web": SERVICE + "after: [app]\n"}
    )
    node.start()
    wait_until(lambda: node.converged({"db", "app", "web"}), 30, "converged")
    since = time.time()
    assert node.stop() == 0
    until = time.time() + 1
    died = [
        e["name"].rsplit("-", 1)[-1]
        for e in node.engine.events(since, until)
        if e["action"] == "die" and node.namespace in e["name"]
    ]
    assert died == ["web", "app", "db"]
    states = {c.unit: c.state for c in node.containers()}
    assert states == {"db": "exited", "app": "exited", "web": "exited"}
    assert "event=stopping signal=SIGTERM" in node.logs()


def test_engine_loss_reconnects_and_reconverges(node: Node, tmp_path: Path) -> None:
    node.units({"a": SERVICE, "b": SERVICE + "requires: [a]\n"})
    if node.engine.name == "podman":
        _podman_service_lost(node, tmp_path)
    else:
        _dockerd_lost(node)


def _podman_service_lost(node: Node, tmp_path: Path) -> None:
    """The supervisor's own podman service dies: it starts another and goes on."""
    sock = tmp_path / "podman.sock"
    env_before = os.environ.get("CONTAINER_HOST")
    os.environ["CONTAINER_HOST"] = f"unix://{tmp_path / 'nothing.sock'}"
    try:
        node.start("--podman-socket", str(sock))
    finally:
        if env_before is None:
            del os.environ["CONTAINER_HOST"]
        else:
            os.environ["CONTAINER_HOST"] = env_before
    wait_until(lambda: node.converged({"a", "b"}), 30, "converged")
    service = _service_pid(str(sock))
    os.kill(service, signal.SIGKILL)
    node.engine.stop(node.running()["a"], 3)  # something to repair once it is back
    wait_until(lambda: _service_pid(str(sock)) not in (None, service), 30, "new service")
    wait_until(lambda: node.converged({"a", "b"}), 30, "reconverged")
    assert "event=engine-lost" in node.logs()


def _service_pid(sock: str) -> int | None:
    found = subprocess.run(
        ["pgrep", "-f", f"podman system service.*{sock}"], capture_output=True, text=True
    ).stdout.split()
    return int(found[0]) if found else None


def _dockerd_lost(node: Node) -> None:
    """dockerd is killed (its containers die with it) and started again."""
    node.start()
    wait_until(lambda: node.converged({"a", "b"}), 30, "converged")
    pid = int(
        subprocess.run(
            ["pidof", "dockerd"], capture_output=True, text=True, check=True
        ).stdout.split()[0]
    )
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 10, "dockerd gone")
    time.sleep(1)
    with open("/var/log/hostos-dockerd.log", "ab") as log:
        subprocess.Popen(
            ["dockerd"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd="/"
        )  # outlives the checkout
    wait_until(lambda: node.converged({"a", "b"}), 60, "reconverged after dockerd restart")
    assert "event=engine-lost" in node.logs() or "event=engine-unreachable" in node.logs()


def test_failed_mount_holds_only_its_dependants_with_fallback_and_back(
    node: Node, tmp_path: Path
) -> None:
    src, src2 = tmp_path / "export", tmp_path / "export2"
    target, target2, fallback = (
        tmp_path / "mnt" / "data",
        tmp_path / "mnt" / "d2",
        tmp_path / "local-copy",
    )
    fallback.mkdir()
    (fallback / "where").write_text("fallback\n")
    reader = (
        f"image: {BASE}\nstop_timeout: 3s\n"
        'command: [sh, -c, \'trap "exit 0" TERM; cat /data/where; '
        "while :; do sleep 0.2; done']\n"
    )
    role_mounts = (
        f"mounts:\n"
        f"  - {{name: data, type: bind, source: {src}, target: {target}, fallback: {fallback}}}\n"
        f"  - {{name: d2, type: bind, source: {src2}, target: {target2}}}\n"
    )
    node.units(
        {
            "uses": reader + "mounts: [{mount: data, target: /data}]\nrequires: [data]\n",
            "strict": SERVICE + "mounts: [{mount: d2, target: /d2}]\nrequires: [d2]\n",
            "free": SERVICE,
        },
        role_mounts,
    )
    try:
        node.start()
        wait_until(lambda: set(node.running()) == {"uses", "free"}, 30, "uses on fallback")
        assert "waiting for mount d2" in str(node.unit_status("strict").get("waiting"))
        first = node.running()["uses"]
        # running is not yet printed: on a loaded machine `cat` may not have run yet
        wait_until(
            lambda: b"fallback" in b"".join(node.engine.logs(first, False, None)),
            10,
            "uses read the fallback",
        )
        src.mkdir()
        (src / "where").write_text("export\n")
        src2.mkdir()
        # one look at the engine per try: between two, `uses` may be mid-recreate
        wait_until(
            lambda: (
                (seen := node.running()).keys() == {"uses", "free", "strict"}
                and seen["uses"] != first
            ),
            40,
            "moved back onto the mount",
        )
        moved = node.running()["uses"]
        wait_until(lambda: b"export" in b"".join(node.engine.logs(moved, False, None)), 10)
        status = node.status() or {}
        states = {m["name"]: m["state"] for m in status.get("mounts", [])}
        assert states == {"data": "mounted", "d2": "mounted"}
    finally:
        if node.proc is not None:
            node.stop()
        for path in (target, target2):
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_plan_on_a_supervised_node_shows_what_waits_and_why(node: Node, tmp_path: Path) -> None:
    """With a supervisor running, `hostos plan` and `apply --dry-run` print its plan: the
    unit on a mount that is down waits, and so does its dependent, each with the reason
    (and the waiting unit's image is not fetched).  Without it, they would be created."""
    from typer.testing import CliRunner

    from hostos.cli.main import app

    never = "127.0.0.1:9/hostos-test/never-fetched:1"
    target = tmp_path / "mnt" / "d2"
    node.units(
        {
            "strict": f"image: {never}\nmounts: [{{mount: d2, target: /d2}}]\nrequires: [d2]\n",
            "later": SERVICE + "requires: [strict]\n",
            "free": SERVICE,
        },
        f"mounts:\n  - {{name: d2, type: bind, source: {tmp_path / 'absent'}, target: {target}}}\n",
    )
    where = ["--role", "r", "--engine", node.engine.name, "--namespace", node.namespace]

    def plan(*extra: str) -> list[str]:
        result = CliRunner().invoke(app, [*extra, str(node.root), *where])
        assert result.exit_code == 0, result.output
        return [" ".join(line.split()) for line in result.output.splitlines()]

    waits = ["wait strict waiting for mount d2", "wait later waiting for strict"]
    try:
        node.start()
        wait_until(lambda: node.converged({"free"}) and node.settled(), 30, "free running")
        assert node.unit_status("strict")["waiting"] == "waiting for mount d2"
        assert node.unit_status("later")["waiting"] == "waiting for strict"
        assert plan("plan") == waits
        assert plan("apply", "--dry-run") == waits
        assert never not in node.logs()  # held: its image was never fetched
        node.stop()
        assert "create strict new unit (image " + never + " to fetch)" in plan("plan")
    finally:
        if node.proc is not None:
            node.stop()
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def test_as_pid_1_it_reaps_orphans(node: Node) -> None:
    if node.engine.name != "docker":
        pytest.skip("one engine is enough: reaping does not depend on it")
    node.units({"a": SERVICE})
    args = [
        "unshare",
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
        sys.executable,
        "-m",
        "hostos",
        "supervise",
        str(node.root),
        "--role",
        "r",
        "--engine",
        "docker",
        "--namespace",
        node.namespace,
    ]
    with open(node.log, "ab") as log:
        node.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    wait_until(lambda: node.converged({"a"}), 30, "converged")
    init = _pid_1_of(node.proc.pid)
    # An orphan in its namespace: sh backgrounds a short sleep and exits at once.
    subprocess.run(
        ["nsenter", "-t", str(init), "-p", "-m", "sh", "-c", "sleep 0.3 & exit 0"], check=True
    )
    time.sleep(1.5)
    zombies = [p for p in _children(init) if _state(p) == "Z"]
    assert zombies == []
    os.kill(init, signal.SIGTERM)  # unshare does not pass signals on; PID 1 handles TERM
    assert node.proc.wait(30) == 0
    node.proc = None
    assert "event=stopping signal=SIGTERM" in node.logs()


def _pid_1_of(unshare_pid: int) -> int:
    """The host pid of the namespace's PID 1 (unshare --fork's child)."""
    children = wait_until(lambda: _children(unshare_pid), 10, "unshare's child")
    return int(children[0])


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def test_with_a_server_the_spec_comes_from_there_and_changes_live(
    node: Node, tmp_path: Path
) -> None:
    """`supervise --server`: no site; the server's spec runs, a new generation is applied
    without a restart, and the node's record says its units and steady-state."""
    import json
    import socket
    import urllib.request

    from hostos.site.load import load_site
    from hostos.site.resolve import resolve_role, spec_document

    node.units({"a": SERVICE, "b": SERVICE})  # the site the server's spec is made from
    admin_token, token_file = uuid.uuid4().hex, tmp_path / "node-token"
    (tmp_path / "admin-token").write_text(admin_token + "\n")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with open(tmp_path / "server.log", "ab") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hostos",
                "serve",
                "--listen",
                url[len("http://") :],
                "--store",
                f"sqlite://{tmp_path / 'cluster.db'}",
                "--admin-token-file",
                str(tmp_path / "admin-token"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def call(method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(
            url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {admin_token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            return json.loads(reply.read())

    def publish(units: list[str]) -> None:
        spec = spec_document(resolve_role(load_site(str(node.root)), "r"))
        spec["units"] = [u for u in spec["units"] if u["name"] in units]
        call("POST", "/v1/site", {"roles": {"r": spec}, "nodes": {"sn1": {"role": "r"}}})

    try:
        wait_until(lambda: _answers(url + "/healthz"), 30, "the server")
        publish(["a"])
        token_file.write_text(call("POST", "/v1/tokens/nodes/sn1")["token"] + "\n")
        with open(node.log, "ab") as log:  # no site argument: the spec is the server's
            node.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "hostos",
                    "supervise",
                    "--server",
                    url,
                    "--token-file",
                    str(token_file),
                    "--node",
                    "sn1",
                    "--booted-image",
                    "img-1",
                    "--engine",
                    node.engine.name,
                    "--namespace",
                    node.namespace,
                    "--resync",
                    "5",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
            )
        wait_until(lambda: node.converged({"a"}), 60, "a from the server")
        record = wait_until(lambda: _steady(call("GET", "/v1/nodes/sn1")), 30, "steady")
        assert record["booted_image"] == "img-1" and record["units"] == {"a": "running"}
        pid = node.proc.pid
        publish(["a", "b"])
        wait_until(lambda: node.converged({"a", "b"}), 60, "b, live")
        assert node.proc.pid == pid and node.proc.poll() is None
        assert node.stop() == 0
    finally:
        server.terminate()
        server.wait(15)
    logs = node.logs()
    assert "event=config generation=2" in logs
    assert token_file.read_text().strip() not in logs


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


def _steady(record: dict[str, Any]) -> dict[str, Any] | None:
    return record if record["boot_id"] and record["steady_boot_id"] == record["boot_id"] else None
