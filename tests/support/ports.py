"""Loopback ports for the servers the tests start, distinct across pytest-xdist workers.

Each worker draws from its own block of ports below Linux's ephemeral range (32768+), so two
workers never pick the same port and the operating system never hands it out meanwhile to an
outgoing connection. Within a block the ports are taken in turn from a random start (another
pytest run on the machine starts elsewhere), each checked free by binding it.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
import threading

__all__ = ["free_port", "worker_slot"]

FIRST = 20_000
BLOCK = 750
SLOTS = 16  # 20000 + 16 × 750 = 32000: below the ephemeral range

_lock = threading.Lock()
_next: itertools.count | None = None


def worker_slot() -> int:
    """0 outside pytest-xdist (and in its controller), 1 + N in worker ``gwN``."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    return 1 + int(name[2:]) % (SLOTS - 1) if name.startswith("gw") else 0


def _candidates() -> itertools.count:
    global _next
    if _next is None:
        _next = itertools.count(random.randrange(BLOCK))
    return _next


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, from this worker's block."""
    base = FIRST + worker_slot() * BLOCK
    with _lock:
        counter = _candidates()
        for _ in range(BLOCK):
            port = base + next(counter) % BLOCK
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError(f"no free port in {base}..{base + BLOCK - 1}")
