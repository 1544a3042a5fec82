"""Benchmarks of issue 3: `hostos apply` beside docker-compose, podman-compose and the floor.

    .venv/bin/python -m bench.apply [--engine docker|podman|both] [--runs N] [--write FILE]

Every figure is the wall time of a whole process (subprocess, perf_counter): interpreter
start, imports, site or compose file parsing, engine calls, exit.  Per engine, in one run,
on the same engine and image:

- cold-20: 20 units from nothing to all running, for hostos, the engine's compose and the
  floor (bench/floor.py: raw SDK create+start in a pool of 8 threads, as hostos uses);
  each is checked to have started all 20 and torn down again (untimed) before the next.
  The tools take turns within each round, so drift and noise fall on all alike.
- noop-20: the same command again on the set cold-20 just converged.
- noop-100: the same command on a converged set of 100 units.
A no-op must change nothing: hostos must print `0 changes`, and for every tool the
container IDs before and after must be the same.

The compose services use `network_mode: bridge` (and podman-compose `in_pod: false`), so
that compose, like hostos and the floor, puts each container on the engine's default
bridge; compose's own default (a project network, and a pod for podman-compose) is also
measured for cold-20, for information.  Targets (issue 3): cold-20 ≤ 1.0x compose and
≤ 1.15x the floor; noop-100 ≤ 0.35 s for the whole `hostos apply` process.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import cli
from bench.cli import BenchError
from bench.processes import BIN, PYTHON, ROOT, child_env
from bench.procfs import cpus_busy
from bench.report import TIMES, command, commit_line, machine, met, now, seconds
from hostos.engine.base import EngineError
from hostos.engine.connect import DOCKER_SOCKET, PODMAN_SOCKET
from hostos.engine.http import EngineHTTP
from hostos.labels import HOSTOS_PREFIX, NAMESPACE_LABEL

MODULE = "bench.apply"
log = logging.getLogger(MODULE)  # run as __main__, so not __name__
SECTION = "apply-bench"
HOSTOS = BIN / "hostos"  # the console script, as users run it: its start-up is measured
PODMAN_COMPOSE = BIN / "podman-compose"
FLOOR = ROOT / "bench" / "floor.py"  # run as a file: it imports nothing of bench

IMAGE = "hostos/busybox:latest"
NAME = "bench"  # the hostos namespace and role, and the compose project
CONCURRENCY = 8  # hostos apply's default --concurrency, and the floor's pool
COLD, NOOP_SMALL, NOOP_LARGE = 20, 20, 100
SOCKETS = {"docker": DOCKER_SOCKET, "podman": PODMAN_SOCKET}
SERVICES = {"docker": "dockerd", "podman": "the podman service"}

HOSTOS_LABEL = f"{NAMESPACE_LABEL}={NAME}"
COMPOSE_LABEL = f"com.docker.compose.project={NAME}"  # set by both compose tools
FLOOR_LABEL = f"{HOSTOS_PREFIX}bench=floor"
FLOOR_NAME = "floor (raw SDK, own process)"

TARGET_COMPOSE = 1.0
TARGET_FLOOR = 1.15
TARGET_NOOP_LARGE = 0.35

REPRODUCE = "bash bench/setup.sh && " + command(
    MODULE, "--engine both --runs 5 --write docs/benchmarks.md"
)

# docker-compose 1.x deadlocks when a project has more services than its parallel limit
# (default 64): each service's task holds a slot while waiting for its container's task
# (docker/compose#5864, #8226). Above twice the largest project it never binds; at 20
# units the default of 64 did not bind either, so the figures are compose's own.
COMPOSE_PARALLEL_LIMIT = 256
COMMAND_TIMEOUT = 600.0  # seconds: a hung tool fails the run instead of stalling it


# -- the engine's API, for checks and clean-up (never timed) ----------------------------


class Api:
    """The Docker-compatible API on an engine's socket (dockerd and podman both serve it)."""

    def __init__(self, engine: str) -> None:
        self.url = SOCKETS[engine]
        self.http = EngineHTTP(self.url, engine=engine, service=SERVICES[engine])

    def containers(self, label: str | None = None) -> list[dict[str, Any]]:
        params = {"all": "1"}
        if label:
            params["filters"] = json.dumps({"label": [label]})
        rows: list[dict[str, Any]] = self.http.get_json(
            "/containers/json", "list containers", params=params
        )
        return rows

    def remove(self, container: str) -> None:
        self.http.request(
            "DELETE",
            f"/containers/{container}",
            f"remove container {container[:12]}",
            params={"force": "1", "v": "1"},
            ok=(200, 204, 404),
        )

    def version(self) -> dict[str, Any]:
        doc: dict[str, Any] = self.http.get_json("/version", "version")
        return doc


def running_ids(api: Api, label: str, want: int, what: str) -> set[str]:
    """The IDs of the `want` containers carrying label, all running; fails loudly otherwise."""
    rows = api.containers(label)
    running = {r["Id"] for r in rows if r.get("State") == "running"}
    if len(rows) != want or len(running) != want:
        states: dict[str, int] = {}
        for row in rows:
            states[str(row.get("State"))] = states.get(str(row.get("State")), 0) + 1
        raise BenchError(
            f"{what}: want {want} running containers with {label}, found "
            f"{len(rows)} ({', '.join(f'{n} {s}' for s, n in states.items())})"
        )
    return running


def must_be_gone(api: Api, label: str, what: str) -> None:
    left = api.containers(label)
    if left:
        names = ", ".join(sorted(n.lstrip("/") for r in left for n in r.get("Names") or [])[:5])
        raise BenchError(f"{what} left {len(left)} containers with {label}: {names}…")


def force_remove(api: Api, label: str) -> int:
    rows = api.containers(label)
    for row in rows:
        api.remove(row["Id"])
    return len(rows)


# -- the workspace: a hostos site and compose files ---------------------------------------


def unit_names(count: int) -> list[str]:
    return [f"u{i:03d}" for i in range(1, count + 1)]


def write_site(root: Path, count: int) -> Path:
    """A site of `count` identical units in one role `bench`."""
    site = root / f"site-{count}"
    (site / "roles").mkdir(parents=True)
    for name in unit_names(count):
        (site / f"{name}.yaml").write_text(
            f'image: {IMAGE}\ncommand: [sleep, "3600"]\nstop_timeout: 1s\n'
        )
    (site / "roles" / f"{NAME}.yaml").write_text(
        f"role: {NAME}\nunits: [{', '.join(unit_names(count))}]\n"
    )
    return site


def write_compose(root: Path, count: int, default_bridge: bool) -> Path:
    """The same units as compose services: same image, command and stop grace.

    default_bridge: `network_mode: bridge` and no podman pod, so every container joins
    the engine's default bridge as hostos's do; otherwise compose's own defaults (a
    project network `bench_default`, and for podman-compose a pod `pod_bench`)."""
    folder = root / f"compose-{count}-{'bridge' if default_bridge else 'defaults'}"
    folder.mkdir(parents=True)
    lines = ["x-podman:", "  in_pod: false", ""] if default_bridge else []
    lines.append("services:")
    for name in unit_names(count):
        lines += [
            f"  {name}:",
            f"    image: {IMAGE}",
            '    command: [sleep, "3600"]',
            "    stop_grace_period: 1s",
        ]
        if default_bridge:
            lines.append("    network_mode: bridge")
    path = folder / "docker-compose.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


# -- the tools ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    seconds: float
    stdout: str
    stderr: str


@dataclass
class Quiet:
    """Waits for an idle machine before each measured command (it is shared: other work
    on 2 CPUs would land in the figures), and counts what it saw."""

    busy_limit: float = 0.5  # CPUs in use by anything at all
    max_wait: float = 60.0
    measured: int = 0
    contended: int = 0  # measured although the machine never became idle
    waited: float = 0.0
    loads: list[float] = field(default_factory=list)  # 1-minute load before each

    def wait(self) -> None:
        begin = time.monotonic()
        busy = cpus_busy()
        while busy > self.busy_limit and time.monotonic() - begin < self.max_wait:
            time.sleep(1.0)
            busy = cpus_busy()
        self.waited += time.monotonic() - begin
        self.measured += 1
        self.contended += busy > self.busy_limit
        self.loads.append(os.getloadavg()[0])


QUIET = Quiet()


def timed(cmd: Sequence[str], what: str, measure: bool = False) -> Run:
    """Wall time of the whole process; a non-zero exit stops the benchmark.
    measure: a figure, so first wait for the machine to be idle."""
    if measure:
        QUIET.wait()
    env = child_env(COMPOSE_PARALLEL_LIMIT=str(COMPOSE_PARALLEL_LIMIT))
    begin = time.perf_counter()
    try:
        done = subprocess.run(
            list(cmd),
            capture_output=True,
            text=True,
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
            timeout=COMMAND_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(
            f"{what}: still running after {COMMAND_TIMEOUT:g}s, killed: {' '.join(cmd[:11])}"
        ) from None
    seconds = time.perf_counter() - begin
    if done.returncode != 0:
        shown = " ".join(cmd) if len(cmd) < 12 else " ".join([*cmd[:11], "…"])
        raise BenchError(
            f"{what}: exit {done.returncode}: {shown}\n"
            f"{(done.stdout + done.stderr).strip()[-1500:]}"
        )
    return Run(seconds, done.stdout, done.stderr)


@dataclass
class Tool:
    """One way to bring up the units: its command, its label, its teardown."""

    name: str
    label: str
    up: Callable[[int], list[str]]
    down: Callable[[int, Api], None]
    noop: bool = True  # whether a no-op run is measured
    check_noop: Callable[[Run], str | None] = lambda run: None  # why a no-op run is wrong
    after_cold: Callable[[Run, bool], None] = lambda run, measured: None  # (run, measured)


def hostos_tool(engine: str, sites: dict[int, Path]) -> Tool:
    def up(count: int) -> list[str]:
        return [
            str(HOSTOS),
            "apply",
            str(sites[count]),
            "--role",
            NAME,
            "--engine",
            engine,
            "--namespace",
            NAME,
        ]

    def down(count: int, api: Api) -> None:
        timed([str(HOSTOS), "down", "--engine", engine, "--namespace", NAME], "hostos down")

    def check(run: Run) -> str | None:
        lines = run.stdout.strip().splitlines()
        return None if lines == ["0 changes"] else f"printed {run.stdout.strip()[:300]!r}"

    return Tool("hostos", HOSTOS_LABEL, up, down, check_noop=check)


def compose_tool(engine: str, files: dict[int, Path], defaults: bool = False) -> Tool:
    binary = shutil.which("docker-compose") if engine == "docker" else str(PODMAN_COMPOSE)
    if binary is None or not os.access(binary, os.X_OK):
        raise BenchError(f"no {engine} compose tool: run bash bench/setup.sh")
    name = "docker-compose" if engine == "docker" else "podman-compose"
    if defaults:
        name += (
            " (compose defaults: project network)"
            if engine == "docker"
            else " (compose defaults: pod + project network)"
        )

    def base(count: int) -> list[str]:
        return [binary, "-p", NAME, "-f", str(files[count])]

    def down(count: int, api: Api) -> None:
        timed([*base(count), "down", "-t", "0"], f"{name} down")

    return Tool(
        name, COMPOSE_LABEL, lambda count: [*base(count), "up", "-d"], down, noop=not defaults
    )


def floor_tool(engine: str, api_version: str, floor_times: list[float]) -> Tool:
    """bench/floor.py as its own process; its in-process time goes to floor_times."""

    def up(count: int) -> list[str]:
        return [
            str(PYTHON),
            str(FLOOR),
            "--engine",
            engine,
            "--url",
            SOCKETS[engine],
            "--api-version",
            api_version,
            "--image",
            IMAGE,
            "--label",
            FLOOR_LABEL,
            "--concurrency",
            str(CONCURRENCY),
            *(f"{NAME}-floor-{n}" for n in unit_names(count)),
        ]

    def down(count: int, api: Api) -> None:
        force_remove(api, FLOOR_LABEL)

    def record(run: Run, measured: bool) -> None:
        if measured:
            floor_times.append(float(json.loads(run.stdout)["in_process_s"]))

    return Tool(FLOOR_NAME, FLOOR_LABEL, up, down, noop=False, after_cold=record)


# -- measuring ------------------------------------------------------------------------------


@dataclass
class Results:
    """Seconds per (scenario, tool), in the order first measured."""

    samples: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    def add(self, scenario: str, tool: str, seconds: float) -> None:
        self.samples.setdefault((scenario, tool), []).append(seconds)

    def get(self, scenario: str, tool: str) -> list[float]:
        return self.samples.get((scenario, tool), [])


def cold_rounds(api: Api, tools: Sequence[Tool], runs: int, warmup: int, results: Results) -> None:
    """cold-20 (and noop-20 on the fresh set) for each tool in turn, round after round."""
    for round_ in range(warmup + runs):
        measured = round_ >= warmup
        for tool in tools:
            what = f"{tool.name} cold-{COLD}"
            must_be_gone(api, tool.label, f"before {what}")
            cold = timed(tool.up(COLD), what, measure=True)
            running = running_ids(api, tool.label, COLD, what)
            tool.after_cold(cold, measured)
            if measured:
                results.add(f"cold-{COLD}", tool.name, cold.seconds)
            noop_note = ""
            if tool.noop:
                noop = _noop(api, tool, NOOP_SMALL, running)
                noop_note = f", noop {noop:.3f}s"
                if measured:
                    results.add(f"noop-{NOOP_SMALL}", tool.name, noop)
            tool.down(COLD, api)
            must_be_gone(api, tool.label, f"{tool.name} teardown")
            step = f"run {round_ - warmup + 1}" if measured else "warm-up"
            log.info(f"{step} {tool.name}: cold {cold.seconds:.3f}s{noop_note}")


def noop_large(api: Api, tools: Sequence[Tool], runs: int, warmup: int, results: Results) -> None:
    """noop-100: each tool converges 100 units (untimed), then repeats the same command."""
    for tool in [t for t in tools if t.noop]:
        what = f"{tool.name} up {NOOP_LARGE}"
        must_be_gone(api, tool.label, f"before {what}")
        up = timed(tool.up(NOOP_LARGE), what)
        running = running_ids(api, tool.label, NOOP_LARGE, what)
        log.info(f"{tool.name}: {NOOP_LARGE} units up in {up.seconds:.1f}s (untimed)")
        try:
            for round_ in range(warmup + runs):
                seconds = _noop(api, tool, NOOP_LARGE, running)
                if round_ >= warmup:
                    results.add(f"noop-{NOOP_LARGE}", tool.name, seconds)
                log.info(
                    f"{tool.name}: noop-{NOOP_LARGE} {seconds:.3f}s"
                    f"{' (warm-up)' if round_ < warmup else ''}"
                )
        finally:
            tool.down(NOOP_LARGE, api)
        must_be_gone(api, tool.label, f"{tool.name} teardown")


def _noop(api: Api, tool: Tool, count: int, before: set[str]) -> float:
    what = f"{tool.name} noop-{count}"
    run = timed(tool.up(count), what, measure=True)
    why = tool.check_noop(run)
    if why:
        raise BenchError(f"{what} was not a no-op: {why}")
    after = running_ids(api, tool.label, count, what)
    if after != before:
        raise BenchError(f"{what} was not a no-op: {len(before - after)} containers replaced")
    return run.seconds


# -- one engine -------------------------------------------------------------------------------


@dataclass
class EngineRun:
    engine: str
    version: str
    api_version: str
    results: Results
    floor_in_process: list[float]
    compose: str  # the compose tool's row name
    load_before: float
    load_max: float  # the highest 1-minute load average seen before a measured command
    quiet: Quiet
    others: int  # containers on the engine that are not the benchmark's, at the start


def engine_version(engine: str, api: Api) -> tuple[str, str]:
    """(version text, API version the floor speaks): docker's API, podman's libpod."""
    doc = api.version()
    if engine == "docker":
        return str(doc["Version"]), str(doc["ApiVersion"])
    libpod = next(
        (c for c in doc.get("Components") or [] if c.get("Name") == "Podman Engine"), None
    )
    version = str((libpod or doc).get("Version"))
    return version, version


@contextmanager
def cleaned(api: Api, compose_files: Sequence[tuple[Tool, int]]) -> Iterator[None]:
    """Leftovers of an interrupted run removed before, and everything removed after."""
    for label in (HOSTOS_LABEL, COMPOSE_LABEL, FLOOR_LABEL):
        if removed := force_remove(api, label):
            log.info(f"removed {removed} leftover containers with {label}")
    try:
        yield
    finally:
        for tool, count in compose_files:  # also removes compose's project network, pod
            try:
                tool.down(count, api)
            except BenchError as exc:
                log.info(f"clean-up: {exc}")
        for label in (HOSTOS_LABEL, COMPOSE_LABEL, FLOOR_LABEL):
            force_remove(api, label)


def bench_engine(engine: str, runs: int, warmup: int, workdir: Path) -> EngineRun:
    api = Api(engine)
    version, api_version = engine_version(engine, api)
    log.info(f"{engine} {version} on {SOCKETS[engine]}")
    sites = {n: write_site(workdir / engine, n) for n in (COLD, NOOP_LARGE)}
    bridge = {n: write_compose(workdir / engine, n, True) for n in (COLD, NOOP_LARGE)}
    defaults = {COLD: write_compose(workdir / engine, COLD, False)}
    floor_times: list[float] = []
    hostos = hostos_tool(engine, sites)
    compose = compose_tool(engine, bridge)
    compose_defaults = compose_tool(engine, defaults, defaults=True)
    floor = floor_tool(engine, api_version, floor_times)
    results = Results()
    teardown = [(compose, COLD), (compose, NOOP_LARGE), (compose_defaults, COLD)]
    with cleaned(api, teardown):
        others = len(api.containers())
        load_before = os.getloadavg()[0]
        QUIET.loads.clear()
        QUIET.measured = QUIET.contended = 0
        QUIET.waited = 0.0
        cold_rounds(api, [hostos, compose, floor, compose_defaults], runs, warmup, results)
        noop_large(api, [hostos, compose], runs, warmup, results)
        load_max = max(QUIET.loads, default=load_before)
        quiet = dataclasses.replace(QUIET, loads=list(QUIET.loads))
    return EngineRun(
        engine,
        version,
        api_version,
        results,
        floor_times,
        compose.name,
        load_before,
        load_max,
        quiet,
        others,
    )


# -- the report -------------------------------------------------------------------------------


def _median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def _ratio(a: Sequence[float], b: Sequence[float]) -> float | None:
    return _median(a) / _median(b) if a and b else None


def table(runs: Sequence[EngineRun]) -> list[str]:
    """One row per engine, scenario and tool: median, min, hostos ÷ it, target, met."""
    out = [
        "| engine | scenario | tool | median | min | runs | hostos ÷ tool (medians) "
        "| target | met |",
        "|---|---|---|---:|---:|---:|---:|---|---|",
    ]
    for run in runs:
        res = run.results
        order = [f"cold-{COLD}", f"noop-{NOOP_SMALL}", f"noop-{NOOP_LARGE}"]
        for (scenario, tool), xs in sorted(
            res.samples.items(), key=lambda item: order.index(item[0][0])
        ):
            hostos = res.get(scenario, "hostos")
            ratio, target, verdict = "", "", ""
            if tool == "hostos":
                if scenario == f"noop-{NOOP_LARGE}":
                    target = f"≤ {TARGET_NOOP_LARGE:.2f} s"
                    verdict = met(_median(xs) <= TARGET_NOOP_LARGE)
            else:
                value = _ratio(hostos, xs)
                ratio = f"{value:.2f}{TIMES}" if value is not None else "n/a"
                goal = None
                if scenario == f"cold-{COLD}" and tool == run.compose:
                    goal = TARGET_COMPOSE
                elif scenario == f"cold-{COLD}" and tool == FLOOR_NAME:
                    goal = TARGET_FLOOR
                if goal is not None and value is not None:
                    target, verdict = f"≤ {goal:.2f}{TIMES}", met(value <= goal)
            out.append(
                f"| {run.engine} | {scenario} | {tool} | {seconds(_median(xs))} "
                f"| {seconds(min(xs))} | {len(xs)} | {ratio} | {target} | {verdict} |"
            )
            if tool == FLOOR_NAME and run.floor_in_process:
                inner = run.floor_in_process
                value = _ratio(hostos, inner)
                out.append(
                    f"| {run.engine} | {scenario} | floor, in-process (no interpreter "
                    f"start) | {seconds(_median(inner))} | {seconds(min(inner))} | {len(inner)} "
                    f"| {'n/a' if value is None else f'{value:.2f}{TIMES}'} | | |"
                )
    return out


def targets(runs: Sequence[EngineRun]) -> list[str]:
    out = ["| engine | target | measured | met |", "|---|---|---:|---|"]
    for run in runs:
        res = run.results
        hostos_cold = res.get(f"cold-{COLD}", "hostos")
        checks = [
            (
                f"cold-{COLD}: hostos ≤ {TARGET_COMPOSE:.2f}{TIMES} {run.compose}",
                _ratio(hostos_cold, res.get(f"cold-{COLD}", run.compose)),
                TARGET_COMPOSE,
                TIMES,
            ),
            (
                f"cold-{COLD}: hostos ≤ {TARGET_FLOOR:.2f}{TIMES} the floor",
                _ratio(hostos_cold, res.get(f"cold-{COLD}", FLOOR_NAME)),
                TARGET_FLOOR,
                TIMES,
            ),
        ]
        noop = res.get(f"noop-{NOOP_LARGE}", "hostos")
        checks.append(
            (
                f"noop-{NOOP_LARGE}: hostos apply ≤ {TARGET_NOOP_LARGE:.2f} s",
                _median(noop) if noop else None,
                TARGET_NOOP_LARGE,
                " s",
            )
        )
        for label, value, goal, unit in checks:
            shown = (
                "n/a"
                if value is None
                else (f"{value:.2f}{TIMES}" if unit == TIMES else seconds(value))
            )
            out.append(
                f"| {run.engine} | {label} | {shown} | "
                f"{'n/a' if value is None else met(value <= goal)} |"
            )
    return out


def _output(cmd: Sequence[str]) -> str:
    try:
        done = subprocess.run(list(cmd), capture_output=True, text=True, check=False, cwd=ROOT)
    except OSError:
        return "?"
    return done.stdout.strip() if done.returncode == 0 else "?"


def tools_line() -> str:
    podman_compose = _output([str(PODMAN_COMPOSE), "--version"]).splitlines()
    docker_compose = _output(["docker-compose", "version", "--short"])
    return (
        f"- tools: {_output([str(HOSTOS), '--version'])} (Python "
        f"{platform.python_version()}, docker-py {metadata.version('docker')}, "
        f"podman-py {metadata.version('podman')}), docker-compose {docker_compose}, "
        f"{podman_compose[0] if podman_compose else 'podman-compose ?'}"
    )


def section(runs: Sequence[EngineRun], args: argparse.Namespace) -> str:
    lines = [
        f"Measured {now()} at {commit_line()}, `--runs {args.runs}` "
        f"(after {args.warmup} untimed warm-up round{'s' if args.warmup != 1 else ''}).",
        "",
        f"- machine: {machine()}",
    ]
    for run in runs:
        api = "API" if run.engine == "docker" else "libpod API"
        q = run.quiet
        lines.append(
            f"- {run.engine}: {run.version} ({api} {run.api_version}); "
            f"{run.others} other containers on the engine at the start; load average "
            f"{run.load_before:.2f} at the start, at most {run.load_max:.2f} before a "
            f"measured command; {q.contended} of {q.measured} measured commands ran on "
            f"a busy machine (over {q.busy_limit:g} CPU in use after waiting up to "
            f"{q.max_wait:g} s; {q.waited:.0f} s waited in all)"
        )
    lines.append(tools_line())
    if any(run.engine == "docker" for run in runs):
        lines.append(
            f"- docker-compose ran with COMPOSE_PARALLEL_LIMIT={COMPOSE_PARALLEL_LIMIT}: "
            "with its default of 64 it deadlocks on the 100-service project "
            "(docker/compose#5864); at 20 services the limit never binds"
        )
    lines += [
        "",
        "### Targets",
        "",
        *targets(runs),
        "",
        "### All figures",
        "",
        *table(runs),
        "",
        "Every figure is the wall time of one whole process. `hostos ÷ tool` is the "
        "median of hostos over the median of that tool in the same scenario "
        "(below 1: hostos is faster).",
    ]
    return "\n".join(lines)


INTRO = f"""# Benchmarks

## `hostos apply` beside compose and the floor (issue 3)

What is measured, per engine, in one run, with the same engine and the same image
(`{IMAGE}`, `sleep 3600`, a stop grace of 1 s): the wall time of the whole process
(interpreter start, imports, reading the site or compose file, every engine call, exit),
timed from outside with `perf_counter` and repeated; teardown between runs is not timed.

- **cold-20**: 20 units from nothing to all running: `hostos apply SITE --role bench
  --engine E --namespace bench`, `docker-compose -p bench up -d` (docker),
  `podman-compose -p bench up -d` (podman), and the floor, `bench/floor.py`: the raw SDK
  (docker-py's `APIClient`, podman-py's libpod API) creating and starting the same 20
  containers in a pool of 8 threads, the parallelism of `hostos apply`. The floor runs as
  its own process, so its interpreter start and SDK import count as they do for hostos;
  its in-process time is shown too. After each run all 20 must be running.
- **noop-20**, **noop-100**: the same command again on a converged set: hostos must print
  `0 changes`, and no tool may replace a container.
- Networks: hostos and the floor put containers on the engine's default bridge. Compose
  would create a project network (`bench_default`), and podman-compose a pod as well, so
  the compose files set `network_mode: bridge` (and `x-podman: {{in_pod: false}}`): all
  tools then do the same work on the engine. Compose with its defaults is measured for
  cold-20 too, for information, without a target.
- docker-compose 1.29.2 talks to dockerd's API from one thread per service and container;
  podman-compose runs the `podman` command once per container, one after another
  (create all, then start all); hostos and the floor talk to the podman API service.
- The machine has 2 CPUs and may be shared: before each measured command the benchmark
  waits (up to a minute) until less than half a CPU is in use, and the section says how
  many commands still met a busy machine, and the 1-minute load average.

Reproduce (as root, on the project's machine):

```sh
{REPRODUCE}
```

The section below is written by `python -m bench.apply --write`; its numbers are never
edited by hand.

"""


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser(MODULE, __doc__)
    parser.add_argument(
        "--engine", choices=["docker", "podman", "both"], default="both", help="the engines"
    )
    parser.add_argument("--runs", type=int, default=5, help="measured runs per figure")
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed runs before them (default 1)"
    )
    parser.add_argument(
        "--idle-cpu",
        type=float,
        default=QUIET.busy_limit,
        metavar="CPUS",
        help="before each measured command, wait until no more than this "
        "many CPUs are in use (default %(default)s)",
    )
    parser.add_argument(
        "--idle-wait",
        type=float,
        default=QUIET.max_wait,
        metavar="SECONDS",
        help="but no longer than this (default %(default)s)",
    )
    cli.add_write(parser, SECTION)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        parser.error("--runs must be at least 1 and --warmup at least 0")
    cli.need_root(parser)
    for needed in (HOSTOS, PYTHON):
        if not needed.exists():
            parser.error(f"{needed} is missing: run bash bench/setup.sh")
    QUIET.busy_limit, QUIET.max_wait = args.idle_cpu, args.idle_wait
    engines = ["docker", "podman"] if args.engine == "both" else [args.engine]
    runs = []
    try:
        with tempfile.TemporaryDirectory(prefix="hostos-bench-") as tmp:
            for engine in engines:
                runs.append(bench_engine(engine, args.runs, args.warmup, Path(tmp)))
    except EngineError as exc:
        raise BenchError(str(exc)) from None
    cli.publish(section(runs, args), args.write, SECTION, INTRO)
    return 0


if __name__ == "__main__":
    cli.run(main)
