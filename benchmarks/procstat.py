"""CPU time of groups of processes, read from Linux ``/proc`` (imported by the benchmark scripts
that split a run's cost between the server, the database and the clients)."""

from __future__ import annotations

import os
from itertools import pairwise
from pathlib import Path


def _stat() -> dict[int, tuple[int, int]]:
    """Every process: pid -> (parent pid, user + system CPU in clock ticks)."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # the process ended while we read
                continue
            out[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return out


def cpu_seconds(pids: set[int]) -> float:
    """User + system CPU of the processes ``pids`` and all their living descendants."""
    stats = _stat()
    tree, grew = set(pids), True
    while grew:
        more = {pid for pid, (ppid, _) in stats.items() if ppid in tree} - tree
        tree |= more
        grew = bool(more)
    return sum(stats[p][1] for p in tree if p in stats) / os.sysconf("SC_CLK_TCK")


def postgres_pids(port: int | None = None) -> set[int]:
    """PostgreSQL postmasters on this machine (their backends are their children); with ``port``,
    only the one started with ``-p port``."""
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not cmd or not cmd[0].endswith(b"/postgres"):
            continue
        if port is None or any(a == b"-p" and b == str(port).encode() for a, b in pairwise(cmd)):
            out.add(int(entry))
    return out
