"""The database layer (service/db.py): where the URL comes from, what is refused and how, SQLite's
connection settings and its behaviour under concurrent writers, PostgreSQL's bounded pool."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa

from service import db
from service.db import DatabaseError
from service.models import Lease, StudyRecord
from tests.support.pg import PostgresCluster

SECRET = "s3cret-pw"
POSTGRESQL = pytest.param("postgresql", marks=pytest.mark.postgresql)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections (bound, never listening)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def _run_threads(n: int, target: Callable[[int], None], timeout_s: float) -> list[BaseException]:
    errors: list[BaseException] = []

    def wrapped(i: int) -> None:
        try:
            target(i)
        except BaseException as e:  # collected and asserted by the caller
            errors.append(e)

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout_s)
    assert not any(t.is_alive() for t in threads), "threads did not finish in time"
    return errors


# --- where the URL comes from -------------------------------------------------------------------


def test_database_url_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(db.ENV_VAR, raising=False)
    assert db.database_url() == f"sqlite:///{tmp_path / 'isotune.db'}"

    monkeypatch.setenv(db.ENV_VAR, "")  # empty counts as unset
    assert db.database_url() == f"sqlite:///{tmp_path / 'isotune.db'}"

    monkeypatch.setenv(db.ENV_VAR, "sqlite:////data/from-env.db")
    assert db.database_url() == "sqlite:////data/from-env.db"
    assert db.database_url("sqlite:////data/explicit.db") == "sqlite:////data/explicit.db"


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://isotune:{SECRET}@db:5432/isotune",
        f"postgres://isotune:{SECRET}@db:5432/isotune",
        f"postgresql+psycopg://isotune:{SECRET}@db:5432/isotune",
    ],
)
def test_postgresql_urls_use_psycopg(url: str) -> None:
    normalized = db.database_url(url)
    assert normalized == f"postgresql+psycopg://isotune:{SECRET}@db:5432/isotune"
    assert db.is_postgresql(normalized) and not db.is_sqlite(normalized)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (f"mysql://isotune:{SECRET}@db/isotune", "unsupported scheme 'mysql'"),
        (f"postgresql+psycopg2://isotune:{SECRET}@db/isotune", "unsupported scheme"),
        ("not a url", "not a database URL"),
        ("", "empty"),
        (f"postgresql://isotune:{SECRET}@db:5432", "no database name"),
    ],
)
def test_bad_url_is_refused_naming_database_url(url: str, reason: str) -> None:
    with pytest.raises(DatabaseError) as err:
        db.database_url(url)
    assert isinstance(err.value, ValueError)
    assert err.value.field == "database_url"
    assert str(err.value).startswith("database_url=")
    assert reason in err.value.reason
    assert SECRET not in str(err.value)


def test_bad_url_from_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(db.ENV_VAR, "mysql://u:p@h/d")
    with pytest.raises(DatabaseError, match=r"^database_url="):
        db.make_engine()


# --- SQLite --------------------------------------------------------------------------------------


def _pragmas(engine: sa.Engine) -> tuple[str, int, int]:
    with engine.connect() as conn:
        return (
            conn.exec_driver_sql("PRAGMA journal_mode").scalar_one(),
            conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one(),
            conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one(),
        )


def test_sqlite_connections_have_wal_busy_timeout_and_foreign_keys(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    engine = db.make_engine(url, busy_timeout_s=12.5)
    try:
        assert _pragmas(engine) == ("wal", 12500, 1)
    finally:
        engine.dispose()

    storage = db.optuna_storage(url)  # Optuna's own engine gets the same settings
    try:
        assert _pragmas(storage.engine) == ("wal", 30000, 1)
    finally:
        storage.remove_session()
        storage.engine.dispose()


def test_foreign_keys_cascade(migrated_db_url: str) -> None:
    """Deleting a study deletes its leases (ON DELETE CASCADE: needs foreign_keys=ON on SQLite)."""
    engine = db.make_engine(migrated_db_url)
    now = datetime.now(UTC)
    try:
        with db.session_factory(engine).begin() as session:
            session.add(StudyRecord(name="s", optuna_study_id=1, spec={}, created_at=now))
            session.flush()
            session.add(
                Lease(
                    trial_id=7,
                    study_name="s",
                    trial_number=0,
                    worker_id="w",
                    claimed_at=now,
                    expires_at=now,
                )
            )
        with engine.begin() as conn:
            conn.execute(sa.delete(StudyRecord))
            assert conn.scalar(sa.select(sa.func.count()).select_from(Lease)) == 0
    finally:
        engine.dispose()


def test_sqlite_concurrent_read_modify_write_does_not_lock(tmp_path: Path) -> None:
    """4 threads × 25 transactions that read a counter and write it back: with BEGIN IMMEDIATE
    they queue on the busy timeout instead of failing with "database is locked", and no update is
    lost."""
    engine = db.make_engine(f"sqlite:///{tmp_path / 'c.db'}", busy_timeout_s=60)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE counter (n INTEGER NOT NULL)")
            conn.exec_driver_sql("INSERT INTO counter VALUES (0)")

        def work(_: int) -> None:
            for _ in range(25):
                with engine.begin() as conn:
                    n = conn.exec_driver_sql("SELECT n FROM counter").scalar_one()
                    conn.exec_driver_sql("UPDATE counter SET n = ?", (n + 1,))

        errors = _run_threads(4, work, timeout_s=120)
        assert errors == []  # none failed with "database is locked"
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT n FROM counter").scalar_one() == 100
    finally:
        engine.dispose()


@pytest.mark.parametrize("migrated_db_url", ["sqlite"], indirect=True)
def test_sqlite_concurrent_optuna_ask_tell(migrated_db_url: str) -> None:
    """Optuna's own read-then-write transactions (ask, tell) from 3 storages on one SQLite file at
    once: no "database is locked" (optuna#820), every trial finished once."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    setup = db.optuna_storage(migrated_db_url)
    try:
        optuna.create_study(storage=setup, study_name="s")
    finally:
        setup.remove_session()
        setup.engine.dispose()

    def work(i: int) -> None:
        storage = db.optuna_storage(migrated_db_url, busy_timeout_s=10)
        try:
            study = optuna.load_study(
                storage=storage, study_name="s", sampler=optuna.samplers.RandomSampler(seed=i)
            )
            for _ in range(6):
                trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
                study.tell(trial, trial.params["x"])
        finally:
            storage.remove_session()
            storage.engine.dispose()

    errors = _run_threads(3, work, timeout_s=30)
    assert errors == []
    check = db.optuna_storage(migrated_db_url)
    try:
        trials = optuna.load_study(storage=check, study_name="s").trials
    finally:
        check.remove_session()
        check.engine.dispose()
    assert len(trials) == 18
    assert sorted(t.number for t in trials) == list(range(18))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)


def test_sqlite_in_a_missing_folder_is_a_database_error(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")
    try:
        with pytest.raises(DatabaseError, match="cannot connect") as err:
            db.ping(engine)
        assert err.value.field == "database_url"
    finally:
        engine.dispose()


def test_session_factory_keeps_objects_after_commit(migrated_db_url: str) -> None:
    engine = db.make_engine(migrated_db_url)
    try:
        sessions = db.session_factory(engine)
        with sessions.begin() as session:
            record = StudyRecord(
                name="kept", optuna_study_id=3, spec={"a": 1}, created_at=datetime.now(UTC)
            )
            session.add(record)
        assert record.spec == {"a": 1} and record.state == "active"  # no refresh needed
    finally:
        engine.dispose()


# --- PostgreSQL ----------------------------------------------------------------------------------


def test_unreachable_postgresql_is_a_database_error(closed_port: int) -> None:
    url = f"postgresql://isotune:{SECRET}@127.0.0.1:{closed_port}/isotune"
    engine = db.make_engine(url)
    try:
        with pytest.raises(DatabaseError) as err:
            db.ping(engine)
    finally:
        engine.dispose()
    assert err.value.field == "database_url"
    assert "cannot connect" in err.value.reason
    assert SECRET not in str(err.value) and "***" in str(err.value)

    with pytest.raises(DatabaseError, match="cannot connect"):
        db.optuna_storage(url)


@pytest.mark.parametrize("migrated_db_url", [POSTGRESQL], indirect=True)
def test_postgresql_pool_is_bounded_and_survives_killed_connections(
    pg_server: PostgresCluster, migrated_db_url: str
) -> None:
    engine = db.make_engine(migrated_db_url, pool_size=2, max_overflow=1)
    try:
        assert engine.pool.size() == 2
        pids: set[int] = set()
        lock = threading.Lock()

        def work(_: int) -> None:
            for _ in range(3):
                with engine.connect() as conn:
                    pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
                    conn.execute(sa.text("SELECT pg_sleep(0.02)"))
                with lock:
                    pids.add(pid)

        assert _run_threads(6, work, timeout_s=30) == []
        assert 1 <= len(pids) <= 3  # pool_size + max_overflow connections at most

        # A server-side disconnect (restart, idle timeout) is caught by the pre-ping.
        with engine.connect() as conn:
            pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        pg_server.admin().execute("SELECT pg_terminate_backend(%s)", (pid,))
        time.sleep(0.05)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()
