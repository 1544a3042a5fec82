"""The benchmarks behind docs/benchmarks.md, and what they share.

Each runs from the repository's root with the project's venv (most need root):

    .venv/bin/python -m bench.apply --help      hostos apply beside compose and the floor
    .venv/bin/python -m bench.supervise --help  the supervisor's latencies and idle cost
    .venv/bin/python -m bench.cluster --help    hostos serve under simulated agents
    .venv/bin/python -m bench.image --help      the host image: size, RAM, boot time

Shared by them: `bench.cli` (logging, BenchError, the --write option and how a section is
published), `bench.processes` (starting, waiting for and stopping the processes a bench
runs; free ports; their environment), `bench.procfs` (what /proc says of a process and of
the machine), `bench.report` (the marked sections of docs/benchmarks.md, the commit and
machine lines, number formats, percentiles).  `bench.nfs`, `bench.sites` and
`bench.console` (a user-space NFS server, the demo site a qemu guest boots against, the
guest's console lines) serve the image bench and the e2e tests alike: tests/ imports them
from here, bench/ imports nothing from tests/.  bench/floor.py runs as a file of its own
(`python bench/floor.py`, started by the apply bench) and imports nothing of bench.
"""
