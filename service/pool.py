"""Trials sampled ahead of their claims: the pool that keeps the sampler out of the claim's path.

A claim that samples its trial holds the study's lock for the whole proposal (the sampler reads
the study's history; the prior checks and resamples candidates), so a study's claims queue behind
one another. The pool moves that work out of the claim: a background refill (one thread per
server process, :class:`Refiller`) samples a study's next trials under the study lock, exactly as
a claim would (the study's sampler wrapped by its prior, seeded by the trial's index, within the
budget), records their theory numbers, and leaves each as a WAITING Optuna trial with its
parameters set and a row in ``isotune_pool``. A claim then takes the oldest row without the
study lock, in the one transaction that starts the trial and writes its lease (``FOR UPDATE SKIP
LOCKED`` on PostgreSQL, so concurrent claims of several server processes take different rows;
SQLite's single writer serializes them).

How many (:func:`target`): the study's ``pool`` (a number, or ``auto``: one per 8 trials running,
none below 8, at most 64). A trial taken from the pool was proposed with the outcomes known when
it was sampled, at most ``pool`` claims earlier; with ``auto`` that is an eighth of the trials
already running, whose outcomes no sampler knows either (``benchmarks/pool_quality.py`` measures
what it does to TPE). A crash between a sample and its row leaves a RUNNING trial without lease,
which the reaper fails once it is older than a lease (``service.reaper``); it never counts against
the budget.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, Select, bindparam, delete, func, insert, select

from meanfield import MeanFieldError
from service.cache import CachedStudy, StudyCache
from service.exports import WORKER_ATTR
from service.models import Lease, PoolEntry, StudyRecord
from service.optuna_compat import set_user_attrs, start_waiting, to_waiting
from service.optuna_compat import trial_id as trial_id_of
from service.prior_sampler import PriorSampler
from service.schemas import StudyCreate
from service.search import make_sampler, proposal_seed
from service.states import LeaseState, StudyState
from service.store import Store, now
from service.workerlog import WorkerLog

__all__ = [
    "AUTO_MAX",
    "AUTO_PER",
    "THEORY_ATTR",
    "THEORY_COLUMNS",
    "Pool",
    "Refiller",
    "Taken",
    "mine_query",
    "propose",
    "study_row",
    "target",
    "theory_attrs",
]

log = logging.getLogger("isotune.service")

#: ``pool: auto``: one pooled trial per this many running, at most :data:`AUTO_MAX`.
AUTO_PER = 8
AUTO_MAX = 64
#: Numbers of the theory record also stored as user attributes of their own (dashboard columns).
THEORY_ATTR = "isotune_theory"
THEORY_COLUMNS = (
    "xi_c", "margin", "predicted_trainable", "T_log_m1", "cell_moment", "hidden_moment"
)  # fmt: skip


def target(spec: StudyCreate, running: int) -> int:
    """How many trials the study keeps sampled ahead with ``running`` trials running."""
    if spec.pool == "auto":
        return min(AUTO_MAX, running // AUTO_PER)
    return int(spec.pool)


def theory_attrs(info: CachedStudy, params: dict[str, Any]) -> tuple[dict | None, dict[str, Any]]:
    """The trial's mean-field numbers (None where the theory has none) and the user attributes
    that record them: the whole record, and its key numbers one by one (optuna-dashboard's table
    sorts and filters on a user attribute only when it is a plain value)."""
    if info.prior is None:
        return None, {}
    try:
        theory = info.prior.numbers(params)
    except MeanFieldError:  # the theory has no answer here: the trial runs without
        log.warning("no theory numbers for a trial of %r (params %s)", info.name, params)
        return None, {}
    return theory, {THEORY_ATTR: theory, **{k: theory[k] for k in THEORY_COLUMNS}}


def propose(info: CachedStudy, index: int, waiting: int = 0) -> Any:
    """Optuna's ``ask`` with the study's sampler as the ``index``-th proposal (its seed), wrapped
    by the study's prior; ``waiting`` > 0 lets Optuna hand out an enqueued trial instead. The
    caller holds the study lock (the cached study's sampler is set here)."""
    sampler = make_sampler(info.spec, index)
    if info.prior is not None and info.prior.mode != "off":
        seed = proposal_seed(info.spec.seed, index)
        sampler = PriorSampler(sampler, info.prior, info.distributions, index, seed)
    info.study.sampler = sampler
    info.study.skip_waiting = waiting <= 0
    return info.study.ask(info.distributions)


def mine_query(name: str, worker_id: str) -> Select[Any]:
    """The trial id of ``worker_id``'s active lease in the study, if any."""
    return (
        select(Lease.trial_id)
        .where(
            Lease.study_name == name,
            Lease.worker_id == worker_id,
            Lease.state == LeaseState.ACTIVE,
        )
        .limit(1)
    )


@functools.cache
def _study_row_statement() -> Select[Any]:
    """:func:`study_row`'s statement, built once (building it costs more than running it)."""
    name, worker, t0 = bindparam("name"), bindparam("worker"), bindparam("t0")
    leases = select(Lease).where(Lease.study_name == name)
    count = func.count()
    return select(
        StudyRecord.state,
        StudyRecord.optuna_study_id.label("optuna_id"),
        StudyRecord.waiting,
        leases.where(Lease.state == LeaseState.ACTIVE, Lease.expires_at < t0)
        .with_only_columns(Lease.trial_id)
        .limit(1)
        .scalar_subquery()
        .label("expired"),
        leases.where(Lease.worker_id == worker, Lease.state == LeaseState.ACTIVE)
        .with_only_columns(Lease.trial_id)
        .limit(1)
        .scalar_subquery()
        .label("mine"),
        leases.where(Lease.attempt == 1).with_only_columns(count).scalar_subquery().label("fresh"),
        select(count)
        .select_from(PoolEntry)
        .where(PoolEntry.study_name == name)
        .scalar_subquery()
        .label("pooled"),
        leases.where(Lease.state == LeaseState.ACTIVE)
        .with_only_columns(count)
        .scalar_subquery()
        .label("running"),
    ).where(StudyRecord.name == name)


def study_row(store: Store, name: str, worker_id: str, t0: datetime) -> Row[Any] | None:
    """What a claim decides on, in one round trip of indexed lookups: the study's ``state``,
    ``optuna_id``, ``waiting`` (re-enqueued sets), ``expired`` (a lease expired before ``t0``, or
    None), ``mine`` (``worker_id``'s active trial, or None), ``fresh`` (first attempts leased),
    ``pooled`` and ``running`` (active leases); None if there is no such study."""
    with store.sessions() as session:
        return session.execute(
            _study_row_statement(), {"name": name, "worker": worker_id, "t0": t0}
        ).first()


@functools.cache
def _take_statement(skip_locked: bool) -> Any:
    """Delete the study's oldest pool row and return it (one statement). ``skip_locked``
    (PostgreSQL): a row another claim is taking is passed over, not waited for."""
    pool = PoolEntry.__table__
    oldest = (
        select(pool.c.trial_id)
        .where(pool.c.study_name == bindparam("name"))
        .order_by(pool.c.trial_id)
        .limit(1)
    )
    if skip_locked:
        oldest = oldest.with_for_update(skip_locked=True)
    return (
        delete(pool)
        .where(pool.c.trial_id == oldest.scalar_subquery())
        .returning(pool.c.trial_id, pool.c.trial_number, pool.c.params, pool.c.theory)
    )


@dataclass
class Taken:
    """A trial a claim took from the pool: its lease (detached) and what the worker gets."""

    lease: Lease
    params: dict[str, Any]
    theory: dict[str, Any] | None


class Pool:
    """The pool of one :class:`~service.store.Store`: taking (claims) and refilling."""

    def __init__(self, store: Store, cache: StudyCache, workers: WorkerLog) -> None:
        self.store, self.cache, self.workers = store, cache, workers

    def take(
        self, name: str, worker_id: str, capabilities: dict[str, Any], lease_seconds: float
    ) -> Taken | None:
        """Lease the study's oldest pooled trial to ``worker_id`` (one transaction, no study
        lock); None if the pool is empty. A row whose trial is no longer WAITING (the study's
        trials deleted under it) is dropped and the next one tried."""
        statement = _take_statement(not self.store.sqlite)
        while True:
            with self.store.sessions.begin() as session:
                row = session.execute(statement, {"name": name}).first()
                if row is None:
                    return None
                conn = session.connection()
                if not start_waiting(conn, row.trial_id, {WORKER_ATTR: worker_id}):
                    continue  # committed: the stale row is gone
                t0 = now()
                lease = {
                    "trial_id": row.trial_id,
                    "study_name": name,
                    "trial_number": row.trial_number,
                    "worker_id": worker_id,
                    "claimed_at": t0,
                    "expires_at": t0 + timedelta(seconds=lease_seconds),
                    "attempt": 1,
                    "state": LeaseState.ACTIVE,
                }
                conn.execute(insert(Lease), lease)
                self.workers.saw(session, worker_id, capabilities, t0)
                return Taken(Lease(**lease), dict(row.params), row.theory)

    def refill(self, name: str) -> int:
        """Sample the study's pool up to its :func:`target`, within its budget; returns how many
        trials it added. The study lock is held for one trial at a time, so a claim that must
        take it (a retry to hand out, a worker's own trial) waits for one proposal, not a batch."""
        with self.store.sessions() as session:
            optuna_id = session.scalar(
                select(StudyRecord.optuna_study_id).where(StudyRecord.name == name)
            )
        if optuna_id is None:
            return 0
        info = self.cache.get(name, optuna_id)
        added, wanted = 0, None
        while wanted is None or added < wanted:
            with self.store.study_lock(name):
                row = study_row(self.store, name, "", now())
                if row is None or row.state != StudyState.ACTIVE:
                    return added
                fresh, pooled, running = row.fresh, row.pooled, row.running
                n = min(target(info.spec, running) - pooled, info.spec.budget - fresh - pooled)
                if n <= 0:
                    return added
                if wanted is None:  # this round fills what is missing now, no more
                    wanted = n
                self._sample(info, fresh + pooled)
            added += 1
        return added

    def _sample(self, info: CachedStudy, index: int) -> None:
        """Propose the study's ``index``-th trial and pool it (under the study lock)."""
        trial = propose(info, index)
        tid = trial_id_of(trial)
        theory, attrs = theory_attrs(info, trial.params)
        if attrs:
            set_user_attrs(self.store.rdb, tid, attrs)
        with self.store.sessions.begin() as session:
            to_waiting(session.connection(), tid)
            session.add(
                PoolEntry(
                    trial_id=tid,
                    study_name=info.name,
                    trial_number=trial.number,
                    params=trial.params,
                    theory=theory,
                    created_at=now(),
                )
            )


class Refiller:
    """The server process's refill thread: :meth:`request` a study, and it is refilled soon,
    once however often it was asked meanwhile. Without :meth:`start`, requests are ignored
    (claims then sample their trials themselves)."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._pending: set[str] = set()
        self._guard = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="isotune-refill", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def request(self, name: str) -> None:
        if self._thread is None:
            return
        with self._guard:
            if name in self._pending:
                return
            self._pending.add(name)
        self._queue.put(name)

    def _run(self) -> None:
        while True:
            name = self._queue.get()
            if name is None:
                return
            with self._guard:
                self._pending.discard(name)
            try:
                self.pool.refill(name)
            except Exception:  # a claim samples its own trial meanwhile; the next one asks again
                log.exception("refilling the pool of study %r failed", name)
