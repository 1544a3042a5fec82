"""The fleet the bench simulates: its node ids, its two roles (the rollout's nodes and the
rest), the site document the admin publishes and the boot images the servers hold."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROLLOUT_ROLE, REST_ROLE = "bench-a", "bench-b"
OLD_IMAGE, NEW_IMAGE = "img-1", "img-2"  # every node's first boot; what rollouts assign
DRAIN_IMAGE = "img-3"  # what the drain rollout assigns
IMAGES = (OLD_IMAGE, NEW_IMAGE, DRAIN_IMAGE)


def node_ids(count: int) -> list[str]:
    return [f"n{i:05d}" for i in range(count)]


def site(
    ids: Sequence[str], rollout_nodes: int, publish: int, rollout: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The site: the first rollout_nodes of ids in ROLLOUT_ROLE (with rollout, its rollout
    policy, if given), the rest in REST_ROLE; publish goes into every role's env, so each
    publish changes every role."""
    roles = {
        role: {
            "role": role,
            "image": OLD_IMAGE,
            "units": [],
            "env": {"BENCH_PUBLISH": str(publish)},
        }
        for role in (ROLLOUT_ROLE, REST_ROLE)
    }
    if rollout is not None:
        roles[ROLLOUT_ROLE]["rollout"] = dict(rollout)
    nodes = {
        node: {"role": ROLLOUT_ROLE if i < rollout_nodes else REST_ROLE}
        for i, node in enumerate(ids)
    }
    return {"roles": roles, "nodes": nodes}


def write_images(images: Path) -> None:
    """Small stand-in boot images (kernel, initramfs, boot script) for --images."""
    for name in IMAGES:
        directory = images / name
        directory.mkdir(parents=True)
        (directory / "vmlinuz").write_bytes(bytes(range(256)) * 64)
        (directory / "initramfs.img").write_bytes(b"initramfs " * 100)
        (directory / "boot.ipxe").write_text(
            "#!ipxe\nkernel vmlinuz initrd=initramfs.img console=ttyS0 quiet\n"
            "initrd initramfs.img\nboot\n"
        )
