"""DockerEngine: the Engine protocol over dockerd's API, docker-py for what changes things.

Reads (ping, the container list, inspect, image lookup, health) are plain GETs sent
with hostos.engine.http, so a no-op apply never imports docker-py and requests
(about 0.15 s).  What creates, starts, stops, removes, renames, pulls, builds, loads
or streams (logs, events) goes through docker-py's low-level APIClient, imported and
built on the first such call.

The low-level client maps one method to one HTTP call; the high-level models
inspect after almost every call, which a no-op apply of a hundred units cannot
afford.  `owned()` is one `GET /containers/json` with a label filter: see
hostos.engine.observe for what that list carries and what is parsed from its
Status string instead of inspecting each container.
"""

from __future__ import annotations

import json
import math
import os
import re
import tarfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

from hostos.backoff import Backoff
from hostos.engine.base import (
    ContainerSpec,
    EngineError,
    ImageNotFound,
    Observed,
    Progress,
    owner_labels,
)
from hostos.engine.http import EngineHTTP, quote
from hostos.engine.observe import docker_inspected, docker_listed, normalize_event
from hostos.engine.payload import docker_create_body
from hostos.engine.shared import PULL_BACKOFF, build_error, with_retries

T = TypeVar("T")

DEFAULT_TIMEOUT = 60.0
SERVICE = "dockerd"
_NOT_RETRYABLE = re.compile(
    r"not found|manifest unknown|unauthorized|denied|invalid reference", re.IGNORECASE
)
_STEP = re.compile(r"^Step \d+/\d+ : ")


class DockerEngine:
    """A container engine reached through dockerd's API socket."""

    name = "docker"

    def __init__(
        self,
        base_url: str = "unix:///var/run/docker.sock",
        api_version: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """api_version: what the daemon's /_ping announced; None asks the daemon (one call)."""
        self.base_url = base_url
        self.pull_backoff: Backoff = PULL_BACKOFF
        self.timeout = timeout
        self.api_version = api_version or _server_api_version(base_url, timeout)
        self._http = EngineHTTP(
            base_url,
            engine=self.name,
            service=SERVICE,
            prefix=f"/v{self.api_version}",
            timeout=timeout,
        )
        self._client: Any = None  # docker-py's APIClient, made on first use
        self._client_lock = threading.Lock()

    @property
    def _api(self) -> Any:
        """docker-py's low-level client, for the calls that change or stream things."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    import docker

                    try:
                        self._client = docker.APIClient(
                            base_url=self.base_url, version=self.api_version, timeout=self.timeout
                        )
                    except docker.errors.DockerException as exc:
                        raise EngineError(f"docker: {self.base_url}: {exc}") from None
        return self._client

    # -- queries (plain HTTP, no SDK) ---------------------------------------------

    def ping(self) -> None:
        self._http.request("GET", "/_ping", f"ping {self.base_url}")

    def owned(self, namespace: str = "") -> list[Observed]:
        """Every hostos container (of the namespace, if one is given), from a single list
        call (no per-container inspect)."""
        rows = self._http.get_json(
            "/containers/json",
            "list containers",
            params=_list_params({"label": owner_labels(namespace)}),
        )
        return [docker_listed(row) for row in rows]

    def named(self, names: Sequence[str]) -> list[Observed]:
        """The containers with exactly these names, from one list call."""
        if not names:
            return []
        pattern = "^/(" + "|".join(re.escape(n) for n in names) + ")$"
        rows = self._http.get_json(
            "/containers/json", "find containers by name", params=_list_params({"name": [pattern]})
        )
        return [o for o in map(docker_listed, rows) if o.name in names]

    def inspect(self, container: str) -> Observed:
        doc = self._http.get_json(
            f"/containers/{quote(container)}/json", f"inspect container {container}"
        )
        return docker_inspected(doc)

    def image_id(self, ref: str) -> str | None:
        """The local image's ID, or None.  A podman-style `localhost/` name also finds the
        same name without it, as an image imported or built as `name` is stored by docker."""
        what = f"inspect image {ref}"
        for candidate in _ref_candidates(ref):
            reply = self._http.request(
                "GET", f"/images/{quote(candidate)}/json", what, ok=(200, 404)
            )
            if reply.status == 404:
                continue
            try:
                return str(reply.json()["Id"])
            except (ValueError, KeyError, TypeError) as exc:
                raise EngineError(f"docker: {what}: unreadable reply ({exc})") from None
        return None

    # -- images ----------------------------------------------------------------

    def pull(self, ref: str, progress: Progress) -> str:
        """Pull with retries (see hostos.engine.shared.with_retries)."""
        with_retries(ref, lambda: self._pull_once(ref, progress), progress, self.pull_backoff)
        return self._must_have(ref, f"pull {ref}")

    def _pull_once(self, ref: str, progress: Progress) -> None:
        import docker.errors
        import requests.exceptions

        what = f"pull {ref}"
        try:
            for line in self._api.pull(ref, stream=True, decode=True):
                if "error" in line:
                    _pull_failed(ref, str(line["error"]))
                progress(_pull_line(line))
        except docker.errors.APIError as exc:
            _pull_failed(ref, _explain(exc))
        except requests.exceptions.RequestException as exc:
            _raise(what, exc)

    def build(self, context: str, tag: str, dockerfile: str | None, args: Mapping[str, str]) -> str:
        """Build with the daemon's (legacy) builder; a failure names the failing step."""
        import docker.errors
        import requests.exceptions

        what = f"build {tag} from {context}"
        if not os.path.isdir(context):
            raise EngineError(f"docker: {what}: the build context is not a directory")
        last_step, image, tail = "", None, list[str]()
        try:
            stream = self._api.build(
                path=context,
                tag=tag,
                dockerfile=dockerfile,
                buildargs=dict(args),
                rm=True,
                forcerm=True,
                decode=True,
                use_config_proxy=False,
            )
            for line in stream:
                text = str(line.get("stream") or "").rstrip()
                if _STEP.match(text):
                    last_step = text
                if text:
                    tail = [*tail[-9:], text]
                if "error" in line:
                    error = str(line["error"])
                    raise EngineError(build_error("docker", what, last_step, error, tail))
                image = (line.get("aux") or {}).get("ID") or image
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            _raise(what, exc)
        return str(image) if image else self._must_have(tag, what)

    def load(self, archive: str) -> str:
        """Load `docker-archive:/path` or `oci-archive:/path` (the prefix is optional).

        dockerd 20.10 reads only docker-archive tarballs (a top-level manifest.json);
        newer daemons may read an OCI layout too, so an OCI archive is tried, and a
        failure says how to convert it rather than the daemon's "blobs/json" riddle.
        """
        import docker.errors
        import requests.exceptions

        _, path = split_archive(archive)
        what = f"load {archive}"
        loaded: list[str] = []
        try:
            with open(path, "rb") as data:
                for line in self._api.load_image(data):
                    if "error" in line:
                        raise EngineError(_load_error(what, path, str(line["error"])))
                    loaded += _loaded_names(str(line.get("stream") or ""))
        except OSError as exc:
            raise EngineError(f"docker: {what}: {exc.strerror or exc}") from None
        except docker.errors.APIError as exc:
            raise EngineError(_load_error(what, path, _explain(exc))) from None
        except requests.exceptions.RequestException as exc:
            _raise(what, exc)
        if not loaded:
            raise EngineError(f"docker: {what}: the daemon named no loaded image")
        return self._must_have(loaded[0], what)

    # -- containers --------------------------------------------------------------

    def create(self, spec: ContainerSpec) -> str:
        import docker.errors
        import requests.exceptions

        what = f"create {spec.name}"
        try:
            reply = self._api.create_container_from_config(docker_create_body(spec), name=spec.name)
        except docker.errors.NotFound as exc:
            if "image" in _explain(exc).lower():
                raise ImageNotFound(
                    f"docker: {what}: image {spec.image} is not present "
                    "(pull, load or build it first)"
                ) from None
            _raise(what, exc)
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            _raise(what, exc)
        return str(reply["Id"])

    def start(self, container: str) -> None:
        self._call(f"start {container}", self._api.start, container)

    def stop(self, container: str, timeout: float) -> None:
        self._call(f"stop {container}", self._api.stop, container, timeout=math.ceil(timeout))

    def remove(self, container: str) -> None:
        """Force-remove with anonymous volumes; a container already gone is not an error."""
        import docker.errors
        import requests.exceptions

        try:
            self._api.remove_container(container, v=True, force=True)
        except docker.errors.NotFound:
            return
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            if "removal of container" in _explain(exc) and "in progress" in _explain(exc):
                return
            _raise(f"remove {container}", exc)

    def rename(self, container: str, name: str) -> None:
        self._call(f"rename {container} to {name}", self._api.rename, container, name)

    def health(self, container: str) -> str | None:
        """Docker runs health checks on its own schedule; this reads the last verdict
        (None without a check or when the container is not running)."""
        return self.inspect(container).health

    def logs(self, container: str, follow: bool, tail: int | None) -> Iterator[bytes]:
        stream = self._call(
            f"logs {container}",
            self._api.logs,
            container,
            stream=True,
            follow=follow,
            tail="all" if tail is None else tail,
        )
        yield from _guarded(f"logs {container}", stream)

    def events(self, since: float, until: float | None) -> Iterator[dict[str, Any]]:
        """Container events from `since`; without `until` the stream follows new events."""
        stream = self._call(
            "events",
            self._api.events,
            since=f"{since:.9f}",
            until=None if until is None else f"{until:.9f}",
            filters={"type": "container"},
            decode=True,
        )
        for raw in _guarded("events", stream):
            yield normalize_event(raw)

    def close(self) -> None:
        self._http.close()
        if self._client is not None:
            self._client.close()

    # -- helpers ---------------------------------------------------------------

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one docker-py call, turning docker-py's and requests' errors into EngineError."""
        import docker.errors
        import requests.exceptions

        try:
            return fn(*args, **kwargs)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            _raise(what, exc)

    def _must_have(self, ref: str, what: str) -> str:
        image = self.image_id(ref)
        if image is None:
            raise EngineError(f"docker: {what}: finished, but image {ref} is not there")
        return image


def split_archive(archive: str) -> tuple[str | None, str]:
    """("docker-archive"|"oci-archive"|None, path) from a transport-prefixed archive name."""
    for kind in ("docker-archive", "oci-archive"):
        if archive.startswith(kind + ":"):
            return kind, archive[len(kind) + 1 :]
    return None, archive


def _has_docker_manifest(path: str) -> bool:
    """A docker-archive has a top-level manifest.json; an OCI layout has only index.json."""
    try:
        with tarfile.open(path) as tar:
            return any(name.lstrip("./") == "manifest.json" for name in tar.getnames())
    except (OSError, tarfile.TarError):
        return True  # let the daemon report what is wrong with it


def _load_error(what: str, path: str, error: str) -> str:
    if _has_docker_manifest(path):
        return f"docker: {what}: {error}"
    return (
        f"docker: {what}: this dockerd cannot load an OCI archive (it said: {error}); "
        f"convert it with `skopeo copy oci-archive:{path} docker-archive:{path}.docker.tar`"
    )


def _loaded_names(text: str) -> list[str]:
    """ "Loaded image: name:tag" or "Loaded image ID: sha256:…" → the name or ID."""
    names = []
    for line in text.splitlines():
        for prefix in ("Loaded image ID: ", "Loaded image: "):
            if line.startswith(prefix):
                names.append(line[len(prefix) :].strip())
                break
    return names


def _ref_candidates(ref: str) -> list[str]:
    return [ref, ref.removeprefix("localhost/")] if ref.startswith("localhost/") else [ref]


def _pull_line(line: Mapping[str, Any]) -> str:
    parts = [str(line.get(key)) for key in ("id", "status", "progress") if line.get(key)]
    return " ".join(parts)


def _pull_failed(ref: str, message: str) -> NoReturn:
    if _NOT_RETRYABLE.search(message):
        raise ImageNotFound(f"docker: pull {ref}: {message}")
    raise EngineError(f"docker: pull {ref}: {message}")


def _guarded(what: str, stream: Iterator[T]) -> Iterator[T]:
    """Iterate a streaming reply, turning errors mid-stream into EngineError; closing the
    generator early (a caller that stops following) closes the HTTP response too."""
    import docker.errors
    import requests.exceptions

    try:
        yield from stream
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        _raise(what, exc)
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()


def _explain(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    if explanation:
        return str(explanation)
    return str(exc)


def _raise(what: str, exc: BaseException) -> NoReturn:
    """An EngineError from a docker-py or requests exception (so both are imported)."""
    import requests.exceptions

    if isinstance(exc, requests.exceptions.ConnectionError):
        raise EngineError(f"docker: {what}: cannot reach dockerd ({exc})") from None
    if isinstance(exc, requests.exceptions.Timeout):
        raise EngineError(f"docker: {what}: dockerd did not answer in time") from None
    raise EngineError(f"docker: {what}: {_explain(exc)}") from None


def _list_params(filters: Mapping[str, list[str]]) -> dict[str, str]:
    """The query of `GET /containers/json` as docker-py's `containers(all=True, filters=…)`
    sends it."""
    return {
        "limit": "-1",
        "all": "1",
        "size": "0",
        "trunc_cmd": "0",
        "filters": json.dumps(dict(filters)),
    }


def _server_api_version(base_url: str, timeout: float) -> str:
    """The daemon's API version from `GET /version`, as docker-py's version="auto" asks."""
    client = EngineHTTP(base_url, engine="docker", service=SERVICE, timeout=timeout)
    try:
        version = client.get_json("/version", "ask the API version").get("ApiVersion")
    finally:
        client.close()
    if not version:
        raise EngineError(f"docker: {base_url}: the daemon named no API version")
    return str(version)
