"""One log line per event, as key=value pairs (logfmt), for people and for grep."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any


def kv(event: str, **fields: Any) -> str:
    parts = [f"event={event}"]
    for key, value in fields.items():
        if value is None or value == "":
            continue
        text = f"{value:.3f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)
        if not text or any(c in text for c in ' "='):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        parts.append(f"{key}={text}")
    return " ".join(parts)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return (
            f"time={stamp}.{int(record.msecs):03d}Z level={record.levelname.lower()} "
            f"{record.getMessage()}"
        )


def setup(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger("hostos")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
