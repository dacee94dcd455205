"""The REST API on SQLite and PostgreSQL (``client`` and ``migrated_db_url`` are parametrized over
both in conftest)."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime

import optuna
import pytest
from fastapi.testclient import TestClient

from service.api import build_app, create_app
from service.auth import create_token
from service.models import Lease, StudyRecord
from service.optuna_compat import trial_id
from service.settings import Settings
from tests.support.api import V1, claim, create, metric
from tests.support.specs import API as SPEC


def test_study_lifecycle(client: TestClient) -> None:
    s = create(client)
    assert s["name"] == "s1" and s["n_trials"] == 0 and s["spec"]["budget"] == 6
    assert [x["name"] for x in client.get(V1 + "/studies").json()] == ["s1"]
    a = claim(client, "w1")
    assert a["status"] == "assigned"
    t = a["trial"]
    assert set(t["params"]) == set(SPEC["space"]) and t["attempt"] == 1
    assert 16 <= t["params"]["hidden"] <= 64 and t["params"]["hidden"] % 16 == 0
    # the same worker gets its trial back (restart-safe); another worker a different one
    assert claim(client, "w1")["trial"]["trial_id"] == t["trial_id"]
    other = claim(client, "w2")["trial"]
    assert other["trial_id"] != t["trial_id"]
    tid = t["trial_id"]
    r = client.post(
        f"{V1}/trials/{tid}/report",
        json={"worker_id": "w1", "values": [{"step": 1, "value": 0.2}, {"step": 2, "value": 0.3}]},
    )
    assert r.status_code == 200 and r.json()["prune"] is False
    done = client.post(f"{V1}/trials/{tid}/complete", json={"worker_id": "w1", "value": 0.9})
    assert done.status_code == 200 and done.json()["state"] == "COMPLETE"
    again = client.post(f"{V1}/trials/{tid}/complete", json={"worker_id": "w1", "value": 0.9})
    assert again.status_code == 200 and again.json()["value"] == 0.9  # idempotent, recorded
    # another outcome for a finished trial is refused, the recorded one kept
    other_value = client.post(f"{V1}/trials/{tid}/complete", json={"worker_id": "w1", "value": 0.1})
    assert other_value.status_code == 409 and other_value.json()["field"] == "value"
    other_state = client.post(f"{V1}/trials/{tid}/fail", json={"worker_id": "w1"})
    assert other_state.status_code == 409 and other_state.json()["field"] == "state"
    assert client.get(f"{V1}/trials/{tid}").json()["value"] == 0.9
    failed = client.post(f"{V1}/trials/{other['trial_id']}/fail", json={"worker_id": "w2"})
    assert failed.json()["state"] == "FAIL"
    s = client.get(V1 + "/studies/s1").json()
    assert s["counts"]["COMPLETE"] == 1 and s["counts"]["FAIL"] == 1
    assert s["best"]["value"] == 0.9
    page = client.get(V1 + "/studies/s1/trials", params={"limit": 1}).json()
    assert page["total"] == 2 and len(page["trials"]) == 1
    shown = client.get(f"{V1}/trials/{tid}").json()
    assert shown["intermediate_values"] == {"1": 0.2, "2": 0.3}
    # times in UTC with their offset, within a minute of now
    start = datetime.fromisoformat(shown["datetime_start"])
    assert (
        shown["datetime_start"].endswith("+00:00") and shown["datetime_complete"][-6:] == "+00:00"
    )
    assert abs((datetime.now(UTC) - start).total_seconds()) < 60


def test_budget_then_done(client: TestClient) -> None:
    create(client, budget=2)
    ids = []
    for w in ("a", "b"):
        ids.append(claim(client, w)["trial"]["trial_id"])
    assert claim(client, "c")["status"] == "wait"  # budget out, trials still running
    for w, tid in zip(("a", "b"), ids, strict=True):
        client.post(f"{V1}/trials/{tid}/complete", json={"worker_id": w, "value": 0.5})
    assert claim(client, "c")["status"] == "done"


def test_expired_lease_is_retried_then_given_up(client: TestClient) -> None:
    create(client, lease_seconds=0.3, retries=1, budget=1)
    first = claim(client, "dead")["trial"]
    time.sleep(0.5)
    second = claim(client, "alive")["trial"]
    assert second["params"] == first["params"] and second["attempt"] == 2
    assert client.get(f"{V1}/trials/{first['trial_id']}").json()["state"] == "FAIL"
    # the dead worker's late completion answers the recorded state and changes nothing
    late = client.post(
        f"{V1}/trials/{first['trial_id']}/complete", json={"worker_id": "dead", "value": 1.0}
    )
    assert late.status_code == 200 and late.json()["state"] == "FAIL"
    time.sleep(0.5)  # the second attempt expires too: the retry budget (1) is spent
    assert claim(client, "third")["status"] == "done"
    counts = client.get(V1 + "/studies/s1").json()["counts"]
    assert counts["FAIL"] == 2 and counts["RUNNING"] == 0 and counts["WAITING"] == 0


def _waiting(client: TestClient, study: str = "s1") -> int:
    with client.app.state.service.sessions() as session:
        return session.get(StudyRecord, study).waiting


def test_failed_trial_is_retried_and_the_waiting_count_follows(client: TestClient) -> None:
    create(client, retries=1, budget=1)
    first = claim(client, "w1")["trial"]
    r = client.post(
        f"{V1}/trials/{first['trial_id']}/fail",
        json={"worker_id": "w1", "reason": "CUDA out of memory", "retry": True},
    )
    assert r.json()["state"] == "FAIL" and _waiting(client) == 1
    again = claim(client, "w2")["trial"]
    assert again["params"] == first["params"] and again["attempt"] == 2
    assert _waiting(client) == 0
    failed = client.get(f"{V1}/trials/{first['trial_id']}").json()
    assert failed["user_attrs"]["isotune_fail"] == "CUDA out of memory"
    # the retry budget (1) is spent: failing again re-enqueues nothing
    client.post(f"{V1}/trials/{again['trial_id']}/fail", json={"worker_id": "w2", "retry": True})
    assert _waiting(client) == 0 and claim(client, "w3")["status"] == "done"


def test_a_waiting_trial_the_count_missed_is_still_handed_out(client: TestClient) -> None:
    """The count only lets claims skip Optuna's WAITING scan while the budget lasts; once it is
    spent, claims look for WAITING trials in Optuna itself."""
    create(client, budget=1)
    t = claim(client, "w1")["trial"]
    client.post(f"{V1}/trials/{t['trial_id']}/complete", json={"worker_id": "w1", "value": 1})
    storage = client.app.state.service.storage
    study = optuna.load_study(study_name="s1", storage=storage)
    study.enqueue_trial(t["params"])  # behind the service's back: the count stays 0
    assert _waiting(client) == 0
    extra = claim(client, "w2")
    assert extra["status"] == "assigned" and extra["trial"]["params"] == t["params"]


def test_a_running_trial_without_lease_is_reaped(client: TestClient) -> None:
    """A claim cut off between Optuna's ask and its lease leaves a RUNNING trial nobody holds:
    the reaper fails it once it is older than the lease."""
    # a lease long enough that a stall of this busy machine does not expire it before the first
    # pass, short enough that waiting it out costs little
    create(client, lease_seconds=1.5, budget=3)
    service = client.app.state.service
    held = claim(client, "w1")["trial"]
    study = optuna.load_study(study_name="s1", storage=service.storage)
    orphan = study.ask()  # RUNNING, no lease
    assert service.reaper.reap_all() == 0  # too young
    time.sleep(1.7)  # Optuna's timestamps have one-second resolution on some backends
    service.reaper.reap_all()
    got = client.get(f"{V1}/trials/{trial_id(orphan)}").json()
    assert got["state"] == "FAIL" and got["user_attrs"]["isotune_fail"] == (
        "claimed but never handed out"
    )
    # the leased trial expired too and was failed as such, not as an orphan
    expired = client.get(f"{V1}/trials/{held['trial_id']}").json()
    assert expired["user_attrs"]["isotune_fail"] == "lease expired"
    assert client.get(V1 + "/studies/s1").json()["counts"]["RUNNING"] == 0


def test_heartbeat_keeps_the_lease(client: TestClient) -> None:
    create(client, lease_seconds=1.5, budget=1)  # heartbeats 3 times as often, for 2 s
    t = claim(client, "w")["trial"]
    for _ in range(4):
        time.sleep(0.5)
        r = client.post(f"{V1}/trials/{t['trial_id']}/heartbeat", json={"worker_id": "w"})
        assert r.status_code == 200
    done = client.post(f"{V1}/trials/{t['trial_id']}/complete", json={"worker_id": "w", "value": 1})
    assert done.json()["state"] == "COMPLETE"


def test_pruning_is_recorded(client: TestClient) -> None:
    create(client, pruner="median", budget=5)
    # three complete trials with high intermediate values, then a bad one is pruned
    for i in range(4):
        t = claim(client, f"w{i}")["trial"]
        value = 0.9 if i < 3 else 0.0
        r = client.post(
            f"{V1}/trials/{t['trial_id']}/report",
            json={"worker_id": f"w{i}", "values": [{"step": s, "value": value} for s in (1, 2)]},
        )
        if i < 3:
            client.post(
                f"{V1}/trials/{t['trial_id']}/complete", json={"worker_id": f"w{i}", "value": value}
            )
        else:
            assert r.json()["prune"] is True
            p = client.post(
                f"{V1}/trials/{t['trial_id']}/complete", json={"worker_id": f"w{i}", "pruned": True}
            )
            assert p.json()["state"] == "PRUNED"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"sampler": "bogus"}, "sampler"),
        ({"pruner": "nope"}, "pruner"),
        ({"space": {"x": {"type": "float", "low": 2.0, "high": 1.0}}}, "space"),
        ({"space": {"x": {"type": "float", "low": 1.0, "high": 1.0}}}, "space"),
        ({"space": {}}, "space"),
        ({"space": {"x": {"type": "float", "low": 0.0, "high": 1.0, "log": True}}}, "space"),
        ({"budget": 0}, "budget"),
        ({"name": "bad name!"}, "name"),
        ({"task": {"name": "copy", "T": 0}}, "task"),
    ],
)
def test_bad_study_specs_are_422_naming_the_field(
    client: TestClient, change: dict, field: str
) -> None:
    r = client.post(V1 + "/studies", json={**SPEC, **change})
    assert r.status_code == 422, r.text
    assert field in str(r.json()["detail"][0]["loc"])


def test_bad_reports_and_unknown_things(client: TestClient) -> None:
    create(client)
    t = claim(client, "w")["trial"]
    url = f"{V1}/trials/{t['trial_id']}/report"
    for bad in ("NaN", "Infinity"):
        r = client.post(
            url,
            content=f'{{"worker_id": "w", "values": [{{"step": 1, "value": {bad}}}]}}',
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 422 and "value" in str(r.json()["detail"])
    assert client.get(V1 + "/studies/nope").status_code == 404
    r = client.post(f"{V1}/trials/999999/complete", json={"worker_id": "w", "value": 1})
    assert r.status_code == 404 and "trial" in r.json()["detail"]
    r = client.post(f"{V1}/trials/{t['trial_id']}/complete", json={"worker_id": "x", "value": 1})
    assert r.status_code == 409 and "worker_id" in r.json()["detail"]
    assert client.post(V1 + "/studies", json=SPEC).status_code == 409  # duplicate name
    big = client.post(V1 + "/studies", content=b"x" * 2_000_000)
    assert big.status_code == 413


def test_tokens_and_roles(migrated_db_url: str) -> None:
    app = create_app(migrated_db_url, auth=True)
    service = app.state.service
    with service.sessions.begin() as session:
        admin = create_token(session, "ops", "admin")
        worker = create_token(session, "gpu-1", "worker")
        reader = create_token(session, "viewer", "reader")
    with TestClient(app) as c:

        def h(tok: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {tok}"}

        assert c.get(V1 + "/studies").status_code == 401
        assert c.get(V1 + "/studies", headers=h("isotune_wrong")).status_code == 401
        assert c.post(V1 + "/studies", json=SPEC, headers=h(worker)).status_code == 403
        assert c.post(V1 + "/studies", json=SPEC, headers=h(admin)).status_code == 201
        assert c.get(V1 + "/studies", headers=h(reader)).status_code == 200
        r = c.post(V1 + "/studies/s1/claim", json={"worker_id": "w"}, headers=h(reader))
        assert r.status_code == 403
        r = c.post(V1 + "/studies/s1/claim", json={"worker_id": "w"}, headers=h(worker))
        assert r.status_code == 200


def test_concurrent_claims_never_share_a_trial(migrated_db_url: str) -> None:
    """16 clients claim at once: every assignment is a different trial."""
    with TestClient(create_app(migrated_db_url, auth=False)) as c:
        create(c, budget=32)
        got: list[int] = []
        errors: list[str] = []
        guard = threading.Lock()

        def run(i: int) -> None:
            for k in range(2):
                r = c.post(V1 + "/studies/s1/claim", json={"worker_id": f"w{i}-{k}"})
                if r.status_code != 200:
                    errors.append(r.text)
                    continue
                with guard:
                    got.append(r.json()["trial"]["trial_id"])

        threads = [threading.Thread(target=run, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors
        assert len(got) == 32 and len(set(got)) == 32


def test_a_finished_trial_is_never_handed_back(client: TestClient) -> None:
    """Its completion recorded but the lease left active (the answer lost, the lease update
    failed): the worker's next claim gets a new trial, and the stale lease is closed."""
    create(client, budget=3)
    first = claim(client, "w")["trial"]
    client.post(f"{V1}/trials/{first['trial_id']}/complete", json={"worker_id": "w", "value": 1})
    with client.app.state.service.sessions.begin() as session:
        session.get(Lease, first["trial_id"]).state = "active"  # as if the update was lost
    client.app.state.service.leases.forget()
    again = claim(client, "w")["trial"]
    assert again["trial_id"] != first["trial_id"]
    with client.app.state.service.sessions() as session:
        assert session.get(Lease, first["trial_id"]).state == "finished"
    # a repeated completion of the first trial answers its recorded value; another value is a
    # conflict that changes nothing
    url = f"{V1}/trials/{first['trial_id']}/complete"
    r = client.post(url, json={"worker_id": "w", "value": 1})
    assert r.json()["state"] == "COMPLETE" and r.json()["value"] == 1
    r = client.post(url, json={"worker_id": "w", "value": 0})
    assert r.status_code == 409 and r.json()["field"] == "value", r.text
    assert client.get(f"{V1}/trials/{first['trial_id']}").json()["value"] == 1


def test_heartbeat_after_the_reaper_is_a_conflict(client: TestClient) -> None:
    create(client, lease_seconds=0.2, budget=1, retries=0)
    t = claim(client, "w")["trial"]
    time.sleep(0.4)
    client.app.state.service.reaper.reap_all()
    r = client.post(f"{V1}/trials/{t['trial_id']}/heartbeat", json={"worker_id": "w"})
    assert r.status_code == 409 and "expired" in r.json()["detail"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"space": {"h": {"type": "int", "low": 1, "high": 9, "step": 0.5}}}, "space"),
        ({"space": {"x": {"type": "float", "low": 0, "high": 1e300}}}, "space"),
        ({"pruner": "threshold", "pruner_options": {"lower": float("nan")}}, "pruner_options"),
        ({"pruner": "median", "pruner_options": {"bogus": 1}}, "pruner_options"),
    ],
)
def test_more_bad_specs_are_422(client: TestClient, change: dict, field: str) -> None:
    body = json.dumps({**SPEC, **change})  # NaN written as JSON's common extension
    r = client.post(V1 + "/studies", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and field in r.text
    assert client.get(V1 + "/studies").json() == []


def test_out_of_range_ids_and_steps_are_422(client: TestClient) -> None:
    create(client)
    t = claim(client, "w")["trial"]
    r = client.post(f"{V1}/trials/{2**63}/heartbeat", json={"worker_id": "w"})
    assert r.status_code == 422 and "trial_id" in r.text
    r = client.post(
        f"{V1}/trials/{t['trial_id']}/report",
        json={"worker_id": "w", "values": [{"step": 2**40, "value": 0.5}]},
    )
    assert r.status_code == 422 and "step" in r.text


def test_liveness_and_readiness(client: TestClient) -> None:
    assert client.get(V1 + "/health").json() == {"status": "ok"}
    assert client.get(V1 + "/ready").json() == {"status": "ready"}


def test_not_ready_while_the_database_is_unreachable(pg_server) -> None:
    name = pg_server.create_database()
    with TestClient(create_app(pg_server.url_for(name), auth=False)) as c:
        assert c.get(V1 + "/ready").status_code == 200
        pg_server.drop_database(name)  # the database goes away under a running server
        assert c.get(V1 + "/health").status_code == 200  # still alive
        r = c.get(V1 + "/ready")
        assert r.status_code == 503 and r.json()["status"] == "unavailable"
        assert r.json()["detail"].startswith("cannot connect")


def test_metrics_move_with_the_trials(client: TestClient) -> None:
    create(client, name="m1", budget=3, lease_seconds=1.0, retries=0)
    before = client.get("/metrics").text
    a = claim(client, "w1", "m1")["trial"]
    client.post(f"{V1}/trials/{a['trial_id']}/complete", json={"worker_id": "w1", "value": 1})
    b = claim(client, "w2", "m1")["trial"]
    client.post(f"{V1}/trials/{b['trial_id']}/complete", json={"worker_id": "w2", "pruned": True})
    claim(client, "w3", "m1")  # expires
    time.sleep(1.2)
    client.app.state.service.reaper.reap_all()
    assert claim(client, "w4", "m1")["status"] == "done"
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    after = r.text

    def moved(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert moved("isotune_claims_total", study="m1", status="assigned") == 3
    assert moved("isotune_claims_total", study="m1", status="done") == 1
    assert moved("isotune_trials_finished_total", study="m1", state="COMPLETE") == 1
    assert moved("isotune_trials_finished_total", study="m1", state="PRUNED") == 1
    assert moved("isotune_lease_expiries_total", study="m1") == 1
    route = "/api/v1/studies/{name}/claim"
    assert moved("isotune_request_seconds_count", route=route, status="200", method="POST") == 4


def test_a_study_deleted_during_a_reaper_pass_is_an_orphan_not_a_traceback(
    migrated_db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """optuna-dashboard deletes a study while the reaper is reaping its expired lease (after the
    pass listed it, before the trial is failed): the pass says once that the study is orphaned,
    with no traceback, and the next passes say nothing more. (No background reaper here: the
    passes are the test's.)"""
    settings = Settings(database_url=migrated_db_url, auth=False, migrate=False, reap_interval=3600)
    with TestClient(build_app(settings)) as client:
        create(client, lease_seconds=0.3, budget=2)
        service = client.app.state.service
        held = claim(client, "dead")["trial"]["trial_id"]
        time.sleep(0.5)
        storage = service.reaper.leases.store.storage
        get_trial, seen = storage.get_trial, []

        def deleted_meanwhile(tid: int):  # the pass has read the trial, then the delete
            seen.append(tid)
            got = get_trial(tid)
            optuna.delete_study(study_name="s1", storage=service.storage)
            return got

        storage.get_trial = deleted_meanwhile
        with caplog.at_level("WARNING", logger="isotune.service"):
            service.reaper.reap_all()
            del storage.get_trial
            service.reaper.reap_all()
        studies = client.get(V1 + "/studies").json()
    assert seen == [held], seen  # the pass did reach the expired lease's trial
    messages = [r.getMessage() for r in caplog.records]
    assert not any(r.exc_info for r in caplog.records), messages
    assert len([m for m in messages if "'s1' is skipped by the reaper" in m]) == 1, messages
    assert studies[0]["state"] == "orphaned"


def test_a_trial_its_worker_finishes_during_the_reap_is_not_queued_again(
    migrated_db_url: str,
) -> None:
    """The reaper has taken the expired lease and read the trial RUNNING when its worker's
    completion lands: the completion stands, and the parameters are not queued for a retry (a
    second run of a finished trial). (No background reaper: the pass is the test's.)"""
    settings = Settings(database_url=migrated_db_url, auth=False, migrate=False, reap_interval=3600)
    with TestClient(build_app(settings)) as client:
        create(client, lease_seconds=0.3, budget=3, retries=2)
        service = client.app.state.service
        held = claim(client, "slow")["trial"]["trial_id"]
        time.sleep(0.5)
        storage = service.reaper.leases.store.storage
        get_trial, seen = storage.get_trial, []

        def finished_meanwhile(tid: int):  # the pass read it RUNNING; the worker completes
            got = get_trial(tid)
            seen.append(got.state)
            storage.set_trial_state_values(tid, optuna.trial.TrialState.COMPLETE, [0.75])
            return got

        storage.get_trial = finished_meanwhile
        try:
            assert service.reaper.reap_all() >= 0
        finally:
            del storage.get_trial
        trials = optuna.load_study(study_name="s1", storage=service.storage).get_trials()
    assert seen == [optuna.trial.TrialState.RUNNING]
    (done,) = [t for t in trials if trial_id(t) == held]
    assert done.state == optuna.trial.TrialState.COMPLETE and done.value == 0.75
    assert "isotune_fail" not in done.user_attrs
    waiting = [t for t in trials if t.state == optuna.trial.TrialState.WAITING]
    assert waiting == [], [t.params for t in waiting]
