"""Hostlist expressions as HPC admins write them: `cn[001-128]`, `gpu[01-04,07]`, `a,b`."""

from __future__ import annotations

import itertools
import re

MAX_HOSTS = 100_000
_NAME_CHARS = re.compile(r"^[A-Za-z0-9._-]*$")


def expand(expr: str) -> list[str]:
    """All host names of an expression, in order; ValueError if malformed."""
    hosts: list[str] = []
    for part in _split_top(expr):
        hosts.extend(_expand_one(part))
        if len(hosts) > MAX_HOSTS:
            raise ValueError(f"'{expr}' expands to more than {MAX_HOSTS} hosts")
    return hosts


def _split_top(expr: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in expr:
        if char == "[":
            depth += 1
            if depth > 1:
                raise ValueError(f"'{expr}': nested '['")
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"'{expr}': ']' without '['")
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if depth:
        raise ValueError(f"'{expr}': '[' without ']'")
    parts.append(current)
    for part in parts:
        if not part.strip():
            raise ValueError(f"'{expr}': empty host name")
    return [p.strip() for p in parts]


def _expand_one(part: str) -> list[str]:
    pieces = re.split(r"(\[[^\]]*\])", part)
    choices: list[list[str]] = []
    for piece in pieces:
        if piece.startswith("["):
            choices.append(_expand_ranges(part, piece[1:-1]))
        elif not _NAME_CHARS.match(piece):
            raise ValueError(f"'{part}': invalid character in host name")
        else:
            choices.append([piece])
    names = ["".join(combo) for combo in itertools.product(*choices)]
    if names and not re.match(r"^[A-Za-z0-9]", names[0]):
        raise ValueError(f"'{part}': a host name starts with a letter or digit")
    return names


def _expand_ranges(part: str, body: str) -> list[str]:
    out: list[str] = []
    for item in body.split(","):
        item = item.strip()
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", item)
        if not match:
            raise ValueError(f"'{part}': '{item}' is not a number or a range like 01-16")
        low, high = match.group(1), match.group(2) or match.group(1)
        if int(high) < int(low):
            raise ValueError(f"'{part}': range {item} goes backwards")
        if int(high) - int(low) >= MAX_HOSTS:
            raise ValueError(f"'{part}': range {item} is larger than {MAX_HOSTS} hosts")
        width = len(low) if low.startswith("0") or len(low) == len(high) else 0
        out.extend(str(n).zfill(width) for n in range(int(low), int(high) + 1))
    return out
