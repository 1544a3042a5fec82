"""JSON Schema of the site's files, for editors (yaml-language-server, VS Code)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from hostos.site.model import Inventory, Role, Unit

KINDS: dict[str, type[BaseModel]] = {"unit": Unit, "role": Role, "nodes": Inventory}
# Fields a file may leave out because the loader takes them from the file name.
FROM_FILE_NAME = {"unit": "name", "role": "role"}
# Short forms the models accept before validation, which pydantic cannot see.
SHORT_FORMS: dict[str, dict[str, Any]] = {
    "Build": {"type": "string"},
    "Port": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
    "Device": {"type": "string"},
    "Restart": {"anyOf": [{"enum": ["always", "on-failure", "no"]}, {"const": False}]},
    "Ulimit": {"anyOf": [{"type": "integer"}, {"enum": ["unlimited", "infinity"]}]},
}


def schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of one kind of file: unit, role or nodes."""
    model = KINDS[kind]
    doc = model.model_json_schema(mode="validation")
    doc["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    doc["title"] = f"hostos {kind} file"
    required = doc.get("required", [])
    if kind in FROM_FILE_NAME and FROM_FILE_NAME[kind] in required:
        required.remove(FROM_FILE_NAME[kind])
    if kind == "unit":
        doc["properties"]["args"] = dict(
            doc["properties"]["command"], description="alias of command"
        )
    for name, short in SHORT_FORMS.items():
        if name in doc.get("$defs", {}):
            doc["$defs"][name] = {"anyOf": [doc["$defs"][name], short]}
    _allow_numbers_for_ulimit_values(doc)
    return doc


def _allow_numbers_for_ulimit_values(doc: dict[str, Any]) -> None:
    ulimit = doc.get("$defs", {}).get("Ulimit")
    if not ulimit:
        return
    inner = ulimit["anyOf"][0]
    for key in ("soft", "hard"):
        inner["properties"][key] = {
            "anyOf": [{"type": "integer"}, {"enum": ["unlimited", "infinity"]}]
        }


def all_schemas() -> dict[str, Any]:
    return {kind: schema(kind) for kind in KINDS}
