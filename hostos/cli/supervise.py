"""`hostos supervise` as the node runs it at every boot: one body, and a parser without typer.

The node's /init starts the supervisor on every boot, and under emulation (qemu TCG, the
lab's boots) importing typer and click alone takes seconds before the first unit can start.
So the host image's launcher (`hostos.cli.launch`) hands `supervise` to the argparse parser
below; everywhere else the typer command in `hostos.cli.main` parses the same options (a test
keeps the two option lists equal) and calls the same `run`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hostos.cli.exits import EXIT_INPUT, EXIT_RUNTIME, say, show_problems

if TYPE_CHECKING:
    from hostos.cluster.agent import Settings as AgentSettings
    from hostos.node.supervisor import Feed
    from hostos.site.resolve import RoleSpec

ENGINES = ("auto", "docker", "podman")
BOOTED_IMAGE_ENV = "HOSTOS_BOOTED_IMAGE"


@dataclass(frozen=True)
class Args:
    site: str = "units"
    node: str | None = None
    role: str | None = None
    engine: str = "auto"
    namespace: str = ""
    socket: str | None = None
    resync: float = 60.0
    podman_socket: str | None = None
    server: str | None = None  # a hostos serve: the spec, heartbeats, reboot slots
    token_file: str | None = None
    booted_image: str | None = None  # default: hostos.image= on the kernel command line
    reboot_command: str = "reboot"


def run(args: Args) -> int:
    """Refuse a bad site up front (file:line, exit 2), then supervise until stopped."""
    from hostos.engine.connect import start_podman_early
    from hostos.logfmt import setup

    agent = None
    if args.server is not None:
        made = _agent(args, args.server)
        if isinstance(made, int):
            return made
        agent = made
    elif args.token_file is not None or args.booted_image is not None:
        return _fail("--token-file and --booted-image go with --server", EXIT_INPUT)
    elif (args.node is None) == (args.role is None):
        return _fail("give exactly one of --node or --role", EXIT_INPUT)
    setup()
    # The engine's service comes up while Python reads the site: seconds under emulation.
    starting = start_podman_early(args.engine, embedded_socket=args.podman_socket)  # type: ignore[arg-type]
    spec = None if agent else _resolve(args)  # with a server, the spec comes from there
    if isinstance(spec, int):
        if starting is not None:
            starting.stop()
        return spec
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


def _agent(args: Args, server: str) -> AgentSettings | int:
    """The cluster agent's settings for --server, or the exit code after saying why not."""
    from hostos.cluster import agent, client
    from hostos.image import netboot

    if args.role is not None:
        return _fail(
            "with --server the server names the node's role: give --node, or "
            "neither (hostos.node= or BOOTIF= on the kernel command line)",
            EXIT_INPUT,
        )
    if args.token_file is None:
        return _fail(
            "--server needs --token-file (the node's token: hostos tokens issue NODE)", EXIT_INPUT
        )
    cmdline = netboot.proc_cmdline()
    node = args.node or netboot.node_id(cmdline)
    if node is None:
        return _fail(
            "--server needs --node, or hostos.node= or BOOTIF= on the kernel command line",
            EXIT_INPUT,
        )
    try:
        token = agent.read_token(args.token_file)
        client.base_url(server)  # the URL's form
    except ValueError as exc:
        return _fail(str(exc), EXIT_INPUT)
    return agent.Settings(
        server,
        node,
        token,
        args.booted_image or cmdline.get(netboot.Arg.IMAGE),
        reboot_command=args.reboot_command,
    )


def _resolve(args: Args) -> RoleSpec | int:
    """The spec to run, or the exit code after printing why there is none."""
    from hostos.errors import RuntimeFailure, SiteError
    from hostos.site.load import load_site
    from hostos.site.resolve import resolve_node, resolve_role

    try:
        site = load_site(args.site)
        return resolve_node(site, args.node) if args.node else resolve_role(site, str(args.role))
    except SiteError as exc:
        show_problems(exc.problems)
        return EXIT_INPUT
    except RuntimeFailure as exc:
        return _fail(str(exc), EXIT_RUNTIME)


def _fail(message: str, code: int) -> int:
    say(message)
    return code


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hostos supervise",
        description="Keep this node converged: react to site edits, crashes, engine and "
        "mount events.",
    )
    p.add_argument(
        "site", nargs="?", default="units", help="site directory (unit files, roles/, nodes.yaml)"
    )
    p.add_argument("--node", "-n", help="a node of the inventory")
    p.add_argument("--role", "-r", help="a role")
    p.add_argument(
        "--engine",
        "-e",
        choices=ENGINES,
        help="auto (default; or $HOSTOS_ENGINE): a reachable docker socket, else podman",
    )
    p.add_argument(
        "--namespace",
        help="keep apart several hostos instances on one engine (default $HOSTOS_NAMESPACE)",
    )
    p.add_argument("--socket", help="the supervisor's status socket")
    p.add_argument("--resync", type=float, default=60.0, help="seconds between full resyncs")
    p.add_argument(
        "--podman-socket", help="where to start hostos's own podman service when none answers"
    )
    p.add_argument(
        "--server",
        help="a hostos serve (http://HOST:PORT): the spec comes from "
        "there, and heartbeats and reboot slots go there",
    )
    p.add_argument("--token-file", help="a file holding this node's token (with --server)")
    p.add_argument(
        "--booted-image",
        help="the image this boot came from (default $HOSTOS_BOOTED_IMAGE, else "
        "hostos.image= on the kernel command line)",
    )
    p.add_argument(
        "--reboot-command",
        default="reboot",
        help="what reboots this node when the server assigns another image",
    )
    return p


def parse(argv: Sequence[str]) -> Args:
    """argv after `supervise`; argparse exits 2 with its usage line on bad options."""
    import os

    p = parser()
    ns = p.parse_args(list(argv))
    # the environment fills what the command line leaves out, as typer's envvar= does
    engine = ns.engine or os.environ.get("HOSTOS_ENGINE") or "auto"
    if engine not in ENGINES:
        p.error(f"HOSTOS_ENGINE={engine}: want one of {', '.join(ENGINES)}")
    namespace = ns.namespace if ns.namespace is not None else os.environ.get("HOSTOS_NAMESPACE", "")
    booted = ns.booted_image or os.environ.get(BOOTED_IMAGE_ENV) or None
    return Args(
        ns.site,
        ns.node,
        ns.role,
        engine,
        namespace,
        ns.socket,
        ns.resync,
        ns.podman_socket,
        ns.server,
        ns.token_file,
        booted,
        ns.reboot_command,
    )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(parse(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt:
        return 130
