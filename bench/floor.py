"""The floor of a cold apply: create and start N containers through the raw SDK, nothing else.

Run as its own process by bench/apply.py, so that interpreter start and SDK import are
counted as they are for `hostos apply`; it prints one JSON line with its in-process times:

    {"import_s": …, "work_s": …, "containers": N}

import_s is the SDK import, work_s everything after it (client, then create+start of each
container in a thread pool of --concurrency, as hostos does by default).  The containers
are what bench/apply.py asks hostos and compose for: the image, `sleep 3600`, a stop
grace of 1 s, the engine's default bridge network, and one label to find them again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

START = time.perf_counter()


def docker_floor(
    url: str, api_version: str, names: list[str], image: str, label: str, concurrency: int
) -> float:
    """Seconds to create+start every container with docker-py's APIClient (after import)."""
    import docker

    imported = time.perf_counter()
    api = docker.APIClient(base_url=url, version=api_version)
    key, _, value = label.partition("=")

    def one(name: str) -> None:
        reply = api.create_container_from_config(
            {
                "Image": image,
                "Cmd": ["sleep", "3600"],
                "StopTimeout": 1,
                "Labels": {key: value},
                "HostConfig": {"NetworkMode": "bridge"},
            },
            name=name,
        )
        api.start(reply["Id"])

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, names))
    api.close()
    return imported


def podman_floor(
    url: str, api_version: str, names: list[str], image: str, label: str, concurrency: int
) -> float:
    """Seconds to create+start every container through libpod's API with podman-py."""
    from podman import PodmanClient

    imported = time.perf_counter()
    client: Any = PodmanClient(base_url=url, version=api_version)
    key, _, value = label.partition("=")

    def one(name: str) -> None:
        body = {
            "name": name,
            "image": image,
            "command": ["sleep", "3600"],
            "stop_timeout": 1,
            "labels": {key: value},
            "netns": {"nsmode": "bridge"},
        }
        reply = client.api.post(
            "/containers/create",
            data=json.dumps(body),
            headers={"Content-Type": "application/json"},
        )
        reply.raise_for_status()
        client.api.post(f"/containers/{reply.json()['Id']}/start").raise_for_status()

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, names))
    client.close()
    return imported


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["docker", "podman"], required=True)
    parser.add_argument("--url", required=True, help="the engine's API socket, unix://…")
    parser.add_argument(
        "--api-version",
        required=True,
        help="the API version to speak (docker's, or podman's libpod)",
    )
    parser.add_argument("--image", required=True)
    parser.add_argument("--label", required=True, help="KEY=VALUE put on every container")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("names", nargs="+", help="container names, one container each")
    args = parser.parse_args(argv)
    begin = time.perf_counter()
    floor = docker_floor if args.engine == "docker" else podman_floor
    imported = floor(
        args.url, args.api_version, args.names, args.image, args.label, args.concurrency
    )
    done = time.perf_counter()
    json.dump(
        {
            "import_s": round(imported - begin, 4),
            "work_s": round(done - imported, 4),
            "in_process_s": round(done - START, 4),
            "containers": len(args.names),
        },
        sys.stdout,
    )
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
