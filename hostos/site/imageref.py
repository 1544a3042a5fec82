"""Container image references, checked against the distribution reference grammar."""

from __future__ import annotations

import re

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
REFERENCE = re.compile(
    rf"^(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$"
)
ARCHIVE_PREFIXES = ("oci-archive:", "docker-archive:")
PATTERN = REFERENCE.pattern


def check_reference(value: str) -> str:
    """The reference unchanged if valid; ValueError saying what is wrong otherwise."""
    if value.startswith(ARCHIVE_PREFIXES):
        path = value.split(":", 1)[1]
        if not path.startswith("/"):
            raise ValueError(f"archive path in '{value}' must be absolute")
        return value
    if not value:
        raise ValueError("empty image reference")
    if value != value.strip() or " " in value:
        raise ValueError(f"'{value}' contains spaces")
    if REFERENCE.match(value):
        return value
    if value.endswith(":"):
        raise ValueError(
            f"'{value}' is not a valid image reference (empty tag: write one after ':' or drop ':')"
        )
    if any(c.isupper() for c in value.split("/")[-1].split(":")[0]):
        raise ValueError(
            f"'{value}' is not a valid image reference (repository names are lowercase)"
        )
    raise ValueError(
        f"'{value}' is not a valid image reference (expected [registry/]name[:tag][@sha256:…])"
    )
