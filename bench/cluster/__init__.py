"""Benchmark of the cluster server: simulated agents against real `hostos serve` processes.

    .venv/bin/python -m bench.cluster [--agents 10000] [--stores sqlite,etcd[:AGENTS],…]
                                      [--drain-jobs 0.3] [--write FILE]

Per store, in one run, one after the other on the same machine:

- sqlite: one `hostos serve` on a SQLite file in a temporary directory;
- etcd: two `hostos serve` replicas on one etcd (started here, data in the temporary
  directory), the agents spread over both replicas.

The admin publishes a site (role `bench-a`: the rollout's nodes, role `bench-b`: the rest),
registers two images, issues every node its token and assigns it `img-1` (its first boot),
all through the API.  The agents then run in a few load-generator processes (asyncio; per
agent one HTTP/1.1 keep-alive connection for its long-poll, and for its heartbeats one that
is kept only when they come more often than the server's 5 s keep-alive: at a longer
interval, like the node agent, each heartbeat opens a connection and asks to close it).
Each agent does what the node agent does: a heartbeat `--heartbeat` seconds (or the longer
interval the server's answer asks of a large fleet) after the last one's answer, a long-poll
`GET /v1/nodes/<id>/config?after=G&wait=W&image=I` that returns a new generation or a new
assignment, and when its assignment is not its booted image: `pre-reboot`, a reboot of
`--reboot` seconds (silent, its connections dropped), then a heartbeat on the new image and
`steady-state`.  (The node agent sends a heartbeat before its pre-reboot; these agents go
straight to the pre-reboot, one request less per reboot.)

Measured:
- heartbeats: the rate served while every agent beats at its interval (a steady window),
  and the server's capacity (the rate served while, on top, `--saturate-concurrency`
  heartbeats are kept in flight back to back);
- fan-out: after `POST /v1/site` of a new generation, per agent the time from the publish
  until its long-poll returns that generation: p50/p95/p99/max (target: p99 ≤ 2 s);
- rollout: `POST /v1/rollouts` of `bench-a` (N nodes, max-unavailable S) to `img-2`, wall
  time until the stored rollout is done, against the bound ceil(N / S) x reboot time
  (target: ≤ 1.1x the bound); the agents' own record says how many were out at once;
- drain rollout (`--drain-jobs 0.3`): `bench-a` again, to `img-3`, its role now draining each
  node first through the generic drain (`rollout: {drain: {command, check, resume}}` in the
  published site; the programs: sh hooks the bench writes, the servers' `--drain-hooks`),
  while that fraction of its nodes run a job of random length up to 5 x the reboot time,
  all started with the rollout (the check hook reads each job's end time): wall time against
  max(ceil(N / S) x reboot, longest job + reboot) (target: ≤ 1.15x), jobs interrupted by a
  reboot (target 0), the nodes idle when drained all done before the first drained busy;
- errors: every answer not the expected one, every timeout and failed connection (target 0).

The package's rooms: `load` (the agents, many to a load-generator process, and the driver of
those processes), `client` (their small HTTP/1.1 client), `fleet` (the site, node ids and
images the fleet is made of), `jobs` (the drain rollout's jobs and drain hooks), `servers`
(etcd and `hostos serve` started and stopped, the admin's calls to them), `runner` (one
store's run, phase by phase), `results` (what a run measured), `report` (its section of
docs/benchmarks.md), `__main__` (the command line).
"""
