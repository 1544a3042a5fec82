"""What /proc says of a process (CPU time, memory, open files) and of the machine (CPU in
use, the kernel's listen-queue counters and limits)."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")  # the kernel counts CPU time in these


def cpu_seconds(pid: int, children: bool = False) -> float:
    """CPU time (user + system) of a process so far; children: with that of its reaped
    children.  OSError when the process is gone."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime, stime, cutime, cstime: fields 14 to 17 of stat(5), after the command name
    return sum(int(x) for x in fields[11 : 15 if children else 13]) / TICK


def status_field(pid: int, key: str) -> str:
    """A field of /proc/PID/status (`VmRSS`, `Threads`…), its first word."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return line.split(":", 1)[1].split()[0]
    raise LookupError(f"/proc/{pid}/status has no {key}")


def status_mib(pid: int, key: str) -> float:
    """A memory field of /proc/PID/status (in kB there), in MiB."""
    return int(status_field(pid, key)) / 1024


def open_files(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def file_limit(pid: int) -> str:
    """The process's soft limit of open files, as /proc says it."""
    try:
        line = next(
            x
            for x in Path(f"/proc/{pid}/limits").read_text().splitlines()
            if x.startswith("Max open files")
        )
    except (OSError, StopIteration):
        return "?"
    return line.split()[3]


def cpu_ticks() -> tuple[int, int]:
    """(idle, total) ticks of all CPUs since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[3] + fields[4], sum(fields[:8])


def machine_cpu_seconds() -> float:
    """CPU time spent by anything on the machine since boot (all CPUs)."""
    idle, total = cpu_ticks()
    return (total - idle) / TICK


def cpus_busy(window: float = 0.5) -> float:
    """How many CPUs' worth of time went to anything over the next `window` seconds."""
    idle0, total0 = cpu_ticks()
    time.sleep(window)
    idle1, total1 = cpu_ticks()
    total = max(1, total1 - total0)
    return (1 - (idle1 - idle0) / total) * (os.cpu_count() or 1)


TCP_COUNTERS = ("ListenOverflows", "SyncookiesSent", "SyncookiesFailed")


def tcp_counters() -> dict[str, int]:
    """The kernel's counts (since boot, all sockets) of connections a listen queue could not
    take: accept queue full (ListenOverflows), SYN queue full (SyncookiesSent), and a
    cookie's ACK that came too late to be taken (SyncookiesFailed: answered with a reset)."""
    found: dict[str, int] = {}
    with contextlib.suppress(OSError):
        lines = Path("/proc/net/netstat").read_text().splitlines()
        for names, values in zip(lines[::2], lines[1::2], strict=False):
            if names.startswith("TcpExt:"):
                pairs = zip(names.split()[1:], values.split()[1:], strict=False)
                found = {k: int(v) for k, v in pairs if k in TCP_COUNTERS}
    return found


def sysctls(*names: str) -> str:
    """`name=value, …` of kernel settings (`net.core.somaxconn`), `?` for one unreadable."""
    values = []
    for name in names:
        try:
            values.append(f"{name}={Path('/proc/sys', *name.split('.')).read_text().strip()}")
        except OSError:
            values.append(f"{name}=?")
    return ", ".join(values)
