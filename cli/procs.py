"""Processes the command line and its scripts start: a free loopback port, waiting for a server to
answer, and stopping a process by its id (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["free_port", "start_server", "stop", "wait_healthy"]

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base: str, server: subprocess.Popen, timeout: float = 60.0) -> None:
    """Wait until ``base``/api/v1/health answers 200; raise if ``server`` exits or time runs out."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with status {server.returncode}")
        try:
            if httpx.get(base + "/api/v1/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the server did not answer within {timeout:g} s")


def stop(p: subprocess.Popen, timeout: float = 30.0) -> None:
    """Stop ``p`` by its process id: SIGTERM, and SIGKILL if it is still there after ``timeout``."""
    if p.poll() is None:
        os.kill(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=10)


def start_server(url: str, log: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """``isotune serve --no-auth`` on ``url`` and a free loopback port, its output appended to
    ``log``; returns the process (not yet answering: see :func:`wait_healthy`) and its base URL."""
    port = free_port()
    with log.open("a") as out:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve", "--port", str(port), "--database-url", url,
             "--no-auth", *extra],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return proc, f"http://127.0.0.1:{port}"
