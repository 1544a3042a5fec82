"""The cluster bench's command line: `python -m bench.cluster --help`."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import sys
import tempfile
from pathlib import Path

import bench.cluster
from bench import cli, report
from bench.cli import BenchError
from bench.cluster.report import MODULE, SECTION
from bench.cluster.report import report as section
from bench.cluster.results import Options, StoreRun
from bench.cluster.runner import Runner
from hostos.cluster import pacing

log = logging.getLogger(MODULE)  # run as __main__, so not __name__
STORES = ("sqlite", "etcd")


def fleet_options(parser: argparse.ArgumentParser) -> None:
    """What the fleet is and what each agent does."""
    add = parser.add_argument
    add(
        "--agents",
        type=int,
        default=10000,
        metavar="N",
        help="agents of a run without :AGENTS (default %(default)s)",
    )
    add(
        "--stores",
        default="sqlite,etcd",
        help="the runs, in order: sqlite or etcd, each with :AGENTS for a "
        "size other than --agents (default %(default)s)",
    )
    add(
        "--heartbeat",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="each agent's heartbeat interval (default %(default)s, as hostos.cluster.agent's)",
    )
    add(
        "--heartbeat-rate",
        type=float,
        default=pacing.RATE,
        metavar="PER_S",
        help="the servers' --heartbeat-rate (default %(default)s)",
    )
    add(
        "--wait",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="the long-poll's wait= (default %(default)s)",
    )
    add(
        "--reboot",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how long a simulated reboot takes (default %(default)s)",
    )
    add("--generators", type=int, default=2, help="load-generator processes (default %(default)s)")


def rollout_options(parser: argparse.ArgumentParser) -> None:
    """The rollouts measured."""
    add = parser.add_argument
    add(
        "--rollout-nodes",
        type=int,
        default=200,
        metavar="N",
        help="nodes of the rollout role (default %(default)s)",
    )
    add(
        "--slots",
        type=int,
        default=20,
        metavar="S",
        help="the rollout's max-unavailable (default %(default)s)",
    )
    add(
        "--big-rollout-slots",
        type=int,
        default=0,
        metavar="S",
        help="then roll out every other agent, S at a time (0: not)",
    )
    add(
        "--drain-jobs",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="then roll out the rollout role again, its nodes drained first, FRACTION of "
        "them running a job of up to 5 x the reboot time (0: not; e.g. 0.3)",
    )
    add(
        "--drain-reboot",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="how long a simulated reboot takes in the drain rollout (default: --reboot)",
    )
    add(
        "--drain-interval",
        type=float,
        default=0.25,
        metavar="SECONDS",
        help="the servers' --drain-interval with --drain-jobs: how often a draining node's "
        "jobs are counted again (default %(default)s: an eighth of the default reboot, so a "
        "job's end is seen soon after it, at a few dozen hook runs a second)",
    )
    add(
        "--job-seed",
        type=int,
        default=1,
        metavar="N",
        help="the seed that picks the nodes with a job and their lengths (default %(default)s)",
    )


def window_options(parser: argparse.ArgumentParser) -> None:
    """How long the heartbeat phases and the whole of a phase last."""
    add = parser.add_argument
    add(
        "--steady",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="the heartbeat window, at least the fleet's interval (default %(default)s)",
    )
    add(
        "--saturate",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="the capacity window, 0 to skip (default %(default)s)",
    )
    add(
        "--saturate-concurrency",
        type=int,
        default=128,
        metavar="N",
        help="heartbeats kept in flight on top of the fleet in the capacity window "
        "(default %(default)s)",
    )
    add(
        "--publishes",
        type=int,
        default=3,
        help="site generations published for the fan-out (default %(default)s)",
    )
    add(
        "--phase-timeout",
        type=float,
        default=180.0,
        metavar="SECONDS",
        help="how long a phase may take: agents up, a generation reaching every agent "
        "(default %(default)s)",
    )
    add(
        "--keep",
        action="store_true",
        help="keep the temporary directories (logs, stores, each rollout's "
        "reboot records: reboots-ROLE-IMAGE.json; the drain hooks' events: "
        "drain-state/events)",
    )


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, list[tuple[str, int]]]:
    """The options, and the runs: (store, agents) in order."""
    parser = cli.parser(MODULE, bench.cluster.__doc__)
    fleet_options(parser)
    rollout_options(parser)
    window_options(parser)
    cli.add_write(parser, SECTION)
    args = parser.parse_args(argv)
    stores: list[tuple[str, int]] = []
    for item in (s.strip() for s in args.stores.split(",") if s.strip()):
        name, _, size = item.partition(":")
        if name not in STORES or (size and not size.isdigit()):
            parser.error(f"--stores {item!r}: expected sqlite or etcd, then :AGENTS or not")
        stores.append((name, int(size) if size else args.agents))
    if not stores:
        parser.error("--stores: name at least one store")
    if min(n for _, n in stores) < args.rollout_nodes or args.rollout_nodes < 1 or args.slots < 1:
        parser.error("need agents ≥ --rollout-nodes ≥ 1 and --slots ≥ 1")
    if not 0 <= args.drain_jobs <= 1 or not 0 < args.drain_interval <= 60:
        parser.error("need 0 ≤ --drain-jobs ≤ 1 and 0 < --drain-interval ≤ 60")
    if not 0 <= args.drain_reboot <= 3600:
        parser.error("need 0 ≤ --drain-reboot ≤ 3600 (0: --reboot)")
    return args, stores


def main(argv: list[str] | None = None) -> int:
    args, stores = parse(argv)
    shown = sys.argv[1:] if argv is None else argv  # for the section's reproduce command
    opts = Options(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Options)})
    runs: list[StoreRun] = []
    for store, agents in stores:
        tmp = Path(tempfile.mkdtemp(prefix=f"hostos-cluster-bench-{store}-"))
        try:
            runs.append(Runner(store, agents, opts, tmp).run())
        except BenchError as exc:
            raise BenchError(f"{exc} (logs kept in {tmp})") from None
        if args.keep:
            log.info("%s: logs and store kept in %s", store, tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        if args.write:  # after each run: a long run cut short keeps the ones before it
            report.write_section(args.write, SECTION, section(runs, opts, shown))
            log.info("wrote %s (%d of %d runs)", args.write, len(runs), len(stores))
    print(section(runs, opts, shown))
    return 0


if __name__ == "__main__":
    cli.run(main)
