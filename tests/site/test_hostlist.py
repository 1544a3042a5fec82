import pytest

from hostos.site.hostlist import expand


@pytest.mark.parametrize(
    ("expr", "hosts"),
    [
        ("cn001", ["cn001"]),
        ("cn[001-003]", ["cn001", "cn002", "cn003"]),
        ("gpu[01-04,07]", ["gpu01", "gpu02", "gpu03", "gpu04", "gpu07"]),
        ("n[8-11]", ["n8", "n9", "n10", "n11"]),
        ("n[08-11]", ["n08", "n09", "n10", "n11"]),
        ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
        ("login01,cn[1-2]", ["login01", "cn1", "cn2"]),
        ("a.b-c_d", ["a.b-c_d"]),
    ],
)
def test_expands(expr: str, hosts: list[str]) -> None:
    assert expand(expr) == hosts


def test_large_range_keeps_width() -> None:
    hosts = expand("cn[0001-1024]")
    assert len(hosts) == 1024
    assert hosts[0] == "cn0001"
    assert hosts[-1] == "cn1024"


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("cn[01", "'[' without ']'"),
        ("cn]", "']' without '['"),
        ("cn[5-1]", "range 5-1 goes backwards"),
        ("cn[a-b]", "'a-b' is not a number or a range"),
        ("cn[[1]]", "nested '['"),
        ("a,,b", "empty host name"),
        ("cn 1", "invalid character"),
        ("-cn1", "starts with a letter or digit"),
        ("cn[0-999999]", "larger than"),
    ],
)
def test_refuses(expr: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        expand(expr)
