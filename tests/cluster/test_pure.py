"""The cluster's pure parts, as tables: FleetLock rules, scopes, keys, records."""

from __future__ import annotations

from typing import Any

import pytest

from hostos.cluster import auth
from hostos.cluster.auth import ADMIN, Principal, Scope
from hostos.cluster.records import (
    Generation,
    Heartbeat,
    ImageRecord,
    NodeRecord,
    RecordError,
    SiteDocument,
    SlotTable,
)
from hostos.cluster.rollout import fleetlock
from hostos.cluster.store import keys

# -- FleetLock ---------------------------------------------------------------------------

ACQUIRE = [
    # table before, id, limit → ok, holders after, changed
    (None, "a", 1, True, ("a",), True),
    (SlotTable(("a",), 1), "a", 1, True, ("a",), False),  # recursive: same holder again
    (SlotTable(("a",), 1), "b", 1, False, ("a",), False),  # full
    (SlotTable(("a",), 1), "b", 2, True, ("a", "b"), True),  # a rollout raised the limit
    (SlotTable(("a", "b"), 2), "c", 1, False, ("a", "b"), False),  # lowered: holders stay
    (SlotTable(("a", "b"), 2), "b", 1, True, ("a", "b"), True),  # a holder keeps its slot
    (SlotTable((), 1), "a", 0, False, (), False),  # limit 0: nobody reboots
]


@pytest.mark.parametrize(("table", "node", "limit", "ok", "holders", "changed"), ACQUIRE)
def test_acquire(
    table: SlotTable | None,
    node: str,
    limit: int,
    ok: bool,
    holders: tuple[str, ...],
    changed: bool,
) -> None:
    outcome = fleetlock.acquire(table, node, "compute", limit)
    assert (outcome.ok, outcome.table.holders, outcome.changed) == (ok, holders, changed)
    if ok:
        assert outcome.table.max == limit
    else:
        assert "compute is full" in outcome.reason


RELEASE = [
    (None, "a", (), False),
    (SlotTable(("a",), 1), "a", (), True),
    (SlotTable(("a", "b"), 2), "a", ("b",), True),
    (SlotTable(("b",), 1), "a", ("b",), False),  # not held: still fine
]


@pytest.mark.parametrize(("table", "node", "holders", "changed"), RELEASE)
def test_release(
    table: SlotTable | None, node: str, holders: tuple[str, ...], changed: bool
) -> None:
    outcome = fleetlock.release(table, node, "compute")
    assert (outcome.ok, outcome.table.holders, outcome.changed) == (True, holders, changed)


def test_acquire_release_round_trip_keeps_the_limit() -> None:
    taken = fleetlock.acquire(None, "a", "g", 3).table
    assert fleetlock.release(taken, "a", "g").table == SlotTable((), 3)


# -- scopes ----------------------------------------------------------------------------

NODE = Principal("cn001")
SCOPES = [
    (ADMIN, Scope.admin, None, True),
    (ADMIN, Scope.node_read, "cn002", True),
    (NODE, Scope.admin, None, False),
    (NODE, Scope.admin, "cn001", False),
    (NODE, Scope.node_read, "cn001", True),
    (NODE, Scope.node_read, "cn002", False),
    (NODE, Scope.node_write, "cn001", True),
    (NODE, Scope.node_write, "cn002", False),
    (NODE, Scope.fleetlock, "cn001", True),
    (NODE, Scope.fleetlock, "cn002", False),
    (NODE, Scope.fleetlock, None, False),
]


@pytest.mark.parametrize(("who", "scope", "node", "ok"), SCOPES)
def test_allowed(who: Principal, scope: Scope, node: str | None, ok: bool) -> None:
    assert auth.allowed(who, scope, node) is ok


def test_identify() -> None:
    admin_hash = auth.token_hash("admin-secret")
    token = auth.new_node_token("cn.001")
    stored = auth.token_hash(token)
    assert auth.token_node(token) == "cn.001"
    assert auth.identify("admin-secret", admin_hash, None) == ADMIN
    assert auth.identify(token, admin_hash, stored) == Principal("cn.001")
    assert auth.identify(token, admin_hash, None) is None  # revoked or never issued
    assert auth.identify(token + "x", admin_hash, stored) is None
    assert auth.identify("", admin_hash, None) is None
    assert auth.identify(None, admin_hash, None) is None


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        (None, None),
        ("", None),
    ],
)
def test_bearer(header: str | None, token: str | None) -> None:
    assert auth.bearer(header) == token


@pytest.mark.parametrize(
    ("token", "node"),
    [
        ("hn1.cn001.s3cr3t", "cn001"),
        ("hn1.a.b.c.s", "a.b.c"),
        ("hn1..s", None),
        ("hn1.cn001", None),
        ("admin", None),
    ],
)
def test_token_node(token: str, node: str | None) -> None:
    assert auth.token_node(token) == node


def test_admin_token_file(tmp_path: Any) -> None:
    (tmp_path / "t").write_text("  tok\n")
    assert auth.read_admin_token(tmp_path / "t") == "tok"
    (tmp_path / "e").write_text("\n")
    with pytest.raises(auth.AdminTokenError, match="one token"):
        auth.read_admin_token(tmp_path / "e")
    with pytest.raises(auth.AdminTokenError, match="No such file"):
        auth.read_admin_token(tmp_path / "missing")


# -- keys ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("cn001", True),
        ("52-54-00-12-34-56", True),
        ("img-2026.12.01", True),
        ("a:b", True),
        ("", False),
        ("a/b", False),
        ("..", False),
        ("a..b", False),
        (".hidden", False),
        ("a b", False),
        ("x" * 129, False),
    ],
)
def test_names(name: str, ok: bool) -> None:
    if ok:
        assert keys.node(name) == f"nodes/{name}"
    else:
        with pytest.raises(keys.BadName):
            keys.node(name)


@pytest.mark.parametrize(
    ("mac", "node_id"),
    [("52:54:00:12:34:56", "52-54-00-12-34-56"), ("52-54-00-AB-cd-EF", "52-54-00-ab-cd-ef")],
)
def test_mac_id(mac: str, node_id: str) -> None:
    assert keys.mac_id(mac) == node_id


def test_mac_id_refuses_garbage() -> None:
    with pytest.raises(keys.BadName):
        keys.mac_id("52:54:00:12:34")


def test_encode_is_canonical() -> None:
    assert keys.encode({"b": 1, "a": [1, 2]}) == b'{"a":[1,2],"b":1}'
    assert keys.decode(keys.encode({"x": "é"})) == {"x": "é"}


# -- records ---------------------------------------------------------------------------

SITE = {
    "roles": {"compute": {"units": [{"name": "munge"}]}},
    "nodes": {"cn001": {"role": "compute", "mac": "52:54:00:00:00:01"}},
}


@pytest.mark.parametrize(
    "record",
    [
        NodeRecord(
            "cn001",
            "compute",
            "52:54:00:00:00:01",
            "g1",
            "g2",
            12.5,
            {"munge": "healthy"},
            {"home": "mounted"},
            "boot-1",
            3,
        ),
        NodeRecord("cn002"),
        ImageRecord("g1", cmdline="quiet", sha256={"vmlinuz": "ab"}),
        SlotTable(("a", "b"), 2),
        Generation.of(4, SiteDocument.from_json(SITE), 100.0),
    ],
)
def test_records_round_trip(record: Any) -> None:
    assert type(record).from_json(keys.decode(keys.encode(record.to_json()))) == record


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "expected a JSON object"),
        ({"roles": []}, "roles: expected a mapping"),
        ({"roles": {}, "nodes": {"n": {"role": "x"}}}, "unknown role 'x'"),
        ({"roles": {"r": {}}, "nodes": {"n": {"role": "r", "mac": 5}}}, "mac: expected a string"),
        ({"roles": {}, "nodes": {"n": "r"}}, "nodes.n: expected a JSON object"),
    ],
)
def test_bad_site_documents(data: Any, message: str) -> None:
    with pytest.raises(RecordError, match=message):
        SiteDocument.from_json(data)


def test_site_hash_ignores_key_order() -> None:
    reordered = {"nodes": SITE["nodes"], "roles": SITE["roles"]}
    assert SiteDocument.from_json(SITE).hash() == SiteDocument.from_json(reordered).hash()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"units": {"a": 1}}, "units.a: expected a string"),
        ({"generation": "3"}, "generation: expected an integer"),
        ({"generation": True}, "generation: expected an integer"),
        ({"booted_image": 7}, "booted_image: expected a string or null"),
    ],
)
def test_bad_heartbeats(data: Any, message: str) -> None:
    with pytest.raises(RecordError, match=message):
        Heartbeat.from_json(data)


def test_heartbeat_keeps_role_and_assignment() -> None:
    node = NodeRecord("cn001", "compute", "m", "g1", "g2", 1.0, {"a": "starting"})
    beat = Heartbeat.from_json(
        {"booted_image": "g2", "units": {"a": "healthy"}, "generation": 7, "extra": "ignored"}
    )
    after = beat.applied_to(node, 50.0)
    assert (after.role, after.mac, after.assigned_image) == ("compute", "m", "g2")
    assert (after.booted_image, after.units, after.last_seen, after.generation) == (
        "g2",
        {"a": "healthy"},
        50.0,
        7,
    )


def test_site_diff() -> None:
    old = SiteDocument.from_json(SITE)
    new = SiteDocument.from_json(
        {
            "roles": {"compute": {"units": [{"name": "munge"}, {"name": "slurmd"}]}, "login": {}},
            "nodes": {"lg01": {"role": "login"}},
        }
    )
    assert new.diff(old) == {
        "roles": {"added": ["login"], "removed": [], "changed": ["compute"]},
        "nodes": {"added": ["lg01"], "removed": ["cn001"], "changed": []},
    }
    assert old.diff(None)["nodes"]["added"] == ["cn001"]
    assert old.diff(old) == {
        k: {"added": [], "removed": [], "changed": []} for k in ("roles", "nodes")
    }
