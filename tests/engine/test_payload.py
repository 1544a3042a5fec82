"""The create payloads: one ContainerSpec, the Docker body and the libpod SpecGenerator."""

from __future__ import annotations

from typing import Any

import pytest

from hostos.engine.base import (
    ContainerSpec,
    DeviceSpec,
    HealthSpec,
    MountSpec,
    PortSpec,
    UlimitSpec,
)
from hostos.engine.payload import (
    RLIM_INFINITY,
    docker_create_body,
    libpod_create_body,
    signal_number,
)

LABELS = {"io.hostos.owner": "hostos", "io.hostos.unit": "web"}
MiB = 1024 * 1024


def spec(**fields: Any) -> ContainerSpec:
    return ContainerSpec(
        **{"name": "hostos-web", "image": "sha256:abc", "labels": LABELS, **fields}
    )


def test_minimal_docker_body() -> None:
    assert docker_create_body(spec()) == {
        "Image": "sha256:abc",
        "Labels": LABELS,
        "Env": [],
        "StopSignal": "SIGTERM",
        "StopTimeout": 10,
        "HostConfig": {
            "NetworkMode": "bridge",
            "Mounts": [],
            "PortBindings": {},
            "Devices": [],
            "Privileged": False,
            "CapAdd": [],
            "CapDrop": [],
            "Ulimits": [],
            "RestartPolicy": {"Name": "no"},
        },
    }


def test_minimal_libpod_body() -> None:
    assert libpod_create_body(spec()) == {
        "name": "hostos-web",
        "image": "sha256:abc",
        "labels": LABELS,
        "env": {},
        "mounts": [],
        "volumes": [],
        "portmappings": [],
        "devices": [],
        "privileged": False,
        "cap_add": [],
        "cap_drop": [],
        "stop_signal": 15,
        "stop_timeout": 10,
        "restart_policy": "no",
        "netns": {"nsmode": "bridge"},
    }


def test_bodies_do_not_share_the_specs_mappings() -> None:
    s = spec(env={"A": "1"})
    docker_create_body(s)["Labels"]["x"] = "y"
    libpod_create_body(s)["env"]["B"] = "2"
    assert dict(s.labels) == LABELS and dict(s.env) == {"A": "1"}


# (case id, spec fields, expected in the Docker body, expected in the libpod body);
# each expectation maps a key path ("HostConfig.Memory") to its value.
CASES: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    (
        "entrypoint and command",
        {"entrypoint": ("/bin/sh", "-c"), "command": ("exec httpd -f",)},
        {"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["exec httpd -f"]},
        {"entrypoint": ["/bin/sh", "-c"], "command": ["exec httpd -f"]},
    ),
    (
        "empty entrypoint clears the image's",
        {"entrypoint": (), "command": ("true",)},
        {"Entrypoint": [""], "Cmd": ["true"]},
        {"entrypoint": [""], "command": ["true"]},
    ),
    (
        "None keeps the image's entrypoint and command",
        {},
        {"Entrypoint": None, "Cmd": None},
        {"entrypoint": None, "command": None},
    ),
    (
        "env keeps order and '=' in values",
        {"env": {"B": "x=y", "A": "1"}},
        {"Env": ["B=x=y", "A=1"]},
        {"env": {"B": "x=y", "A": "1"}},
    ),
    (
        "working dir, user, hostname",
        {"working_dir": "/srv", "user": "nobody", "hostname": "web1"},
        {"WorkingDir": "/srv", "User": "nobody", "Hostname": "web1"},
        {"work_dir": "/srv", "user": "nobody", "hostname": "web1"},
    ),
    (
        "bind mount, read-only",
        {"mounts": (MountSpec("bind", "/apps", "/export/apps", readonly=True),)},
        {
            "HostConfig.Mounts": [
                {"Type": "bind", "Source": "/export/apps", "Target": "/apps", "ReadOnly": True}
            ]
        },
        {
            "mounts": [
                {
                    "type": "bind",
                    "source": "/export/apps",
                    "destination": "/apps",
                    "options": ["rbind", "ro"],
                }
            ],
            "volumes": [],
        },
    ),
    (
        "named volume",
        {"mounts": (MountSpec("volume", "/run/munge", "munge-socket"),)},
        {
            "HostConfig.Mounts": [
                {
                    "Type": "volume",
                    "Source": "munge-socket",
                    "Target": "/run/munge",
                    "ReadOnly": False,
                }
            ]
        },
        {
            "mounts": [],
            "volumes": [{"Name": "munge-socket", "Dest": "/run/munge", "Options": ["rw"]}],
        },
    ),
    (
        "tmpfs with size and mode",
        {"mounts": (MountSpec("tmpfs", "/scratch", size=256 * MiB, mode=0o1777),)},
        {
            "HostConfig.Mounts": [
                {
                    "Type": "tmpfs",
                    "Target": "/scratch",
                    "ReadOnly": False,
                    "TmpfsOptions": {"SizeBytes": 256 * MiB, "Mode": 0o1777},
                }
            ]
        },
        {
            "mounts": [
                {
                    "type": "tmpfs",
                    "source": "tmpfs",
                    "destination": "/scratch",
                    "options": ["rw", f"size={256 * MiB}", "mode=1777"],
                }
            ]
        },
    ),
    (
        "tmpfs without options",
        {"mounts": (MountSpec("tmpfs", "/tmp"),)},
        {"HostConfig.Mounts": [{"Type": "tmpfs", "Target": "/tmp", "ReadOnly": False}]},
        {
            "mounts": [
                {"type": "tmpfs", "source": "tmpfs", "destination": "/tmp", "options": ["rw"]}
            ]
        },
    ),
    (
        "ports: fixed, ephemeral, udp on an address, two host ports for one container port",
        {
            "ports": (
                PortSpec(80, 8080),
                PortSpec(9100),
                PortSpec(53, 1053, "udp", "127.0.0.1"),
                PortSpec(80, 8081),
            )
        },
        {
            "ExposedPorts": {"80/tcp": {}, "9100/tcp": {}, "53/udp": {}},
            "HostConfig.PortBindings": {
                "80/tcp": [{"HostIp": "", "HostPort": "8080"}, {"HostIp": "", "HostPort": "8081"}],
                "9100/tcp": [{"HostIp": "", "HostPort": ""}],
                "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "1053"}],
            },
        },
        {
            "portmappings": [
                {"container_port": 80, "host_port": 8080, "protocol": "tcp"},
                {"container_port": 9100, "protocol": "tcp"},
                {
                    "container_port": 53,
                    "host_port": 1053,
                    "protocol": "udp",
                    "host_ip": "127.0.0.1",
                },
                {"container_port": 80, "host_port": 8081, "protocol": "tcp"},
            ]
        },
    ),
    (
        "host network",
        {"network": "host"},
        {"HostConfig.NetworkMode": "host"},
        {"netns": {"nsmode": "host"}, "Networks": None},
    ),
    (
        "no network",
        {"network": "none"},
        {"HostConfig.NetworkMode": "none"},
        {"netns": {"nsmode": "none"}},
    ),
    (
        "a named network",
        {"network": "storage"},
        {"HostConfig.NetworkMode": "storage"},
        {"netns": {"nsmode": "bridge"}, "Networks": {"storage": {}}},
    ),
    (
        "devices",
        {"devices": (DeviceSpec("/dev/fuse", "/dev/fuse"), DeviceSpec("/dev/a", "/dev/b", "r"))},
        {
            "HostConfig.Devices": [
                {
                    "PathOnHost": "/dev/fuse",
                    "PathInContainer": "/dev/fuse",
                    "CgroupPermissions": "rwm",
                },
                {"PathOnHost": "/dev/a", "PathInContainer": "/dev/b", "CgroupPermissions": "r"},
            ]
        },
        {"devices": [{"path": "/dev/fuse:/dev/fuse:rwm"}, {"path": "/dev/a:/dev/b:r"}]},
    ),
    (
        "privileged and capabilities",
        {"privileged": True, "cap_add": ("SYS_ADMIN",), "cap_drop": ("NET_RAW", "MKNOD")},
        {
            "HostConfig.Privileged": True,
            "HostConfig.CapAdd": ["SYS_ADMIN"],
            "HostConfig.CapDrop": ["NET_RAW", "MKNOD"],
        },
        {"privileged": True, "cap_add": ["SYS_ADMIN"], "cap_drop": ["NET_RAW", "MKNOD"]},
    ),
    (
        "ulimits, unlimited is -1 for docker and RLIM_INFINITY for podman",
        {"ulimits": (UlimitSpec("memlock", -1, -1), UlimitSpec("nofile", 65536, 131072))},
        {
            "HostConfig.Ulimits": [
                {"Name": "memlock", "Soft": -1, "Hard": -1},
                {"Name": "nofile", "Soft": 65536, "Hard": 131072},
            ]
        },
        {
            "r_limits": [
                {"type": "memlock", "soft": RLIM_INFINITY, "hard": RLIM_INFINITY},
                {"type": "nofile", "soft": 65536, "hard": 131072},
            ]
        },
    ),
    (
        "cpus, memory, pids",
        {"cpus": 1.5, "memory": 4 * 1024 * MiB, "pids": 4096},
        {
            "HostConfig.NanoCpus": 1_500_000_000,
            "HostConfig.Memory": 4 * 1024 * MiB,
            "HostConfig.PidsLimit": 4096,
        },
        {
            "resource_limits": {
                "cpu": {"quota": 150_000, "period": 100_000},
                "memory": {"limit": 4 * 1024 * MiB},
                "pids": {"limit": 4096},
            }
        },
    ),
    (
        "a fraction of a CPU",
        {"cpus": 0.25},
        {"HostConfig.NanoCpus": 250_000_000, "HostConfig.Memory": None},
        {"resource_limits": {"cpu": {"quota": 25_000, "period": 100_000}}},
    ),
    (
        "no limits set leaves the engine's defaults",
        {},
        {"HostConfig.NanoCpus": None, "HostConfig.Memory": None, "HostConfig.PidsLimit": None},
        {"resource_limits": None, "r_limits": None},
    ),
    (
        "health check in nanoseconds",
        {"health": HealthSpec(("CMD-SHELL", "nc -z 127.0.0.1 80"), 15.0, 3.0, 3, 0.5)},
        {
            "Healthcheck": {
                "Test": ["CMD-SHELL", "nc -z 127.0.0.1 80"],
                "Interval": 15 * 10**9,
                "Timeout": 3 * 10**9,
                "Retries": 3,
                "StartPeriod": 500_000_000,
            }
        },
        {
            "healthconfig": {
                "Test": ["CMD-SHELL", "nc -z 127.0.0.1 80"],
                "Interval": 15 * 10**9,
                "Timeout": 3 * 10**9,
                "Retries": 3,
                "StartPeriod": 500_000_000,
            }
        },
    ),
    ("no health check keeps the image's", {}, {"Healthcheck": None}, {"healthconfig": None}),
    (
        "stop signal: a name for docker, a number for podman",
        {"stop_signal": "SIGUSR1", "stop_timeout": 120},
        {"StopSignal": "SIGUSR1", "StopTimeout": 120},
        {"stop_signal": 10, "stop_timeout": 120},
    ),
    (
        "restart is never the engine's business",
        {},
        {"HostConfig.RestartPolicy": {"Name": "no"}},
        {"restart_policy": "no"},
    ),
]


@pytest.mark.parametrize(
    ("fields", "docker", "libpod"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_payload_fields(
    fields: dict[str, Any], docker: dict[str, Any], libpod: dict[str, Any]
) -> None:
    docker_body = docker_create_body(spec(**fields))
    libpod_body = libpod_create_body(spec(**fields))
    for path, want in docker.items():
        assert lookup(docker_body, path) == want, path
    for path, want in libpod.items():
        assert lookup(libpod_body, path) == want, path


def lookup(body: dict[str, Any], path: str) -> Any:
    """body["A"]["B"] for "A.B"; None when a key is absent."""
    value: Any = body
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


@pytest.mark.parametrize(
    ("own", "defaults", "want"),
    [
        (
            [UlimitSpec("memlock", -1, -1)],
            [UlimitSpec("nofile", 1024, 1024), UlimitSpec("nproc", 8192, 8192)],
            [
                ("memlock", RLIM_INFINITY, RLIM_INFINITY),
                ("nofile", 1024, 1024),
                ("nproc", 8192, 8192),
            ],
        ),
        (
            [UlimitSpec("nofile", 512, 1024)],
            [UlimitSpec("nofile", 1024, 1024), UlimitSpec("nproc", 8192, 8192)],
            [("nofile", 512, 1024), ("nproc", 8192, 8192)],
        ),
        ([], [UlimitSpec("nofile", 1024, 1024)], None),
    ],
    ids=["defaults fill in", "the spec wins", "no ulimits, no defaults sent"],
)
def test_libpod_ulimits_keep_engine_defaults(
    own: list[UlimitSpec], defaults: list[UlimitSpec], want: list[tuple[str, int, int]] | None
) -> None:
    body = libpod_create_body(spec(ulimits=tuple(own)), default_ulimits=defaults)
    got = body.get("r_limits")
    assert (None if got is None else [(r["type"], r["soft"], r["hard"]) for r in got]) == want


@pytest.mark.parametrize(
    ("name", "number"),
    [
        ("SIGTERM", 15),
        ("SIGKILL", 9),
        ("SIGHUP", 1),
        ("SIGINT", 2),
        ("SIGQUIT", 3),
        ("SIGUSR1", 10),
        ("SIGUSR2", 12),
        ("SIGWINCH", 28),
        ("SIGPWR", 30),
        ("term", 15),
    ],
)
def test_signal_number(name: str, number: int) -> None:
    assert signal_number(name) == number


def test_signal_number_refuses_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown signal 'SIGNOPE'"):
        signal_number("SIGNOPE")
