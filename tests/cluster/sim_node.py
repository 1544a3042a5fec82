"""One simulated node of the netns cluster: the real agent, and a supervisor that is only a
status snapshot.  sim_cluster.py starts it inside the node's namespace at every "boot".

At start it asks the boot endpoint (`GET /boot/<mac>.ipxe`) which image it boots, as iPXE
would, retrying until the server answers; then it runs `hostos.cluster.agent.Agent`: the unit
`app` is healthy unless the booted image is one of `--bad`.  Its reboot command is the
agent's ordinary shell command, `kill -USR1 <this pid>`: the process then exits 75 and the
harness starts it again after the reboot's delay.  SIGTERM ends it with 0.  Agent log lines
go to stderr; one JSON line per event (boot, reboot, steady) to `--events`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from typing import Any

REBOOTED = 75


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--server", required=True)
    p.add_argument("--node", required=True)
    p.add_argument("--mac", required=True)
    p.add_argument("--token-file", required=True)
    p.add_argument("--events", required=True)
    p.add_argument("--bad", default="", help="images whose units never get healthy")
    p.add_argument("--heartbeat", type=float, default=0.5)
    args = p.parse_args()

    from hostos.backoff import Backoff
    from hostos.cluster import agent
    from hostos.logfmt import setup
    from hostos.node.status import NodeStatus, UnitStatus

    setup()
    events = open(args.events, "a", buffering=1)  # noqa: SIM115 - open while the node runs

    def event(kind: str, **fields: Any) -> None:
        events.write(
            json.dumps({"t": time.time(), "event": kind, "node": args.node, **fields}) + "\n"
        )

    rebooted, stopped = threading.Event(), threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: rebooted.set())
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    booted = _boot_image(agent, args.server, args.mac, stopped)
    if booted is None:
        return 0
    event("boot", image=booted)
    healthy = booted not in args.bad.split(",")
    specs: list[object] = []

    def snapshot() -> NodeStatus:
        applied = sum(1 for s in specs if not isinstance(s, Exception))
        health = "healthy" if healthy else "unhealthy"
        return NodeStatus(
            generation=applied,
            reconciled=applied,
            units=(UnitStatus("app", state="running", health=health),),
        )

    def reboot(command: str) -> int:
        event("reboot", image=booted)
        return agent.shell(command)

    class Node(agent.Agent):
        def beat(self) -> agent.Decision:
            decision = super().beat()
            if decision.step is agent.Step.STEADY:
                event("steady", image=booted)
            return decision

    timing = agent.Timing(
        heartbeat=args.heartbeat, wait=20, retry=Backoff(0.2, max=2.0, jitter=0.1)
    )
    settings = agent.Settings(
        args.server,
        args.node,
        agent.read_token(args.token_file),
        booted,
        reboot_command=f"kill -USR1 {os.getpid()}",
        timing=timing,
        boot_id=os.urandom(8).hex(),
    )
    node = Node(settings, snapshot, specs.append, reboot)
    node.start()
    while not (rebooted.is_set() or stopped.is_set()):
        rebooted.wait(0.2)
    if rebooted.is_set():
        os._exit(REBOOTED)  # as a machine goes down: no goodbye to the server
    node.stop()
    return 0


def _boot_image(agent: Any, server: str, mac: str, stopped: threading.Event) -> str | None:
    from hostos.cluster import client

    delay = 0.2
    while not stopped.is_set():
        try:
            image = agent.boot_endpoint_image(server, mac)
        except client.Unreachable:
            image = None
        if image is not None:
            return str(image)
        stopped.wait(delay)
        delay = min(2.0, delay * 2)
    return None


if __name__ == "__main__":
    sys.exit(main())
