"""The database as the service sees it: isotune's tables, Optuna's storage and the study locks.

Optuna writes through its own connections. On SQLite (one writer at a time) a transaction of
ours must never be open while Optuna writes, or the two wait on each other until the busy
timeout: every operation reads our tables in one short session, lets Optuna write, then writes
our tables in another short session.
"""

from __future__ import annotations

import contextlib
import threading
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime

import optuna
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from service.errors import Conflict, NotFound
from service.models import StudyRecord
from service.schemas import StudyCreate

__all__ = ["ORPHANED", "Store", "aware", "now", "orphaned"]


#: Why an orphaned study (its Optuna study deleted or renamed, e.g. in optuna-dashboard) refuses.
ORPHANED = (
    "its Optuna study is gone (deleted or renamed, e.g. in optuna-dashboard); "
    "DELETE /api/v1/studies/{name} (isotune study delete) removes what isotune kept of it; "
    "POST /api/v1/studies/{name}/adopt (isotune study adopt {name} --optuna-study NEW) "
    "re-attaches it to the Optuna study NEW (a rename copies the study under the new name)"
)


def orphaned(name: str) -> Conflict:
    return Conflict("study", name, ORPHANED.format(name=name))


def now() -> datetime:
    return datetime.now(UTC)


def aware(t: datetime) -> datetime:
    """SQLite returns naive datetimes (stored in UTC)."""
    return t if t.tzinfo else t.replace(tzinfo=UTC)


class Store:
    """``sessions`` for isotune's tables, ``storage`` Optuna's, and one lock per study.

    ``storage`` is one caching wrapper for the process: Optuna wraps an RDBStorage anew for every
    Study object, and a new wrapper reads every trial once (claims would be O(trials)). Finished
    trials are immutable, unfinished ones are re-read: safe across server processes. ``rdb`` is
    the storage itself, for state-filtered reads the cache would answer by reading every trial.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        storage: optuna.storages.BaseStorage,
        *,
        sqlite: bool,
        lock_engine: Engine | None = None,
    ) -> None:
        self.sessions = sessions
        self.storage = optuna.storages.get_storage(storage)
        self.rdb = storage
        self.sqlite = sqlite
        # Waiting for a study lock holds a connection: they come from their own pool, so that
        # waiters can never starve the lock holder of the connections it works with.
        self.lock_engine = lock_engine
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    @contextlib.contextmanager
    def study_lock(self, name: str) -> Iterator[None]:
        """Serialize the mutating requests of one study: a PostgreSQL session advisory lock (good
        across server processes), or an in-process lock on SQLite (one server process)."""
        if not self.sqlite and self.lock_engine is not None:
            key = zlib.crc32(name.encode()) - 2**31
            with self.lock_engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
                try:
                    yield
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            return
        with self._locks_guard:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            yield

    def record(self, name: str) -> StudyRecord:
        """The study's row (detached); :class:`NotFound` if there is none."""
        with self.sessions() as session:
            rec = session.get(StudyRecord, name)
            if rec is None:
                raise NotFound("study", name)
            session.expunge(rec)
        return rec

    def spec(self, name: str) -> tuple[StudyCreate, StudyRecord]:
        rec = self.record(name)
        return StudyCreate.model_validate(rec.spec), rec

    def trials(self, rec: StudyRecord) -> list[optuna.trial.FrozenTrial]:
        """Every trial of the study of ``rec``; :class:`Conflict` if its Optuna study is gone."""
        try:  # the cache may still answer for a study deleted under it: ask the database
            self.rdb.get_study_name_from_id(rec.optuna_study_id)
            return self.storage.get_all_trials(rec.optuna_study_id, deepcopy=False)
        except KeyError:
            raise orphaned(rec.name) from None

    def trial(self, trial_id: int) -> optuna.trial.FrozenTrial:
        try:
            return self.storage.get_trial(trial_id)
        except KeyError:
            raise NotFound("trial", trial_id) from None
