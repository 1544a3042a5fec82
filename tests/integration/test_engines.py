"""The engine adapters on real dockerd and real podman, through the same tests."""

from __future__ import annotations

import json
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from hostos.backoff import Backoff
from hostos.engine.base import (
    ContainerSpec,
    DeviceSpec,
    Engine,
    EngineError,
    HealthSpec,
    ImageNotFound,
    MountSpec,
    PortSpec,
    UlimitSpec,
)
from hostos.engine.connect import PODMAN_SOCKET, EarlyEngine, connect, start_podman_early
from hostos.engine.probe import ping
from hostos.process import run

from conftest import ROOT, Lab, remove_labelled, wait_for

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


def named(engine: Engine, name: str) -> Any:
    """The container of exactly this name, or None."""
    found = engine.named([name])
    assert len(found) <= 1
    return found[0] if found else None


def test_create_start_inspect_rename_stop_remove(engine: Engine, lab: Lab) -> None:
    spec = lab.spec("round")
    cid = engine.create(spec)
    created = engine.inspect(cid)
    assert (created.id, created.name, created.state, created.owned) == (
        cid,
        spec.name,
        "created",
        True,
    )
    assert created.image_id == lab.busybox()

    engine.start(cid)
    running = engine.inspect(spec.name)
    assert running.state == "running" and running.running and running.started_at

    engine.rename(cid, lab.name("renamed"))
    assert named(engine, spec.name) is None
    found = named(engine, lab.name("renamed"))
    assert found is not None and found.id == cid

    started = time.monotonic()
    engine.stop(cid, timeout=5)
    assert time.monotonic() - started < 4, "the TERM trap should stop it at once"
    stopped = engine.inspect(cid)
    assert (stopped.state, stopped.exit_code, stopped.health) == ("exited", 0, None)
    assert stopped.finished_at

    engine.remove(cid)
    assert named(engine, lab.name("renamed")) is None
    engine.remove(cid)  # already gone: not an error


def test_named_matches_whole_names_only(engine: Engine, lab: Lab) -> None:
    engine.create(lab.spec("web-1"))
    assert named(engine, lab.name("web")) is None
    assert named(engine, lab.name("web-")) is None
    found = named(engine, lab.name("web-1"))
    assert found is not None and found.name == lab.name("web-1")


def test_owned_reports_only_hostos_containers_with_state_and_exit_code(
    engine: Engine, lab: Lab
) -> None:
    exits = engine.create(lab.spec("exits", command=("sh", "-c", "exit 3")))
    runs = engine.create(lab.spec("runs"))
    engine.create(lab.spec("created"))
    stranger = engine.create(lab.spec("stranger", owned=False))
    for cid in (exits, runs, stranger):
        engine.start(cid)
    wait_for("the container to exit", lambda: engine.inspect(exits).state == "exited")

    owned = {o.name: o for o in lab.mine(engine.owned())}
    assert set(owned) == {lab.name("exits"), lab.name("runs"), lab.name("created")}
    assert (owned[lab.name("exits")].state, owned[lab.name("exits")].exit_code) == ("exited", 3)
    assert (owned[lab.name("runs")].state, owned[lab.name("runs")].exit_code) == ("running", None)
    assert owned[lab.name("created")].state == "created"
    assert all(o.health is None and o.owned and o.image_id == lab.busybox() for o in owned.values())
    assert engine.inspect(exits).exit_code == 3


def test_health_check_becomes_healthy(engine: Engine, lab: Lab) -> None:
    """Podman runs no checks without systemd: health() must run them itself."""
    check = HealthSpec(("CMD", "true"), interval=1.0, timeout=2.0, retries=3, start_period=0.0)
    cid = engine.create(lab.spec("healthy", health=check))
    assert engine.health(cid) is None  # not running yet
    engine.start(cid)
    wait_for("healthy", lambda: engine.health(cid) == "healthy", timeout=15, interval=1.0)
    listed = {o.name: o for o in lab.mine(engine.owned())}
    assert listed[lab.name("healthy")].health == "healthy"
    assert engine.inspect(cid).health == "healthy"


def test_failing_health_check_becomes_unhealthy(engine: Engine, lab: Lab) -> None:
    check = HealthSpec(("CMD", "false"), interval=1.0, timeout=2.0, retries=1, start_period=0.0)
    cid = engine.create(lab.spec("sick", health=check))
    engine.start(cid)
    wait_for("unhealthy", lambda: engine.health(cid) == "unhealthy", timeout=15, interval=1.0)


def test_no_health_check_means_no_health(engine: Engine, lab: Lab) -> None:
    cid = engine.create(lab.spec("plain"))
    engine.start(cid)
    assert engine.health(cid) is None


def test_image_id_for_present_and_missing_images(engine: Engine, lab: Lab) -> None:
    image = engine.image_id("hostos/busybox:latest")
    assert image is not None
    assert engine.image_id(image) == image
    assert engine.image_id("hostos/busybox") == image  # the implied :latest
    assert engine.image_id("localhost/hostos/busybox:latest") == image  # podman's spelling
    assert engine.image_id(f"hostos/{lab.id}-missing:1") is None


def test_create_with_a_missing_image_names_the_image(engine: Engine, lab: Lab) -> None:
    missing = f"hostos/{lab.id}-missing:1"
    with pytest.raises(ImageNotFound) as caught:
        engine.create(lab.spec("noimage", image=missing))
    message = str(caught.value)
    assert missing in message and lab.name("noimage") in message
    assert message.startswith(f"{engine.name}: ")


def test_errors_name_the_container(engine: Engine, lab: Lab) -> None:
    ghost = lab.name("ghost")
    for call in (
        lambda: engine.start(ghost),
        lambda: engine.inspect(ghost),
        lambda: engine.rename(ghost, lab.name("x")),
    ):
        with pytest.raises(EngineError, match=ghost):
            call()


def test_build_the_web_image(engine: Engine, lab: Lab) -> None:
    tag = f"hxt-{lab.id}-web:latest"
    lab.images.append(tag)
    image = engine.build(str(ROOT / "containers" / "web"), tag, None, {})
    assert engine.image_id(tag) == image
    cid = engine.create(lab.spec("web", image=image, command=None))
    engine.start(cid)
    assert engine.inspect(cid).state == "running"


def test_build_args_reach_the_build(engine: Engine, lab: Lab, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile.args").write_text(
        'FROM hostos/busybox:latest\nARG GREETING\nRUN test "$GREETING" = hello\n'
    )
    tag = f"hxt-{lab.id}-args:1"
    lab.images.append(tag)
    assert engine.build(str(tmp_path), tag, "Dockerfile.args", {"GREETING": "hello"})


def test_build_failure_names_the_failing_step(engine: Engine, lab: Lab, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(
        "FROM hostos/busybox:latest\nRUN echo step-one\nRUN echo about-to-fail && exit 7\n"
    )
    tag = f"hxt-{lab.id}-broken:1"
    lab.images.append(tag)
    with pytest.raises(EngineError) as caught:
        engine.build(str(tmp_path), tag, None, {})
    message = str(caught.value)
    assert "exit 7" in message and tag in message, message
    assert engine.image_id(tag) is None


def test_load_a_saved_archive(engine: Engine, lab: Lab, tmp_path: Path) -> None:
    cli, tag = engine.name, f"hxt-{lab.id}-load:1"
    local = tag if cli == "docker" else f"localhost/{tag}"
    lab.images.append(local)
    run([cli, "tag", "hostos/busybox:latest", tag])
    archive = tmp_path / "image.tar"
    save = [cli, "save", "-o", str(archive), local]
    run(save if cli == "docker" else [*save[:2], "--format", "docker-archive", *save[2:]])
    run([cli, "rmi", local])
    assert engine.image_id(local) is None

    assert engine.load(f"docker-archive:{archive}") == lab.busybox()
    assert engine.image_id(local) == lab.busybox()


def test_load_an_oci_archive(engine: Engine, lab: Lab, tmp_path: Path) -> None:
    """podman loads OCI archives; dockerd 20.10 cannot, and says what to do instead."""
    tag = f"localhost/hxt-{lab.id}-oci:1"
    archive = tmp_path / "image.oci.tar"
    run(
        [
            "podman",
            "save",
            "--format",
            "oci-archive",
            "-o",
            str(archive),
            "localhost/hostos/busybox:latest",
        ]
    )
    if engine.name == "docker":
        with pytest.raises(EngineError, match=r"OCI archive.*skopeo copy oci-archive:"):
            engine.load(f"oci-archive:{archive}")
        return
    run(["podman", "tag", "localhost/hostos/busybox:latest", tag])
    lab.images.append(tag)
    run(["podman", "save", "--format", "oci-archive", "-o", str(archive), tag])
    run(["podman", "rmi", tag])
    assert engine.load(f"oci-archive:{archive}") == lab.busybox()


def test_load_a_missing_archive(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="No such file"):
        engine.load(f"docker-archive:{tmp_path / 'nope.tar'}")


def test_pull_retries_then_fails(engine: Engine, lab: Lab) -> None:
    engine.pull_backoff = Backoff(0.01, factor=1.0)  # type: ignore[attr-defined]
    lines: list[str] = []
    ref = f"127.0.0.1:9/hxt/{lab.id}:1"  # nothing listens on the discard port
    with pytest.raises(EngineError, match=r"after 3 attempts") as caught:
        engine.pull(ref, lines.append)
    assert ref in str(caught.value)
    assert sum("retrying" in line for line in lines) == 2


def test_events_show_create_and_start_in_order(engine: Engine, lab: Lab) -> None:
    since = time.time() - 0.5
    first, second = lab.spec("first"), lab.spec("second")
    for spec in (first, second):
        engine.start(engine.create(spec))
    until = time.time() + 0.5
    time.sleep(0.6)  # docker serves `until` only once it has passed
    seen = [
        (e["name"], e["action"])
        for e in engine.events(since, until)
        if e["name"] in (first.name, second.name) and e["action"] in ("create", "start")
    ]
    assert seen == [
        (first.name, "create"),
        (first.name, "start"),
        (second.name, "create"),
        (second.name, "start"),
    ]
    event = next(e for e in engine.events(since, until) if e["name"] == first.name)
    assert event["attributes"].get("io.hostos.test") == lab.id
    assert isinstance(event["time"], float) and since <= event["time"] <= until


def test_logs(engine: Engine, lab: Lab) -> None:
    cid = engine.create(
        lab.spec("talks", command=("sh", "-c", "echo one; echo two >&2; echo three"))
    )
    engine.start(cid)
    wait_for("exit", lambda: engine.inspect(cid).state == "exited")
    text = b"".join(engine.logs(cid, follow=False, tail=None))
    assert sorted(text.split()) == [b"one", b"three", b"two"]
    assert b"".join(engine.logs(cid, follow=False, tail=1)).strip() in (b"three", b"two")


def test_ulimits_and_limits_apply(engine: Engine, lab: Lab) -> None:
    """Podman replaces its default ulimits once one is given: the adapter keeps them."""
    cid = engine.create(
        lab.spec(
            "limits",
            ulimits=(UlimitSpec("nofile", 512, 1024),),
            memory=64 * MiB,
            pids=64,
            command=("sh", "-c", "echo $(ulimit -n) $(ulimit -Hn) $(ulimit -u)"),
        )
    )
    engine.start(cid)
    wait_for("exit", lambda: engine.inspect(cid).state == "exited")
    assert engine.inspect(cid).exit_code == 0
    soft, hard, nproc = b"".join(engine.logs(cid, follow=False, tail=None)).split()
    assert (soft, hard) == (b"512", b"1024")
    assert int(nproc) < 1048576, "podman raised nproc past the engine default"


def test_owned_latency_with_100_containers(engine: Engine, lab: Lab) -> None:
    """A no-op apply must take < 0.35 s in all: owned() is one list call."""
    for i in range(100):
        engine.create(lab.spec(f"n{i:03}", command=("true",)))
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        owned = engine.owned()
        timings.append(time.perf_counter() - started)
    assert len(lab.mine(owned)) == 100
    best = min(timings)
    print(
        f"\n{engine.name}: owned() with 100 containers: best {best * 1000:.1f} ms, "
        f"worst {max(timings) * 1000:.1f} ms"
    )
    assert best < 0.15


# -- connecting ------------------------------------------------------------------


def test_auto_prefers_a_reachable_docker() -> None:
    engine = connect("auto")
    try:
        assert engine.name == "docker"
    finally:
        engine.close()


def test_embedded_podman_service_starts_and_stops(tmp_path: Path) -> None:
    """With no service on the podman socket, connect starts a private one for itself."""
    private = tmp_path / "hostos" / "podman.sock"
    started = time.monotonic()
    engine = connect(
        "podman", podman_socket=str(tmp_path / "absent.sock"), embedded_socket=str(private)
    )
    try:
        assert time.monotonic() - started < 5
        assert engine.name == "podman"
        assert ping(f"unix://{private}") is not None
        engine.ping()
        assert engine.image_id("hostos/busybox:latest") is not None
    finally:
        engine.close()
    assert ping(f"unix://{private}") is None
    assert not private.exists()
    service = run(["pgrep", "-f", f"system service --time=0 unix://{private}"], check=False)
    assert service.stdout.strip() == ""


def test_connect_reuses_a_running_private_service(tmp_path: Path) -> None:
    private = tmp_path / "podman.sock"
    owner = connect(
        "podman", podman_socket=str(tmp_path / "absent.sock"), embedded_socket=str(private)
    )
    try:
        guest = connect(
            "podman", podman_socket=str(tmp_path / "absent.sock"), embedded_socket=str(private)
        )
        guest.close()  # not its service: it must keep running
        assert ping(f"unix://{private}") is not None
    finally:
        owner.close()


def test_a_service_started_early_is_the_one_connect_uses(tmp_path: Path) -> None:
    """The supervisor starts podman's service before reading the site; connect waits for
    that one instead of starting a second, and closing the engine stops it."""
    private = tmp_path / "hostos" / "podman.sock"
    absent = str(tmp_path / "absent.sock")
    starting = start_podman_early("podman", podman_socket=absent, embedded_socket=str(private))
    assert starting is not None
    engine = connect(
        "podman", podman_socket=absent, embedded_socket=str(private), starting=starting
    )
    try:
        assert engine.name == "podman"
        assert _service_pid(str(private)) == str(starting.process.pid)
    finally:
        engine.close()
    assert starting.process.poll() is not None
    assert _service_pid(str(private)) is None


def test_nothing_is_started_early_when_an_engine_answers(tmp_path: Path) -> None:
    private = tmp_path / "hostos" / "podman.sock"
    assert start_podman_early("auto", embedded_socket=str(private)) is None  # dockerd answers
    assert (
        start_podman_early("podman", podman_socket=PODMAN_SOCKET, embedded_socket=str(private))
        is None
    )
    assert not private.exists()


def test_connect_can_be_told_not_to_start_a_service(tmp_path: Path) -> None:
    private = tmp_path / "hostos" / "podman.sock"
    with pytest.raises(EngineError, match="no podman service answers"):
        connect(
            "podman",
            podman_socket=str(tmp_path / "absent.sock"),
            embedded_socket=str(private),
            start_service=False,
        )
    assert not private.exists()
    assert _service_pid(str(private)) is None


def test_early_engine_lists_what_hostos_owns(
    engine: Engine, lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = engine.create(lab.spec("early"))
    early = EarlyEngine(engine.name)  # type: ignore[arg-type]
    try:
        assert early.engine is not None and early.engine.name == engine.name
        assert early.listed is not None
        assert cid in {o.id for o in early.listed}
    finally:
        early.close()
    assert early.engine is None and early.listed is None
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    nothing = EarlyEngine("docker")
    assert nothing.engine is None and nothing.listed is None
    nothing.close()


def _service_pid(sock: str) -> str | None:
    found = run(["pgrep", "-f", f"system service --time=0 unix://{sock}"], check=False)
    return found.stdout.strip() or None


def test_connect_errors_give_a_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'docker.sock'}")
    with pytest.raises(EngineError, match="dockerd does not answer"):
        connect("docker")
    monkeypatch.setenv("PATH", str(tmp_path))  # no podman binary to start a service with
    with pytest.raises(EngineError, match="install podman or start dockerd"):
        connect("auto", podman_socket=str(tmp_path / "podman.sock"))
    with pytest.raises(EngineError, match="unknown engine 'lxc'"):
        connect("lxc")  # type: ignore[arg-type]


# -- the same spec makes the same container on both engines ------------------------


def full_spec(lab: Lab, image: str, volume: str, bind: Path) -> ContainerSpec:
    return ContainerSpec(
        name=lab.name("twin"),
        image=image,
        labels=lab.labels(extra={"org.example.role": "twin"}),
        entrypoint=("/bin/sh", "-c"),
        command=("exec sleep 300",),
        env={"GREETING": "hello", "EQUATION": "a=b"},
        working_dir="/tmp",
        user="nobody",
        mounts=(
            MountSpec("bind", "/data", str(bind), readonly=True),
            MountSpec("volume", "/vol", volume),
            MountSpec("tmpfs", "/scratch", size=16 * MiB, mode=0o1777),
        ),
        ports=(PortSpec(8080, 18080), PortSpec(53, 10053, "udp", "127.0.0.1")),
        network="bridge",
        hostname="twin",
        devices=(DeviceSpec("/dev/null", "/dev/extra-null", "rwm"),),
        cap_add=("NET_ADMIN",),
        cap_drop=("MKNOD",),
        ulimits=(UlimitSpec("nofile", 512, 1024),),
        cpus=0.5,
        memory=64 * MiB,
        pids=100,
        health=HealthSpec(("CMD-SHELL", "test -d /scratch"), 1.5, 2.0, 3, 0.5),
        stop_signal="SIGUSR1",
        stop_timeout=7,
    )


def test_same_spec_gives_the_same_container_on_both_engines(tmp_path: Path) -> None:
    views = {}
    shared = uuid.uuid4().hex[:8]  # the same names on both engines
    for kind in ("docker", "podman"):
        engine = connect(kind)
        lab = Lab(engine, shared)
        try:
            volume = lab.name("vol")
            lab.volumes.append(volume)
            spec = full_spec(lab, lab.busybox(), volume, tmp_path)
            cid = engine.create(spec)
            doc = run([kind, "inspect", cid]).stdout
            views[kind] = normalise(json.loads(doc)[0], spec)
        finally:
            lab.cleanup()
            engine.close()
    assert views["docker"] == views["podman"]


def normalise(doc: dict[str, Any], spec: ContainerSpec) -> dict[str, Any]:
    """The fields a ContainerSpec decides, in one spelling for both engines' inspect."""
    config, host = doc["Config"], doc["HostConfig"]
    env = dict(item.split("=", 1) for item in config.get("Env") or [])
    stop_signal = config.get("StopSignal")
    if isinstance(stop_signal, str):
        stop_signal = int(signal.Signals[stop_signal])
    ulimits = {
        u["Name"].lower().removeprefix("rlimit_"): (u["Soft"], u["Hard"])
        for u in host.get("Ulimits") or []
    }
    return {
        "name": doc["Name"].lstrip("/"),
        "labels": config.get("Labels") or {},
        "env": {key: env.get(key) for key in spec.env},
        "argv": [doc["Path"], *doc["Args"]],
        "cmd": config.get("Cmd"),
        "user": config.get("User"),
        "workdir": config.get("WorkingDir"),
        "hostname": config.get("Hostname"),
        "mounts": _mounts(doc),
        "ports": host.get("PortBindings"),
        "network": host.get("NetworkMode"),
        "devices": sorted(
            (d["PathOnHost"], d["PathInContainer"]) for d in host.get("Devices") or []
        ),
        "cap_add": sorted(c.removeprefix("CAP_") for c in host.get("CapAdd") or []),
        "privileged": host.get("Privileged"),
        "ulimits": {name: ulimits.get(name) for name in (u.name for u in spec.ulimits)},
        "limits": {key: host.get(key) for key in ("NanoCpus", "Memory", "MemorySwap", "PidsLimit")},
        "health": {
            key: (config.get("Healthcheck") or {}).get(key)
            for key in ("Test", "Interval", "Timeout", "Retries", "StartPeriod")
        },
        "stop_signal": stop_signal,
        "stop_timeout": config.get("StopTimeout"),
        "restart": (host.get("RestartPolicy") or {}).get("Name"),
    }


def _mounts(doc: dict[str, Any]) -> list[tuple[Any, ...]]:
    """bind/volume mounts from Mounts; tmpfs size and mode from where each engine keeps
    them (docker: HostConfig.Mounts[].TmpfsOptions; podman: HostConfig.Tmpfs options)."""
    mounts: list[tuple[Any, ...]] = [
        (m["Type"], m.get("Name") or m.get("Source"), m["Destination"], m["RW"])
        for m in doc.get("Mounts") or []
        if m["Type"] in ("bind", "volume")
    ]
    for mount in doc["HostConfig"].get("Mounts") or []:
        if mount["Type"] == "tmpfs":
            options = mount.get("TmpfsOptions") or {}
            mounts.append(
                ("tmpfs", mount["Target"], options.get("SizeBytes"), oct(options.get("Mode", 0)))
            )
    for target, text in (doc["HostConfig"].get("Tmpfs") or {}).items():
        options = dict(o.split("=", 1) for o in text.split(",") if "=" in o)
        mounts.append(("tmpfs", target, int(options["size"]), oct(int(options["mode"], 8))))
    return sorted(mounts)


def test_remove_labelled_helper_leaves_others_alone(engine: Engine, lab: Lab) -> None:
    """The cleanup the fixtures rely on removes exactly the labelled containers."""
    mine = engine.create(lab.spec("mine"))
    assert remove_labelled(engine.name, f"io.hostos.test={lab.id}") == [lab.name("mine")]
    assert named(engine, lab.name("mine")) is None
    engine.remove(mine)
