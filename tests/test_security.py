"""Who may do what, what the server keeps and logs of a token, and hostile input (SQLite and
PostgreSQL through ``db_url``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from service.api import create_app
from service.auth import create_token
from service.db import make_engine
from tests.support.api import V1, create
from tests.support.cli import isotune
from tests.support.servers import serve
from tests.support.specs import API as SPEC

ROLES = ("reader", "worker", "admin")

#: The least role each route needs; None: open to anyone. Every route of the app must be listed.
MINIMUM = {
    ("GET", V1 + "/health"): None,
    ("GET", V1 + "/ready"): None,
    ("GET", "/metrics"): "reader",
    ("POST", V1 + "/studies"): "admin",
    ("GET", V1 + "/studies"): "reader",
    ("GET", V1 + "/studies/{name}"): "reader",
    ("POST", V1 + "/studies/{name}/archive"): "admin",
    ("POST", V1 + "/studies/{name}/adopt"): "admin",
    ("DELETE", V1 + "/studies/{name}"): "admin",
    ("GET", V1 + "/studies/{name}/trials"): "reader",
    ("GET", V1 + "/studies/{name}/prior.png"): "reader",
    ("GET", V1 + "/studies/{name}/export"): "reader",
    ("POST", V1 + "/studies/import"): "admin",
    ("GET", V1 + "/trials/{trial_id}"): "reader",
    ("POST", V1 + "/studies/{name}/claim"): "worker",
    ("POST", V1 + "/trials/{trial_id}/heartbeat"): "worker",
    ("POST", V1 + "/trials/{trial_id}/report"): "worker",
    ("POST", V1 + "/trials/{trial_id}/complete"): "worker",
    ("POST", V1 + "/trials/{trial_id}/fail"): "worker",
}
#: Documentation routes FastAPI adds; they carry no data.
DOCS = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


def app_routes(app) -> set[tuple[str, str]]:
    """Every route with its method, from the app's schema (no route is left out of it)."""
    return {
        (m.upper(), path)
        for path, ops in app.openapi()["paths"].items()
        if path not in DOCS
        for m in ops
    }


def test_authorization_matrix(migrated_db_url: str) -> None:
    """Every route × no token, a malformed header, an unknown token, a revoked one, each role."""
    app = create_app(migrated_db_url, auth=True)
    assert app_routes(app) == set(MINIMUM), "a route was added or removed: list it in MINIMUM"
    with app.state.service.sessions.begin() as session:
        tokens = {role: create_token(session, f"t-{role}", role) for role in ROLES}
        revoked = create_token(session, "t-gone", "admin")
    with app.state.service.sessions.begin() as session:
        session.execute(
            sa.text("UPDATE isotune_tokens SET revoked_at = created_at WHERE name = 't-gone'")
        )
    bad_headers = {
        "none": {},
        "not bearer": {"Authorization": f"Basic {tokens['admin']}"},
        "unknown": {"Authorization": "Bearer isotune_not-a-token"},
        "revoked": {"Authorization": f"Bearer {revoked}"},
        "empty": {"Authorization": "Bearer "},
    }
    with TestClient(app) as c:
        for (method, path), minimum in sorted(MINIMUM.items()):
            url = path.format(name="s1", trial_id=1)
            for label, headers in bad_headers.items():
                r = c.request(method, url, headers=headers, json={})
                if minimum is None:
                    assert r.status_code == 200, (method, path, label, r.text)
                else:
                    assert r.status_code == 401, (method, path, label, r.status_code)
                    assert r.headers["www-authenticate"] == "Bearer"
            for role, token in tokens.items():
                r = c.request(method, url, headers={"Authorization": f"Bearer {token}"}, json={})
                allowed = minimum is None or ROLES.index(role) >= ROLES.index(minimum)
                if allowed:  # past the check: 200, or 404/422 for the made-up study and body
                    assert r.status_code in (200, 201, 204, 404, 422), (method, path, role, r.text)
                else:
                    assert r.status_code == 403, (method, path, role, r.status_code)
                    assert minimum in r.json()["detail"]


def test_tokens_are_hashed_at_rest(migrated_db_url: str) -> None:
    with TestClient(create_app(migrated_db_url, auth=True)) as c:  # its lifespan closes them
        with c.app.state.service.sessions.begin() as session:
            token = create_token(session, "ops", "admin")
    engine = make_engine(migrated_db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT * FROM isotune_tokens")).mappings().all()
    finally:
        engine.dispose()
    (row,) = rows
    assert row["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert all(token not in str(v) for v in row.values())


@pytest.mark.slow
def test_tokens_never_reach_the_log(tmp_path: Path) -> None:
    """A real server with its access log on: a good and a guessed token leave no trace in it."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    made = isotune("token", "create", "--role", "admin", "--name", "ops", "--database-url", url)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    guess = "isotune_guessed-token-value"
    log_path = tmp_path / "server.log"
    with serve(url, auth=True, log=log_path) as server:
        with httpx.Client(base_url=server.base, timeout=10) as h:
            good = {"Authorization": f"Bearer {token}"}
            assert h.post(V1 + "/studies", json=SPEC, headers=good).status_code == 201
            r = h.get(V1 + "/studies", headers={"Authorization": f"Bearer {guess}"})
            assert r.status_code == 401 and guess not in r.text
    text = log_path.read_text()
    assert "with bearer tokens" in text  # the log is this server's
    assert token not in text and token.removeprefix("isotune_")[:16] not in text
    assert guess not in text


#: Strings that would do harm if a layer interpreted them (SQL, HTML, paths, templates, controls).
HOSTILE = [
    "'; DROP TABLE isotune_studies; --",
    "Robert'); DELETE FROM trials WHERE ('1'='1",
    "<script>alert(1)</script>",
    "../../../../etc/passwd",
    "%00%2e%2e%2f",
    "ünïcødé ✓ 名前 \u202e",
    "{{7*7}} ${7*7} %s%n",
    "line\nbreak\r\ttab",
    "x" * 1000,
]


@pytest.mark.parametrize("name", [*HOSTILE, "nul\x00byte", "", "-dash", "a" * 129])
def test_hostile_study_names_are_refused_naming_the_field(client: TestClient, name: str) -> None:
    r = client.post(V1 + "/studies", json={**SPEC, "name": name})
    assert r.status_code == 422, r.text
    named = [e for e in r.json()["detail"] if e["loc"] == ["body", "name"] or "name:" in e["msg"]]
    assert named, r.text
    assert client.get(V1 + "/studies").json() == []


def test_hostile_strings_are_stored_and_returned_verbatim(client: TestClient) -> None:
    """Accepted free text (worker ids, failure reasons) is data: it comes back byte for byte and
    the tables are intact. Training options and their searched values are not free text: a
    hostile one is refused naming it, and nothing is stored."""
    create(client, name="bystander")
    r = client.post(V1 + "/studies", json={**SPEC, "training": {"note": HOSTILE[0]}})
    assert r.status_code == 422 and r.json()["field"] == "training.note", r.text
    space = {**SPEC["space"], "optimizer": {"type": "categorical", "choices": HOSTILE}}
    r = client.post(V1 + "/studies", json={**SPEC, "space": space})
    assert r.status_code == 422 and r.json()["field"] == "space.optimizer", r.text
    assert [s["name"] for s in client.get(V1 + "/studies").json()] == ["bystander"]
    create(client, budget=len(HOSTILE))
    for i, text in enumerate(HOSTILE):
        wid = text[:200]  # the longest worker id taken
        r = client.post(f"{V1}/studies/s1/claim", json={"worker_id": wid})
        assert r.status_code == 200, r.text
        t = r.json()["trial"]
        reason = HOSTILE[(i + 1) % len(HOSTILE)]
        body = {"worker_id": wid, "reason": reason, "retry": False}
        r = client.post(f"{V1}/trials/{t['trial_id']}/fail", json=body)
        assert r.status_code == 200, r.text
        got = client.get(f"{V1}/trials/{t['trial_id']}").json()
        assert got["state"] == "FAIL" and got["user_attrs"]["isotune_fail"] == reason
        assert got["user_attrs"]["isotune_worker"] == wid
    assert sorted(s["name"] for s in client.get(V1 + "/studies").json()) == ["bystander", "s1"]


@pytest.mark.parametrize(
    "path, body, field",
    [
        ("/studies/s1/claim", {"worker_id": "w\x00"}, "worker_id"),
        ("/studies", {**SPEC, "name": "n2", "training": {"note": "a\x00b"}}, "training"),
    ],
)
def test_nul_characters_are_refused_naming_the_field(
    client: TestClient, path: str, body: dict, field: str
) -> None:
    """PostgreSQL text cannot hold NUL: refused up front on every backend, never a 500."""
    create(client)
    r = client.post(V1 + path, json=body)
    assert r.status_code == 422, r.text
    assert any(e["msg"].startswith(f"Value error, {field}") for e in r.json()["detail"]), r.text


@pytest.mark.parametrize("path", ["/studies/a%00b", "/studies/a%00b/export", "/studies/..%20x"])
def test_odd_study_names_in_paths_are_refused_naming_the_field(
    client: TestClient, path: str
) -> None:
    r = client.get(V1 + path)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["path", "name"]


def test_cors_is_off_by_default(client: TestClient) -> None:
    origin = {"Origin": "https://evil.example"}
    r = client.options(
        V1 + "/studies",
        headers={**origin, "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in r.headers
    r = client.get(V1 + "/studies", headers=origin)
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
