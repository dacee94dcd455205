"""A study's data leaves and comes back whole: export/import as JSON (SQLite and PostgreSQL),
``pg_dump``/``pg_restore`` of a PostgreSQL database, ``isotune db backup`` of a SQLite file."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from tests.support.api import V1, claim, create
from tests.support.cli import isotune
from tests.support.servers import serve


def populate(client: TestClient) -> None:
    """A study with trials in every state: complete (with reports), pruned, failed, retried,
    running, and parameters queued for a retry."""
    create(client, budget=8, pruner="none")
    for i, outcome in enumerate(["complete", "complete", "pruned", "fail", "running", "retry"]):
        t = claim(client, f"w{i}")["trial"]
        tid, wid = t["trial_id"], f"w{i}"
        points = [{"step": s, "value": 0.1 * s + 0.01 * i} for s in (1, 2, 3)]
        r = client.post(f"{V1}/trials/{tid}/report", json={"worker_id": wid, "values": points})
        assert r.status_code == 200, r.text
        if outcome == "complete":
            body = {"worker_id": wid, "value": 0.5 + 0.1 * i}
            assert client.post(f"{V1}/trials/{tid}/complete", json=body).status_code == 200
        elif outcome == "pruned":
            body = {"worker_id": wid, "pruned": True}
            assert client.post(f"{V1}/trials/{tid}/complete", json=body).status_code == 200
        elif outcome in ("fail", "retry"):
            body = {"worker_id": wid, "reason": f"<{outcome}>", "retry": outcome == "retry"}
            assert client.post(f"{V1}/trials/{tid}/fail", json=body).status_code == 200


def comparable(export: dict) -> list[dict]:
    """The trials of an export without what an import rightly changes (nothing but the order)."""
    return sorted(
        ({k: v for k, v in t.items() if k != "number"} for t in export["trials"]),
        key=lambda t: json.dumps(t["params"], sort_keys=True) + t["state"],
    )


def test_export_then_import_round_trip(client: TestClient) -> None:
    populate(client)
    r = client.get(f"{V1}/studies/s1/export")
    assert r.status_code == 200
    original = r.json()
    assert original["format"] == "isotune-study/1" and original["spec"]["name"] == "s1"
    assert original["trials"][0]["datetime_start"][-6] in "+-"  # times carry their offset
    states = sorted(t["state"] for t in original["trials"])
    assert states == ["COMPLETE", "COMPLETE", "FAIL", "FAIL", "PRUNED", "RUNNING", "WAITING"]

    r = client.post(f"{V1}/studies/import", params={"name": "copy"}, json=original)
    assert r.status_code == 201, r.text
    copy = client.get(f"{V1}/studies/copy/export").json()
    assert copy["spec"] == {**original["spec"], "name": "copy"}
    # finished trials come back exactly; the running one FAILED, its parameters queued again
    before, after = comparable(original), comparable(copy)
    running = next(t for t in before if t["state"] == "RUNNING")
    failed = next(t for t in after if t["params"] == running["params"] and t["state"] == "FAIL")
    assert failed["user_attrs"]["isotune_fail"] == "running when exported"
    assert failed["intermediate_values"] == running["intermediate_values"]
    assert [t for t in after if t is not failed and t["state"] != "WAITING"] == [
        t for t in before if t is not running and t["state"] != "WAITING"
    ]
    queued = sorted(
        json.dumps(t["params"], sort_keys=True) for t in after if t["state"] == "WAITING"
    )
    expected = sorted(
        json.dumps(t["params"], sort_keys=True)
        for t in before if t["state"] in ("WAITING", "RUNNING")
    )  # fmt: skip
    assert queued == expected
    # the copy goes on where the original was: 6 of 8 fresh trials used, the queue first
    got = [claim(client, f"x{i}", "copy") for i in range(5)]
    assert [g["status"] for g in got] == ["assigned"] * 4 + ["wait"]
    handed = [json.dumps(g["trial"]["params"], sort_keys=True) for g in got[:2]]
    assert sorted(handed) == expected


def test_import_refuses_bad_exports_and_leaves_nothing(client: TestClient) -> None:
    populate(client)
    good = client.get(f"{V1}/studies/s1/export").json()

    def refused(body: dict, status: int, field: str, **params: str) -> None:
        r = client.post(f"{V1}/studies/import", params=params, json=body)
        assert r.status_code == status, r.text
        got = r.json()
        named = [got.get("field") or ""] if isinstance(got["detail"], str) else [
            ".".join(map(str, e["loc"])) + " " + e["msg"] for e in got["detail"]
        ]  # fmt: skip
        assert any(field in n for n in named), (field, named)
        assert sorted(s["name"] for s in client.get(V1 + "/studies").json()) == ["s1"]

    refused({**good, "format": "isotune-study/9"}, 422, "format", name="n1")
    refused(good, 409, "name")  # s1 exists
    refused({**good, "spec": {**good["spec"], "budget": -1}}, 422, "spec.budget", name="n2")
    bad_trial = json.loads(json.dumps(good))
    complete = next(t for t in bad_trial["trials"] if t["state"] == "COMPLETE")
    complete["params"]["mu_f"] = 99.0  # outside its distribution
    refused(bad_trial, 422, "trials[", name="n3")
    refused({**good, "trials": [{"number": 0}]}, 422, "trials", name="n4")
    refused(good, 422, "name", name="../etc")
    waiting = json.loads(json.dumps(good))
    next(t for t in waiting["trials"] if t["state"] == "WAITING")["params"]["hidden"] = 10**6
    refused(waiting, 422, "trials[", name="n5")  # queued parameters are checked too
    wrong_kind = json.loads(json.dumps(good))
    wrong_kind["trials"][0]["distributions"]["mu_f"] = wrong_kind["trials"][0]["distributions"][
        "lr"
    ]
    refused(wrong_kind, 422, "trials[", name="n6")
    bad_step = json.loads(json.dumps(good))
    bad_step["trials"][0]["intermediate_values"] = {str(2**40): 0.5}
    refused(bad_step, 422, "intermediate_values", name="n7")


@pytest.mark.slow
def test_pg_dump_and_restore_keep_every_trial(pg_server, tmp_path: Path) -> None:
    source = pg_server.url_for(pg_server.create_database())
    with TestClient(create_app(source, auth=False)) as c:
        populate(c)
        before = c.get(f"{V1}/studies/s1/export").json()
    dump = tmp_path / "isotune.dump"
    env = {**os.environ, "PGPASSWORD": pg_server.password}
    conn = ["-h", "127.0.0.1", "-p", str(pg_server.port), "-U", "isotune"]
    src_db = source.rsplit("/", 1)[1]
    subprocess.run(
        [str(pg_server.bindir / "pg_dump"), *conn, "-Fc", "-f", str(dump), src_db],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    target = pg_server.create_database()
    subprocess.run(
        [str(pg_server.bindir / "pg_restore"), *conn, "--no-owner", "-d", target, str(dump)],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    with TestClient(create_app(pg_server.url_for(target), auth=False)) as c:
        after = c.get(f"{V1}/studies/s1/export").json()
        # the restored database serves: the study goes on
        assert claim(c, "after-restore")["status"] == "assigned"
    assert after["spec"] == before["spec"] and after["trials"] == before["trials"]


@pytest.mark.slow
def test_sqlite_backup_and_cli_export_import(tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    url = f"sqlite:///{db}"
    with TestClient(create_app(url, auth=False)) as c:
        populate(c)
        before = c.get(f"{V1}/studies/s1/export").json()
    backup = tmp_path / "backup.db"
    made = isotune("db", "backup", "--database-url", url, "--to", str(backup))
    assert made.returncode == 0, made.stderr
    again = isotune("db", "backup", "--database-url", url, "--to", str(backup))
    assert again.returncode == 2 and "to=" in again.stderr
    pg = isotune("db", "backup", "--database-url", "postgresql+psycopg://u:secret@h/d", "--to", "x")
    assert pg.returncode == 2 and "pg_dump" in pg.stderr and "secret" not in pg.stderr
    with serve(f"sqlite:///{backup}") as srv:
        base = srv.base
        out = tmp_path / "s1.json"
        exported = isotune("study", "export", "s1", "--out", str(out), "--server", base)
        assert exported.returncode == 0, exported.stderr
        data = json.loads(out.read_text())
        assert data["trials"] == before["trials"]
        imported = isotune("study", "import", str(out), "--name", "s1-copy", "--server", base)
        assert imported.returncode == 0, imported.stderr
        assert "imported study s1-copy" in imported.stdout and "complete 2" in imported.stdout
        broken = tmp_path / "broken.json"
        broken.write_text("{not json")
        bad = isotune("study", "import", str(broken), "--server", base)
        assert bad.returncode == 2 and "file=" in bad.stderr


def test_import_of_a_body_that_is_not_json_is_a_422(client: TestClient) -> None:
    """Found by fuzzing: a body that is not UTF-8 made the error report itself fail (500)."""
    for body in (b"\xfeo\xcbJSe", b"{not json", b"[]", b"null"):
        r = client.post(
            f"{V1}/studies/import", content=body, headers={"content-type": "application/json"}
        )
        assert r.status_code == 422, (body, r.text)
        assert r.json()["detail"][0]["loc"][0] == "body"
