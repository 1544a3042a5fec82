import pytest

from hostos.site.imageref import check_reference
from hostos.site.quantity import format_duration, format_size, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10), ("500ms", 0.5), ("1m30s", 90), ("2h", 7200), ("1d", 86400), (0, 0), ("0", 0)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (10, "needs a unit: write '10s'"),
        ("10", "needs a unit"),
        ("ten", "not a duration"),
        ("1m3", "not a duration"),
        (True, "duration is a string"),
        ("", "not a duration"),
    ],
)
def test_bad_durations(text: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        (4096, 4096),
        ("512Mi", 512 * 2**20),
        ("2Gi", 2 * 2**30),
        ("1G", 10**9),
        ("1.5Ki", 1536),
        ("100k", 100_000),
        ("64MiB", 64 * 2**20),
    ],
)
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("512m", "ambiguous: write 512Mi .binary. or 512M"),
        ("lots", "not a size"),
        (-1, "negative"),
        (False, "number of bytes"),
    ],
)
def test_bad_sizes(text: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_size(text)


@pytest.mark.parametrize(
    "ref",
    [
        "busybox",
        "busybox:1.36",
        "quay.io/prometheus/node-exporter:v1.8.2",
        "127.0.0.1:5000/hpc/slurm:23.11",
        "localhost/hostos/busybox:latest",
        "ghcr.io/a/b@sha256:" + "0" * 64,
        "oci-archive:/apps/images/slurm.tar",
    ],
)
def test_image_references(ref: str) -> None:
    assert check_reference(ref) == ref


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("Busybox", "lowercase"),
        ("busybox:", "not a valid image reference"),
        ("a b", "spaces"),
        ("docker-archive:relative.tar", "must be absolute"),
        ("", "empty"),
    ],
)
def test_bad_image_references(ref: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_reference(ref)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.5, "500ms"),
        (1.5, "1.5s"),
        (30, "30s"),
        (60, "1m"),
        (90, "1m30s"),
        (300, "5m"),
        (7200, "2h"),
        (90061, "1d1h1m1s"),
        (120.5, "120.5s"),
    ],
)
def test_durations_are_formatted_as_written(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0"),
        (100, "100"),
        (1000, "1K"),
        (4096, "4Ki"),
        (256 * 2**20, "256Mi"),
        (10**9, "1G"),
        (3 * 2**30, "3Gi"),
        (2048000, "2048K"),
        (1_000_001, "1000001"),
    ],
)
def test_sizes_are_formatted_as_written(size: int, text: str) -> None:
    assert format_size(size) == text
    assert parse_size(text) == size
