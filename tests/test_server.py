"""Real ``isotune serve`` processes (uvicorn) on loopback, driven over HTTP by the Python client
and the CLI. Every server is stopped by its process id."""

from __future__ import annotations

import http.client
import os
import threading
import time
from pathlib import Path

import httpx
import pytest

from contract.client import ApiError, Client
from tests.support.api import metric
from tests.support.cli import isotune
from tests.support.ports import free_port
from tests.support.servers import process, serve, wait_for
from tests.support.specs import GRU as SPEC

pytestmark = pytest.mark.slow


def test_real_server_lifecycle_and_cli(migrated_db_url: str) -> None:
    with serve(migrated_db_url) as srv, Client(srv.base, retry_seconds=5) as c:
        base = srv.base
        c.create_study(SPEC)
        t = c.claim("real", "w1")["trial"]
        assert 0.0 <= t["params"]["mu_z"] <= 6.0 and t["task"]["T"] == 10
        assert c.report(t["trial_id"], "w1", [(1, 0.4)])["prune"] is False
        assert c.complete(t["trial_id"], "w1", 0.22499999403953552)["state"] == "COMPLETE"
        with pytest.raises(ApiError) as e:
            c.create_study({**SPEC, "sampler": "bogus"})
        assert e.value.status == 422 and "sampler" in str(e.value.detail)
        assert httpx.get(base + "/openapi.json").json()["info"]["title"] == "isotune"
        out = isotune("study", "list", "--server", base)
        assert out.returncode == 0, out.stderr
        assert out.stdout == "real  [active]  complete 1  best 0.225\n", out.stdout
        # the best trial with its memory time against T/c and its initialization
        best = isotune("study", "best", "real", "--server", base).stdout.splitlines()
        assert best[0] == f"real: best trial 0 (id {t['trial_id']}) value 0.225", best
        assert best[1] == f"params   mu_z={t['params']['mu_z']:.4g}", best
        assert best[2].startswith("xi_C ") and "T = 10, c = 14.7: T/c = 0.6803" in best[2], best
        assert best[3].startswith("init     mu_r=0 ") and "mu_z=" in best[3], best
        cal = isotune("study", "calibration", "real", "--server", base)
        assert cal.stdout == "real: not calibrated: its prior is off\n", cal.stdout + cal.stderr
        watch = isotune("study", "watch", "real", "--once", "--server", base)
        assert watch.returncode == 0, watch.stderr
        lines = watch.stdout.splitlines()
        assert lines[0].startswith("real  [active]  complete 1") and "best 0.225" in lines[0]
        assert lines[1] == (
            "gru on adding, T = 10, prior off, c = 14.7: trainable when xi_C >= T/c = 0.6803"
        ), lines
        assert lines[3].split()[:2] == ["0", "COMPLETE"] and "w1" in lines[3]


def test_an_idle_connection_outlives_a_workers_pause(tmp_path: Path) -> None:
    """A worker's calls come seconds apart on one kept-alive connection. The server must keep it
    longer than the client's own idle limit (httpx: 5 s), or a request sent as the server closes
    it is reset (uvicorn's default closes after 5 s: resets under load in benchmarks/load.py)."""
    with serve(f"sqlite:///{tmp_path / 'k.db'}") as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        try:
            socks, statuses = [], []
            for pause in (0, 6):
                time.sleep(pause)
                conn.request("GET", "/api/v1/health")  # a closed connection: the reply fails
                reply = conn.getresponse()
                reply.read()
                statuses.append(reply.status)
                socks.append(conn.sock)
            assert statuses == [200, 200] and socks[0] is socks[1]  # one connection throughout
        finally:
            conn.close()


def test_second_server_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'one.db'}"
    with serve(url):
        r = isotune("serve", "--port", str(free_port()), "--database-url", url, "--no-auth")
    assert r.returncode == 2 and "database_url" in r.stderr and "Traceback" not in r.stderr


def test_several_processes_refused_on_sqlite(tmp_path: Path) -> None:
    r = isotune("serve", "--workers", "2", "--database-url", f"sqlite:///{tmp_path / 'x.db'}",
                "--no-auth")  # fmt: skip
    assert r.returncode == 2 and "workers=2" in r.stderr and "SQLite" in r.stderr


def _children(pid: int) -> set[int]:
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.add(int(entry))
    return out


def test_server_processes_on_postgres(pg_server) -> None:
    """``--workers 2``: two processes answer on one port and stop with their parent."""
    url = pg_server.url_for(pg_server.create_database())
    with serve(url, workers=2) as srv:
        base = srv.base
        with Client(base) as c:
            c.create_study({**SPEC, "budget": 8})
            ids = set()
            for k in range(8):
                t = c.claim("real", f"w{k}")["trial"]
                c.report(t["trial_id"], f"w{k}", [(0, 0.5)])
                assert c.complete(t["trial_id"], f"w{k}", 0.5)["state"] == "COMPLETE"
                ids.add(t["trial_id"])
            assert len(ids) == 8 and c.claim("real", "w9")["status"] == "done"
        # whichever process answers, the metrics are those of all processes together
        for _ in range(3):
            text = httpx.get(base + "/metrics", timeout=10).text
            assert metric(text, "isotune_claims_total", study="real", status="assigned") == 8
            done = metric(text, "isotune_trials_finished_total", study="real", state="COMPLETE")
            assert done == 8
        children = _children(srv.pid)
        assert len(children) >= 2

    def gone() -> bool:
        return not {p for p in children if Path(f"/proc/{p}").exists()}

    wait_for(gone, 15, "the server's processes to stop with it")


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
    with serve(url, auth=True) as srv:
        base = srv.base
        with Client(base, retry_seconds=5) as anon, pytest.raises(ApiError) as e:
            anon.studies()
        assert e.value.status == 401
        with Client(base, token, retry_seconds=5) as admin:
            assert admin.create_study(SPEC)["name"] == "real"
            revoked = isotune("token", "revoke", "--name", "ops", "--database-url", url)
            assert revoked.returncode == 0 and "revoked 1" in revoked.stdout

            def refused() -> bool:
                try:
                    admin.studies()
                except ApiError as e:
                    assert e.status == 401
                    return True
                return False

            # roles are remembered for 5 s
            wait_for(refused, 15, "the revoked token to be refused", interval=0.2)
        again = isotune("token", "revoke", "--name", "ops", "--database-url", url)
        assert again.returncode == 2 and "name=" in again.stderr


def test_two_servers_on_one_postgres_never_share_a_trial(pg_server) -> None:
    """16 clients, half on each of two server processes, claim from one study."""
    url = pg_server.url_for(pg_server.create_database())
    with serve(url) as first, serve(url) as second:
        a, b = first.base, second.base
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


def test_server_survives_dropped_database_connections(pg_server) -> None:
    """Every connection of the server is killed (as by a database restart) between requests:
    the next requests succeed after at most a retried 5xx, and no trial is lost or left RUNNING."""
    name = pg_server.create_database()
    url = pg_server.url_for(name)
    with serve(url) as srv, Client(srv.base, retry_seconds=20) as c:
        c.create_study({**SPEC, "sampler": "random", "budget": 6})
        finished = set()
        for k in range(6):
            t = c.claim("real", f"w{k}")["trial"]
            if k % 2:  # drop every connection of the server mid-trial
                killed = (
                    pg_server.admin()
                    .execute(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = %s AND pid <> pg_backend_pid()",
                        (name,),
                    )
                    .fetchone()[0]
                )
                assert killed >= 1
            c.report(t["trial_id"], f"w{k}", [(0, 0.1)])
            assert c.complete(t["trial_id"], f"w{k}", 0.5)["state"] == "COMPLETE"
            finished.add(t["trial_id"])
        assert len(finished) == 6
        counts = c.study("real")["counts"]
    assert counts["COMPLETE"] == 6 and counts["RUNNING"] == 0


def test_isotune_dashboard_serves_the_service_database(tmp_path: Path) -> None:
    """``isotune dashboard`` (optuna-dashboard on the service's database and an artifact store)
    answers only with an isotune token, then with the study, compressed as browsers ask for it."""
    url = f"sqlite:///{tmp_path / 'dash.db'}"
    store = tmp_path / "artifacts"
    with serve(url) as srv, Client(srv.base, retry_seconds=5) as c:
        base = srv.base
        c.create_study(SPEC)
        t = c.claim("real", "w")["trial"]
        c.complete(t["trial_id"], "w", 0.5)
        plot = isotune("study", "plot", "real", "--server", base, "--out",
                       str(tmp_path / "prior_map.png"), "--artifact-dir", str(store),
                       "--database-url", url)  # fmt: skip
        assert plot.returncode == 0 and "attached to study real" in plot.stdout, plot.stderr
    made = isotune("token", "create", "--role", "reader", "--name", "eyes", "--database-url", url)
    assert made.returncode == 0, made.stderr
    auth = ("anyone", made.stdout.strip())  # HTTP Basic: the token is the password
    boss = isotune("token", "create", "--role", "admin", "--name", "boss", "--database-url", url)
    admin = ("anyone", boss.stdout.strip())
    refused = isotune("dashboard", "--host", "0.0.0.0", "--no-auth", "--database-url", url)
    assert refused.returncode == 2 and "host=" in refused.stderr
    port = free_port()
    headers = {"Accept-Encoding": "gzip, deflate, br"}
    args = ["dashboard", "--database-url", url, "--port", str(port), "--artifact-dir", str(store)]
    with process(args) as proc:

        def answered() -> httpx.Response | None:
            assert proc.poll() is None, f"isotune dashboard exited:\n{proc.output()[-2000:]}"
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/api/studies", headers=headers, timeout=2)
            except httpx.TransportError:
                return None
            return r if r.status_code == 401 else None

        r = wait_for(answered, 60, "isotune dashboard to answer")
        assert r.headers["www-authenticate"].startswith("Basic ")
        h = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30)
        with h:
            for bad in (("anyone", "isotune_guess"), ("anyone", "")):
                assert h.get("/dashboard", auth=bad).status_code == 401
            bearer = {"Authorization": "Bearer nope"}
            assert h.get("/api/studies", headers=bearer).status_code == 401
            r = h.get("/api/studies", auth=auth)
            assert [s["study_name"] for s in r.json()["study_summaries"]] == ["real"]
            # the prior map shows up among the study's artifacts, and the dashboard serves it
            [artifact] = h.get("/api/studies/1", auth=auth).json()["artifacts"]
            assert artifact["filename"] == "prior_map.png" and artifact["mimetype"] == "image/png"
            png = h.get(f"/artifacts/1/{artifact['artifact_id']}", auth=auth)
            assert png.content == (tmp_path / "prior_map.png").read_bytes()
            page = h.get("/dashboard", auth=auth)
            assert page.status_code == 200 and "<html" in page.text.lower()
            # changes need an admin token, and not from a page on another origin
            assert h.delete("/api/studies/1", auth=auth).status_code == 403
            evil = {"Origin": "https://evil.example"}
            assert h.delete("/api/studies/1", auth=admin, headers=evil).status_code == 403
            odd = {"Authorization": ("Basic " + "é" * 8).encode("latin-1")}  # not base64: 401
            assert h.get("/api/studies", headers=odd).status_code == 401
            names = [s["study_name"] for s in h.get("/api/studies", auth=auth).json()[
                "study_summaries"]]  # fmt: skip
            assert names == ["real"]
        assert store.is_dir()
