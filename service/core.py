"""The study service's logic, independent of HTTP: studies, claims, leases, reports, the reaper.

Trials live in Optuna's storage; a :class:`~service.models.Lease` ties each trial handed out to the
worker that claimed it until ``expires_at``. Claims of one study are serialized (a PostgreSQL
advisory lock held for the claim's transaction, so several server processes can share one
database; an in-process lock on SQLite, which only one server process may use), which is what keeps
two workers from ever receiving the same trial. An expired lease fails its trial and re-enqueues
the same parameters, at most ``retries`` times; :meth:`Service.reap` runs at every claim and
periodically in the server, so no trial stays RUNNING after its worker died.
"""

from __future__ import annotations

import contextlib
import math
import threading
import zlib
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState
from sqlalchemy import Engine, delete, func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from service.models import Lease, StudyRecord, WorkerRecord
from service.schemas import ClaimResponse, Distribution, StudyCreate, TrialAssignment

__all__ = ["Conflict", "NotFound", "Service"]

optuna.logging.set_verbosity(optuna.logging.WARNING)

ATTEMPT_ATTR = "isotune_attempt"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class NotFound(LookupError):
    """An unknown study or trial (HTTP 404); names what was looked up."""

    def __init__(self, field: str, value: object) -> None:
        self.field, self.value = field, value
        super().__init__(f"{field}={value!r}: not found")


class Conflict(RuntimeError):
    """A request that contradicts the recorded state (HTTP 409), e.g. a foreign lease."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field, self.value, self.reason = field, value, reason
        super().__init__(f"{field}={value!r}: {reason}")


def now() -> datetime:
    return datetime.now(UTC)


def _aware(t: datetime) -> datetime:
    """SQLite returns naive datetimes (stored in UTC)."""
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def to_distribution(d: Distribution) -> BaseDistribution:
    if d.type == "categorical":
        return CategoricalDistribution(list(d.choices or ()))
    if d.type == "int":
        return IntDistribution(int(d.low), int(d.high), log=d.log, step=int(d.step or 1))  # type: ignore[arg-type]
    return FloatDistribution(float(d.low), float(d.high), log=d.log, step=d.step)  # type: ignore[arg-type]


def make_sampler(spec: StudyCreate, trials_so_far: int = 0) -> optuna.samplers.BaseSampler:
    seed = None if spec.seed is None else spec.seed + trials_so_far
    name = spec.sampler
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(spec: StudyCreate) -> optuna.pruners.BasePruner:
    name = spec.pruner
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if name == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)


class Service:
    """The service over one database: ``sessions`` for isotune's tables, ``storage`` Optuna's.

    Optuna writes through its own connections. On SQLite (one writer at a time) a transaction of
    ours must never be open while Optuna writes, or the two wait on each other until the busy
    timeout: every operation below reads our tables in one short session, lets Optuna write, then
    writes our tables in another short session. The study lock keeps the three steps atomic with
    respect to other requests for the same study.
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
        # One caching wrapper for the process: Optuna wraps an RDBStorage anew for every Study
        # object, and a new wrapper reads every trial once (claims would be O(trials)). Finished
        # trials are immutable, unfinished ones are re-read: safe across server processes.
        self.storage = optuna.storages.get_storage(storage)
        self.sqlite = sqlite
        # Waiting for a study lock holds a connection: they come from their own pool, so that
        # waiters can never starve the lock holder of the connections it works with.
        self.lock_engine = lock_engine
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # -- helpers ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def study_lock(self, name: str) -> Iterator[None]:
        """Serialize the mutating requests of one study: a PostgreSQL session advisory lock (good
        across server processes), or an in-process lock on SQLite (one server process)."""
        if not self.sqlite and self.lock_engine is not None:
            key = zlib.crc32(name.encode()) - 2**31
            with self.lock_engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
                conn.commit()
                try:
                    yield
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    conn.commit()
            return
        with self._locks_guard:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            yield

    def _spec(self, name: str) -> tuple[StudyCreate, StudyRecord]:
        with self.sessions() as session:
            rec = session.get(StudyRecord, name)
            if rec is None:
                raise NotFound("study", name)
            session.expunge(rec)
        return StudyCreate.model_validate(rec.spec), rec

    def _study(self, rec: StudyRecord, spec: StudyCreate, n_done: int = 0) -> optuna.Study:
        """The Optuna study with the spec's sampler (seeded by ``n_done``, so that a seeded
        study's successive proposals differ although every request builds a new sampler)."""
        return optuna.load_study(
            study_name=rec.name,
            storage=self.storage,
            sampler=make_sampler(spec, n_done),
            pruner=make_pruner(spec),
        )

    # -- studies ----------------------------------------------------------------------------------
    def create_study(self, spec: StudyCreate) -> dict[str, Any]:
        with self.study_lock(spec.name):
            with self.sessions() as session:
                if session.get(StudyRecord, spec.name) is not None:
                    raise Conflict("name", spec.name, "a study of that name exists")
            try:
                study = optuna.create_study(
                    study_name=spec.name,
                    storage=self.storage,
                    direction=spec.direction,
                    sampler=make_sampler(spec),
                    pruner=make_pruner(spec),
                )
            except optuna.exceptions.DuplicatedStudyError:
                raise Conflict("name", spec.name, "an Optuna study of that name exists") from None
            study.set_user_attr("isotune_spec", spec.model_dump(mode="json"))
            with self.sessions.begin() as session:
                session.add(
                    StudyRecord(
                        name=spec.name,
                        optuna_study_id=study._study_id,
                        spec=spec.model_dump(mode="json"),
                        state="active",
                        created_at=now(),
                    )
                )
        return self.get_study(spec.name)

    def list_studies(self) -> list[dict[str, Any]]:
        with self.sessions() as session:
            names = list(session.scalars(select(StudyRecord.name).order_by(StudyRecord.created_at)))
        return [self.get_study(n) for n in names]

    def get_study(self, name: str) -> dict[str, Any]:
        spec_model, rec = self._spec(name)
        spec = rec.spec
        trials = self.storage.get_all_trials(rec.optuna_study_id, deepcopy=False)
        counts = Counter(t.state.name for t in trials)
        best = None
        complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
        if complete:
            pick = max if spec_model.direction == "maximize" else min
            b = pick(complete, key=lambda t: t.value)
            best = {"number": b.number, "value": b.value, "params": b.params}
        return {
            "name": name,
            "state": rec.state,
            "spec": spec,
            "counts": {s.name: counts.get(s.name, 0) for s in TrialState},
            "n_trials": len(trials),
            "best": best,
        }

    def archive_study(self, name: str) -> dict[str, Any]:
        with self.sessions.begin() as session:
            rec = session.get(StudyRecord, name)
            if rec is None:
                raise NotFound("study", name)
            rec.state = "archived"
        return self.get_study(name)

    def delete_study(self, name: str) -> None:
        with self.study_lock(name):
            self._spec(name)
            optuna.delete_study(study_name=name, storage=self.storage)
            with self.sessions.begin() as session:
                session.execute(delete(Lease).where(Lease.study_name == name))
                session.execute(delete(StudyRecord).where(StudyRecord.name == name))

    def list_trials(self, name: str, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        _, rec = self._spec(name)
        trials = self.storage.get_all_trials(rec.optuna_study_id, deepcopy=False)
        page = trials[offset : offset + limit]
        return {"total": len(trials), "offset": offset, "trials": [_trial_dict(t) for t in page]}

    def get_trial(self, trial_id: int) -> dict[str, Any]:
        try:
            return _trial_dict(self.storage.get_trial(trial_id))
        except KeyError:
            raise NotFound("trial", trial_id) from None

    # -- leases -----------------------------------------------------------------------------------
    def reap_all(self) -> int:
        """One pass of the reaper over every study with expired leases."""
        with self.sessions() as session:
            names = set(
                session.scalars(
                    select(Lease.study_name).where(
                        Lease.state == "active", Lease.expires_at < now()
                    )
                )
            )
        total = 0
        for name in names:
            with self.study_lock(name):
                total += self._reap(name)
        return total

    def _reap(self, name: str) -> int:
        """Fail the trials of expired leases of a study (caller holds its lock) and re-enqueue
        their parameters within the retry budget. Returns how many leases expired."""
        with self.sessions() as session:
            expired = list(
                session.scalars(
                    select(Lease).where(
                        Lease.study_name == name,
                        Lease.state == "active",
                        Lease.expires_at < now(),
                    )
                )
            )
            for lease in expired:
                session.expunge(lease)
        if not expired:
            return 0
        spec, _ = self._spec(name)
        for lease in expired:
            trial = self.storage.get_trial(lease.trial_id)
            if trial.state == TrialState.RUNNING:
                self.storage.set_trial_user_attr(lease.trial_id, "isotune_fail", "lease expired")
                self.storage.set_trial_state_values(lease.trial_id, TrialState.FAIL)
                if lease.attempt <= spec.retries:
                    self._enqueue(name, trial.params, lease.attempt + 1)
        with self.sessions.begin() as session:
            session.execute(
                update(Lease)
                .where(Lease.trial_id.in_([x.trial_id for x in expired]))
                .values(state="expired")
            )
        return len(expired)

    def _enqueue(self, name: str, params: dict[str, Any], attempt: int) -> None:
        study = optuna.load_study(study_name=name, storage=self.storage)
        study.enqueue_trial(params, user_attrs={ATTEMPT_ATTR: attempt}, skip_if_exists=False)

    def claim(self, name: str, worker_id: str, capabilities: dict[str, Any]) -> ClaimResponse:
        spec, rec = self._spec(name)
        if rec.state != "active":
            return ClaimResponse(status="done")
        with self.study_lock(name):
            self._reap(name)
            with self.sessions.begin() as session:
                worker = session.get(WorkerRecord, worker_id)
                if worker is None:
                    session.add(
                        WorkerRecord(id=worker_id, capabilities=capabilities, last_seen=now())
                    )
                else:
                    worker.capabilities, worker.last_seen = capabilities, now()
                mine = session.scalars(
                    select(Lease).where(
                        Lease.study_name == name,
                        Lease.worker_id == worker_id,
                        Lease.state == "active",
                    )
                ).first()
                if mine is not None:
                    session.expunge(mine)
            if mine is not None:  # a restarted worker gets its trial back
                return ClaimResponse(status="assigned", trial=self._assignment(rec, spec, mine))
            # O(1) in the study's size: waiting trials are filtered in SQL, parameter sets counted
            # on isotune's own (indexed) lease table
            sid = rec.optuna_study_id
            waiting = self.storage.get_all_trials(sid, deepcopy=False, states=(TrialState.WAITING,))
            with self.sessions() as session:
                fresh = session.scalar(
                    select(func.count())
                    .select_from(Lease)
                    .where(Lease.study_name == name, Lease.attempt == 1)
                )
            if not waiting and fresh >= spec.budget:
                running = self.storage.get_all_trials(
                    sid, deepcopy=False, states=(TrialState.RUNNING,)
                )
                return ClaimResponse(status="wait" if running else "done")
            study = self._study(rec, spec, fresh)
            trial = study.ask({k: to_distribution(d) for k, d in spec.space.items()})
            frozen = self.storage.get_trial(trial._trial_id)
            attempt = int(frozen.user_attrs.get(ATTEMPT_ATTR, 1))
            if ATTEMPT_ATTR not in frozen.user_attrs:
                trial.set_user_attr(ATTEMPT_ATTR, 1)
            trial.set_user_attr("isotune_worker", worker_id)
            t0 = now()
            lease = Lease(
                trial_id=trial._trial_id,
                study_name=name,
                trial_number=trial.number,
                worker_id=worker_id,
                claimed_at=t0,
                expires_at=t0 + timedelta(seconds=spec.lease_seconds),
                attempt=attempt,
                state="active",
            )
            with self.sessions.begin() as session:
                session.add(lease)
            return ClaimResponse(status="assigned", trial=self._assignment(rec, spec, lease))

    def _assignment(self, rec: StudyRecord, spec: StudyCreate, lease: Lease) -> TrialAssignment:
        trial = self.storage.get_trial(lease.trial_id)
        return TrialAssignment(
            study=rec.name,
            trial_id=lease.trial_id,
            number=lease.trial_number,
            params=trial.params,
            task=spec.task.model_dump(mode="json"),
            cell=spec.cell,
            training=dict(spec.training),
            direction=spec.direction,
            attempt=lease.attempt,
            lease_expires=_aware(lease.expires_at).isoformat(),
            lease_seconds=spec.lease_seconds,
        )

    def _lease(self, trial_id: int, worker_id: str) -> Lease:
        """The lease of a trial held by ``worker_id`` (detached), whatever its state."""
        with self.sessions() as session:
            lease = session.get(Lease, trial_id)
            if lease is not None:
                session.expunge(lease)
        if lease is None:
            try:
                self.storage.get_trial(trial_id)
            except KeyError:
                raise NotFound("trial", trial_id) from None
            raise Conflict("trial", trial_id, "was not handed out by this service")
        if lease.worker_id != worker_id:
            raise Conflict("worker_id", worker_id, f"trial {trial_id} is leased to another worker")
        return lease

    def _extend(self, trial_id: int, seconds: float) -> datetime:
        until = now() + timedelta(seconds=seconds)
        with self.sessions.begin() as session:
            session.execute(
                update(Lease)
                .where(Lease.trial_id == trial_id, Lease.state == "active")
                .values(expires_at=until)
            )
        return until

    def heartbeat(self, trial_id: int, worker_id: str) -> dict[str, Any]:
        lease = self._lease(trial_id, worker_id)
        if lease.state != "active":
            raise Conflict("trial", trial_id, f"lease is {lease.state}")
        spec, _ = self._spec(lease.study_name)
        with self.study_lock(lease.study_name):
            until = self._extend(trial_id, spec.lease_seconds)
        return {"lease_expires": until.isoformat()}

    def report(self, trial_id: int, worker_id: str, points: list[tuple[int, float]]) -> dict:
        lease = self._lease(trial_id, worker_id)
        spec, rec = self._spec(lease.study_name)
        with self.study_lock(lease.study_name):
            trial = self.storage.get_trial(trial_id)
            if lease.state != "active" or trial.state != TrialState.RUNNING:
                return {"prune": True, "state": trial.state.name}  # nothing left to train for
            for step, value in points:
                self.storage.set_trial_intermediate_value(trial_id, step, value)
            study = self._study(rec, spec)
            frozen = self.storage.get_trial(trial_id)
            prune = bool(study.pruner.prune(study, frozen))
            self._extend(trial_id, spec.lease_seconds)
            return {"prune": prune, "state": frozen.state.name}

    def finish(
        self,
        trial_id: int,
        worker_id: str,
        state: TrialState,
        value: float | None = None,
        reason: str = "",
        retry: bool = False,
    ) -> dict[str, Any]:
        """Complete, prune or fail a trial; repeating the call answers the recorded state."""
        lease = self._lease(trial_id, worker_id)
        spec, _ = self._spec(lease.study_name)
        with self.study_lock(lease.study_name):
            with self.sessions() as session:
                current = session.get(Lease, trial_id)
                lease_state = current.state if current is not None else "finished"
            trial = self.storage.get_trial(trial_id)
            if trial.state in FINISHED or lease_state != "active":
                return _trial_dict(trial)
            if reason:
                self.storage.set_trial_user_attr(trial_id, "isotune_fail", reason)
            values = None if value is None or state != TrialState.COMPLETE else [value]
            if state == TrialState.PRUNED and trial.intermediate_values:
                last = max(trial.intermediate_values)
                values = [trial.intermediate_values[last]]
            self.storage.set_trial_state_values(trial_id, state, values)
            if retry and state == TrialState.FAIL and lease.attempt <= spec.retries:
                self._enqueue(lease.study_name, trial.params, lease.attempt + 1)
            with self.sessions.begin() as session:
                session.execute(
                    update(Lease)
                    .where(Lease.trial_id == trial_id)
                    .values(state="released" if retry else "finished")
                )
            return _trial_dict(self.storage.get_trial(trial_id))


def _trial_dict(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    value = t.value if t.values is not None and len(t.values) == 1 else None
    return {
        "trial_id": t._trial_id,
        "number": t.number,
        "state": t.state.name,
        "value": None if value is None or not math.isfinite(value) else value,
        "params": t.params,
        "user_attrs": t.user_attrs,
        "intermediate_values": {str(k): v for k, v in t.intermediate_values.items()},
        "datetime_start": t.datetime_start.isoformat() if t.datetime_start else None,
        "datetime_complete": t.datetime_complete.isoformat() if t.datetime_complete else None,
    }
