"""A role's `rollout:` key: its rules with their `file:line` messages, `extends`, and the
policy a published role spec carries (`RolloutPolicy`, `rollout_policy`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from hostos.errors import SiteError
from hostos.site.drain import COMMANDS, SLURM, Drain, DrainError
from hostos.site.load import load_site
from hostos.site.resolve import resolve_role, spec_document, spec_view
from hostos.site.rollout import MAX_COUNT, RolloutPolicy, rollout_policy
from hostos.site.schema import schema

from conftest import EXAMPLE_SITE, write

ROLE = "role: r\nrollout:\n"


def _policy(tmp_path: Path, rollout: str, role: str = "r") -> RolloutPolicy:
    write(tmp_path / "roles" / "r.yaml", ROLE + rollout)
    return rollout_policy(spec_document(resolve_role(load_site(str(tmp_path)), role)))


def _problems(tmp_path: Path, text: str, file: str = "r.yaml") -> list[str]:
    write(tmp_path / "roles" / file, text)
    with pytest.raises(SiteError) as refused:
        load_site(str(tmp_path))
    return [str(p).replace(f"{tmp_path}/", "") for p in refused.value.problems]


# -- good values -------------------------------------------------------------------------------

GOOD = [
    ("  max_unavailable: 2\n", RolloutPolicy(max_unavailable=2)),
    ("  max_unavailable: '25%'\n", RolloutPolicy(max_unavailable="25%")),
    ("  max_unavailable: 1%\n", RolloutPolicy(max_unavailable="1%")),
    ("  max_unavailable: 100%\n", RolloutPolicy(max_unavailable="100%")),
    (f"  max_unavailable: {MAX_COUNT}\n", RolloutPolicy(max_unavailable=MAX_COUNT)),
    ("  canary: 0\n", RolloutPolicy(canary=0)),
    ("  canary: 3\n", RolloutPolicy(canary=3)),
    ("  health_timeout: 10m\n", RolloutPolicy(health_timeout=600.0)),
    ("  health_timeout: 1m30s\n", RolloutPolicy(health_timeout=90.0)),
    ("  auto_rollback: true\n", RolloutPolicy(auto_rollback=True)),
    ("  auto_rollback: false\n", RolloutPolicy(auto_rollback=False)),
    ("  drain: slurm\n", RolloutPolicy(drain=Drain(SLURM))),
    ("  drain: slurm\n  drain_timeout: 2h\n", RolloutPolicy(drain=Drain(SLURM, timeout=7200.0))),
    (
        "  drain:\n"
        "    command: [sched-drain, '{node}']\n"
        "    check: [sched-jobs, '{node}']\n"
        "    resume: [sched-resume, '{node}', --image, '{image}']\n"
        "  drain_timeout: 30m\n",
        RolloutPolicy(
            drain=Drain(
                COMMANDS,
                ("sched-drain", "{node}"),
                ("sched-jobs", "{node}"),
                ("sched-resume", "{node}", "--image", "{image}"),
                1800.0,
            )
        ),
    ),
    (
        "  drain: {command: [d, '{node}'], check: [c.sh]}\n",
        RolloutPolicy(drain=Drain(COMMANDS, ("d", "{node}"), ("c.sh",))),
    ),
    ("  {}\n", RolloutPolicy()),
    ("  canary: null\n", RolloutPolicy()),
]


@pytest.mark.parametrize(("rollout", "policy"), GOOD)
def test_good_values(tmp_path: Path, rollout: str, policy: RolloutPolicy) -> None:
    assert _policy(tmp_path, rollout) == policy


def test_every_key_at_once(tmp_path: Path) -> None:
    policy = _policy(
        tmp_path,
        "  max_unavailable: 25%\n  canary: 1\n  health_timeout: 15m\n  auto_rollback: true\n"
        "  drain: slurm\n  drain_timeout: 1d\n",
    )
    assert policy == RolloutPolicy("25%", 1, 900.0, True, Drain(SLURM, timeout=86400.0))


# -- bad values: file:line:col: key: message (hint) ---------------------------------------------

BAD = [
    (
        "  max_unavailable: 0\n",
        "rollout.max_unavailable: must be 1 to 100000, got 0",
    ),
    (
        f"  max_unavailable: {MAX_COUNT + 1}\n",
        f"rollout.max_unavailable: must be 1 to 100000, got {MAX_COUNT + 1}",
    ),
    (
        "  max_unavailable: 0%\n",
        "rollout.max_unavailable: '0%' is not a count like 2 or a percentage like '25%' (1-100)",
    ),
    (
        "  max_unavailable: 101%\n",
        "rollout.max_unavailable: '101%' is not a count like 2 or a percentage like '25%' (1-100)",
    ),
    (
        "  max_unavailable: 025%\n",
        "rollout.max_unavailable: '025%' is not a count like 2 or a percentage like '25%' (1-100)",
    ),
    (
        "  max_unavailable: 12.5%\n",
        "rollout.max_unavailable: '12.5%' is not a count like 2 or a percentage like '25%' (1-100)",
    ),
    (
        "  max_unavailable: '2'\n",
        "rollout.max_unavailable: '2' is not a count like 2 or a percentage like '25%' (1-100) "
        "(write 2 without quotes)",
    ),
    (
        "  max_unavailable: 2.5\n",
        "rollout.max_unavailable: expected a count like 2 or a percentage like '25%' (1-100), "
        "found the number 2.5",
    ),
    (
        "  max_unavailable: .inf\n",
        "rollout.max_unavailable: expected a count like 2 or a percentage like '25%' (1-100), "
        "found the number inf",
    ),
    (
        "  max_unavailable: true\n",
        "rollout.max_unavailable: expected a count like 2 or a percentage like '25%' (1-100), "
        "found the boolean true",
    ),
    ("  canary: -1\n", "rollout.canary: must be 0 to 100000, got -1"),
    ("  canary: 1.0\n", "rollout.canary: expected a whole number, found the number 1.0"),
    ("  canary: .nan\n", "rollout.canary: expected a whole number, found the number nan"),
    ("  canary: '2'\n", "rollout.canary: expected a whole number, found '2'"),
    ("  canary: false\n", "rollout.canary: expected a whole number, found the boolean false"),
    (
        "  health_timeout: 0s\n",
        "rollout.health_timeout: must be a positive number of seconds, got 0.0",
    ),
    (
        "  health_timeout: 600\n",
        "rollout.health_timeout: a duration needs a unit: write '600s' for seconds",
    ),
    (
        "  health_timeout: soon\n",
        "rollout.health_timeout: 'soon' is not a duration (write e.g. 500ms, 10s, 1m30s, 2h)",
    ),
    (
        f"  health_timeout: {'9' * 400}s\n",
        "rollout.health_timeout: must be a positive number of seconds, got inf",
    ),
    ("  auto_rollback: 'yes'\n", "rollout.auto_rollback: expected true or false, found 'yes'"),
    ("  auto_rollback: 1\n", "rollout.auto_rollback: expected true or false, found the number 1"),
    (
        "  max_unavailabel: 2\n",
        "rollout.max_unavailabel: unknown key (did you mean 'max_unavailable'?)",
    ),
    ("  drain: slurmd\n", "rollout.drain: 'slurmd' is not one of slurm (did you mean 'slurm'?)"),
    ("  drain: [x]\n", "rollout.drain: expected a mapping of keys, found a list"),
    (
        "  drain: {}\n",
        "rollout.drain: command and check: missing (the generic form needs command and check; "
        "or write drain: slurm)",
    ),
    (
        "  drain: {command: [d]}\n",
        "rollout.drain.check: missing (the generic form needs command and check; "
        "or write drain: slurm)",
    ),
    (
        "  drain: {command: [d], check: [c], resum: [r]}\n",
        "3:37: rollout.drain.resum: unknown key (did you mean 'resume'?)",
    ),
    (
        "  drain: {command: [d], check: [c], timeout: 3}\n",
        "3:37: rollout.drain.timeout: unknown key",
    ),
    (
        "  drain: {command: 'sched-drain {node}', check: [c]}\n",
        "3:11: rollout.drain.command: expected a command as a list of strings, "
        "e.g. [prog, '{node}']",
    ),
    (
        "  drain: {command: [d, 3], check: [c]}\n",
        "3:11: rollout.drain.command: expected a command as a list of strings, "
        "e.g. [prog, '{node}']",
    ),
    (
        "  drain: {command: [/usr/bin/scontrol, '{node}'], check: [c]}\n",
        "3:11: rollout.drain.command: the program '/usr/bin/scontrol' must be a plain file name "
        "(letters, digits, _ . + -), run from the server's --drain-hooks directory, not a path",
    ),
    (
        "  drain: {command: ['..', '{node}'], check: [c]}\n",
        "3:11: rollout.drain.command: the program '..' must be a plain file name "
        "(letters, digits, _ . + -), run from the server's --drain-hooks directory, not a path",
    ),
    (
        "  drain: {command: [d, '{host}'], check: [c]}\n",
        "3:11: rollout.drain.command: unknown placeholder {host} (known: {node}, {image})",
    ),
    (
        "  drain: {command: [d], check: [c], resume: [r, '{node}{imag}']}\n",
        "3:37: rollout.drain.resume: unknown placeholder {imag} (known: {node}, {image})",
    ),
    (
        "  drain_timeout: 1h\n",
        "rollout.drain_timeout: drain_timeout without drain (add drain: slurm or the command "
        "form, or remove drain_timeout)",
    ),
    (
        "  drain: slurm\n  drain_timeout: 0\n",
        "4:3: rollout.drain_timeout: must be a positive number of seconds, got 0.0",
    ),
]


@pytest.mark.parametrize(("rollout", "expected"), BAD)
def test_bad_values(tmp_path: Path, rollout: str, expected: str) -> None:
    where = "" if expected[0].isdigit() else "3:3: "
    assert _problems(tmp_path, ROLE + rollout) == [f"roles/r.yaml:{where}{expected}"]


def test_every_problem_at_once(tmp_path: Path) -> None:
    """Several bad keys in several files: one line each, in file and line order."""
    write(tmp_path / "roles" / "a.yaml", "role: a\nrollout: {canary: -1, drain_timeout: 1h}\n")
    problems = _problems(
        tmp_path,
        ROLE + "  max_unavailable: 0%\n  health_timeout: 5\n  drain: {command: [/bin/x]}\n",
    )
    assert problems == [
        "roles/a.yaml:2:11: rollout.canary: must be 0 to 100000, got -1",
        "roles/r.yaml:3:3: rollout.max_unavailable: '0%' is not a count like 2 or a percentage "
        "like '25%' (1-100)",
        "roles/r.yaml:4:3: rollout.health_timeout: a duration needs a unit: write '5s' for seconds",
        "roles/r.yaml:5:11: rollout.drain.command: the program '/bin/x' must be a plain file "
        "name (letters, digits, _ . + -), run from the server's --drain-hooks directory, not a "
        "path",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "role: r\nrollout: slurm\n",
            "roles/r.yaml:2:1: rollout: expected a mapping of keys, found 'slurm'",
        ),
        (
            "role: r\nrollout: [1]\n",
            "roles/r.yaml:2:1: rollout: expected a mapping of keys, found a list",
        ),
    ],
)
def test_the_key_is_a_mapping(tmp_path: Path, text: str, expected: str) -> None:
    assert _problems(tmp_path, text) == [expected]


# -- extends -----------------------------------------------------------------------------------

PARENT = (
    "role: base\nrollout:\n  max_unavailable: 2\n  canary: 1\n  health_timeout: 10m\n"
    "  drain: slurm\n  drain_timeout: 24h\n"
)


@pytest.mark.parametrize(
    ("child", "policy"),
    [
        ("", RolloutPolicy(2, 1, 600.0, None, Drain(SLURM, timeout=86400.0))),
        (
            "rollout: {max_unavailable: 25%, auto_rollback: true}\n",
            RolloutPolicy("25%", 1, 600.0, True, Drain(SLURM, timeout=86400.0)),
        ),
        (
            "rollout: {drain_timeout: 2h, canary: null}\n",
            RolloutPolicy(2, None, 600.0, None, Drain(SLURM, timeout=7200.0)),
        ),
        (
            "rollout: {drain: {command: [d, '{node}'], check: [c, '{node}']}}\n",
            RolloutPolicy(
                2, 1, 600.0, None, Drain(COMMANDS, ("d", "{node}"), ("c", "{node}"), (), 86400.0)
            ),
        ),
        ("rollout: null\n", RolloutPolicy()),
    ],
)
def test_a_child_inherits_key_by_key(tmp_path: Path, child: str, policy: RolloutPolicy) -> None:
    write(tmp_path / "roles" / "base.yaml", PARENT)
    write(tmp_path / "roles" / "r.yaml", "role: r\nextends: base\n" + child)
    site = load_site(str(tmp_path))
    assert rollout_policy(spec_document(resolve_role(site, "r"))) == policy
    assert site.roles["base"].rollout is not None
    assert site.roles["base"].rollout.policy() == RolloutPolicy(
        2, 1, 600.0, None, Drain(SLURM, timeout=86400.0)
    )


def test_a_generic_drain_merges_like_any_map(tmp_path: Path) -> None:
    """The command form is a map: a child's steps replace the parent's one by one, and
    `resume: null` drops the parent's."""
    write(
        tmp_path / "roles" / "base.yaml",
        "role: base\nrollout:\n  drain: {command: [d], check: [c], resume: [r]}\n",
    )
    write(
        tmp_path / "roles" / "r.yaml",
        "role: r\nextends: base\nrollout:\n  drain: {check: [c2, '{node}'], resume: null}\n",
    )
    policy = rollout_policy(spec_document(resolve_role(load_site(str(tmp_path)), "r")))
    assert policy.drain == Drain(COMMANDS, ("d",), ("c2", "{node}"), ())


def test_an_inherited_mistake_points_into_the_parent(tmp_path: Path) -> None:
    """drain_timeout stays when a child drops the parent's drain: the error names the line
    in the parent file, where the key is, and the child's role."""
    write(tmp_path / "roles" / "base.yaml", PARENT)
    problems = _problems(tmp_path, "role: r\nextends: base\nrollout: {drain: null}\n")
    assert problems == [
        "roles/base.yaml:7:3: rollout.drain_timeout: drain_timeout without drain (add drain: "
        "slurm or the command form, or remove drain_timeout)"
    ]


# -- the example site --------------------------------------------------------------------------


def test_the_example_compute_role_drains_through_slurm() -> None:
    site = load_site(str(EXAMPLE_SITE))
    compute = rollout_policy(spec_document(resolve_role(site, "compute")))
    assert compute.drain == Drain(SLURM, timeout=86400.0)
    assert compute.max_unavailable == "25%"
    gpu = rollout_policy(spec_document(resolve_role(site, "gpu")))  # extends compute
    assert gpu == compute
    head = spec_document(resolve_role(site, "head"))
    assert "rollout" not in head and rollout_policy(head) == RolloutPolicy()


def test_the_view_shows_the_key_as_written(tmp_path: Path) -> None:
    write(tmp_path / "roles" / "r.yaml", ROLE + "  health_timeout: 90s\n  drain: slurm\n")
    spec = resolve_role(load_site(str(tmp_path)), "r")
    assert spec_view(spec)["rollout"] == {"health_timeout": "1m30s", "drain": "slurm"}
    document = spec_document(spec)
    assert document["rollout"] == {
        "health_timeout": 90.0,
        "drain": {"kind": "slurm", "command": [], "check": [], "resume": [], "timeout": 86400.0},
    }
    json.dumps(document, allow_nan=False)


def test_the_published_site_carries_the_policy() -> None:
    """What `hostos publish` sends, as the server stores it: the policy reads back."""
    from hostos.cluster.admin import site_document
    from hostos.cluster.records import SiteDocument

    sent = json.loads(json.dumps(site_document(load_site(str(EXAMPLE_SITE)))))
    stored = SiteDocument.from_json(sent)
    assert rollout_policy(stored.roles["compute"]) == RolloutPolicy(
        "25%", 1, 900.0, None, Drain(SLURM, timeout=86400.0)
    )
    assert rollout_policy(stored.roles["demo"]) == RolloutPolicy()


# -- the stored form, read back by the server ----------------------------------------------------

POLICIES = [
    RolloutPolicy(),
    RolloutPolicy(3, 0, 60.0, False, None),
    RolloutPolicy("100%", 2, 0.5, True, Drain(SLURM, timeout=3600.0)),
    RolloutPolicy(drain=Drain(COMMANDS, ("d", "{node}"), ("c",), ("r", "{image}"), 60.0)),
]


@pytest.mark.parametrize("policy", POLICIES)
def test_the_json_form_reads_back(policy: RolloutPolicy) -> None:
    data = json.loads(json.dumps(policy.to_json()))
    assert RolloutPolicy.from_json(data) == policy
    assert rollout_policy({"role": "r", "rollout": data}) == policy


def test_the_json_form_leaves_out_what_is_not_said() -> None:
    assert RolloutPolicy().to_json() == {}
    assert RolloutPolicy(canary=0).to_json() == {"canary": 0}
    assert RolloutPolicy.from_json({"canary": None}) == RolloutPolicy()


BAD_STORED: list[tuple[Any, str]] = [
    ([], "rollout: expected an object, got list"),
    ({"canry": 1}, "rollout: unknown key 'canry'"),
    ({"max_unavailable": 0}, "rollout.max_unavailable: must be 1 to 100000"),
    ({"max_unavailable": "0%"}, "rollout.max_unavailable: '0%' is not a count"),
    ({"max_unavailable": "2"}, "rollout.max_unavailable: '2' is not a count"),
    ({"max_unavailable": True}, "rollout.max_unavailable: expected a count"),
    ({"max_unavailable": 2.0}, "rollout.max_unavailable: expected a count"),
    ({"max_unavailable": 10**30}, "rollout.max_unavailable: must be 1 to 100000"),
    ({"canary": -1}, "rollout.canary: must be 0 to 100000"),
    ({"canary": 1.5}, "rollout.canary: expected a whole number"),
    ({"health_timeout": "10m"}, "rollout.health_timeout: expected seconds, got str"),
    ({"health_timeout": 0}, "rollout.health_timeout: must be a positive number of seconds"),
    ({"health_timeout": -5.0}, "rollout.health_timeout: must be a positive number"),
    ({"health_timeout": float("nan")}, "rollout.health_timeout: must be a positive number"),
    ({"health_timeout": float("inf")}, "rollout.health_timeout: must be a positive number"),
    ({"health_timeout": True}, "rollout.health_timeout: expected seconds, got bool"),
    ({"auto_rollback": "true"}, "rollout.auto_rollback: expected true or false"),
    ({"auto_rollback": 0}, "rollout.auto_rollback: expected true or false"),
    ({"drain": "slurm"}, "rollout.drain: expected an object, got str"),
    ({"drain": {"kind": "pbs"}}, "rollout.drain: kind: expected 'slurm' or 'commands'"),
    ({"drain": {"kind": "slurm", "timeout": 0}}, "rollout.drain: timeout: must be a positive"),
    (
        {"drain": {"kind": "commands", "command": ["/bin/sh", "-c", "x"], "check": ["c"]}},
        "rollout.drain: command: the program '/bin/sh' must be a plain file name",
    ),
    (
        {"drain": {"kind": "commands", "command": ["d", "{host}"], "check": ["c"]}},
        "rollout.drain: command: unknown placeholder {host}",
    ),
    ({"drain": {"kind": "commands", "command": ["d"]}}, "rollout.drain: check: missing"),
]


@pytest.mark.parametrize(("data", "message"), BAD_STORED)
def test_a_bad_stored_policy_is_refused(data: Any, message: str) -> None:
    with pytest.raises(ValueError) as refused:
        RolloutPolicy.from_json(data)
    assert str(refused.value).startswith(message), refused.value
    with pytest.raises(ValueError):
        rollout_policy({"role": "r", "rollout": data})


def test_drain_errors_stay_drain_errors() -> None:
    with pytest.raises(DrainError):
        RolloutPolicy.from_json({"drain": {"kind": "pbs"}})


@pytest.mark.parametrize("spec", [None, [], "compute", 3])
def test_a_role_spec_that_is_no_object_is_refused(spec: Any) -> None:
    with pytest.raises(ValueError, match="role spec: expected an object"):
        rollout_policy(spec)


# -- the editors' schema -----------------------------------------------------------------------


def _schema_check(rollout: Any) -> None:
    jsonschema.validate(
        {"role": "r", "rollout": rollout}, schema("role"), cls=jsonschema.Draft202012Validator
    )


@pytest.mark.parametrize(
    "rollout",
    [
        {"max_unavailable": 2, "canary": 0, "health_timeout": "10m", "auto_rollback": False},
        {"max_unavailable": "25%", "drain": "slurm", "drain_timeout": "24h"},
        {"drain": {"command": ["d", "{node}"], "check": ["c"], "resume": ["r"]}},
    ],
)
def test_the_schema_takes_good_values(rollout: Any) -> None:
    _schema_check(rollout)


@pytest.mark.parametrize(
    "rollout",
    [
        {"max_unavailable": 0},
        {"max_unavailable": "0%"},
        {"max_unavailable": "101%"},
        {"canary": -1},
        {"health_timeout": 600},
        {"auto_rollback": "yes"},
        {"drain": "pbs"},
        {"drain": {"command": "d", "check": ["c"]}},
        {"drain": {"command": ["d"], "check": ["c"], "timeout": 3}},
        {"drian": "slurm"},
    ],
)
def test_the_schema_refuses_bad_values(rollout: Any) -> None:
    with pytest.raises(jsonschema.ValidationError):
        _schema_check(rollout)
