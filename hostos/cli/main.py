"""The `hostos` command: a thin Typer shell over the package.

Imports of the heavy parts happen inside the commands, so `hostos --help`
stays fast.  Exit codes: 0 ok, 1 runtime failure, 2 bad input.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hostos import __version__
from hostos.cli.app import App, Command, Group
from hostos.cli.exits import EXIT_INPUT, EXIT_RUNTIME, fail, guarded
from hostos.cli.output import Format, emit, emit_yaml, print_table
from hostos.cli.params import (
    DEFAULT_ADMIN_TOKEN_FILE,
    AdminTokenOpt,
    EngineOpt,
    NamespaceOpt,
    NodeOpt,
    OutputOpt,
    RoleOpt,
    ServerOpt,
    SiteArg,
    SocketOpt,
)
from hostos.cluster.pacing import RATE as HEARTBEAT_RATE
from hostos.engine.kind import EngineKind

if TYPE_CHECKING:
    from collections.abc import Mapping

    from hostos.engine.connect import EarlyEngine
    from hostos.node.holds import Holds
    from hostos.node.status import NodeStatus, UnitStatus


class Commands(Group):
    """`hostos --help` lists the commands in the order a newcomer uses them: check and
    look at a site, converge this machine and watch it, then the cluster, then the image."""

    order = (
        "validate",
        "render",
        "plan",
        "apply",
        "status",
        "logs",
        "down",
        "supervise",
        "serve",
        "publish",
        "diff",
        "nodes",
        "tokens",
        "rollout",
        "image",
        "schema",
    )


app = App(
    help="Stateless cluster nodes: run each role's container units on Docker or Podman.",
    group=Commands,
)

ClusterOpt = Annotated[
    str | None,
    typer.Option(
        help="a hostos serve (http://HOST:PORT): work on the cluster rather than this machine",
        metavar="URL",
    ),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hostos {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """hostos: stateless nodes, container units, rolling reboots."""


@app.command()
def validate(site: SiteArg = "units") -> None:
    """Check a site definition; every problem as file:line:col: key: message (hint)."""
    from hostos.site.load import load_site

    loaded = guarded(lambda: load_site(site))
    typer.echo(
        f"{site}: {len(loaded.units)} units, {len(loaded.roles)} roles, "
        f"{len(loaded.nodes)} nodes: valid"
    )


def load_spec(site: str, node: str | None, role: str | None) -> Any:
    """The resolved spec of --node or --role (exactly one)."""
    from hostos.site.load import load_site
    from hostos.site.resolve import resolve_node, resolve_role

    if (node is None) == (role is None):
        fail("give exactly one of --node or --role", EXIT_INPUT)

    def resolve() -> Any:
        loaded = load_site(site)
        return resolve_node(loaded, node) if node else resolve_role(loaded, str(role))

    return guarded(resolve)


@app.command()
def render(
    site: SiteArg = "units",
    node: NodeOpt = None,
    role: RoleOpt = None,
    output: Annotated[
        Format,
        typer.Option(
            "--output",
            "-o",
            help="table: the spec as YAML, as a person writes it; json or yaml: the whole "
            "resolved document (every field, seconds and bytes), for programs",
        ),
    ] = Format.table,
    full: Annotated[
        bool, typer.Option("--full", help="show every field, defaults included")
    ] = False,
) -> None:
    """Print the resolved spec of a node or role, with a content hash per unit."""
    from hostos.site.resolve import spec_document, spec_view

    spec = load_spec(site, node, role)
    if output.document:
        emit(spec_document(spec), output)
    else:
        emit_yaml(spec_view(spec, full=full))


@app.command()
def nodes(
    site: SiteArg = "units",
    output: OutputOpt = Format.table,
    server: ClusterOpt = None,
    admin_token_file: AdminTokenOpt = DEFAULT_ADMIN_TOKEN_FILE,
) -> None:
    """List the inventory, hostlists expanded; with --server, the cluster's nodes.

    With --server: up, stale or rebooting, booted and assigned image, last heartbeat."""
    from hostos.site.load import load_site

    if server is not None:
        from hostos.cli.cluster import nodes_remote

        nodes_remote(server, admin_token_file, output)
        return

    loaded = guarded(lambda: load_site(site))
    rows = [n.model_dump() for n in loaded.nodes]
    if output.document:
        emit(rows, output)
        return
    print_table(
        ["NODE", "ROLE", "MAC", "LABELS"],
        [
            [
                r["name"],
                r["role"],
                r["mac"] or "-",
                ",".join(f"{k}={v}" for k, v in sorted(r["labels"].items())) or "-",
            ]
            for r in rows
        ],
    )


@app.command()
def schema(
    kind: Annotated[
        str | None,
        typer.Argument(help="unit, role or nodes; all three when left out", metavar="KIND"),
    ] = None,
) -> None:
    """Print the JSON Schema of unit, role and inventory files, for editors."""
    from hostos.cli.output import emit_json
    from hostos.site.schema import KINDS, all_schemas
    from hostos.site.schema import schema as one

    if kind is None:
        emit_json(all_schemas())
    elif kind in KINDS:
        emit_json(one(kind))
    else:
        fail(f"unknown kind '{kind}' (unit, role or nodes)", EXIT_INPUT)


@contextmanager
def engine_session(kind: EngineKind, early: EarlyEngine | None = None) -> Iterator[Any]:
    """A connected engine, closed (and a private podman service stopped) at the end.
    early: an EarlyEngine whose engine, if it got one, is used rather than a new one."""
    from hostos.engine.base import EngineError
    from hostos.engine.connect import connect

    engine = early.engine if early is not None else None
    if engine is None:
        try:
            engine = connect(kind)
        except EngineError as exc:
            fail(str(exc))
    try:
        yield engine
    except EngineError as exc:
        fail(str(exc))
    finally:
        engine.close()


def early_engine(kind: EngineKind) -> EarlyEngine:
    """Connect and list the owned containers in the background while the command imports
    what it needs and reads the site (see hostos.engine.connect.EarlyEngine)."""
    from hostos.engine.connect import EarlyEngine

    return EarlyEngine(kind)


@contextmanager
def closed_on_error(early: EarlyEngine) -> Iterator[None]:
    """Close the early engine when the block fails (bad input exits 2 here)."""
    try:
        yield
    except BaseException:
        early.close()
        raise


def _progress(line: str) -> None:
    typer.echo(f"  {line}", err=True)


def supervised(namespace: str) -> tuple[Mapping[str, str] | None, Holds]:
    """The mount sources and holds of the supervisor running for namespace (when its
    status API answers), for prepare(): plan and apply then show, and do, what it will."""
    from hostos.node.holds import NO_HOLDS
    from hostos.node.status_socket import socket_path

    path = socket_path(namespace)
    if not os.path.exists(path):  # no supervisor here: the status types are not needed
        return None, NO_HOLDS
    from hostos.node.status import read_status

    live = read_status(path)
    return (None, NO_HOLDS) if live is None else (live.sources(), live.holds())


@app.command("plan")
def plan_command(
    site: SiteArg = "units",
    node: NodeOpt = None,
    role: RoleOpt = None,
    engine: EngineOpt = EngineKind.auto,
    namespace: NamespaceOpt = "",
    output: OutputOpt = Format.table,
) -> None:
    """Show what apply would change on this machine, and why. Changes nothing.

    When a supervisor runs here, the plan is its own: units it holds back (a mount not
    ready, crash backoff) and their dependents show as `wait`, with the reason."""
    early = early_engine(engine)
    with closed_on_error(early):
        from hostos.cli.report import plan_json, plan_lines
        from hostos.node.converge import prepare

        spec = load_spec(site, node, role)
    sources, holds = supervised(namespace)
    with engine_session(engine, early) as conn:
        prepared = prepare(
            conn,
            spec,
            site,
            fetch=False,
            mount_sources=sources,
            namespace=namespace,
            listed=early.listed,
            holds=holds,
        )
    if output.document:
        emit(plan_json(prepared.actions), output)
    else:
        typer.echo("\n".join(plan_lines(prepared.actions)))


# apply's options that only mean something on this machine: with --server they are refused
# rather than ignored (a --dry-run that published would be the worst surprise).
LOCAL_ONLY = ("dry_run", "node", "role", "engine", "namespace", "concurrency")


@app.command()
def apply(
    ctx: typer.Context,
    site: SiteArg = "units",
    node: NodeOpt = None,
    role: RoleOpt = None,
    engine: EngineOpt = EngineKind.auto,
    namespace: NamespaceOpt = "",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan only")] = False,
    output: OutputOpt = Format.table,
    concurrency: Annotated[int, typer.Option(help="units started at once", metavar="N")] = 8,
    server: Annotated[
        str | None,
        typer.Option(help="the same as hostos publish SITE --server URL", metavar="URL"),
    ] = None,
    admin_token_file: AdminTokenOpt = DEFAULT_ADMIN_TOKEN_FILE,
) -> None:
    """Converge this machine's containers on the units of a node or role.

    When a supervisor runs here, what it holds back waits here too (see hostos plan)."""
    if server is not None:
        _refuse_local_options(ctx, site, server)
        from hostos.cli.cluster import publish_site

        publish_site(site, server, admin_token_file, output)
        return
    early = early_engine(engine)
    with closed_on_error(early):
        from hostos.cli.report import outcome_line, outcomes_json, plan_json, plan_lines
        from hostos.node.converge import prepare
        from hostos.node.execute import Options, execute

        spec = load_spec(site, node, role)
    text = not output.document
    started = time.monotonic()
    sources, holds = supervised(namespace)
    with engine_session(engine, early) as conn:
        prepared = prepare(
            conn,
            spec,
            site,
            fetch=not dry_run,
            progress=_progress if text else lambda line: None,
            mount_sources=sources,
            namespace=namespace,
            listed=early.listed,
            holds=holds,
        )
        if text:
            typer.echo("\n".join(plan_lines(prepared.actions)))
        if dry_run or not any(a.changes for a in prepared.actions):
            outcomes = []
        else:
            report = (lambda o: typer.echo(outcome_line(o))) if text else (lambda o: None)
            outcomes = execute(conn, prepared.actions, Options(concurrency=concurrency), report)
    changes = sum(1 for o in outcomes if o.ok and o.kind.value != "noop")
    failed = sum(1 for o in outcomes if not o.ok)
    seconds = round(time.monotonic() - started, 3)
    if output.document:
        emit(
            {
                "role": spec.role.role,
                "node": spec.node,
                "dry_run": dry_run,
                "actions": plan_json(prepared.actions),
                "results": outcomes_json(outcomes),
                "changes": changes,
                "failed": failed,
                "seconds": seconds,
            },
            output,
        )
    elif outcomes:
        typer.echo(f"{changes} changes, {failed} failed in {seconds:.2f}s")
    if failed:
        raise typer.Exit(EXIT_RUNTIME)


def _refuse_local_options(ctx: typer.Context, site: str, server: str) -> None:
    """apply --server publishes: exit 2 when an option of this machine's apply is given."""
    given = [
        "--" + name.replace("_", "-")
        for name in LOCAL_ONLY
        if (source := ctx.get_parameter_source(name)) is not None and source.name == "COMMANDLINE"
    ]
    if given:
        fail(
            f"apply --server publishes the whole site to the cluster and takes no "
            f"{', '.join(given)}",
            EXIT_INPUT,
            f"use hostos diff {site} --server {server} to see what a publish would change, "
            f"hostos publish {site} --server {server} to publish",
        )


@app.command()
def publish(
    site: SiteArg = "units",
    server: ServerOpt = "",
    admin_token_file: AdminTokenOpt = DEFAULT_ADMIN_TOKEN_FILE,
    output: OutputOpt = Format.table,
) -> None:
    """Check the site here, then publish it as the cluster's next generation."""
    from hostos.cli.cluster import publish_site

    _need_server("publish", server)
    publish_site(site, server, admin_token_file, output)


@app.command()
def diff(
    site: SiteArg = "units",
    server: ServerOpt = "",
    admin_token_file: AdminTokenOpt = DEFAULT_ADMIN_TOKEN_FILE,
    output: OutputOpt = Format.table,
) -> None:
    """Show per role what `hostos publish SITE` would change. Changes nothing."""
    from hostos.cli.cluster import diff_remote

    _need_server("diff", server)
    diff_remote(site, server, admin_token_file, output)


def _need_server(command: str, server: str) -> None:
    if not server:
        fail(f"{command} needs --server URL (or HOSTOS_SERVER)", EXIT_INPUT)


@app.command()
def status(
    engine: EngineOpt = EngineKind.auto,
    namespace: NamespaceOpt = "",
    output: OutputOpt = Format.table,
    socket: SocketOpt = None,
) -> None:
    """The units hostos runs on this machine: state, health, restarts, since, image.

    When a supervisor runs, its status API answers (with restarts, next retry, mounts);
    otherwise the engine is asked directly."""
    from hostos.cli.report import status_table
    from hostos.node.status import read_status
    from hostos.node.status_socket import socket_path

    live = read_status(socket or socket_path(namespace))
    rows = list(live.units) if live is not None else _engine_status(engine, namespace)
    if output.document:
        emit([row.to_json() for row in rows], output)
        return
    print_table(*status_table(rows))
    if live is not None:
        _print_supervisor_extras(live)


def _engine_status(engine: EngineKind, namespace: str) -> list[UnitStatus]:
    from hostos.cli.report import status_rows
    from hostos.node.converge import owned

    with engine_session(engine) as conn:  # inspect: the list lacks start times on docker
        return status_rows([conn.inspect(c.id) for c in owned(conn, namespace)])


def _print_supervisor_extras(live: NodeStatus) -> None:
    for row in live.units:
        if row.waiting or row.last_error:
            typer.echo(f"{row.unit}: {row.waiting or row.last_error}")
    for mount in live.mounts:
        typer.echo(
            f"mount {mount.name}: {mount.state}"
            + (f" ({mount.last_error})" if mount.last_error else "")
        )
    if live.engine_error:
        typer.echo(f"engine error: {live.engine_error}")
    if live.site_error:
        typer.echo(f"site error: {live.site_error}")


def _supervise(**given: Any) -> None:
    from hostos.cli.supervise import Args, supervise

    raise typer.Exit(supervise(Args.of(**given)))


def _supervise_command(app: typer.Typer) -> None:
    """`hostos supervise` made from its option table (hostos.cli.supervise)."""
    from hostos.cli.params import table_command
    from hostos.cli.supervise import DESCRIPTION, OPTIONS

    app.command("supervise", cls=Command)(
        table_command("supervise", DESCRIPTION, OPTIONS, _supervise)
    )


app.add_later("supervise", _supervise_command)


@app.command()
def down(engine: EngineOpt = EngineKind.auto, namespace: NamespaceOpt = "") -> None:
    """Stop and remove every container hostos owns here, dependents first."""
    from hostos.cli.report import outcome_line
    from hostos.node.converge import down as take_down

    with engine_session(engine) as conn:
        outcomes = take_down(conn, lambda o: typer.echo(outcome_line(o)), namespace=namespace)
    failed = sum(1 for o in outcomes if not o.ok)
    typer.echo(f"{len(outcomes) - failed} removed, {failed} failed")
    if failed:
        raise typer.Exit(EXIT_RUNTIME)


@app.command()
def logs(
    unit: Annotated[str, typer.Argument(help="a unit running here", metavar="UNIT")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="keep printing what the unit writes")
    ] = False,
    tail: Annotated[int | None, typer.Option(help="only the last N lines", metavar="N")] = None,
    engine: EngineOpt = EngineKind.auto,
    namespace: NamespaceOpt = "",
) -> None:
    """Print a unit's container output."""
    from hostos.errors import did_you_mean
    from hostos.node.converge import owned as owned_here

    with engine_session(engine) as conn:
        owned = {c.unit: c for c in owned_here(conn, namespace) if c.unit}
        if unit not in owned:
            here = ", ".join(sorted(owned)) or "none"
            fail(
                f"no unit '{unit}' here",
                EXIT_INPUT,
                did_you_mean(unit, owned) or f"running here: {here}",
            )
        for chunk in conn.logs(owned[unit].id, follow, tail):
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()


@app.command()
def serve(
    listen: Annotated[
        str, typer.Option(help="HOST:PORT to listen on", metavar="HOST:PORT")
    ] = "127.0.0.1:8080",
    store: Annotated[
        str,
        typer.Option(
            help="sqlite:///PATH (one server) or etcd://HOST:PORT/PREFIX (replicas; PREFIX: "
            "hostos)",
            metavar="URL",
        ),
    ] = "sqlite:///var/lib/hostos/cluster.db",
    admin_token_file: Annotated[
        str, typer.Option(help="a file holding the admin token", metavar="FILE")
    ] = DEFAULT_ADMIN_TOKEN_FILE,
    images: Annotated[
        str | None,
        typer.Option(help="host images: DIR/<name>/{vmlinuz,initramfs.img}", metavar="DIR"),
    ] = None,
    public_url: Annotated[
        str | None,
        typer.Option(
            help="the URL nodes reach this server at (default: the one they asked)",
            metavar="URL",
        ),
    ] = None,
    boot_tokens: Annotated[
        bool, typer.Option("--boot-tokens", help="put a fresh node token into every boot script")
    ] = False,
    heartbeat_rate: Annotated[
        float,
        typer.Option(
            help="heartbeats a second to ask of the whole fleet: a fleet larger than 10 s of "
            "them is told to beat less often",
            metavar="PER-SECOND",
        ),
    ] = HEARTBEAT_RATE,
    drain_hooks: Annotated[
        str | None,
        typer.Option(
            help="the programs a role's generic rollout.drain may run (plain names in DIR); "
            "none: only drain: slurm",
            metavar="DIR",
        ),
    ] = None,
    drain_interval: Annotated[
        float,
        typer.Option(help="seconds between two job counts of a draining node", metavar="SECONDS"),
    ] = 5.0,
) -> None:
    """The cluster server: site generations, node heartbeats, FleetLock slots, iPXE boot."""
    from hostos.cluster.server.serve import BadOption, options, serve
    from hostos.logfmt import setup

    try:
        opts = options(
            listen,
            store,
            admin_token_file,
            images,
            public_url,
            boot_tokens,
            heartbeat_rate,
            drain_hooks,
            drain_interval,
        )
    except BadOption as exc:
        fail(str(exc), EXIT_INPUT)
    setup()
    serve(opts)


tokens_app = App(help="Node tokens (admin).")
app.add_typer(tokens_app, name="tokens")


@tokens_app.command("issue")
def tokens_issue(
    node: Annotated[
        str, typer.Argument(help="the node id (inventory name or MAC form)", metavar="NODE")
    ],
    server: ServerOpt,
    admin_token_file: AdminTokenOpt = DEFAULT_ADMIN_TOKEN_FILE,
) -> None:
    """Issue a new token for NODE and print it (the node's previous token stops working)."""
    from hostos.cli.cluster import admin_client

    client = admin_client(server, admin_token_file)
    typer.echo(guarded(lambda: client.node_token(node)))


def _image_commands(app: typer.Typer) -> None:
    """`hostos image …` (its module is imported when the group is asked for)."""
    from hostos.cli.image import image_app

    app.add_typer(image_app, name="image")


app.add_later("image", _image_commands)


def _rollout_commands(app: typer.Typer) -> None:
    """`hostos rollout …` (its module is imported when the group is asked for)."""
    from hostos.cli.cluster import rollout_app

    app.add_typer(rollout_app, name="rollout")


app.add_later("rollout", _rollout_commands)


def main() -> None:
    """The `hostos` command (see hostos.cli.launch, which the console script runs)."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
