"""PodmanEngine: the Engine protocol over libpod's own API.

Every call but a build is plain HTTP sent with hostos.engine.http (the standard library
only): podman-py and requests (about 0.15 s to import here, seconds on an emulated node
at boot) come in only to build an image, for podman-py's tarring of build contexts.
Differences from Docker it absorbs:

- Without systemd podman never runs health checks by itself: `health()` runs the
  check (`GET /libpod/containers/{id}/healthcheck`), so a caller polling health at
  the check's interval gets Docker's behaviour.
- Podman stores imported and built short names as `localhost/name`; libpod's
  image lookup already resolves `name` to it.
- Any explicit rlimit makes podman drop containers.conf's default ulimits and raise
  nproc/nofile to 1048576, which fails where the host limit is lower; the engine's
  defaults are therefore read once and sent along (see `_default_ulimits`).
- Events: podman 4.3 returns nothing when `until` is given, so a bounded query reads
  to the end of the log and filters by time here.
- Builds use the Docker image format so HEALTHCHECK, STOPSIGNAL and SHELL survive
  (podman's OCI default drops them).
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NoReturn

from hostos.backoff import Backoff
from hostos.engine.base import (
    ContainerSpec,
    EngineError,
    ImageNotFound,
    Observed,
    Progress,
    UlimitSpec,
    owner_labels,
)
from hostos.engine.http import (
    REQUESTS_SAFE,
    Body,
    EngineHTTP,
    Reply,
    StatusError,
    json_lines,
    quote,
)
from hostos.engine.observe import (
    demux_frames,
    docker_inspected,
    libpod_listed,
    normalize_event,
)
from hostos.engine.payload import libpod_create_body
from hostos.engine.probe import ping
from hostos.engine.shared import PULL_BACKOFF, build_error, with_retries
from hostos.labels import PROBE_LABEL

DEFAULT_TIMEOUT = 60.0
LOAD_TIMEOUT = 3600.0  # podman answers a load only once the whole archive is in
SERVICE = "the podman service"
FALLBACK_API_VERSION = "4.0.0"  # the libpod path prefix when the service does not answer
DOCKER_FORMAT = "application/vnd.docker.distribution.manifest.v2+json"
OK = (200, 201, 204, 304)
# Podman 4.3 answers 500 "read /proc/PID/cgroup: no such process" to an inspect that
# meets a container in the middle of exiting; the next inspect sees it exited.
_EXITING_RACE = re.compile(r"/proc/\d+/\S*: no such process")
INSPECT_ATTEMPTS = 3
INSPECT_RETRY_DELAY = 0.05


def exiting_race(exc: StatusError) -> bool:
    """The inspect met a container while its process was going away: ask again."""
    return exc.status >= 500 and bool(_EXITING_RACE.search(exc.explanation))


_NOT_RETRYABLE = re.compile(
    r"not found|manifest unknown|unauthorized|denied|invalid reference"
    r"|image not known",
    re.IGNORECASE,
)
_IMAGE_ID = re.compile(r"^[0-9a-f]{64}$")
_STEP = re.compile(r"^STEP \d+(?:/\d+)?: ")
_RLIMIT_NAMES = {"RLIMIT_NOFILE": "nofile", "RLIMIT_NPROC": "nproc"}


class PodmanEngine:
    """A container engine reached through a podman API service socket."""

    name = "podman"

    def __init__(
        self,
        base_url: str = "unix:///run/podman/podman.sock",
        api_version: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        """api_version: the libpod version the service's /_ping announced (path prefix);
        on_close: stops an embedded service that connect() started for this engine."""
        self.base_url = base_url
        self.pull_backoff: Backoff = PULL_BACKOFF
        self.timeout = timeout
        self.api_version = api_version or _service_api_version(base_url)
        self._http = EngineHTTP(
            base_url,
            engine=self.name,
            service=SERVICE,
            prefix=f"/v{self.api_version}/libpod",
            timeout=timeout,
        )
        self._client: Any = None  # podman-py's PodmanClient, made on first use
        self._client_lock = threading.Lock()
        self._on_close = on_close
        self._ulimits: dict[str, UlimitSpec] | None = None

    @property
    def _api(self) -> Any:
        """podman-py's low-level client, for the calls that change, run or stream things."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    from podman import PodmanClient
                    from podman.errors import PodmanError

                    try:
                        self._client = PodmanClient(
                            base_url=self.base_url, timeout=self.timeout, version=self.api_version
                        )
                    except (PodmanError, ValueError) as exc:
                        raise EngineError(f"podman: {self.base_url}: {exc}") from None
        return self._client.api

    # -- queries ---------------------------------------------------------------

    def ping(self) -> None:
        self._http.request("GET", "/_ping", "ping", ok=OK)

    def owned(self, namespace: str = "") -> list[Observed]:
        """Every hostos container (of the namespace, if one is given) from ONE libpod list
        call: it carries state, exit code, start time and health, so nothing is inspected
        one by one."""
        rows = self._http.get_json(
            "/containers/json",
            "list containers",
            params={"all": "true", "filters": json.dumps({"label": owner_labels(namespace)})},
        )
        return [libpod_listed(row) for row in rows or []]

    def named(self, names: Sequence[str]) -> list[Observed]:
        """The containers with exactly these names, from one list call."""
        if not names:
            return []
        pattern = "^(" + "|".join(re.escape(n) for n in names) + ")$"
        rows = self._http.get_json(
            "/containers/json",
            "find containers by name",
            params={"all": "true", "filters": json.dumps({"name": [pattern]})},
        )
        return [o for o in map(libpod_listed, rows or []) if o.name in names]

    def inspect(self, container: str) -> Observed:
        return docker_inspected(self._inspect(container))

    def image_id(self, ref: str) -> str | None:
        what = f"inspect image {ref}"
        reply = self._http.request(
            "GET", f"/images/{quote(ref, REQUESTS_SAFE)}/json", what, ok=(*OK, 404)
        )
        if reply.status == 404:
            return None
        try:
            return str(reply.json()["Id"])
        except (ValueError, KeyError, TypeError) as exc:
            raise EngineError(f"podman: {what}: unreadable reply ({exc})") from None

    # -- images ----------------------------------------------------------------

    def pull(self, ref: str, progress: Progress) -> str:
        """Pull with retries (see hostos.engine.shared.with_retries); podman itself also
        retries a failing registry three times within each attempt.  A registry on a
        loopback address is reached without TLS, as docker does."""
        with_retries(ref, lambda: self._pull_once(ref, progress), progress, self.pull_backoff)
        return self._must_have(ref, f"pull {ref}")

    def _pull_once(self, ref: str, progress: Progress) -> None:
        params = {"reference": ref, "tlsVerify": "false" if _loopback_registry(ref) else "true"}
        chunks = self._stream(
            "POST", "/images/pull", f"pull {ref}", params=params, fail=_pull_failed
        )
        for line in json_lines(chunks, f"pull {ref}", self.name):
            if line.get("error"):
                _pull_failed(f"pull {ref}", str(line["error"]))
            if line.get("stream"):
                progress(str(line["stream"]).rstrip())

    def build(self, context: str, tag: str, dockerfile: str | None, args: Mapping[str, str]) -> str:
        """Build in Docker image format; a failure names the failing step."""
        from podman import api as podman_api

        what = f"build {tag} from {context}"
        if not os.path.isdir(context):
            raise EngineError(f"podman: {what}: the build context is not a directory")
        name = podman_api.prepare_containerfile(
            context, os.path.join(context, dockerfile or _default_dockerfile(context))
        )
        params = {
            "t": tag,
            "dockerfile": name,
            "rm": "true",
            "forcerm": "true",
            "layers": "true",
            "outputformat": DOCKER_FORMAT,
            "buildargs": json.dumps(dict(args)),
        }
        body = podman_api.create_tar(
            anchor=context, exclude=podman_api.prepare_containerignore(context)
        )
        with body:
            response = self._request(
                "POST",
                "/build",
                what,
                params=params,
                data=body,
                stream=True,
                headers={"Content-Type": "application/x-tar"},
                timeout=(10.0, None),
            )
            image = self._build_stream(response, what)
        return image or self._must_have(tag, what)

    def _build_stream(self, response: Any, what: str) -> str | None:
        last_step, image, tail = "", None, list[str]()
        for line in self._lines(response, what):
            for text in str(line.get("stream") or "").splitlines():
                if _STEP.match(text):
                    last_step = text
                if _IMAGE_ID.match(text.strip()):
                    image = text.strip()
                elif text.strip():
                    tail = [*tail[-9:], text]
            if line.get("error"):
                raise EngineError(build_error("podman", what, last_step, str(line["error"]), tail))
        return image

    def load(self, archive: str) -> str:
        """Load `docker-archive:/path` or `oci-archive:/path`; podman reads both."""
        path = (
            archive.split(":", 1)[1]
            if archive.startswith(("docker-archive:", "oci-archive:"))
            else archive
        )
        what = f"load {archive}"
        try:
            with open(path, "rb") as data:
                reply = self._call(
                    "POST",
                    "/images/load",
                    what,
                    body=data,
                    headers={"Content-Type": "application/x-tar"},
                    timeout=LOAD_TIMEOUT,
                )
        except OSError as exc:
            raise EngineError(f"podman: {what}: {exc.strerror or exc}") from None
        names = self._json(reply, what).get("Names") or []
        if not names:
            raise EngineError(f"podman: {what}: the service named no loaded image")
        return self._must_have(str(names[0]), what)

    # -- containers --------------------------------------------------------------

    def create(self, spec: ContainerSpec) -> str:
        what = f"create {spec.name}"
        defaults = self._default_ulimits(spec) if spec.ulimits else {}
        body = libpod_create_body(spec, default_ulimits=defaults.values())
        reply = self._call(
            "POST",
            "/containers/create",
            what,
            body=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            fail=lambda w, m: _create_failed(w, m, spec.image),
        )
        return str(self._json(reply, what)["Id"])

    def start(self, container: str) -> None:
        self._call("POST", f"/containers/{_q(container)}/start", f"start {container}")

    def stop(self, container: str, timeout: float) -> None:
        seconds = math.ceil(timeout)
        self._call(
            "POST",
            f"/containers/{_q(container)}/stop",
            f"stop {container}",
            params={"timeout": str(seconds)},
            timeout=DEFAULT_TIMEOUT + seconds,
        )

    def remove(self, container: str) -> None:
        """Force-remove with anonymous volumes; a container already gone is not an error."""
        self._call(
            "DELETE",
            f"/containers/{_q(container)}",
            f"remove {container}",
            params={"force": "true", "v": "true"},
            ok=(*OK, 404),
        )

    def rename(self, container: str, name: str) -> None:
        self._call(
            "POST",
            f"/containers/{_q(container)}/rename",
            f"rename {container} to {name}",
            params={"name": name},
        )

    def health(self, container: str) -> str | None:
        """Run the container's health check now and return the resulting status.

        Podman schedules checks with systemd timers, which a node without systemd
        lacks, so the check runs here: call this at the check's interval.  A
        container without a check, or not running, gives None.
        """
        what = f"health check {container}"
        reply = self._call("GET", f"/containers/{_q(container)}/healthcheck", what, ok=(200, 409))
        if reply.status == 409:  # no check defined, or the container is not running
            return None
        if self._json(reply, what).get("Status") == "healthy":
            return "healthy"
        # The endpoint reports this one run; whether failures already make the container
        # unhealthy (retries, start period) is in its state.
        return self.inspect(container).health

    def logs(self, container: str, follow: bool, tail: int | None) -> Iterator[bytes]:
        params = {
            "stdout": "true",
            "stderr": "true",
            "follow": "true" if follow else "false",
            "tail": "all" if tail is None else str(tail),
        }
        yield from demux_frames(
            self._stream(
                "GET", f"/containers/{_q(container)}/logs", f"logs {container}", params=params
            )
        )

    def events(self, since: float, until: float | None) -> Iterator[dict[str, Any]]:
        """Container events from `since`, in time order; without `until` it follows new ones.

        Like docker, a query whose `until` is still ahead waits for it to pass.
        """
        if until is not None and until > time.time():
            time.sleep(until - time.time())
        params = {
            "since": f"{since:.9f}",
            "stream": "true" if until is None else "false",
            "filters": json.dumps({"type": ["container"]}),
        }
        chunks = self._stream("GET", "/events", "events", params=params)
        events = (normalize_event(line) for line in json_lines(chunks, "events", self.name))
        if until is None:
            yield from events
            return
        yield from sorted((e for e in events if e["time"] <= until), key=lambda e: e["time"])

    def close(self) -> None:
        try:
            self._http.close()
            if self._client is not None:
                self._client.close()
        finally:
            if self._on_close is not None:
                on_close, self._on_close = self._on_close, None
                on_close()

    # -- helpers ---------------------------------------------------------------

    def _inspect(self, container: str) -> dict[str, Any]:
        path = f"/containers/{quote(container, REQUESTS_SAFE)}/json"
        what = f"inspect container {container}"
        for attempt in range(1, INSPECT_ATTEMPTS + 1):
            try:
                return dict(self._http.get_json(path, what))
            except StatusError as exc:
                if attempt == INSPECT_ATTEMPTS or not exiting_race(exc):
                    raise
                time.sleep(INSPECT_RETRY_DELAY)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _default_ulimits(self, spec: ContainerSpec) -> dict[str, UlimitSpec]:
        """The nofile/nproc limits this service gives a container that asks for none.

        Learned once, from a container created (never started) without rlimits: that is
        the only place podman shows what containers.conf's default_ulimits resolve to.
        """
        if self._ulimits is None:
            probe = {
                "image": spec.image,
                "netns": {"nsmode": "none"},
                "command": ["true"],
                "labels": {PROBE_LABEL: "ulimits"},
            }
            what = f"create {spec.name} (probing the default ulimits)"
            reply = self._call(
                "POST",
                "/containers/create",
                what,
                body=json.dumps(probe).encode(),
                headers={"Content-Type": "application/json"},
                fail=lambda w, m: _create_failed(w, m, spec.image),
            )
            probe_id = str(self._json(reply, what)["Id"])
            try:
                host = self._inspect(probe_id).get("HostConfig") or {}
            finally:
                self.remove(probe_id)
            self._ulimits = {}
            for limit in host.get("Ulimits") or []:
                name = _RLIMIT_NAMES.get(str(limit.get("Name")))
                if name:
                    self._ulimits[name] = UlimitSpec(name, int(limit["Soft"]), int(limit["Hard"]))
        return self._ulimits

    def _must_have(self, ref: str, what: str) -> str:
        image = self.image_id(ref)
        if image is None:
            raise EngineError(f"podman: {what}: finished, but image {ref} is not there")
        return image

    def _lines(self, response: Any, what: str) -> Iterator[dict[str, Any]]:
        """JSON objects of a streamed reply, one per line (podman may pack several)."""
        import requests.exceptions

        decoder = json.JSONDecoder()
        try:
            for raw in response.iter_lines():
                text = raw.decode(errors="replace").strip() if isinstance(raw, bytes) else raw
                while text:
                    obj, end = decoder.raw_decode(text)
                    yield obj
                    text = text[end:].lstrip()
        except requests.exceptions.RequestException as exc:
            _raise(what, exc)
        except ValueError as exc:
            raise EngineError(f"podman: {what}: unreadable reply ({exc})") from None
        finally:
            response.close()

    def _call(
        self,
        method: str,
        path: str,
        what: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Body = None,
        headers: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = OK,
        timeout: float | None = None,
        fail: Callable[[str, str], NoReturn] | None = None,
    ) -> Reply:
        """One libpod call over plain HTTP; a status outside `ok` raises EngineError
        (through `fail`, given the engine's message, if there is one)."""
        try:
            return self._http.request(
                method,
                path,
                what,
                params=params,
                body=body,
                headers=headers,
                ok=ok,
                timeout=timeout,
            )
        except StatusError as exc:
            if fail is not None:
                fail(what, exc.explanation)
            raise

    def _stream(
        self,
        method: str,
        path: str,
        what: str,
        *,
        params: Mapping[str, str] | None = None,
        fail: Callable[[str, str], NoReturn] | None = None,
    ) -> Iterator[bytes]:
        """A libpod reply in pieces as they come (no time limit: events, logs, pulls)."""
        try:
            yield from self._http.stream(method, path, what, params=params, timeout=None)
        except StatusError as exc:
            if fail is not None:
                fail(what, exc.explanation)
            raise

    def _json(self, reply: Reply, what: str) -> Any:
        try:
            return reply.json()
        except ValueError as exc:
            raise EngineError(f"podman: {what}: unreadable reply ({exc})") from None

    def _request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        params: Mapping[str, str] | None = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        timeout: float | tuple[float, float | None] | None = None,
        ok: tuple[int, ...] = OK,
        fail: Callable[[str, str], NoReturn] | None = None,
    ) -> Any:
        """One libpod call through podman-py; a status outside `ok` raises EngineError
        (via `fail` if given)."""
        import requests.exceptions
        from podman.errors import APIError

        call = getattr(self._api, method.lower())
        kwargs: dict[str, Any] = {"params": params, "headers": headers, "stream": stream}
        if method in ("POST", "PUT"):
            kwargs["data"] = data
        if timeout is not None:
            kwargs["timeout"] = timeout
        try:
            response = call(path, **kwargs)
        except (APIError, requests.exceptions.RequestException) as exc:
            _raise(what, exc)
        if response.status_code not in ok:
            message = _error_message(response)
            if fail is not None:
                fail(what, message)
            raise EngineError(f"podman: {what}: {message}")
        return response


def _default_dockerfile(context: str) -> str:
    """podman-py needs the file named; podman itself would look for Containerfile first."""
    for name in ("Containerfile", "Dockerfile"):
        if os.path.exists(os.path.join(context, name)):
            return name
    return "Dockerfile"


def _loopback_registry(ref: str) -> bool:
    first = ref.split("/", 1)[0]
    if "/" not in ref or not ("." in first or ":" in first or first == "localhost"):
        return False
    host = first.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _error_message(response: Any) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text.strip()[:200]}"
    if isinstance(body, dict):
        return str(body.get("message") or body.get("cause") or body)
    return str(body)


def _q(container: str) -> str:
    """A container name or ID in a path, quoted as podman-py (requests) quotes it."""
    return quote(container, REQUESTS_SAFE)


def _create_failed(what: str, message: str, image: str) -> NoReturn:
    if "image not known" in message or "no such image" in message.lower():
        raise ImageNotFound(
            f"podman: {what}: image {image} is not present (pull, load or build it first)"
        )
    raise EngineError(f"podman: {what}: {message}")


def _pull_failed(what: str, message: str) -> NoReturn:
    if _NOT_RETRYABLE.search(message):
        raise ImageNotFound(f"podman: {what}: {message}")
    raise EngineError(f"podman: {what}: {message}")


def _raise(what: str, exc: BaseException) -> NoReturn:
    """An EngineError from a podman-py or requests exception (so both are imported)."""
    import requests.exceptions
    from podman.errors import APIError

    if isinstance(exc, requests.exceptions.Timeout):
        raise EngineError(f"podman: {what}: the podman service did not answer in time") from None
    if isinstance(exc, requests.exceptions.ConnectionError | APIError):
        raise EngineError(f"podman: {what}: cannot reach the podman service ({exc})") from None
    raise EngineError(f"podman: {what}: {exc}") from None


def _service_api_version(base_url: str) -> str:
    """The libpod version the service's /_ping announces (the path prefix of its API)."""
    pong = ping(base_url)
    return (pong.libpod_version if pong is not None else None) or FALLBACK_API_VERSION
