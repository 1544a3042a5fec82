"""The operator's cluster commands: `publish`, `diff`, `nodes --server`, `rollout …`.

hostos/cli/main.py hands these the parsed options; the `rollout` sub-app is mounted there with
`app.add_typer(rollout_app, name="rollout")`.  This module imports only typer at the top, so
`hostos --help` stays fast; the client, the loader and rich come in inside the commands.
Exit codes as everywhere: 0 ok, 1 runtime failure (the server away, a rollout that did not
reach its target), 2 bad input (the site, an unknown role, a command the rollout refuses).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from hostos.cli.app import App
from hostos.cli.exits import EXIT_INPUT, EXIT_RUNTIME, fail, guarded
from hostos.cli.output import Format, emit, print_table
from hostos.cli.params import DEFAULT_ADMIN_TOKEN_FILE, AdminTokenOpt, OutputOpt, ServerOpt
from hostos.cluster import pacing

if TYPE_CHECKING:
    from hostos.cluster.admin import Client

WATCH_SECONDS = 1.0  # between two reads of `rollout status --watch`
WATCH_RETRIES = 30  # reads that may fail in a row while watching (a server restarting)
ACTIVE = ("running", "rolling-back")
INPUT_STATUSES = frozenset({400, 404, 409, 422})
T = TypeVar("T")


def admin_client(server: str, token_file: str) -> Client:
    from hostos.cluster.admin import Client
    from hostos.cluster.auth import AdminTokenError, read_admin_token
    from hostos.cluster.client import BadURL

    try:
        return Client(server, read_admin_token(token_file))
    except (AdminTokenError, BadURL) as exc:
        fail(str(exc), EXIT_INPUT)


def remote(action: Callable[[], T]) -> T:
    """Run action; the server's refusal of bad input → exit 2, anything else → exit 1."""
    from hostos.cluster.client import ServerError
    from hostos.errors import RuntimeFailure

    try:
        return action()
    except ServerError as exc:
        fail(str(exc), EXIT_INPUT if exc.status in INPUT_STATUSES else EXIT_RUNTIME)
    except RuntimeFailure as exc:
        fail(str(exc))


def _resolved_site(site: str) -> dict[str, Any]:
    """The site loaded, checked and resolved locally (problems: one line each, exit 2)."""
    from hostos.cluster.admin import site_document
    from hostos.site.load import load_site

    return guarded(lambda: site_document(load_site(site)))


# -- publish, diff, nodes ------------------------------------------------------------------


def publish_site(site: str, server: str, token_file: str, output: Format = Format.table) -> None:
    """Validate the site here, then publish it: a new generation, or no change."""
    document = _resolved_site(site)
    client = admin_client(server, token_file)
    published = remote(lambda: client.publish(document))
    if output.document:
        emit(published, output)
    elif published.get("changed"):
        typer.echo(
            f"published generation {published['generation']} ({str(published['hash'])[:12]})"
        )
    else:
        typer.echo(f"no change (generation {published['generation']})")


def diff_remote(site: str, server: str, token_file: str, output: Format = Format.table) -> None:
    """What publishing the site would change, per role; writes nothing."""
    document = _resolved_site(site)
    client = admin_client(server, token_file)
    diff = remote(lambda: client.diff(document))
    current = remote(client.current_site) if diff.get("changed") else None
    if output.document:
        emit(diff, output)
        return
    for line in diff_lines(diff, current, document):
        typer.echo(line)


def diff_lines(
    diff: Mapping[str, Any], current: Mapping[str, Any] | None, new: Mapping[str, Any]
) -> list[str]:
    """Per role: added, removed or changed (the host image change spelled out, with the
    command that rolls it out), and the nodes that come, go or change in it."""
    if not diff.get("changed"):
        return [f"no change (generation {diff.get('generation', 0)})"]
    old_roles = dict(current.get("roles", {})) if current else {}
    old_nodes = dict(current.get("nodes", {})) if current else {}
    roles, nodes = diff.get("roles", {}), diff.get("nodes", {})
    lines = [f"against generation {diff.get('generation', 0)}:"]
    touched = sorted(
        {
            *roles.get("added", []),
            *roles.get("removed", []),
            *roles.get("changed", []),
            *_node_roles(nodes, old_nodes, new),
        }
    )
    for role in touched:
        lines.append(_role_line(role, roles, old_roles, new.get("roles", {})))
        lines += _node_lines(role, nodes, old_nodes, new.get("nodes", {}))
    return lines


def _node_roles(
    nodes: Mapping[str, Any], old: Mapping[str, Any], new: Mapping[str, Any]
) -> set[str]:
    names = [*nodes.get("added", []), *nodes.get("removed", []), *nodes.get("changed", [])]
    return {
        str(side[n].get("role", ""))
        for n in names
        for side in (old, new)
        if n in side and isinstance(side[n], Mapping)
    }


def _role_line(
    role: str, roles: Mapping[str, Any], old: Mapping[str, Any], new: Mapping[str, Any]
) -> str:
    if role in roles.get("added", []):
        return f"+ role {role}"
    if role in roles.get("removed", []):
        return f"- role {role}"
    if role not in roles.get("changed", []):
        return f"  role {role}: spec unchanged"
    before, after = _image(old.get(role)), _image(new.get(role))
    if before != after and after:
        return (
            f"~ role {role}: host image {before or '-'} → {after} "
            f"(roll it out: hostos rollout start {role} --image {after})"
        )
    return f"~ role {role}: spec changed (the nodes apply it live)"


def _image(spec: Any) -> str | None:
    image = spec.get("image") if isinstance(spec, Mapping) else None
    return image if isinstance(image, str) else None


def _node_lines(
    role: str, nodes: Mapping[str, Any], old: Mapping[str, Any], new: Mapping[str, Any]
) -> list[str]:
    def in_role(names: Sequence[str], *sides: Mapping[str, Any]) -> list[str]:
        return [
            n
            for n in names
            if any(isinstance(s.get(n), Mapping) and s[n].get("role") == role for s in sides)
        ]

    lines = []
    for mark, key, sides in (
        ("+", "added", (new,)),
        ("-", "removed", (old,)),
        ("~", "changed", (old, new)),
    ):
        names = in_role(nodes.get(key, []), *sides)
        if names:
            lines.append(
                f"    {mark} {len(names)} node{'s' if len(names) != 1 else ''} "
                f"{key}: {_some(names)}"
            )
    return lines


def _some(names: Sequence[str], shown: int = 8) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def node_state(record: Mapping[str, Any], now: float) -> str:
    """rebooting (assigned an image it has not booted yet), up, stale (silent for three
    heartbeats at the pace the server asked, and at least a minute: pacing.py), or unseen
    (never sent a heartbeat)."""
    assigned, booted = record.get("assigned_image"), record.get("booted_image")
    seen = float(record.get("last_seen") or 0.0)
    if assigned and assigned != booted:
        return "rebooting"
    if seen <= 0:
        return "unseen"
    paced = float(record.get("heartbeat_seconds") or 0.0)
    return "stale" if pacing.is_silent(seen, paced, now) else "up"


def _ago(seen: float, now: float) -> str:
    if seen <= 0:
        return "never"
    from hostos.site.quantity import format_duration

    return f"{format_duration(max(0.0, round(now - seen)))} ago"


def node_rows(records: Sequence[Mapping[str, Any]], now: float) -> list[list[str]]:
    return [
        [
            str(r.get("id")),
            str(r.get("role") or "-"),
            node_state(r, now),
            str(r.get("booted_image") or "-"),
            str(r.get("assigned_image") or "-"),
            _ago(float(r.get("last_seen") or 0.0), now),
        ]
        for r in records
    ]


def nodes_remote(server: str, token_file: str, output: Format = Format.table) -> None:
    """Who is up, stale, rebooting, on which image, as the server sees them."""
    client = admin_client(server, token_file)
    records, now = remote(client.nodes), time.time()
    if output.document:
        emit([{**r, "state": node_state(r, now)} for r in records], output)
        return
    print_table(
        ["NODE", "ROLE", "STATE", "BOOTED", "ASSIGNED", "LAST SEEN"], node_rows(records, now)
    )


# -- rollouts ------------------------------------------------------------------------------

rollout_app = App(
    help="Roll a new host image across a role: reboots in health-gated batches (admin)."
)

RoleArg = Annotated[str, typer.Argument(help="the role whose rollout this is", metavar="ROLE")]
WatchOpt = Annotated[
    bool,
    typer.Option("--watch", "-w", help="follow it until it stops (a progress bar on a terminal)"),
]


@rollout_app.command("start")
def start(
    role: RoleArg,
    image: Annotated[
        str, typer.Option(help="the host image generation to roll out", metavar="IMAGE")
    ],
    server: ServerOpt,
    max_unavailable: Annotated[
        str | None,
        typer.Option(
            help="nodes out at once: a count, or a percentage of the role's nodes (25%) "
            "[default: the role's rollout.max_unavailable, else 1]",
            metavar="N|PERCENT",
        ),
    ] = None,
    canary: Annotated[
        int | None,
        typer.Option(
            help="nodes updated first, alone [default: the role's rollout.canary, else 0]",
            metavar="N",
        ),
    ] = None,
    health_timeout: Annotated[
        str | None,
        typer.Option(
            help="how long a node may take from its grant to healthy (10m, 90s) "
            "[default: the role's rollout.health_timeout, else 10m]",
            metavar="DURATION",
        ),
    ] = None,
    auto_rollback: Annotated[
        bool,
        typer.Option(
            "--auto-rollback",
            help="on a failure, give every updated node its previous image back "
            "[default: the role's rollout.auto_rollback, else off]",
        ),
    ] = False,
    no_drain: Annotated[
        bool,
        typer.Option(
            "--no-drain",
            help="reboot without the drain the role's rollout asks for: running jobs die",
        ),
    ] = False,
    previous: Annotated[
        str | None,
        typer.Option(
            help="the image to roll back to (default: what the role's nodes run)",
            metavar="IMAGE",
        ),
    ] = None,
    watch: WatchOpt = False,
    admin_token_file: AdminTokenOpt = DEFAULT_ADMIN_TOKEN_FILE,
) -> None:
    """Start rolling ROLE's nodes onto --image."""
    from hostos.site.quantity import parse_duration

    timeout = None
    try:
        timeout = None if health_timeout is None else parse_duration(health_timeout)
    except ValueError as exc:
        fail(f"--health-timeout: {exc}", EXIT_INPUT)
    unavailable: int | str | None = (
        int(max_unavailable)
        if max_unavailable is not None and max_unavailable.isdigit()
        else max_unavailable
    )
    request = {
        "role": role,
        "image": image,
        "max_unavailable": unavailable,
        "canary": canary,
        "health_timeout": timeout,
        "auto_rollback": True if auto_rollback else None,
        "previous_image": previous,
        "drain": not no_drain,
    }
    client = admin_client(server, admin_token_file)
    status = remote(lambda: client.start_rollout(request))
    typer.echo(
        f"started {status['id']}: {role} {status['spec']['previous_image']} → {image}, "
        f"{status['max_unavailable']} at a time"
        + (f", canaries {', '.join(status['canaries'])}" if status["canaries"] else "")
        + f", {drain_words(status['spec'])}"
    )
    if watch:
        raise typer.Exit(remote(lambda: follow(client, role)))


@rollout_app.command("status")
def status(
    server: ServerOpt,
    role: Annotated[
        str | None, typer.Argument(help="a role (default: every rollout)", metavar="ROLE")
    ] = None,
    watch: WatchOpt = False,
    output: OutputOpt = Format.table,
    admin_token_file: AdminTokenOpt = DEFAULT_ADMIN_TOKEN_FILE,
) -> None:
    """Where the rollouts are: nodes per state, why it paused, the last actions."""
    client = admin_client(server, admin_token_file)
    if role is None:
        every = remote(client.rollouts)
        if output.document:
            emit(every, output)
            return
        for line in [progress_line(one) for one in every] or ["no rollouts"]:
            typer.echo(line)
        return
    if watch and not output.document:
        raise typer.Exit(remote(lambda: follow(client, role)))
    found = remote(lambda: client.rollout(role))
    if output.document:
        emit(found, output)
        return
    for line in status_lines(found):
        typer.echo(line)


def _command(name: str, doc: str) -> None:
    def run(
        role: RoleArg, server: ServerOpt, admin_token_file: AdminTokenOpt = DEFAULT_ADMIN_TOKEN_FILE
    ) -> None:
        client = admin_client(server, admin_token_file)
        found = remote(lambda: client.rollout_command(role, name))
        typer.echo(progress_line(found))

    run.__doc__ = doc
    rollout_app.command(name)(run)


_command("pause", "Grant no more reboots; nodes already on their way still finish.")
_command("resume", "Carry on after a pause (failed nodes get a fresh deadline).")
_command("abort", "Stop for good, leaving every node on the image it has.")
_command("rollback", "Give every node the rollout touched its previous image back.")


def progress_line(status: Mapping[str, Any]) -> str:
    counts = status.get("counts", {})
    flight = sum(counts.get(s, 0) for s in ("granted", "rebooting", "booted", "resuming"))
    finished = counts.get("reverted", 0) if status.get("reverting") else counts.get("done", 0)
    spec = status.get("spec", {})
    draining = f"{counts['draining']} draining, " if counts.get("draining") else ""
    return (
        f"{spec.get('role')}: {status.get('state')} {spec.get('previous_image')} → "
        f"{spec.get('target_image')}, {finished}/{status.get('total', 0)} "
        f"{'reverted' if status.get('reverting') else 'done'}, {draining}{flight} in flight, "
        f"{counts.get('failed', 0)} failed ({status.get('reason', '')})"
    )


def drain_words(spec: Mapping[str, Any]) -> str:
    """How the rollout drains its nodes, for the status header."""
    from hostos.site.quantity import format_duration

    drain = spec.get("drain")
    if not isinstance(drain, Mapping):
        return "no drain"
    kind = "slurm" if drain.get("kind") == "slurm" else "commands"
    return f"drain {kind} (timeout {format_duration(float(drain.get('timeout') or 0))})"


def node_state_words(progress: Mapping[str, Any]) -> str:
    """A node's state as `rollout status` shows it: draining with the jobs left, a node
    left drained for its owner's reason."""
    state = str(progress.get("state", ""))
    jobs = progress.get("jobs")
    if state == "draining":
        state += " (jobs not counted yet)" if jobs is None else f" ({jobs} job(s) left)"
    if progress.get("held") and state in ("done", "reverted"):
        state += f", left drained: {progress['held']}"
    elif progress.get("held"):
        state += f" (drained before: {progress['held']})"
    return state


def status_lines(status: Mapping[str, Any]) -> list[str]:
    spec = status.get("spec", {})
    lines = [
        f"rollout {status.get('id')}",
        progress_line(status),
        f"  max unavailable {status.get('max_unavailable')}, canaries "
        f"{', '.join(status.get('canaries', [])) or 'none'}, health timeout "
        f"{spec.get('health_timeout')}s, auto-rollback "
        f"{'on' if spec.get('auto_rollback') else 'off'}, {drain_words(spec)}",
        "",
    ]
    rows = [
        [
            node,
            node_state_words(p),
            p.get("image") or "-",
            "yes" if p.get("slot") else "-",
            p.get("reason") or "",
        ]
        for node, p in sorted(status.get("nodes", {}).items())
    ]
    widths = [
        max(len(str(c)) for c in col)
        for col in zip(["NODE", "STATE", "IMAGE", "SLOT", "REASON"], *rows, strict=False)
    ]
    for row in [["NODE", "STATE", "IMAGE", "SLOT", "REASON"], *rows]:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())
    recent = list(status.get("log", []))[-10:]
    if recent:
        lines += ["", "recent:", *(f"  {log_line(e)}" for e in recent)]
    return lines


def log_line(entry: Mapping[str, Any]) -> str:
    stamp = time.strftime("%H:%M:%S", time.gmtime(float(entry.get("at") or 0)))
    what = " ".join(str(entry[k]) for k in ("kind", "node", "image") if entry.get(k))
    return f"{stamp} {what}: {entry.get('reason', '')}"


def follow(client: Client, role: str) -> int:
    """Show the rollout until it is no longer running or rolling back: new actions as
    lines, progress as a bar on a terminal, else a line whenever it moves.  0 when it ended
    done; 1 when it paused, was aborted or rolled back."""
    if sys.stdout.isatty():
        return _follow_bar(client, role)
    last = ""
    seen = 0.0
    while True:
        found = _read(client, role)
        seen = _print_new(found, seen, typer.echo)
        line = progress_line(found)
        if line != last:
            typer.echo(line)
            last = line
        if found.get("state") not in ACTIVE:
            return _outcome(found)
        time.sleep(WATCH_SECONDS)


def _follow_bar(client: Client, role: str) -> int:
    from rich import progress

    columns = (
        progress.TextColumn("{task.description}"),
        progress.BarColumn(),
        progress.MofNCompleteColumn(),
        progress.TimeElapsedColumn(),
    )
    seen = 0.0
    with progress.Progress(*columns) as bar:
        task = bar.add_task(role, total=None)
        while True:
            found = _read(client, role)
            seen = _print_new(found, seen, bar.console.print)
            counts = found.get("counts", {})
            finished = counts.get("reverted" if found.get("reverting") else "done", 0)
            bar.update(
                task,
                total=found.get("total", 0),
                completed=finished,
                description=f"{role} {found.get('state')}",
            )
            if found.get("state") not in ACTIVE:
                break
            time.sleep(WATCH_SECONDS)
    typer.echo(progress_line(found))
    return _outcome(found)


def _read(client: Client, role: str) -> dict[str, Any]:
    """The rollout's status; a server away for a moment (a restart) is waited for, its
    refusals (ServerError) are not."""
    from hostos.cluster.client import ServerError
    from hostos.errors import RuntimeFailure

    for _ in range(WATCH_RETRIES - 1):
        try:
            return client.rollout(role)
        except ServerError:
            raise
        except RuntimeFailure:
            time.sleep(WATCH_SECONDS)
    return client.rollout(role)


def _print_new(status: Mapping[str, Any], seen: float, out: Callable[[str], Any]) -> float:
    """Print the log entries newer than seen; the newest time printed."""
    for entry in status.get("log", []):
        at = float(entry.get("at") or 0)
        if at > seen:
            out(log_line(entry))
    return max([seen, *(float(e.get("at") or 0) for e in status.get("log", []))])


def _outcome(status: Mapping[str, Any]) -> int:
    return 0 if status.get("state") == "done" else EXIT_RUNTIME
