"""Make each unit's image present: local first, else build, load from an archive, or pull."""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from hostos.engine.base import Engine, EngineError
from hostos.node.render import image_ref
from hostos.site.imageref import ARCHIVE_PREFIXES
from hostos.site.model import Unit


@dataclass(frozen=True)
class ImageResult:
    ref: str
    id: str | None
    error: str | None = None
    how: str = "present"  # present, built, loaded, pulled, missing


def lookup(engine: Engine, units: Sequence[Unit]) -> dict[str, ImageResult]:
    """Image IDs of what is present locally, fetching nothing (for plan and --dry-run)."""
    found: dict[str, ImageResult] = {}
    out = {}
    for unit in units:
        ref = image_ref(unit)
        if ref not in found:
            found[ref] = _present(engine, ref)
        out[unit.name] = found[ref]
    return out


def _present(engine: Engine, ref: str) -> ImageResult:
    try:
        image = engine.image_id(archive_image_id(ref) if _is_archive(ref) else ref)
    except EngineError as exc:
        return ImageResult(ref, None, str(exc), "missing")
    return ImageResult(ref, image, None, "present" if image else "missing")


def ensure(
    engine: Engine,
    units: Sequence[Unit],
    site_root: str,
    progress: Callable[[str], None],
    workers: int = 4,
    present: Mapping[str, ImageResult] | None = None,
) -> dict[str, ImageResult]:
    """Every unit's image, fetched when missing; a failure is kept per unit, not raised.
    present: what `lookup` found for these units just before (else it is asked here)."""
    present = lookup(engine, units) if present is None else present
    todo: dict[str, Unit] = {}
    for unit in units:
        result = present[unit.name]
        if result.id is None and result.ref not in todo:
            todo[result.ref] = unit
    fetched: dict[str, ImageResult] = {}
    if todo:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {
                ref: pool.submit(_fetch, engine, unit, ref, site_root, progress)
                for ref, unit in todo.items()
            }
            fetched = {ref: future.result() for ref, future in futures.items()}
    return {u.name: fetched.get(present[u.name].ref, present[u.name]) for u in units}


def _fetch(
    engine: Engine, unit: Unit, ref: str, site_root: str, progress: Callable[[str], None]
) -> ImageResult:
    try:
        if unit.build is not None:
            context = os.path.normpath(os.path.join(site_root, unit.build.context))
            progress(f"building {ref} from {context}")
            image = engine.build(context, ref, unit.build.dockerfile, unit.build.args)
            return ImageResult(ref, image, None, "built")
        if _is_archive(ref):
            progress(f"loading {ref}")
            return ImageResult(ref, engine.load(ref), None, "loaded")
        progress(f"pulling {ref}")
        return ImageResult(ref, engine.pull(ref, progress), None, "pulled")
    except EngineError as exc:
        return ImageResult(ref, None, str(exc), "missing")


def _is_archive(ref: str) -> bool:
    return ref.startswith(ARCHIVE_PREFIXES)


def archive_image_id(ref: str) -> str:
    """The image ID (config digest) inside a docker-archive or oci-archive, read from its
    index without unpacking, so a present image is never loaded twice."""
    kind, path = ref.split(":", 1)
    try:
        with tarfile.open(path) as tar:
            if kind == "docker-archive":
                manifest = _json_member(tar, "manifest.json")
                config = str(manifest[0]["Config"])
                return "sha256:" + config.rsplit("/", 1)[-1].removesuffix(".json")
            index = _json_member(tar, "index.json")
            digest = str(index["manifests"][0]["digest"])
            manifest = _json_member(tar, "blobs/" + digest.replace(":", "/"))
            return str(manifest["config"]["digest"])
    except (OSError, tarfile.TarError, KeyError, IndexError, ValueError) as exc:
        raise EngineError(f"cannot read image archive {path}: {exc}") from None


def _json_member(tar: tarfile.TarFile, name: str) -> Any:
    member = tar.extractfile(name)
    if member is None:
        raise KeyError(name)
    return json.load(member)
