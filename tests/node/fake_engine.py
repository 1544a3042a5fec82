"""An in-memory Engine (hostos.engine.base.Engine) for unit tests of the executor and the
supervisor: containers in a dict, images by reference, every call noted, and failures,
quick exits and health answers scripted per container name."""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from hostos.engine.base import ContainerSpec, EngineError, Observed, Progress
from hostos.labels import NAMESPACE_LABEL

BUSYBOX = "hostos/busybox:latest"
BUSYBOX_ID = "sha256:" + "b" * 64


class FakeEngine:
    name = "fake"

    def __init__(self, images: Mapping[str, str] | None = None) -> None:
        self.images = dict({BUSYBOX: BUSYBOX_ID} if images is None else images)  # ref → ID
        self.pullable: dict[str, str] = {}  # ref → the ID a pull gives
        self.containers: dict[str, Observed] = {}  # ID → container
        self.calls: list[tuple[str, str]] = []  # (method, container name or image ref)
        self.fail: dict[tuple[str, str], str] = {}  # (method, name) → EngineError message
        self.exits: dict[str, int] = {}  # name → the code its container exits with at start
        self.healths: dict[str, list[str | None]] = {}  # name → health answers, in turn
        self.closed = threading.Event()
        self.lock = threading.Lock()
        self._ids = itertools.count(1)

    # -- what tests look at ----------------------------------------------------------------

    def by_name(self, name: str) -> Observed:
        return next(c for c in self.containers.values() if c.name == name)

    def names(self) -> dict[str, str]:
        """container name → state."""
        return {c.name: c.state for c in self.containers.values()}

    def made(self, method: str) -> list[str]:
        """The names (or refs) a method was called for, in call order."""
        return [name for called, name in self.calls if called == method]

    def exit(self, name: str, code: int) -> None:
        """The container stops by itself (a crash, a kill)."""
        self._set(self.by_name(name).id, state="exited", exit_code=code)

    # -- the Engine protocol ---------------------------------------------------------------

    def ping(self) -> None:
        if self.closed.is_set():
            raise EngineError("fake engine closed")

    def owned(self, namespace: str = "") -> list[Observed]:
        with self.lock:
            mine = [c for c in self.containers.values() if c.owned]
        return [c for c in mine if not namespace or c.labels.get(NAMESPACE_LABEL) == namespace]

    def named(self, names: Sequence[str]) -> list[Observed]:
        with self.lock:
            return [c for c in self.containers.values() if c.name in names]

    def inspect(self, container: str) -> Observed:
        with self.lock:
            for c in self.containers.values():
                if container in (c.id, c.name):
                    return c
        raise EngineError(f"inspect container {container}: no such container")

    def image_id(self, ref: str) -> str | None:
        return self.images.get(ref)

    def pull(self, ref: str, progress: Progress) -> str:
        self.calls.append(("pull", ref))
        if ref not in self.pullable:
            raise EngineError(f"pull {ref}: not found")
        self.images[ref] = self.pullable[ref]
        return self.images[ref]

    def build(self, context: str, tag: str, dockerfile: str | None, args: Mapping[str, str]) -> str:
        raise EngineError("the fake engine builds nothing")

    def load(self, archive: str) -> str:
        raise EngineError("the fake engine loads nothing")

    def create(self, spec: ContainerSpec) -> str:
        self._call("create", spec.name)
        with self.lock:
            if any(c.name == spec.name for c in self.containers.values()):
                raise EngineError(f"create {spec.name}: the name is taken")
            cid = f"c{next(self._ids):04d}"
            self.containers[cid] = Observed(
                cid, spec.name, dict(spec.labels), "created", spec.image
            )
        return cid

    def start(self, container: str) -> None:
        name = self.inspect(container).name
        self._call("start", name)
        code = self.exits.get(name)
        if code is None:
            self._set(container, state="running", exit_code=None, started_at="now")
        else:
            self._set(container, state="exited", exit_code=code)

    def stop(self, container: str, timeout: float) -> None:
        self._call("stop", self.inspect(container).name)
        self._set(container, state="exited", exit_code=0)

    def remove(self, container: str) -> None:
        found = self.inspect(container)
        self._call("remove", found.name)
        with self.lock:
            self.containers.pop(found.id, None)

    def rename(self, container: str, name: str) -> None:
        self._call("rename", self.inspect(container).name)
        self._set(container, name=name)

    def health(self, container: str) -> str | None:
        found = self.inspect(container)
        self._call("health", found.name)
        answers = self.healths.get(found.name.removesuffix(".next"), [])
        status = answers.pop(0) if len(answers) > 1 else (answers[0] if answers else None)
        self._set(container, health=status)
        return status

    def logs(self, container: str, follow: bool, tail: int | None) -> Iterator[bytes]:
        return iter(())

    def events(self, since: float, until: float | None) -> Iterator[dict[str, Any]]:
        """No events: the stream stays open until the engine is closed."""
        self.closed.wait()
        return iter(())

    def close(self) -> None:
        self.closed.set()

    # -- helpers ---------------------------------------------------------------------------

    def _call(self, method: str, name: str) -> None:
        self.calls.append((method, name))
        message = self.fail.get((method, name))
        if message is not None:
            raise EngineError(f"{method} {name}: {message}")

    def _set(self, container: str, **changes: Any) -> None:
        with self.lock:
            cid = next(c.id for c in self.containers.values() if container in (c.id, c.name))
            self.containers[cid] = dataclasses.replace(self.containers[cid], **changes)
