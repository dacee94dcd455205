"""The lease logic (``service/leases.py``) lease by lease: what renews, ends or reaps one lease
leaves every other lease alone, and every refusal names the trial. Written against the mutants
that survived the rest of the suite (benchmarks/results/mutation.md). No background reaper:
the passes are the tests'."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import optuna
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from optuna.trial import TrialState

from service.api import build_app
from service.models import Lease, WorkerRecord
from service.optuna_compat import trial_id
from service.settings import Settings
from service.states import LeaseState
from service.store import ORPHANED
from tests.support.api import V1, claim, create


@pytest.fixture
def app(migrated_db_url: str) -> Iterator[TestClient]:
    settings = Settings(database_url=migrated_db_url, auth=False, migrate=False, reap_interval=3600)
    with TestClient(build_app(settings)) as client:
        yield client


def leases(client: TestClient) -> dict[int, Lease]:
    with client.app.state.service.sessions() as session:
        rows = list(session.query(Lease))
        for row in rows:
            session.expunge(row)
    return {row.trial_id: row for row in rows}


def expiry(lease: Lease) -> datetime:
    t = lease.expires_at
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def trials(client: TestClient, study: str) -> list[optuna.trial.FrozenTrial]:
    storage = client.app.state.service.storage
    return optuna.load_study(study_name=study, storage=storage).get_trials()


def post(client: TestClient, tid: int, what: str, **body: object):
    return client.post(f"{V1}/trials/{tid}/{what}", json={"worker_id": body.pop("w"), **body})


def test_a_heartbeat_or_a_finish_touches_its_own_lease_only(app: TestClient) -> None:
    create(app, lease_seconds=60, budget=3)
    a = claim(app, "wa")["trial"]["trial_id"]
    b = claim(app, "wb")["trial"]["trial_id"]
    before = leases(app)
    time.sleep(0.05)
    r = post(app, a, "heartbeat", w="wa")
    assert r.status_code == 200, r.text
    after = leases(app)
    # a's lease renewed for a full lease from now; b's as it was
    assert expiry(after[a]) > expiry(before[a])
    renewed = (expiry(after[a]) - datetime.now(UTC)).total_seconds()
    assert 55 < renewed <= 60, renewed
    assert expiry(after[b]) == expiry(before[b])
    assert datetime.fromisoformat(r.json()["lease_expires"]) == expiry(after[a])
    # a finishes: its lease ends, b's stays active and b's worker can go on
    r = post(app, a, "complete", w="wa", value=0.5)
    assert r.status_code == 200, r.text
    now = leases(app)
    assert now[a].state == "finished" and now[b].state == "active"
    assert post(app, b, "heartbeat", w="wb").status_code == 200
    # a heartbeat on the finished lease is a conflict naming the trial
    r = post(app, a, "heartbeat", w="wa")
    assert r.status_code == 409
    body = r.json()
    assert body == {"field": "trial", "detail": f"trial={a}: lease is finished"}


def test_the_reaper_takes_the_expired_active_leases_of_its_study_and_no_other(
    app: TestClient,
) -> None:
    """Study s1: a's trial was finished by its worker although its lease stayed active (the
    lease update lost), b finished properly, c and d expire. Study s2: e expires too. Reaping s1
    fails c and d, queues their parameters once each for a second attempt, leaves a and b as
    they are, and does not touch s2."""
    service = app.app.state.service
    create(app, name="s1", lease_seconds=60, budget=8, retries=1)
    create(app, name="s2", lease_seconds=60, budget=2, retries=1)
    a, b, c, d = (claim(app, w, "s1")["trial"] for w in ("wa", "wb", "wc", "wd"))
    e = claim(app, "we", "s2")["trial"]
    service.storage.set_trial_state_values(a["trial_id"], TrialState.COMPLETE, [0.25])
    assert post(app, b["trial_id"], "complete", w="wb", value=0.75).status_code == 200
    expire_active_leases(app)  # every lease, s2's too
    with service.store.study_lock("s1"):
        assert service.leases.reap_expired("s1") == 3  # a, c and d were active and expired
        assert service.leases.reap_expired("s1") == 0  # nothing left to reap
    rows = leases(app)
    assert [rows[t["trial_id"]].state for t in (a, b, c, d, e)] == [
        "expired", "finished", "expired", "expired", "active",
    ]  # fmt: skip
    by_id = {trial_id(t): t for t in trials(app, "s1")}
    assert by_id[a["trial_id"]].state == TrialState.COMPLETE  # its worker's result stands
    assert by_id[a["trial_id"]].value == 0.25
    assert by_id[b["trial_id"]].value == 0.75
    for t in (c, d):
        failed = by_id[t["trial_id"]]
        assert failed.state == TrialState.FAIL
        assert failed.user_attrs["isotune_fail"] == "lease expired"
    waiting = [t for t in by_id.values() if t.state == TrialState.WAITING]
    assert sorted(map(repr, (w.system_attrs["fixed_params"] for w in waiting))) == sorted(
        repr(by_id[t["trial_id"]].params) for t in (c, d)
    )
    assert all(w.user_attrs["isotune_attempt"] == 2 for w in waiting)
    (s2,) = trials(app, "s2")
    assert s2.state == TrialState.RUNNING  # another study's expired lease waits for its own pass
    # the candidates of the next pass: s2 only (s1 has no active expired lease left)
    names, _ = service.leases.reap_candidates()
    assert names == {"s2"}


def test_reports_renew_the_lease_before_it_runs_short(
    app: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lease 2 s, on the service's clock moved by hand (no sleep that a loaded machine could
    stretch past a margin): a report 0.5 s in (1.5 s left, under 0.9 of a lease) renews it; with
    no heartbeat after, the trial is still held 2.2 s in, and reaped once the renewed lease ends."""
    service = app.app.state.service
    clock = [datetime.now(UTC)]
    monkeypatch.setattr("service.leases.now", lambda: clock[0])
    create(app, lease_seconds=2.0, budget=2, retries=0)
    t = claim(app, "w")["trial"]["trial_id"]
    first = expiry(leases(app)[t])
    assert first == clock[0] + timedelta(seconds=2)
    clock[0] += timedelta(seconds=0.5)
    r = post(app, t, "report", w="w", values=[{"step": 0, "value": 0.1}])
    assert r.status_code == 200 and r.json() == {"prune": False, "state": "RUNNING"}, r.text
    renewed = expiry(leases(app)[t])
    assert renewed == first + timedelta(seconds=0.5)
    clock[0] = first + timedelta(seconds=0.2)
    assert service.reaper.reap_all() == 0
    assert leases(app)[t].state == "active"
    clock[0] = renewed + timedelta(seconds=0.1)
    assert service.reaper.reap_all() == 1
    # a report on the reaped trial tells its worker to stop, with the trial's state
    r = post(app, t, "report", w="w", values=[{"step": 1, "value": 0.2}])
    assert r.status_code == 200 and r.json() == {"prune": True, "state": "FAIL"}, r.text
    r = post(app, t, "heartbeat", w="w")
    assert r.status_code == 409
    assert r.json() == {"field": "trial", "detail": f"trial={t}: lease is expired"}


def test_a_repeated_finish_with_another_outcome_says_what_was_recorded(app: TestClient) -> None:
    create(app, budget=3)
    t = claim(app, "w")["trial"]["trial_id"]
    assert post(app, t, "complete", w="w", value=0.5).status_code == 200
    r = post(app, t, "complete", w="w", pruned=True)
    assert r.status_code == 409
    body = r.json()
    assert body["field"] == "state"
    assert body["detail"] == (
        f"state='PRUNED': trial {t} was already finished as COMPLETE; a repeated call may only "
        "repeat its outcome"
    )
    r = post(app, t, "complete", w="w", value=0.25)
    assert r.status_code == 409
    body = r.json()
    assert body["field"] == "value"
    assert body["detail"] == (
        f"value=0.25: trial {t} was already completed with value 0.5; a repeated call may only "
        "repeat it"
    )


def test_a_report_renews_the_lease_at_most_every_tenth_of_its_length(app: TestClient) -> None:
    """Lease 10 s: a report right after the claim writes nothing; one 1.1 s in renews the lease;
    another right after it writes nothing again (the renewed expiry is what the process keeps).
    A tenth of the lease is 1 s: on a loaded machine the calls of "right after" take tenths of a
    second (with a 2 s lease, 0.48 s between two of them once made a third renewal)."""
    create(app, lease_seconds=10.0, budget=2, pruner="none")
    t = claim(app, "w")["trial"]["trial_id"]
    first = expiry(leases(app)[t])
    r = post(app, t, "report", w="w", values=[{"step": 0, "value": 0.1}])
    # no pruner: never stop a running trial
    assert r.status_code == 200 and r.json() == {"prune": False, "state": "RUNNING"}, r.text
    assert expiry(leases(app)[t]) == first
    time.sleep(1.1)
    assert post(app, t, "report", w="w", values=[{"step": 1, "value": 0.1}]).status_code == 200
    renewed = expiry(leases(app)[t])
    assert (renewed - first).total_seconds() > 1.0
    time.sleep(0.05)
    assert post(app, t, "report", w="w", values=[{"step": 2, "value": 0.1}]).status_code == 200
    assert expiry(leases(app)[t]) == renewed


def test_a_report_on_a_trial_finished_behind_its_lease_says_stop(app: TestClient) -> None:
    """Another server process reaped or finished the trial (here: Optuna directly), while this
    one still holds the lease as active: the report answers stop, with the trial's state."""
    create(app, lease_seconds=60, budget=2, pruner="none")
    t = claim(app, "w")["trial"]["trial_id"]
    assert post(app, t, "report", w="w", values=[{"step": 0, "value": 0.1}]).status_code == 200
    app.app.state.service.storage.set_trial_state_values(t, TrialState.FAIL)
    r = post(app, t, "report", w="w", values=[{"step": 1, "value": 0.2}])
    assert r.status_code == 200 and r.json() == {"prune": True, "state": "FAIL"}, r.text


def test_a_report_on_a_trial_whose_study_was_deleted_is_a_404_naming_it(app: TestClient) -> None:
    create(app, lease_seconds=60, budget=2, pruner="none")
    t = claim(app, "w")["trial"]["trial_id"]
    assert post(app, t, "report", w="w", values=[{"step": 0, "value": 0.1}]).status_code == 200
    optuna.delete_study(study_name="s1", storage=app.app.state.service.storage)
    r = post(app, t, "report", w="w", values=[{"step": 1, "value": 0.2}])
    assert r.status_code == 404, r.text
    assert r.json()["field"] == "trial" and r.json()["detail"].startswith(f"trial={t}"), r.text


def end_lease(client: TestClient, tid: int, state: LeaseState) -> None:
    """What another server process does to a lease this one has seen: its row changed."""
    with client.app.state.service.sessions.begin() as session:
        session.execute(sa.update(Lease).where(Lease.trial_id == tid).values(state=state))


@contextlib.contextmanager
def meanwhile(client: TestClient, column: str, *sql: str) -> Iterator[list[str]]:
    """Run ``sql`` just before the service's first ``UPDATE isotune_leases SET column ...``, in
    that statement's own transaction (so that it runs on SQLite too): another process's write
    landing between the service's read and its write. Yields the statements it fired before."""
    engine = client.app.state.service.sessions.kw["bind"]
    fired: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        words = statement.split()
        hit = words[:3] == ["UPDATE", "isotune_leases", "SET"] and column in words[3]
        if hit and not fired:
            fired.append(statement)
            for one in sql:
                conn.exec_driver_sql(one)

    sa.event.listen(engine, "before_cursor_execute", before)
    try:
        yield fired
    finally:
        sa.event.remove(engine, "before_cursor_execute", before)


def expiry_moved(client: TestClient, hours: int) -> str:
    """SQL for a lease's expiry moved by ``hours``, in the service database's dialect."""
    engine = client.app.state.service.sessions.kw["bind"]
    if engine.dialect.name == "postgresql":
        return f"expires_at + interval '{hours} hour'"
    return f"datetime(expires_at, '{hours:+d} hour')"


def expire_active_leases(client: TestClient) -> None:
    """Every active lease made an hour overdue, at once: an expiry without a sleep that a loaded
    machine could stretch past the claims made before it (the claims reap their study too)."""
    earlier = expiry_moved(client, -1)
    with client.app.state.service.sessions.kw["bind"].begin() as conn:
        conn.exec_driver_sql(
            f"UPDATE isotune_leases SET expires_at = {earlier} WHERE state = 'active'"
        )


def test_a_heartbeat_reads_the_lease_afresh_and_keeps_the_new_expiry(app: TestClient) -> None:
    create(app, lease_seconds=60, budget=2, pruner="none")
    t = claim(app, "w")["trial"]["trial_id"]
    first = expiry(leases(app)[t])
    time.sleep(0.05)
    assert post(app, t, "heartbeat", w="w").status_code == 200
    renewed = expiry(leases(app)[t])
    assert renewed > first
    # a report right after renews nothing: the heartbeat's expiry is the one this process keeps
    r = post(app, t, "report", w="w", values=[{"step": 0, "value": 0.1}])
    assert r.status_code == 200 and r.json() == {"prune": False, "state": "RUNNING"}, r.text
    assert expiry(leases(app)[t]) == renewed
    # another process finished the lease: the next heartbeat sees it, not this process's memory
    end_lease(app, t, LeaseState.FINISHED)
    r = post(app, t, "heartbeat", w="w")
    assert r.status_code == 409
    assert r.json() == {"field": "trial", "detail": f"trial={t}: lease is finished"}


def test_a_lease_reaped_between_a_heartbeats_read_and_its_write_is_a_conflict(
    app: TestClient,
) -> None:
    """The lease is expired (the reaper's write, in the renewal's own transaction, so that it
    runs on SQLite too) just before the heartbeat's renewal reaches the database: the renewal
    must not revive it."""
    create(app, lease_seconds=60, budget=2, pruner="none")
    t = claim(app, "w")["trial"]["trial_id"]
    expire = f"UPDATE isotune_leases SET state = 'expired' WHERE trial_id = {int(t)}"
    with meanwhile(app, "expires_at", expire) as fired:
        r = post(app, t, "heartbeat", w="w")
    assert fired, "the heartbeat wrote no renewal"
    assert r.status_code == 409, r.text
    assert r.json() == {"field": "trial", "detail": f"trial={t}: lease is expired"}
    assert leases(app)[t].state == LeaseState.EXPIRED


def test_outcomes_for_a_trial_finished_behind_its_lease_answer_its_state(
    app: TestClient,
) -> None:
    """Another process failed the trial (Optuna directly) while this one holds its lease as
    active: a late completion, or a late pruning, answers the recorded FAIL and ends the lease."""
    service = app.app.state.service
    create(app, lease_seconds=60, budget=3, pruner="none")
    for outcome in ({"value": 0.5}, {"pruned": True}):
        t = claim(app, "w")["trial"]["trial_id"]
        assert post(app, t, "report", w="w", values=[{"step": 0, "value": 0.1}]).status_code == 200
        service.storage.set_trial_state_values(t, TrialState.FAIL)
        r = post(app, t, "complete", w="w", **outcome)
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "FAIL" and r.json()["trial_id"] == t, r.text
        assert leases(app)[t].state == LeaseState.FINISHED, outcome


def test_a_late_outcome_leaves_a_reaped_lease_expired(app: TestClient) -> None:
    """Another process reaped the trial (lease expired, trial failed); this one still holds the
    lease as active: the worker's late pruning answers FAIL and the lease stays expired."""
    service = app.app.state.service
    create(app, lease_seconds=60, budget=2, pruner="none")
    t = claim(app, "w")["trial"]["trial_id"]
    assert post(app, t, "report", w="w", values=[{"step": 0, "value": 0.1}]).status_code == 200
    end_lease(app, t, LeaseState.EXPIRED)
    service.storage.set_trial_state_values(t, TrialState.FAIL)
    r = post(app, t, "complete", w="w", pruned=True)
    assert r.status_code == 200 and r.json()["state"] == "FAIL", r.text
    assert leases(app)[t].state == LeaseState.EXPIRED


def test_what_a_finish_records(app: TestClient) -> None:
    """A completion records its value and no failure reason; a pruning records the last report
    (not a value sent with it); a pruning without reports records no value."""
    create(app, lease_seconds=60, budget=3, pruner="none")
    a = claim(app, "w")["trial"]["trial_id"]
    assert post(app, a, "complete", w="w", value=0.5).status_code == 200
    b = claim(app, "w")["trial"]["trial_id"]
    for step, value in enumerate((0.2, 0.4, 0.3)):
        post(app, b, "report", w="w", values=[{"step": step, "value": value}])
    assert post(app, b, "complete", w="w", pruned=True, value=0.9).status_code == 200
    c = claim(app, "w")["trial"]["trial_id"]
    assert post(app, c, "complete", w="w", pruned=True, value=0.9).status_code == 200
    by_id = {trial_id(t): t for t in trials(app, "s1")}
    assert by_id[a].state == TrialState.COMPLETE and by_id[a].value == 0.5
    assert "isotune_fail" not in by_id[a].user_attrs, by_id[a].user_attrs
    assert by_id[b].state == TrialState.PRUNED and by_id[b].value == 0.3
    assert by_id[c].state == TrialState.PRUNED and by_id[c].value is None


def test_a_deleted_studys_trials_are_not_found_after_the_delete(app: TestClient) -> None:
    create(app, lease_seconds=60, budget=2, pruner="none")
    t = claim(app, "w")["trial"]["trial_id"]
    assert post(app, t, "report", w="w", values=[{"step": 0, "value": 0.1}]).status_code == 200
    assert app.delete(f"{V1}/studies/s1").status_code == 204
    for what, body in (("report", {"values": [{"step": 1, "value": 0.2}]}), ("heartbeat", {})):
        r = post(app, t, what, w="w", **body)
        assert r.status_code == 404, (what, r.text)


def test_what_changes_between_the_reapers_read_and_its_write_is_respected(
    app: TestClient,
) -> None:
    """Three expired leases: just before the reaper's write that takes them (in its own
    transaction, so that it runs on SQLite too), the first is renewed by a heartbeat and the
    second finished by its worker. Only the third is taken: failed and queued again; the first
    stays active with its trial running, the second stays finished."""
    service = app.app.state.service
    create(app, lease_seconds=60, budget=6, retries=2, pruner="none")
    a, b, c = (claim(app, w)["trial"]["trial_id"] for w in ("wa", "wb", "wc"))
    expire_active_leases(app)
    renew = (
        f"UPDATE isotune_leases SET expires_at = {expiry_moved(app, 1)} WHERE trial_id = {int(a)}"
    )
    finish = f"UPDATE isotune_leases SET state = 'finished' WHERE trial_id = {int(b)}"
    with meanwhile(app, "state", renew, finish) as fired:
        assert service.leases.reap_expired("s1") == 1
    assert fired
    now = leases(app)
    assert (now[a].state, now[b].state, now[c].state) == ("active", "finished", "expired")
    states = {trial_id(t): t.state for t in trials(app, "s1")}
    assert states[a] == states[b] == TrialState.RUNNING and states[c] == TrialState.FAIL
    waiting = [t for t in trials(app, "s1") if t.state == TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].user_attrs["isotune_attempt"] == 2


def test_a_trial_finished_during_the_reap_leaves_the_others_to_the_reaper(
    app: TestClient,
) -> None:
    """Two expired leases; the first trial the reaper reads is completed by its worker right
    after the read. It stands, unqueued; the other trial is still failed and queued again."""
    service = app.app.state.service
    create(app, lease_seconds=60, budget=6, retries=2, pruner="none")
    ids = [claim(app, w)["trial"]["trial_id"] for w in ("wa", "wb")]
    expire_active_leases(app)
    storage = service.storage
    get_trial, seen = storage.get_trial, []

    def finished_meanwhile(tid: int) -> optuna.trial.FrozenTrial:
        got = get_trial(tid)
        if not seen:
            storage.set_trial_state_values(tid, TrialState.COMPLETE, [0.75])
        seen.append(tid)
        return got

    storage.get_trial = finished_meanwhile
    try:
        assert service.leases.reap_expired("s1") == 2
    finally:
        del storage.get_trial
    assert sorted(seen) == sorted(ids)
    states = {trial_id(t): t.state for t in trials(app, "s1")}
    assert states[seen[0]] == TrialState.COMPLETE and states[seen[1]] == TrialState.FAIL
    waiting = [t for t in trials(app, "s1") if t.state == TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].user_attrs["isotune_attempt"] == 2


def test_requests_on_trials_not_held_name_the_trial_or_the_worker(app: TestClient) -> None:
    """An unknown trial is a 404; a trial of the study that isotune never handed out (asked
    for through Optuna directly) and a trial leased to another worker are 409s; each names what
    is wrong, with its value."""
    create(app, lease_seconds=60, budget=3, pruner="none")
    t = claim(app, "w")["trial"]["trial_id"]
    raw = optuna.load_study(study_name="s1", storage=app.app.state.service.storage).ask()
    cases = {
        (10**9, "w"): (404, {"field": "trial", "detail": f"trial={10**9}: not found"}),
        (trial_id(raw), "w"): (
            409,
            {
                "field": "trial",
                "detail": f"trial={trial_id(raw)}: was not handed out by this service",
            },
        ),
        (t, "intruder"): (
            409,
            {
                "field": "worker_id",
                "detail": f"worker_id='intruder': trial {t} is leased to another worker",
            },
        ),
    }
    for (tid, worker), (status, body) in cases.items():
        r = post(app, tid, "heartbeat", w=worker)
        assert (r.status_code, r.json()) == (status, body), (tid, worker, r.text)


def test_claims_answer_for_the_study_they_name(app: TestClient) -> None:
    """An unknown study is a 404 naming it; an archived one answers done; one whose Optuna study
    was deleted behind isotune's back is a 409 naming it, on every claim; the worker's
    capabilities are recorded with its first claim."""
    r = app.post(f"{V1}/studies/nope/claim", json={"worker_id": "w"})
    assert (r.status_code, r.json()) == (
        404,
        {"field": "study", "detail": "study='nope': not found"},
    )
    create(app, name="s1", budget=3, pruner="none")
    create(app, name="s2", budget=3, pruner="none")
    body = {"worker_id": "w", "capabilities": {"device": "cpu", "threads": 1}}
    assert app.post(f"{V1}/studies/s1/claim", json=body).json()["status"] == "assigned"
    with app.app.state.service.sessions() as session:
        assert session.get(WorkerRecord, "w").capabilities == {"device": "cpu", "threads": 1}
    assert app.post(f"{V1}/studies/s1/archive").status_code == 200
    r = app.post(f"{V1}/studies/s1/claim", json={"worker_id": "w2"})
    assert (r.status_code, r.json()) == (200, {"status": "done", "trial": None}), r.text
    assert claim(app, "w3", "s2")["status"] == "assigned"  # s2 cached, then deleted in Optuna
    optuna.delete_study(study_name="s2", storage=app.app.state.service.storage)
    detail = "study='s2': " + ORPHANED.format(name="s2")
    for _ in range(2):
        r = app.post(f"{V1}/studies/s2/claim", json={"worker_id": "w4"})
        assert (r.status_code, r.json()) == (409, {"field": "study", "detail": detail}), r.text


def test_a_worker_coming_back_gets_its_running_trial_not_a_finished_one(app: TestClient) -> None:
    create(app, budget=4, pruner="none")
    first = claim(app, "w")["trial"]["trial_id"]
    assert post(app, first, "complete", w="w", value=0.5).status_code == 200
    second = claim(app, "w")["trial"]["trial_id"]
    # the worker restarts and claims again: its running trial, not its finished one, nor a new one
    assert claim(app, "w")["trial"]["trial_id"] == second != first


def test_a_claim_reaps_every_expired_lease_of_its_study(app: TestClient) -> None:
    create(app, lease_seconds=0.3, budget=6, retries=0, pruner="none")
    gone = [claim(app, w)["trial"]["trial_id"] for w in ("wa", "wb", "wc")]
    time.sleep(0.5)
    assert claim(app, "wd")["status"] == "assigned"
    now = leases(app)
    assert [now[t].state for t in gone] == ["expired"] * 3


def test_what_a_finish_answers_and_how_it_ends_the_lease(app: TestClient) -> None:
    create(app, lease_seconds=60, budget=4, retries=2, pruner="none")
    a = claim(app, "w")["trial"]["trial_id"]
    r = post(app, a, "complete", w="w", value=0.5)
    assert r.json() == {"trial_id": a, "number": 0, "state": "COMPLETE", "value": 0.5}, r.text
    b = claim(app, "w")["trial"]["trial_id"]
    # the lease as read back from the database (the heartbeat reads it afresh), not as claimed
    assert post(app, b, "heartbeat", w="w").status_code == 200
    r = post(app, b, "fail", w="w", reason="out of memory", retry=True)
    assert r.json()["state"] == "FAIL" and r.json()["value"] is None, r.text
    c = claim(app, "w")["trial"]["trial_id"]
    app.app.state.service.leases.forget()  # as in another server process: nothing remembered
    r = post(app, c, "report", w="w", values=[{"step": 0, "value": 0.1}])
    assert r.status_code == 200 and r.json() == {"prune": False, "state": "RUNNING"}, r.text
    assert post(app, c, "fail", w="w", reason="diverged").status_code == 200
    now = leases(app)
    assert (now[a].state, now[b].state, now[c].state) == ("finished", "released", "finished")
    by_id = {trial_id(t): t for t in trials(app, "s1")}
    assert by_id[b].user_attrs["isotune_fail"] == "out of memory"
    again = [
        t for t in by_id.values() if t.params == by_id[b].params and t.number > by_id[b].number
    ]
    assert [t.user_attrs["isotune_attempt"] for t in again] == [2]


def test_a_finish_on_a_trial_whose_study_was_deleted_is_a_404_naming_it(app: TestClient) -> None:
    create(app, lease_seconds=60, budget=2, pruner="none")
    t = claim(app, "w")["trial"]["trial_id"]
    assert post(app, t, "report", w="w", values=[{"step": 0, "value": 0.1}]).status_code == 200
    optuna.delete_study(study_name="s1", storage=app.app.state.service.storage)
    r = post(app, t, "complete", w="w", value=0.5)
    assert r.status_code == 404, r.text
    assert r.json()["field"] == "trial" and r.json()["detail"].startswith(f"trial={t}"), r.text
