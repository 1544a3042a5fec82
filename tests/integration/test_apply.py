"""`hostos apply` on real engines: both dockerd and podman, through the same tests."""

from __future__ import annotations

import importlib
import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from hostos.backoff import Backoff
from hostos.cli.main import app
from hostos.engine.base import ContainerSpec, Engine, container_name
from hostos.node.converge import Prepared, down, owned, prepare
from hostos.node.plan import Kind
from hostos.site.load import load_site
from hostos.site.resolve import resolve_role

from conftest import converge, write

pytestmark = pytest.mark.integration

BASE = "hostos/busybox:latest"
SLEEPER = f"image: {BASE}\ncommand: [sleep, '3600']\nstop_timeout: 1s\n"


class Node:
    """A site in a temp dir, converged into its own namespace on one engine."""

    def __init__(self, engine: Engine, root: Path) -> None:
        self.engine = engine
        self.root = root
        self.namespace = "t" + uuid.uuid4().hex[:8]

    def units(self, units: dict[str, str]) -> None:
        for old in self.root.glob("*.yaml"):
            old.unlink()
        for name, text in units.items():
            write(self.root / f"{name}.yaml", text)
        write(self.root / "roles" / "r.yaml", f"role: r\nunits: [{', '.join(units)}]\n")

    def apply(self):  # type: ignore[no-untyped-def]
        spec = resolve_role(load_site(str(self.root)), "r")
        return converge(self.engine, spec, str(self.root), namespace=self.namespace)

    def containers(self) -> dict[str, str]:
        """unit → container ID of this node's containers."""
        return {c.unit or "": c.id for c in owned(self.engine, self.namespace)}

    def name(self, unit: str) -> str:
        return container_name(unit, self.namespace)


@pytest.fixture
def node(engine: Engine, tmp_path: Path) -> Iterator[Node]:
    made = Node(engine, tmp_path / "site")
    yield made
    down(engine, namespace=made.namespace)


def changes(result) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return sorted((o.kind.value, o.unit) for o in result.outcomes if o.kind is not Kind.NOOP)


def test_first_apply_creates_then_nothing_changes(node: Node) -> None:
    node.units({"a": SLEEPER, "b": SLEEPER})
    first = node.apply()
    assert changes(first) == [("create", "a"), ("create", "b")]
    assert first.failed == 0
    assert {node.engine.inspect(i).state for i in node.containers().values()} == {"running"}
    second = node.apply()
    assert second.changes == 0 and second.failed == 0
    assert all(a.kind is Kind.NOOP for a in second.actions)


def test_changing_one_field_recreates_exactly_that_unit(node: Node) -> None:
    node.units({"a": SLEEPER, "b": SLEEPER})
    node.apply()
    before = node.containers()
    node.units({"a": SLEEPER + "env: {MODE: two}\n", "b": SLEEPER})
    result = node.apply()
    assert changes(result) == [("recreate", "a")]
    assert [a.reason for a in result.actions if a.unit == "a"] == ["env MODE added"]
    after = node.containers()
    assert after["b"] == before["b"] and after["a"] != before["a"]
    seen = node.engine.inspect(after["a"])
    assert seen.name == node.name("a") and seen.running


def test_unit_removed_from_role_is_removed(node: Node) -> None:
    node.units({"a": SLEEPER, "b": SLEEPER})
    node.apply()
    node.units({"a": SLEEPER})
    result = node.apply()
    assert changes(result) == [("remove", "b")]
    assert set(node.containers()) == {"a"}


def test_container_stopped_or_deleted_behind_our_back_is_restored(node: Node) -> None:
    node.units({"a": SLEEPER, "b": SLEEPER})
    node.apply()
    ids = node.containers()
    node.engine.stop(ids["a"], 1)
    node.engine.remove(ids["b"])
    result = node.apply()
    assert changes(result) == [("create", "b"), ("start", "a")]
    assert node.engine.inspect(node.containers()["a"]).running
    assert node.engine.inspect(node.containers()["b"]).running


def test_foreign_containers_are_never_touched(node: Node) -> None:
    engine = node.engine
    similar = engine.create(
        ContainerSpec(
            name=node.name("a") + "-2",
            image=BASE,
            labels={"test": node.namespace},
            command=("sleep", "3600"),
        )
    )
    clash = engine.create(
        ContainerSpec(
            name=node.name("b"),
            image=BASE,
            labels={"test": node.namespace},
            command=("sleep", "3600"),
        )
    )
    try:
        node.units({"a": SLEEPER, "b": SLEEPER, "c": SLEEPER + "requires: [b]\n"})
        result = node.apply()
        by_unit = {o.unit: o for o in result.outcomes}
        assert by_unit["a"].ok
        assert not by_unit["b"].ok and "hostos does not own" in by_unit["b"].message
        assert by_unit["c"].message == "blocked: dependency b failed"
        assert engine.inspect(similar).state == "created"
        assert engine.inspect(clash).state == "created"
        down(engine, namespace=node.namespace)
        assert engine.inspect(similar).state == "created"  # down leaves foreign ones too
    finally:
        engine.remove(similar)
        engine.remove(clash)


HEALTHY_LATE = (
    f"image: {BASE}\n"
    "command: [sh, -c, 'sleep 2; touch /tmp/ready; exec sleep 3600']\n"
    "health: {command: [test, -f, /tmp/ready], interval: 1s, timeout: 1s, retries: 10}\n"
    "stop_timeout: 1s\n"
)


def test_dependents_start_after_health(node: Node) -> None:
    node.units(
        {"db": HEALTHY_LATE, "app": SLEEPER + "requires: [db]\n", "side": SLEEPER + "after: [db]\n"}
    )
    since = time.time() - 1
    result = node.apply()
    assert result.failed == 0, result.outcomes
    events = [
        e
        for e in node.engine.events(since, time.time() + 1)
        if e.get("action") == "start" and node.namespace in str(e.get("name", ""))
    ]
    started = {str(e["name"]): float(e["time"]) for e in events}
    db, app_, side = (started[node.name(u)] for u in ("db", "app", "side"))
    assert db < side  # after: order only
    assert app_ - db >= 1.5  # requires: waited for db to turn healthy (about 2 s)
    assert [o.message for o in result.outcomes if o.unit == "db"] == ["created, healthy"]


def test_unhealthy_dependency_blocks_dependents_and_the_rest_go_on(node: Node) -> None:
    sick = (
        f"image: {BASE}\ncommand: [sleep, '3600']\nstop_timeout: 1s\n"
        "health: {command: ['false'], interval: 1s, timeout: 1s, retries: 1}\n"
    )
    node.units({"db": sick, "app": SLEEPER + "requires: [db]\n", "other": SLEEPER})
    result = node.apply()
    by_unit = {o.unit: o for o in result.outcomes}
    assert not by_unit["db"].ok
    assert by_unit["app"].message == "blocked: dependency db failed"
    assert by_unit["other"].ok
    assert "app" not in node.containers()


def test_failed_recreate_keeps_the_old_container(node: Node) -> None:
    node.units({"a": SLEEPER})
    node.apply()
    old = node.containers()["a"]
    node.units({"a": SLEEPER.replace("[sleep, '3600']", "[/no/such/program]")})
    result = node.apply()
    [outcome] = [o for o in result.outcomes if o.unit == "a"]
    assert not outcome.ok
    assert "kept the previous container running" in outcome.message
    assert node.containers() == {"a": old}
    assert node.engine.inspect(old).running


def test_missing_image_is_a_clear_error_naming_the_unit(node: Node) -> None:
    missing = "127.0.0.1:9/hostos-test/nothing:1"
    node.units({"a": f"image: {missing}\n", "b": SLEEPER})
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "apply",
            str(node.root),
            "--role",
            "r",
            "-o",
            "json",
            "--engine",
            node.engine.name,
            "--namespace",
            node.namespace,
        ],
    )
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    by_unit = {r["unit"]: r for r in doc["results"]}
    assert by_unit["b"]["ok"]
    assert not by_unit["a"]["ok"] and missing in by_unit["a"]["message"]


def test_cli_apply_then_status_json(node: Node) -> None:
    node.units({"a": SLEEPER})
    runner = CliRunner()
    args = ["--engine", node.engine.name, "--namespace", node.namespace]
    first = runner.invoke(app, ["apply", str(node.root), "--role", "r", *args])
    assert first.exit_code == 0, first.output
    assert "create" in first.stdout and "1 changes, 0 failed" in first.stdout
    again = runner.invoke(app, ["apply", str(node.root), "--role", "r", *args])
    assert again.stdout.strip() == "0 changes"
    status = json.loads(runner.invoke(app, ["status", "-o", "json", *args]).stdout)
    [row] = status
    assert row["unit"] == "a" and row["role"] == "r" and row["state"] == "running"
    assert row["container_id"] == node.containers()["a"]
    assert {"health", "image", "restarts"} <= set(row)
    assert row["image_ref"] == "hostos/busybox:latest"
    table = runner.invoke(app, ["status", *args]).stdout  # the engine's view: no supervisor
    short = row["image"].removeprefix("sha256:")[:12]
    assert f"hostos/busybox:latest@{short}" in table
    assert re.search(r" \d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d\d:\d\d ", table), table


def test_role_mount_reference_binds_the_host_path(node: Node, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "hello").write_text("hello from the role mount\n")
    node.units(
        {
            "a": f"image: {BASE}\ncommand: [sh, -c, 'cat /data/hello; exec sleep 3600']\n"
            "stop_timeout: 1s\nmounts: [{mount: data, target: /data, readonly: true}]\n"
            "requires: [data]\n"
        }
    )
    role = node.root / "roles" / "r.yaml"
    role.write_text(
        role.read_text() + f"mounts: [{{name: data, type: bind, source: {data}, target: {data}}}]\n"
    )
    result = node.apply()
    assert result.failed == 0, result.outcomes
    deadline = time.monotonic() + 5
    output = b""
    while b"hello" not in output and time.monotonic() < deadline:
        output = b"".join(node.engine.logs(node.containers()["a"], False, None))
        time.sleep(0.1)
    assert b"hello from the role mount" in output


def test_prepare_trusts_an_early_list_only_when_nothing_was_fetched(node: Node) -> None:
    """`hostos apply` lists the engine while it reads the site (EarlyEngine); that list
    stands for the engine unless a build, load or pull took time in between."""
    node.units({"a": SLEEPER})
    node.apply()
    spec = resolve_role(load_site(str(node.root)), "r")
    site = str(node.root)

    def kinds(prepared: Prepared) -> dict[str, Kind]:
        return {a.unit: a.kind for a in prepared.actions}

    listed = node.engine.owned()
    assert kinds(
        prepare(node.engine, spec, site, fetch=True, namespace=node.namespace, listed=listed)
    ) == {"a": Kind.NOOP}
    # The list given is what counts (an empty one: a would be created again) ...
    assert kinds(
        prepare(node.engine, spec, site, fetch=False, namespace=node.namespace, listed=[])
    ) == {"a": Kind.CREATE}
    # ... unless an image had to be fetched: then the engine is listed afresh.
    node.units({"a": SLEEPER, "b": "image: 127.0.0.1:9/hostos-test/nothing:1\n"})
    spec = resolve_role(load_site(site), "r")
    node.engine.pull_backoff = Backoff(0.0)  # type: ignore[attr-defined]
    prepared = prepare(node.engine, spec, site, fetch=True, namespace=node.namespace, listed=[])
    assert prepared.images["b"].how == "missing"
    assert kinds(prepared)["a"] is Kind.NOOP


def test_cli_apply_lists_the_engine_once(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """The early list serves the no-op plan: the engine is not listed a second time."""
    node.units({"a": SLEEPER})
    node.apply()
    calls: list[str] = []
    connect_module = importlib.import_module("hostos.engine.connect")
    real_connect = connect_module.connect

    def counting_connect(*args: Any, **kwargs: Any) -> Engine:
        engine = real_connect(*args, **kwargs)
        real_owned = engine.owned

        def owned() -> list[Any]:
            calls.append("owned")
            return real_owned()

        engine.owned = owned  # type: ignore[method-assign]
        return engine

    monkeypatch.setattr(connect_module, "connect", counting_connect)
    result = CliRunner().invoke(
        app,
        [
            "apply",
            str(node.root),
            "--role",
            "r",
            "--engine",
            node.engine.name,
            "--namespace",
            node.namespace,
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "0 changes"
    assert calls == ["owned"]


def test_bad_input_closes_the_early_engine(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[str] = []
    connect_module = importlib.import_module("hostos.engine.connect")
    real_connect = connect_module.connect

    def tracking_connect(*args: Any, **kwargs: Any) -> Engine:
        engine = real_connect(*args, **kwargs)
        real_close = engine.close

        def close() -> None:
            closed.append(engine.name)
            real_close()

        engine.close = close  # type: ignore[method-assign]
        return engine

    monkeypatch.setattr(connect_module, "connect", tracking_connect)
    node.units({"a": SLEEPER + "bogus: 1\n"})
    result = CliRunner().invoke(
        app,
        [
            "apply",
            str(node.root),
            "--role",
            "r",
            "--engine",
            node.engine.name,
            "--namespace",
            node.namespace,
        ],
    )
    assert result.exit_code == 2, result.output
    assert "bogus" in result.output
    assert closed == [node.engine.name]
