"""Trials sampled ahead of their claims (``service/pool.py``), on SQLite and PostgreSQL: the pool
holds WAITING trials with their parameters, claims take them without the study lock, the budget
counts them, concurrent claims never share one, and exports, deletion and the reaper treat them
as the trials they are."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

import optuna
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from optuna.trial import TrialState

from service.api import build_app
from service.models import Lease, PoolEntry
from service.optuna_compat import trial_id
from service.pool import AUTO_MAX, target
from service.schemas import StudyCreate
from service.settings import Settings
from tests.support import specs
from tests.support.api import V1, claim, create
from tests.support.servers import wait_for


@pytest.fixture
def app(migrated_db_url: str) -> Iterator[TestClient]:
    settings = Settings(database_url=migrated_db_url, auth=False, migrate=False, reap_interval=3600)
    with TestClient(build_app(settings)) as client:
        # the tests refill by hand (deterministic); the refill thread has its own test
        service(client).leases.refiller.stop()
        yield client


def service(client: TestClient):
    return client.app.state.service


def pool_rows(client: TestClient, study: str = "s1") -> list[PoolEntry]:
    with service(client).sessions() as session:
        rows = list(
            session.scalars(
                sa.select(PoolEntry)
                .where(PoolEntry.study_name == study)
                .order_by(PoolEntry.trial_id)
            )
        )
        for row in rows:
            session.expunge(row)
    return rows


def trials(client: TestClient, study: str = "s1") -> list[optuna.trial.FrozenTrial]:
    storage = service(client).storage
    return optuna.load_study(study_name=study, storage=storage).get_trials()


def refill(client: TestClient, study: str = "s1") -> int:
    return service(client).leases.pool.refill(study)


def test_auto_pools_one_trial_per_eight_running_and_at_most_64() -> None:
    auto = StudyCreate.model_validate(specs.api())
    assert auto.pool == "auto"
    assert [target(auto, n) for n in (0, 1, 7, 8, 15, 16, 800)] == [0, 0, 0, 1, 1, 2, AUTO_MAX]
    fixed = StudyCreate.model_validate(specs.api(pool=5))
    assert target(fixed, 0) == 5 and target(fixed, 100) == 5
    assert target(StudyCreate.model_validate(specs.api(pool=0)), 1000) == 0


@pytest.mark.parametrize("bad", [-1, 1025, "many", "Auto", 2.5, True])
def test_a_bad_pool_is_refused_naming_the_field(app: TestClient, bad: object) -> None:
    r = app.post(V1 + "/studies", json=specs.api(pool=bad))
    assert r.status_code == 422, r.text
    # one error, naming the field, the accepted forms and the value given
    (err,) = r.json()["detail"]
    assert err["loc"] == ["body", "pool"], r.text
    assert "0 to 1024, or 'auto'" in err["msg"] and repr(bad) in err["msg"], r.text


def test_a_pooled_trial_waits_with_its_parameters_and_a_claim_starts_it(app: TestClient) -> None:
    create(app, pool=3, budget=10, prior={"mode": "soft"})
    assert refill(app) == 3
    rows = pool_rows(app)
    assert len(rows) == 3
    by_id = {trial_id(t): t for t in trials(app)}
    for row in rows:
        t = by_id[row.trial_id]
        assert t.state == TrialState.WAITING and t.datetime_start is None
        assert t.params == row.params and set(t.params) == set(specs.API["space"])
        assert t.number == row.trial_number
        # the theory numbers are recorded when it is sampled, and handed out with it
        assert row.theory is not None and t.user_attrs["isotune_theory"] == row.theory
        assert t.user_attrs["xi_c"] == row.theory["xi_c"]
    assert refill(app) == 0  # full
    got = claim(app, "w1")["trial"]
    oldest = rows[0]
    assert got["trial_id"] == oldest.trial_id and got["number"] == oldest.trial_number
    assert got["params"] == oldest.params and got["theory"] == oldest.theory
    started = {trial_id(t): t for t in trials(app)}[oldest.trial_id]
    assert started.state == TrialState.RUNNING and started.datetime_start is not None
    assert started.user_attrs["isotune_worker"] == "w1"
    assert [r.trial_id for r in pool_rows(app)] == [r.trial_id for r in rows[1:]]
    with service(app).sessions() as session:
        lease = session.get(Lease, oldest.trial_id)
        assert lease.worker_id == "w1" and lease.state == "active" and lease.attempt == 1
    # the trial runs its course like any other
    tid = got["trial_id"]
    r = app.post(f"{V1}/trials/{tid}/report", json={"worker_id": "w1", "values": [
        {"step": 1, "value": 0.4}]})  # fmt: skip
    assert r.status_code == 200 and r.json()["state"] == "RUNNING", r.text
    r = app.post(f"{V1}/trials/{tid}/complete", json={"worker_id": "w1", "value": 0.7})
    assert r.status_code == 200 and r.json()["state"] == "COMPLETE", r.text


def test_the_budget_counts_pooled_trials(app: TestClient) -> None:
    create(app, pool=3, budget=4)
    assert refill(app) == 3
    claim(app, "w0")  # from the pool
    assert refill(app) == 1  # 1 leased + 2 pooled: one more fits the budget
    assert refill(app) == 0
    answers = [claim(app, f"w{i}") for i in range(1, 6)]
    statuses = Counter(a["status"] for a in answers)
    assert statuses == {"assigned": 3, "wait": 2}, answers
    assert len(trials(app)) == 4  # not one trial over the budget
    assert pool_rows(app) == []


def test_concurrent_claims_never_share_a_pooled_trial(app: TestClient) -> None:
    create(app, pool=12, budget=40)
    assert refill(app) == 12
    got: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        for k in range(5):
            r = app.post(f"{V1}/studies/s1/claim", json={"worker_id": f"w{i}-{k}"})
            if r.status_code != 200 or r.json()["status"] != "assigned":
                with lock:
                    errors.append(r.text)
                continue
            with lock:
                got.append(r.json()["trial"]["trial_id"])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(got) == 40 and len(set(got)) == 40
    states = Counter(t.state for t in trials(app))
    assert states == {TrialState.RUNNING: 40}, states
    with service(app).sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Lease)) == 40


def test_the_refill_thread_keeps_the_pool_filled(app: TestClient) -> None:
    service(app).leases.refiller.start()
    create(app, pool=4, budget=20)
    first = claim(app, "w0")["trial"]  # sampled in the claim, which asks the thread for 4 more
    wait_for(lambda: len(pool_rows(app)) == 4, 120, "the refill thread to fill the pool")
    rows = pool_rows(app)
    assert len(rows) == 4 and all(r.trial_number > first["number"] for r in rows)
    assert claim(app, "w1")["trial"]["trial_id"] == rows[0].trial_id
    # taken one: the others stay, in order (the pool is refilled once below half its size)
    assert [r.trial_id for r in pool_rows(app)][:3] == [r.trial_id for r in rows[1:]]


def test_exported_pooled_trials_keep_their_parameters(app: TestClient) -> None:
    create(app, pool=2, budget=6)
    refill(app)
    rows = pool_rows(app)
    r = app.get(f"{V1}/studies/s1/export")
    assert r.status_code == 200, r.text
    exported = {t["number"]: t for t in r.json()["trials"]}
    for row in rows:
        t = exported[row.trial_number]
        assert t["state"] == "WAITING" and t["params"] == row.params


def test_deleting_or_archiving_a_study_leaves_no_pool_to_claim(app: TestClient) -> None:
    create(app, pool=2, budget=6)
    refill(app)
    r = app.post(f"{V1}/studies/s1/archive")
    assert r.status_code == 200, r.text
    assert refill(app) == 0
    assert claim(app, "w")["status"] == "done"
    assert app.delete(f"{V1}/studies/s1").status_code == 204
    assert pool_rows(app) == []


def test_the_reaper_leaves_pooled_trials_alone(app: TestClient) -> None:
    create(app, pool=2, budget=6, lease_seconds=0.5)
    refill(app)
    threading.Event().wait(0.7)
    service(app).background_pass()
    assert {t.state for t in trials(app)} == {TrialState.WAITING}
    assert len(pool_rows(app)) == 2
