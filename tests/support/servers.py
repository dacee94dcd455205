"""Real processes the tests start and stop by their pid: ``isotune serve`` (:func:`serve`),
``isotune worker`` (:func:`worker`), any other command (:func:`process`), and waiting on a
condition with a deadline (:func:`wait_for`) instead of a fixed sleep.

Output goes to a file (a pipe nobody reads would block a chatty process once full): the caller's
``log`` path, else an anonymous temporary file; :meth:`Proc.output` reads it back.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from tests.support import ROOT
from tests.support.ports import free_port

__all__ = ["REAP_INTERVAL", "Proc", "Server", "process", "serve", "stop", "wait_for", "worker"]

#: The reaper interval of the servers the tests start (the product's default is 5 s): tests that
#: wait for an expired lease or an orphan to be reaped wait at most a second for the pass, and a
#: pass (about 10 ms of CPU) costs an idle server 1 % of a core.
REAP_INTERVAL = 1.0
START_TIMEOUT_S = 60.0
POLL_S = 0.05  # a server's health: a refused connection costs nothing


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something true (returned); fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(interval)
    return result


@dataclass
class Proc:
    """A started process and the file its output (stdout and stderr) goes to."""

    popen: subprocess.Popen
    log: IO[str]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self.popen.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL by pid (no shutdown) and reap it."""
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def output(self) -> str:
        """Everything written so far. Read at an offset: the process writes through the same
        open file, whose position a seek would move under it."""
        fd = self.log.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")


def stop(p: subprocess.Popen | Proc, timeout: float = 20.0) -> None:
    """Stop a process by its pid: SIGTERM, then SIGKILL if it is still there after ``timeout``."""
    popen = p.popen if isinstance(p, Proc) else p
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(popen.pid, signal.SIGTERM)
        try:
            popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(popen.pid, signal.SIGKILL)
            popen.wait(timeout=10)


def _open_log(log: Path | None) -> IO[str]:
    if log is None:
        return tempfile.TemporaryFile(mode="w+")
    return log.open("a+")


@contextlib.contextmanager
def process(
    args: Sequence[str],
    *,
    log: Path | None = None,
    env: dict[str, str] | None = None,
    kill: bool = False,
    stop_timeout: float = 20.0,
) -> Iterator[Proc]:
    """Run ``python -m cli.main ARGS`` from the checkout; stop it by pid on the way out (SIGTERM,
    or SIGKILL at once with ``kill``)."""
    out = _open_log(log)
    try:
        popen = subprocess.Popen(
            [sys.executable, "-m", "cli.main", *args],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **(env or {})},
        )
        proc = Proc(popen, out)
        try:
            yield proc
        finally:
            if kill:
                proc.kill()
            else:
                stop(popen, timeout=stop_timeout)
    finally:
        out.close()


@dataclass
class Server(Proc):
    """A running ``isotune serve``."""

    port: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def wait_healthy(server: Server, timeout: float = START_TIMEOUT_S) -> None:
    """Until ``/api/v1/health`` answers 200; raise with the server's output if it exits."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=server.base, timeout=2) as h:
        while True:
            if server.poll() is not None:
                raise RuntimeError(
                    f"the server exited with status {server.popen.returncode}:\n"
                    + server.output()[-3000:]
                )
            try:
                if h.get("/api/v1/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not answer within {timeout:g} s")
            time.sleep(POLL_S)


@contextlib.contextmanager
def serve(
    db_url: str,
    *,
    auth: bool = False,
    workers: int = 1,
    port: int | None = None,
    log: Path | None = None,
    reap_interval: float | None = REAP_INTERVAL,
    extra: Sequence[str] = (),
) -> Iterator[Server]:
    """``isotune serve`` on ``db_url`` and 127.0.0.1 (``port``, else a free one of this worker's),
    answering when yielded; stopped by pid at the end. ``reap_interval``: the hidden
    ``--reap-interval`` (``None``: the product's default). A port found taken meanwhile is
    replaced by another (unless given)."""
    args = ["serve", "--host", "127.0.0.1", "--database-url", db_url, "--workers", str(workers)]
    if not auth:
        args.append("--no-auth")
    if reap_interval is not None:
        args += ["--reap-interval", str(reap_interval)]
    for attempt in range(3):
        chosen = port or free_port()
        with process([*args, "--port", str(chosen), *extra], log=log) as proc:
            server = Server(proc.popen, proc.log, port=chosen)
            try:
                wait_healthy(server)
            except RuntimeError:
                if port or attempt == 2 or "already in use" not in server.output():
                    raise
                continue
            yield server
            return


@contextlib.contextmanager
def worker(
    base: str,
    worker_id: str,
    *studies: str,
    retry: float = 20,
    log: Path | None = None,
    max_trials: int | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[Proc]:
    """An ``isotune worker`` process on CPU with one thread; SIGKILLed if still there at the end.
    ``retry``: how long it retries an unreachable or failing server; ``env``: added to this
    process's environment."""
    args = ["worker", "--server", base, "--worker-id", worker_id, "--threads", "1",
            "--device", "cpu", "--retry-seconds", str(retry)]  # fmt: skip
    for s in studies:
        args += ["--study", s]
    if max_trials is not None:
        args += ["--max-trials", str(max_trials)]
    with process(args, log=log, kill=True, env=env) as proc:
        yield proc
