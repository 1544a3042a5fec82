"""The cluster bench's section of docs/benchmarks.md: the targets met or not, every figure
per store and size, how it is measured, the command that reproduces the run."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bench.cluster.fleet import DRAIN_IMAGE, NEW_IMAGE
from bench.cluster.jobs import JOBS_PER_REBOOT
from bench.cluster.results import DrainRollout, Options, Rollout, StoreRun
from bench.procfs import TCP_COUNTERS, sysctls
from bench.report import TIMES, command, commit_line, machine, met, now, percentile, seconds

SECTION = "cluster-bench"
MODULE = "bench.cluster"
TARGET_FANOUT_P99 = 2.0
TARGET_ROLLOUT = 1.1
TARGET_DRAIN_ROLLOUT = 1.15
LISTEN_QUEUES = ("net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog")  # kernel limits


def _name(run: StoreRun) -> str:
    store = "SQLite, 1 server" if run.store == "sqlite" else "etcd, 2 replicas"
    return f"{store}, {run.agents} agents"


def _handover(ro: Rollout) -> str:
    return f"{_pair(ro.handover)}; {seconds(ro.lock)}; {seconds(ro.steady)}"


def _errors(run: StoreRun) -> int:
    return (
        sum(run.errors.values())
        + run.missed
        + run.not_ready
        + sum(1 for r in _all_rollouts(run) if r.state != "done" or r.on_new_image < r.nodes)
    )


def _all_rollouts(run: StoreRun) -> list[Rollout]:
    return [*run.rollouts, *(d.rollout for d in run.drain_rollouts)]


def targets(runs: Sequence[StoreRun]) -> list[str]:
    rows = ["| run | target | measured | met |", "|---|---|---:|---|"]
    for run in runs:
        pooled = [t for times in run.fanouts for t in times]
        p99 = percentile(pooled, 99)
        rows.append(
            f"| {_name(run)} | fan-out p99 ≤ {TARGET_FANOUT_P99:g} s "
            f"| {seconds(p99)} | {met(p99 <= TARGET_FANOUT_P99)} |"
        )
        if not run.rollouts:
            rows.append(
                f"| {_name(run)} | rollout ≤ {TARGET_ROLLOUT:g}{TIMES} the bound | "
                "not measured | **NO** |"
            )
        for r in run.rollouts:
            rows.append(
                f"| {_name(run)} | rollout of {r.nodes} nodes, "
                f"{r.slots} at a time ≤ {TARGET_ROLLOUT:g}{TIMES} ceil(N / S) {TIMES} "
                f"reboot = {r.bound:.0f} s | {r.wall:.1f} s = {r.ratio:.2f}{TIMES} | "
                f"{met(r.ratio <= TARGET_ROLLOUT and r.state == 'done')} |"
            )
        rows += [f"| {_name(run)} | {row}" for d in run.drain_rollouts for row in drain_targets(d)]
        errors = _errors(run)
        rows.append(f"| {_name(run)} | zero errors | {errors} | {met(errors == 0)} |")
    return rows


def drain_targets(d: DrainRollout) -> list[str]:
    """A drain rollout's three targets: target | measured | met |."""
    r = d.rollout
    what = f"drain rollout of {r.nodes} nodes, {r.slots} at a time, {d.busy} with a job"
    busy = (
        f"{d.drained_busy} drained or rebooted with their job running"
        if d.drained_busy
        else "no node drained or rebooted with its job running"
    )
    return [
        f"{what}: ≤ {TARGET_DRAIN_ROLLOUT:g}{TIMES} max(ceil(N / S) {TIMES} reboot, longest job "
        f"+ reboot) = {r.bound:.1f} s | {r.wall:.1f} s = {r.ratio:.2f}{TIMES} "
        f"| {met(r.ratio <= TARGET_DRAIN_ROLLOUT and r.state == 'done')} |",
        f"{what}: zero jobs interrupted | {d.interrupted} | {met(d.interrupted == 0)} |",
        f"{what}: idle nodes all done before the first busy one | "
        f"{_yes(d.idle_first)}: {busy} | {met(d.idle_first)} |",
    ]


Row = tuple[str, list[str]]  # a figure's label, then its value in each run


def figures(runs: Sequence[StoreRun], opts: Options) -> list[str]:
    """The table of every figure: a row per figure, a column per run."""
    rows = [
        *_fleet_rows(runs, opts),
        *_beat_rows(runs, opts),
        *_fanout_rows(runs),
        *_rollout_rows(runs),
        *_drain_rows(runs),
        *_cost_rows(runs),
    ]
    head = "| | " + " | ".join(_name(r) for r in runs) + " |"
    return [
        head,
        "|---|" + "---:|" * len(runs),
        *(f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows),
    ]


def _fleet_rows(runs: Sequence[StoreRun], opts: Options) -> list[Row]:
    return [
        ("agents (load-generator processes)", [f"{r.agents} ({opts.generators})" for r in runs]),
        (
            "all agents up (first heartbeat and config answered)",
            [f"{r.ready_seconds:.1f} s" for r in runs],
        ),
        (
            f"heartbeat interval of most agents (theirs: {opts.heartbeat:g} s; the server's "
            f"pace at {opts.heartbeat_rate:g}/s when longer)",
            [f"{r.interval:g} s" for r in runs],
        ),
    ]


def _beat_rows(runs: Sequence[StoreRun], opts: Options) -> list[Row]:
    rows = [
        (
            "heartbeats offered (agents / interval; less while answers are slow)",
            [f"{r.offered:.0f}/s" for r in runs],
        ),
        (
            f"heartbeats served (a window of {opts.steady:g} s or the interval, the longer)",
            [f"{r.steady_rate:.0f}/s" for r in runs],
        ),
        ("heartbeat latency p50 / p99", [_pair(r.steady_latency) for r in runs]),
    ]
    if opts.saturate > 0:
        rows += [
            (
                f"heartbeat capacity: served while {opts.saturate_concurrency} more are kept "
                "in flight",
                [f"{r.capacity:.0f}/s" for r in runs],
            ),
            ("closed-loop heartbeat latency p50 / p99", [_pair(r.capacity_latency) for r in runs]),
            (
                f"agents that capacity would hold at one heartbeat per {opts.heartbeat:g} s "
                "(unpaced)",
                [f"{r.capacity * opts.heartbeat:.0f}" for r in runs],
            ),
        ]
    return rows


def _pair(p50_p99: tuple[float, float]) -> str:
    return f"{seconds(p50_p99[0])} / {seconds(p50_p99[1])}"


def _fanout_rows(runs: Sequence[StoreRun]) -> list[Row]:
    rows = [
        (
            f"fan-out, publish {index + 1}: p50 / p95 / p99 / max",
            [
                " / ".join(seconds(percentile(r.fanouts[index], p)) for p in (50, 95, 99, 100))
                if index < len(r.fanouts)
                else ""
                for r in runs
            ],
        )
        for index in range(max((len(r.fanouts) for r in runs), default=0))
    ]
    return [
        *rows,
        (
            "fan-out, all publishes: p99",
            [seconds(percentile([t for ts in r.fanouts for t in ts], 99)) for r in runs],
        ),
        ("agents that missed a generation", [str(r.missed) for r in runs]),
        ("agents never up (no first heartbeat and config)", [str(r.not_ready) for r in runs]),
    ]


def _rollout_rows(runs: Sequence[StoreRun]) -> list[Row]:
    rows: list[Row] = []
    for index in range(max((len(r.rollouts) for r in runs), default=0)):
        found = [r.rollouts[index] if index < len(r.rollouts) else None for r in runs]
        first = found[0]
        label = f"rollout N={first.nodes} S={first.slots}: wall / bound" if first else "rollout"
        rows.append((label, [_rollout(ro) if ro else "" for ro in found]))
        rows.append(
            (
                "  slot handover (steady-state → next node told) p50 / max; told → pre-reboot "
                "answered p50; boot → steady-state sent p50",
                [_handover(ro) if ro else "" for ro in found],
            )
        )
    rows.append(("pre-reboot answered 409 (slot not free yet)", [str(r.lock_waits) for r in runs]))
    return rows


Found = Sequence[DrainRollout | None]  # a drain rollout in each run, or None


def _drain_rows(runs: Sequence[StoreRun]) -> list[Row]:
    rows: list[Row] = []
    for index in range(max((len(r.drain_rollouts) for r in runs), default=0)):
        found = [r.drain_rollouts[index] if index < len(r.drain_rollouts) else None for r in runs]

        def cells(show: Callable[[DrainRollout], str], of: Found = found) -> list[str]:
            return [show(d) if d else "" for d in of]

        first = next(d.rollout for d in found if d)
        rows += [
            (
                f"drain rollout N={first.nodes} S={first.slots}: wall / bound",
                cells(lambda d: _rollout(d.rollout, DRAIN_IMAGE)),
            ),
            (
                "  nodes with a job when it started (the longest); jobs interrupted by a reboot",
                cells(lambda d: f"{d.busy} ({d.longest_job:.1f} s); {d.interrupted}"),
            ),
            (
                "  nodes drained (or rebooted) with their job running; every other node done "
                "before the first of those; nodes with a job done before the last node without "
                "one",
                cells(lambda d: f"{d.drained_busy}; {_yes(d.idle_first)}; {d.busy_before_idle}"),
            ),
            (
                "  drain hook run → pre-reboot answered p50; slot handover p50 / max",
                cells(lambda d: f"{seconds(d.drain_wait)}; {_pair(d.rollout.handover)}"),
            ),
        ]
    return rows


def _yes(ok: bool) -> str:
    return "yes" if ok else "no"


def _rollout(ro: Rollout, image: str = NEW_IMAGE) -> str:
    return (
        f"{ro.wall:.1f} s / {ro.bound:.0f} s = {ro.ratio:.2f}{TIMES}, {ro.state}, "
        f"{ro.on_new_image}/{ro.nodes} on {image}, at most {ro.max_out} out"
    )


def _cost_rows(runs: Sequence[StoreRun]) -> list[Row]:
    kinds = ["hostos serve", "etcd", "load generators", "all processes on the machine"]
    return [
        ("errors", [str(_errors(r)) for r in runs]),
        ("TCP connections opened by the agents", [str(r.connects) for r in runs]),
        (
            "the kernel, meanwhile: accept queue full / SYN cookies sent / cookies failed (reset)",
            [" / ".join(str(r.kernel.get(k, "?")) for k in TCP_COUNTERS) for r in runs],
        ),
        ("wall time of the store's run", [f"{r.wall:.0f} s" for r in runs]),
        (
            "CPU used: " + ", ".join(kinds),
            [" / ".join(f"{r.cpu.get(k, 0.0):.0f} s" for k in kinds) for r in runs],
        ),
        (
            "1-minute load average: at the start / the most seen",
            [f"{r.load[0]:.2f} / {r.load[1]:.2f}" for r in runs],
        ),
    ]


def _drain_line(opts: Options) -> list[str]:
    if opts.drain_jobs <= 0:
        return []
    return [
        f"- drain rollout: reboot {opts.drain_reboot_time:g} s, {opts.drain_jobs:.0%} of the "
        f"role's nodes with a job of up to {JOBS_PER_REBOOT:g} {TIMES} the reboot (seed "
        f"{opts.job_seed}), the servers' `--drain-interval {opts.drain_interval:g}`"
    ]


def report(runs: Sequence[StoreRun], opts: Options, argv: Sequence[str]) -> str:
    lines = [
        "## `hostos serve` under simulated agents (cluster-bench)",
        "",
        f"Measured {now()} at {commit_line()}: `{command(MODULE, *argv)}`.",
        "",
        f"- machine: {machine()}; the load generators, the servers and etcd all share it; "
        f"listen queues: {sysctls(*LISTEN_QUEUES)}",
        f"- agents: heartbeat every {opts.heartbeat:g} s or at the server's pace "
        f"(`--heartbeat-rate {opts.heartbeat_rate:g}`), long-poll `wait={opts.wait:g}` "
        f"with `image=`, reboot {opts.reboot:g} s",
        *_drain_line(opts),
        "",
        "### Targets",
        "",
        *targets(runs),
        "",
        "### All figures",
        "",
        *figures(runs, opts),
    ]
    notes = [f"- {_name(r)}: {r.note}" for r in runs if r.note]
    samples = [f"- {_name(r)}: `{s}`" for r in runs for s in r.samples[:5]]
    if notes or samples:
        lines += ["", *notes, *samples]
    lines += [
        "",
        HOW,
        *(["", DRAIN_HOW] if opts.drain_jobs > 0 else []),
        "",
        "Reproduce (the run above):",
        "",
        "```sh",
        command(MODULE, *argv),
        "```",
        "",
        "This section is written by `python -m bench.cluster --write`; its numbers are never "
        "edited by hand.",
    ]
    return "\n".join(lines)


HOW = """How it is measured: per store, real `hostos serve` processes (SQLite in a temporary
directory; or two replicas on one etcd started for the run, its data on disk), the admin
token from a file, every node's token issued and its first image assigned through the API.
The agents run as asyncio tasks in a few load-generator processes, each agent with its own
node id, token and connections, doing what the node agent does (see the top of
`bench/cluster/__init__.py`); on etcd they are spread over both replicas. Heartbeats served =
the heartbeats answered 200 within the window, divided by its length; capacity = the same while,
on top of the fleet, that many heartbeats are kept in flight back to back. Fan-out = for each
agent, from just before `POST /v1/site` of a generation that changes every role until its
long-poll returns that generation (one clock: all on one machine). Rollout = from `POST
/v1/rollouts` until the stored rollout's `updated_at` of its `done` state; the bound is
ceil(N / S) times the agents' reboot time, the time the reboots alone take; "out" is counted by
the agents, from the pre-reboot answer to the steady-state request. Errors = every answer
that was not the expected one (heartbeat 200, config 200/304, pre-reboot 200/409,
steady-state 200), every request without an answer, 5xx lines or tracebacks in the server
logs, an agent that never saw a generation, a rollout not done or a node not on the new
image. A reconnect because the server closed a keep-alive connection is not an error (it
closes idle ones after 5 s, so at a heartbeat interval above that each heartbeat opens a
connection)."""


DRAIN_HOW = f"""The drain rollout (`--drain-jobs`): after the other rollouts, the site is published
again with the rollout role's `rollout: {{drain: {{command, check, resume}}}}` (the generic
form; its programs are three sh scripts the bench writes into a hooks directory, the servers'
`--drain-hooks`), the agents' reboot set to `--drain-reboot`, and the role is rolled out to
{DRAIN_IMAGE}. Just before `POST /v1/rollouts`, the seeded pick of nodes gets a job each, all
starting then, of a length uniform up to {JOBS_PER_REBOOT:g} {TIMES} the reboot time: its end
time in a file of a jobs directory. The check hook prints 1 and exits 1 while its node's job
has not ended, else exits 0; the drain and resume hooks mark the node drained or not and log
the time. An agent counts its job interrupted when its pre-reboot is answered before its
job's end. The bound is max(ceil(N / S) {TIMES} reboot, the longest job drawn + reboot); wall
time as for the other rollouts. The servers count every pending and draining node's jobs
each `--drain-interval` (one check program per node), and a drained node is granted only
after a count that started after its drain: the interval is that wait, and the checks' cost.
A node is busy when taken if its job had not ended when the drain hook ran for it (or, never
drained, when it rebooted); "idle nodes all done before the first busy one" compares the
steady-state times of the nodes taken idle with those taken busy: a job that ended makes its
node idle, so with no node taken busy it is met. The nodes with a job at the start done
before the last node without one are counted beside it."""
