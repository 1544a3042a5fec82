"""`hostos supervise` as the node runs it at every boot: one body, and a parser without typer.

The node's /init starts the supervisor on every boot, and under emulation (qemu TCG, the
lab's boots) importing typer and click alone takes seconds before the first unit can start.
So the host image's launcher (`hostos.cli.launch`) hands `supervise` to the argparse parser
below; everywhere else the typer command in `hostos.cli.main` calls the same `run`.  Both
parsers are built from one table, OPTIONS (see hostos.cli.options).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hostos.cli.exits import EXIT_INPUT, fail, guarded
from hostos.cli.options import (
    ENGINE,
    NAMESPACE,
    NODE,
    ROLE,
    SITE,
    SOCKET,
    BadEnvironment,
    Option,
    parser,
    values,
)
from hostos.engine.kind import EngineKind

if TYPE_CHECKING:
    from hostos.cluster.agent import Settings as AgentSettings
    from hostos.node.supervisor import Feed
    from hostos.site.resolve import RoleSpec

DESCRIPTION = "Keep this node converged: react to site edits, crashes, engine and mount events."
OPTIONS = (
    SITE,
    NODE,
    ROLE,
    ENGINE,
    NAMESPACE,
    SOCKET,
    Option("resync", "seconds between full resyncs", type=float, default=60.0, metavar="SECONDS"),
    Option(
        "podman_socket",
        "where to start hostos's own podman service when none answers",
        metavar="PATH",
    ),
    Option(
        "server",
        "a hostos serve (http://HOST:PORT): the spec comes from there, and heartbeats and "
        "reboot slots go there",
        metavar="URL",
    ),
    Option("token_file", "a file holding this node's token (with --server)", metavar="FILE"),
    Option(
        "booted_image",
        "the image this boot came from (default: hostos.image= on the kernel command line)",
        env="HOSTOS_BOOTED_IMAGE",
        metavar="IMAGE",
    ),
    Option(
        "reboot_command",
        "what reboots this node when the server assigns another image",
        default="reboot",
        metavar="COMMAND",
    ),
)


@dataclass(frozen=True, kw_only=True)
class Args:
    """The options, typed: one field per row of OPTIONS, which holds their defaults."""

    site: str
    node: str | None
    role: str | None
    engine: EngineKind
    namespace: str
    socket: str | None
    resync: float
    podman_socket: str | None
    server: str | None  # a hostos serve: the spec, heartbeats, reboot slots
    token_file: str | None
    booted_image: str | None  # default: hostos.image= on the kernel command line
    reboot_command: str

    @classmethod
    def of(cls, **given: Any) -> Args:
        """Args from the options given (by name), the rest from the environment and the
        defaults, as both parsers fill them."""
        return cls(**values(OPTIONS, given))


def supervise(args: Args) -> int:
    """Refuse a bad site up front (file:line, exit 2), then supervise until stopped."""
    from hostos.engine.connect import start_podman_early
    from hostos.logfmt import setup

    agent = None
    if args.server is not None:
        agent = _agent(args, args.server)
    elif args.token_file is not None or args.booted_image is not None:
        fail("--token-file and --booted-image go with --server", EXIT_INPUT)
    elif (args.node is None) == (args.role is None):
        fail("give exactly one of --node or --role", EXIT_INPUT)
    setup()
    # The engine's service comes up while Python reads the site: seconds under emulation.
    starting = start_podman_early(args.engine, embedded_socket=args.podman_socket)
    try:
        spec = None if agent else _resolve(args)  # with a server, the spec comes from there
    except BaseException:
        if starting is not None:
            starting.stop()
        raise
    from hostos.node.supervisor import Settings, Supervisor  # after the service is on its way

    settings = Settings(
        args.site,
        agent.node if agent else args.node,
        args.role,
        args.engine,
        args.namespace,
        args.socket,
        args.resync,
        podman_socket=args.podman_socket,
        feed=_feed(agent) if agent else None,
    )
    return Supervisor(settings, spec=spec, starting=starting).run()


def _feed(settings: AgentSettings) -> Feed:
    """Specs from the cluster server: the agent heartbeats the supervisor's snapshot and
    delivers each spec the server sends."""
    from hostos.cluster.agent import Agent
    from hostos.node.supervisor import Feed

    return Feed(settings.server, lambda snapshot, deliver: Agent(settings, snapshot, deliver))


def _agent(args: Args, server: str) -> AgentSettings:
    """The cluster agent's settings for --server (exit 2 with why when they cannot be had)."""
    from hostos.cluster import agent, client
    from hostos.image import netboot

    if args.role is not None:
        fail(
            "with --server the server names the node's role: give --node, or "
            "neither (hostos.node= or BOOTIF= on the kernel command line)",
            EXIT_INPUT,
        )
    if args.token_file is None:
        fail(
            "--server needs --token-file", EXIT_INPUT, "the node's token: hostos tokens issue NODE"
        )
    cmdline = netboot.proc_cmdline()
    node = args.node or netboot.node_id(cmdline)
    if node is None:
        fail(
            "--server needs --node, or hostos.node= or BOOTIF= on the kernel command line",
            EXIT_INPUT,
        )
    try:
        token = agent.read_token(args.token_file)
        client.base_url(server)  # the URL's form
    except ValueError as exc:
        fail(str(exc), EXIT_INPUT)
    return agent.Settings(
        server,
        node,
        token,
        args.booted_image or cmdline.get(netboot.Arg.IMAGE),
        reboot_command=args.reboot_command,
    )


def _resolve(args: Args) -> RoleSpec:
    """The spec to run (exit 2 with the site's problems, 1 when it cannot be read)."""
    from hostos.site.load import load_site
    from hostos.site.resolve import resolve_node, resolve_role

    def resolve() -> RoleSpec:
        site = load_site(args.site)
        return resolve_node(site, args.node) if args.node else resolve_role(site, str(args.role))

    return guarded(resolve)


def parse(argv: Sequence[str]) -> Args:
    """argv after `supervise`; argparse exits 2 with its usage line on bad options."""
    p = parser("hostos supervise", DESCRIPTION, OPTIONS)
    given = vars(p.parse_args(list(argv)))
    try:
        return Args(**values(OPTIONS, given))
    except BadEnvironment as exc:
        p.error(str(exc))


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return supervise(parse(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt:
        return 130
