"""Store URLs: `sqlite:///PATH` (one server) and `etcd://HOST:PORT[/prefix]` (replicas).

`open_kv(url)` opens the store a URL names; `hostos serve` checks the URL's form before it
opens anything.
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

from hostos.cluster.store.etcd import EtcdKV
from hostos.cluster.store.kv import KV
from hostos.cluster.store.sqlite import SqliteKV

DEFAULT_ETCD_PREFIX = "/hostos/"


def open_kv(url: str) -> KV:
    """The store a URL names: `sqlite:///PATH`, `sqlite://:memory:`, `etcd://HOST:PORT[/prefix]`."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        return SqliteKV(_sqlite_path(url, parts.netloc, parts.path))
    if parts.scheme == "etcd":
        host, port = _host_port(url, parts)
        return EtcdKV(host, port, prefix=etcd_prefix(parts.path))
    raise ValueError(
        f"unsupported store URL {url!r}: use sqlite:///PATH or etcd://HOST:PORT[/prefix]"
    )


def _sqlite_path(url: str, netloc: str, path: str) -> str:
    if netloc == ":memory:" and not path:
        return ":memory:"
    if netloc or not path or path == "/":
        raise ValueError(
            f"bad SQLite store URL {url!r}: write sqlite:///PATH "
            "(three slashes before an absolute path, e.g. "
            "sqlite:///var/lib/hostos/cluster.db)"
        )
    return path


def _host_port(url: str, parts: SplitResult) -> tuple[str, int]:
    try:
        port = parts.port  # raises ValueError on a port that is not a number
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise ValueError(
            f"bad etcd store URL {url!r}: write etcd://HOST:PORT[/prefix], "
            "e.g. etcd://127.0.0.1:2379"
        )
    return parts.hostname, port


def etcd_prefix(path: str) -> str:
    """The key prefix of an etcd URL's path: `/hostos/` by default, always ending in `/`."""
    if path in ("", "/"):
        return DEFAULT_ETCD_PREFIX
    return "/" + path.strip("/") + "/"
