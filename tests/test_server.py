"""Real ``isotune serve`` processes (uvicorn) on loopback, driven over HTTP by the Python client
and the CLI. Every server is stopped by its process id."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.client import ApiError, Client

ROOT = Path(__file__).resolve().parents[1]
SPEC = {
    "name": "real",
    "cell": "gru",
    "task": {"name": "adding", "T": 10},
    "space": {"mu_z": {"type": "float", "low": 0.0, "high": 6.0}},
    "sampler": "tpe",
    "budget": 40,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def isotune(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


@contextlib.contextmanager
def server(db_url: str, *, auth: bool = False) -> Iterator[str]:
    """Start ``isotune serve`` on a free loopback port; yield its base URL; stop it by pid."""
    port = free_port()
    args = ["serve", "--host", "127.0.0.1", "--port", str(port), "--database-url", db_url]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", *args, *([] if auth else ["--no-auth"])],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited {proc.returncode}: {proc.stderr.read()}")
            try:
                if httpx.get(base + "/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("server did not start within 60 s")
            time.sleep(0.2)
        yield base
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        proc.stderr.close()


def test_real_server_lifecycle_and_cli(db_url: str) -> None:
    with server(db_url) as base, Client(base, retry_seconds=5) as c:
        c.create_study(SPEC)
        t = c.claim("real", "w1")["trial"]
        assert 0.0 <= t["params"]["mu_z"] <= 6.0 and t["task"]["T"] == 10
        assert c.report(t["trial_id"], "w1", [(1, 0.4)])["prune"] is False
        assert c.complete(t["trial_id"], "w1", 0.7)["state"] == "COMPLETE"
        with pytest.raises(ApiError) as e:
            c.create_study({**SPEC, "sampler": "bogus"})
        assert e.value.status == 422 and "sampler" in str(e.value.detail)
        assert httpx.get(base + "/openapi.json").json()["info"]["title"] == "isotune"
        out = isotune("study", "list", "--server", base)
        assert out.returncode == 0 and "real" in out.stdout and "complete 1" in out.stdout
        best = isotune("study", "best", "real", "--server", base)
        assert best.returncode == 0 and "0.7" in best.stdout


def test_second_server_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'one.db'}"
    with server(url):
        r = isotune("serve", "--port", str(free_port()), "--database-url", url, "--no-auth")
    assert r.returncode == 2 and "database_url" in r.stderr and "Traceback" not in r.stderr


def test_no_auth_refused_off_loopback(tmp_path: Path) -> None:
    r = isotune("serve", "--host", "0.0.0.0", "--database-url", f"sqlite:///{tmp_path / 'x.db'}",
                "--no-auth")  # fmt: skip
    assert r.returncode == 2 and "host=0.0.0.0" in r.stderr


def test_tokens_from_the_cli(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'auth.db'}"
    made = isotune("token", "create", "--role", "admin", "--name", "ops", "--database-url", url)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("isotune_")
    with server(url, auth=True) as base:
        with Client(base, retry_seconds=5) as anon, pytest.raises(ApiError) as e:
            anon.studies()
        assert e.value.status == 401
        with Client(base, token, retry_seconds=5) as admin:
            assert admin.create_study(SPEC)["name"] == "real"


def test_two_servers_on_one_postgres_never_share_a_trial(pg_server) -> None:
    """16 clients, half on each of two server processes, claim from one study."""
    url = pg_server.url_for(pg_server.create_database())
    with server(url) as a, server(url) as b:
        with Client(a) as c:
            c.create_study({**SPEC, "budget": 48})
        got: list[int] = []
        errors: list[str] = []
        guard = threading.Lock()

        def run(i: int) -> None:
            with Client(a if i % 2 else b, retry_seconds=10) as c:
                for k in range(3):
                    try:
                        r = c.claim("real", f"w{i}-{k}")
                    except Exception as e:
                        errors.append(repr(e))
                        continue
                    with guard:
                        got.append(r["trial"]["trial_id"])

        threads = [threading.Thread(target=run, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=180)
        assert not errors, errors[:3]
        assert len(got) == 48 and len(set(got)) == 48
