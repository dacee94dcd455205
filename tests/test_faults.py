"""Faults injected into a running search: the server killed and restarted, PostgreSQL restarted,
connections between workers and server cut. Real ``isotune serve`` and ``isotune worker`` processes
train real (small) models; every process is stopped by its pid. After each fault the study must end
with every trial recorded once: none lost, none trained twice, none left RUNNING.

(A worker killed mid-trial is ``tests/test_e2e.py``; heavy load is ``tests/test_load.py``.)"""

from __future__ import annotations

import contextlib
import random
import re
import socket
import threading
from pathlib import Path

import pytest

from contract.client import Client
from tests.support import specs
from tests.support.pg import postgres_cluster
from tests.support.ports import free_port
from tests.support.servers import serve, wait_for, worker

pytestmark = pytest.mark.slow
BUDGET = 6


def spec(name: str, lease_seconds: float = 30) -> dict:
    """Ten reports a trial (the proxy test needs the traffic); the lease outlives an outage (a
    server restart on a loaded machine: 30 s)."""
    return specs.faults(name, BUDGET, lease_seconds=lease_seconds, steps=150, eval_every=15)


def completed_lines(*logs: str) -> list[str]:
    return [
        m for log in logs for m in re.findall(r"(\S+ trial \d+) \(attempt \d+\).*-> COMPLETE", log)
    ]


def check_study(c: Client, name: str, logs: list[str], orphans_allowed: bool = False) -> None:
    """Every trial finished; each completed once, by a worker that trained it once."""
    trials = c.trials(name)["trials"]
    states = [t["state"] for t in trials]
    assert "RUNNING" not in states and "WAITING" not in states, states
    failed = [t for t in trials if t["state"] == "FAIL"]
    # a claim cut off between Optuna's ask and its lease (the database went away in between) is
    # reaped as "claimed but never handed out": no worker held it, so nothing was lost
    assert all(
        orphans_allowed and t["user_attrs"]["isotune_fail"] == "claimed but never handed out"
        for t in failed
    ), failed
    done = completed_lines(*logs)
    assert len(done) == len(set(done)), "a trial was trained to completion twice"
    # an orphan does not count against the budget: the study still completes BUDGET trials
    assert len(done) == states.count("COMPLETE") == BUDGET


def test_server_killed_and_restarted_mid_study(migrated_db_url: str, tmp_path: Path) -> None:
    """SIGKILL the server while two workers train; start it again on the same port and database.
    The workers retry their calls, keep their trials (the lease outlives the outage) and finish."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(serve(migrated_db_url, port=port, log=log))
        c = stack.enter_context(Client(base, retry_seconds=60))
        c.create_study(spec("restart"))
        # retries outlast a restart on a loaded machine (each trial's lease: 30 s)
        a = stack.enter_context(worker(base, "a", "restart", retry=25))
        b = stack.enter_context(worker(base, "b", "restart", retry=25))

        def progress() -> bool:
            states = [t["state"] for t in c.trials("restart")["trials"]]
            return "COMPLETE" in states and "RUNNING" in states

        wait_for(progress, 180, "a completed trial while others run")
        first.kill()  # SIGKILL: no shutdown, requests in flight are cut
        with serve(migrated_db_url, port=port, log=log):
            assert a.wait(timeout=240) == 0, a.output()
            assert b.wait(timeout=60) == 0, b.output()
            # a claim cut by the kill between Optuna's ask and its lease leaves an orphan, reaped
            # as "claimed but never handed out" (no worker held it); every other trial completes
            wait_for(
                lambda: "RUNNING" not in [t["state"] for t in c.trials("restart")["trials"]],
                60, "no trial left RUNNING", interval=0.5,
            )  # fmt: skip
            check_study(c, "restart", [a.output(), b.output()], orphans_allowed=True)


def test_postgres_restarted_mid_study(tmp_path: Path) -> None:
    """PostgreSQL goes down for two seconds under a running server and two workers. The server is
    not restarted: it answers 5xx meanwhile (the workers retry) and recovers by itself."""
    with postgres_cluster() as cluster:
        url = cluster.url_for(cluster.create_database())
        with (
            serve(url, log=tmp_path / "server.log") as server,
            Client(server.base, retry_seconds=60) as c,
        ):
            base = server.base
            # PostgreSQL is back within seconds; an orphan is reaped once older than the lease
            c.create_study(spec("pgdown", lease_seconds=30))
            with (
                worker(base, "a", "pgdown", retry=25) as a,
                worker(base, "b", "pgdown", retry=25) as b,
            ):
                wait_for(
                    lambda: any(t["state"] == "COMPLETE" for t in c.trials("pgdown")["trials"]),
                    180, "a completed trial",
                )  # fmt: skip
                cluster.restart(down_seconds=2.0)
                assert a.wait(timeout=240) == 0, a.output()
                assert b.wait(timeout=60) == 0, b.output()
                logs = [a.output(), b.output()]
            assert server.poll() is None, "the server died"
            # orphans are reaped once older than the lease
            wait_for(
                lambda: "RUNNING" not in [t["state"] for t in c.trials("pgdown")["trials"]],
                120, "no trial left RUNNING", interval=0.5,
            )  # fmt: skip
            check_study(c, "pgdown", logs, orphans_allowed=True)
            assert c.request("GET", "/ready")["status"] == "ready"


class CuttingProxy:
    """A TCP proxy on loopback that cuts connections at random: sometimes before the request
    reaches the server, sometimes after the server answered but before the answer is relayed
    (the case that needs idempotent calls). ``cut`` counts the connections it cut.

    A worker's first contact (``GET /api/v1/health``) and its answer pass untouched: by design it
    is not retried (a wrong URL fails in seconds), so cutting it would only stop the worker."""

    def __init__(self, upstream: int, p_request: float, p_response: float, seed: int) -> None:
        self.upstream, self.p_request, self.p_response = upstream, p_request, p_response
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.cut = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _roll(self, p: float) -> bool:
        with self.lock:
            hit = self.rng.random() < p
            self.cut += hit
            return hit

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            health = threading.Event()  # the last request on this connection was the health
            for src, dst, p, request in (
                (client, server, self.p_request, True),
                (server, client, self.p_response, False),
            ):
                threading.Thread(target=self._pump, args=(src, dst, p, request, health,
                                                          client, server),
                                 daemon=True).start()  # fmt: skip

    def _pump(
        self, src, dst, p: float, request: bool, health: threading.Event, *both: socket.socket
    ) -> None:
        try:
            while data := src.recv(65536):
                if request:
                    spared = data.startswith(b"GET /api/v1/health ")
                    (health.set if spared else health.clear)()
                else:
                    spared = health.is_set()
                if not spared and self._roll(p):
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in both:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.closed.set()
        self.listener.close()


def test_cut_connections_between_workers_and_server(migrated_db_url: str, tmp_path: Path) -> None:
    """Workers talk to the server through a proxy that cuts 10 % of requests and 10 % of answers.
    The client retries; claims, reports, heartbeats and outcomes are idempotent, so every trial is
    still recorded once."""
    with (
        serve(migrated_db_url, log=tmp_path / "server.log") as server,
        Client(server.base, retry_seconds=30) as c,
    ):
        c.create_study(spec("cut"))
        proxy = CuttingProxy(server.port, p_request=0.1, p_response=0.1, seed=1)
        try:
            via = f"http://127.0.0.1:{proxy.port}"
            with worker(via, "a", "cut") as a, worker(via, "b", "cut") as b:
                assert a.wait(timeout=240) == 0, a.output()
                assert b.wait(timeout=60) == 0, b.output()
                logs = [a.output(), b.output()]
        finally:
            proxy.close()
        check_study(c, "cut", logs)
        assert proxy.cut >= 5, f"the proxy cut only {proxy.cut} connections"
        assert all(t["state"] == "COMPLETE" for t in c.trials("cut")["trials"])
