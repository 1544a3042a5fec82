"""Durations (`10s`, `1m30s`, `500ms`) and sizes (`512Mi`, `2G`) as users write them."""

from __future__ import annotations

import re

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DURATION_PATTERN = r"^((\d+(\.\d+)?)(ms|s|m|h|d))+$|^0$"

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGTP]i?|k)?[bB]?$")
_SIZE_UNITS = {
    None: 1,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
}
SIZE_PATTERN = r"^\d+(\.\d+)?\s*([KMGTP]i?|k)?[bB]?$"


def parse_duration(value: object) -> float:
    """Seconds in a duration string; ValueError with a hint otherwise."""
    if isinstance(value, bool):
        raise ValueError("a duration is a string like '10s' or '1m30s'")
    if isinstance(value, int | float):
        if value == 0:
            return 0.0
        raise ValueError(f"a duration needs a unit: write '{value}s' for seconds")
    if not isinstance(value, str):
        raise ValueError("a duration is a string like '10s' or '1m30s'")
    text = value.strip()
    if text == "0":
        return 0.0
    if re.fullmatch(r"\d+(\.\d+)?", text):
        raise ValueError(f"a duration needs a unit: write '{text}s' for seconds")
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"'{value}' is not a duration (write e.g. 500ms, 10s, 1m30s, 2h)")
    return total


def parse_size(value: object) -> int:
    """Bytes in a size: an integer, or a string like 512Mi (binary) or 2G (decimal)."""
    if isinstance(value, bool):
        raise ValueError("a size is a number of bytes or a string like '512Mi'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if not isinstance(value, str):
        raise ValueError("a size is a number of bytes or a string like '512Mi'")
    match = _SIZE.match(value.strip())
    if not match:
        if re.match(r"^\d+(\.\d+)?\s*[mg]$", value.strip()):
            raise ValueError(
                f"'{value}' is ambiguous: write {value.strip()[:-1]}"
                f"{value.strip()[-1].upper()}i (binary) or "
                f"{value.strip()[:-1]}{value.strip()[-1].upper()} (decimal)"
            )
        raise ValueError(f"'{value}' is not a size (write e.g. 512Mi, 2Gi, 1G, 4096)")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


def format_duration(seconds: float) -> str:
    """A duration as a person writes it: `500ms`, `30s`, `1m30s`, `2h`, `1.5s`."""
    if seconds and seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds % 1 or seconds < 60:
        return f"{seconds:g}s"
    parts, left = [], int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, left = divmod(left, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def format_size(size: int) -> str:
    """A size as a person writes it: the shortest of `256Mi`, `1G` and the plain bytes
    (binary on a tie), each of which parse_size reads back to the same number."""
    written = [str(size)]
    if size:
        for unit in ("Pi", "Ti", "Gi", "Mi", "Ki", "P", "T", "G", "M", "K"):
            count, rest = divmod(size, _SIZE_UNITS[unit])
            if count and not rest:
                written.append(f"{count}{unit}")
    return min(written, key=len)
