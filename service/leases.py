"""Claims, leases, heartbeats, reports, completions, expiry: every lease statement is here.

A :class:`~service.models.Lease` ties each trial handed out to the worker that claimed it until
``expires_at``. A claim that samples its trial holds the study lock (a PostgreSQL advisory lock,
good across server processes; an in-process lock on SQLite, which one server process serves); a
claim of a trial sampled ahead (``service.pool``) deletes its pool row in the transaction that
writes the lease. Either way no two workers receive one trial. An expired lease fails its trial
and re-enqueues its parameters, at most ``retries`` times (:meth:`Leases.reap_expired`), in the
reaper's passes (``service.reaper``) and at a claim that takes the study lock.

The lock is also held by every path that re-enqueues a failed trial's parameters (so a claim never
answers "done" between a failure and its retry). Reports, heartbeats and completions need none:
Optuna refuses to change a finished trial (``UpdateFinishedTrialError``, under a row lock on
PostgreSQL), so of a completion racing the reaper exactly one wins; the loser answers with the
recorded state.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import optuna
from optuna.trial import TrialState
from sqlalchemy import delete, select, update

from contract.wire import ClaimResponse, HeartbeatResponse, ReportResponse, TrialOutcome
from service import metrics
from service.cache import CachedStudy, StudyCache
from service.errors import Conflict, NotFound
from service.exports import ATTEMPT_ATTR, WORKER_ATTR, finite_or_none, same_outcome
from service.models import Lease, StudyRecord
from service.optuna_compat import complete_trial, enqueued_params, report_values, set_user_attrs
from service.optuna_compat import trial_id as trial_id_of
from service.pool import (
    THEORY_ATTR,
    THEORY_COLUMNS,
    Pool,
    Refiller,
    mine_query,
    propose,
    study_row,
    target,
    theory_attrs,
)
from service.states import LeaseState, StudyState
from service.store import Store, aware, now, orphaned
from service.workerlog import MAX_HELD, WorkerLog

__all__ = ["ATTEMPT_ATTR", "FINISHED", "THEORY_ATTR", "THEORY_COLUMNS", "WORKER_ATTR", "Leases"]

log = logging.getLogger("isotune.service")

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass
class Held:
    """A lease as this process last saw it: who holds it (immutable) and until when."""

    study_name: str
    worker_id: str
    attempt: int
    trial_number: int
    optuna_id: int
    expires_at: datetime
    state: str = LeaseState.ACTIVE


class Leases:
    """The lease side of the service over one :class:`~service.store.Store`.

    It remembers, per process, the leases it has seen (who holds a trial never changes) and when
    it last wrote each worker's ``last_seen``; nothing else, so any process can serve any request.
    """

    def __init__(self, store: Store, cache: StudyCache) -> None:
        self.store, self.cache = store, cache
        self._held: dict[int, Held] = {}
        self.workers = WorkerLog()
        self.pool = Pool(store, cache, self.workers)
        self.refiller = Refiller(self.pool)

    def forget(self, study_name: str | None = None) -> None:
        """Drop the remembered leases (of one study, or all of them)."""
        if study_name is None:
            self._held.clear()
            return
        for trial_id in [k for k, v in self._held.items() if v.study_name == study_name]:
            self._held.pop(trial_id, None)

    def reap_candidates(self) -> tuple[set[str], list[tuple[str, int]]]:
        """What the reaper (``service.reaper``) looks at: the studies with expired leases, and
        every active study with its Optuna id."""
        with self.store.sessions() as session:
            names = set(
                session.scalars(
                    select(Lease.study_name).where(
                        Lease.state == LeaseState.ACTIVE, Lease.expires_at < now()
                    )
                )
            )
            active = session.execute(
                select(StudyRecord.name, StudyRecord.optuna_study_id).where(
                    StudyRecord.state == StudyState.ACTIVE
                )
            )
            return names, [(n, i) for n, i in active]

    def leased_among(self, trial_ids: list[int]) -> set[int]:
        """Which of ``trial_ids`` a lease covers."""
        with self.store.sessions() as session:
            return set(session.scalars(select(Lease.trial_id).where(Lease.trial_id.in_(trial_ids))))

    def reap_expired(self, name: str) -> int:
        """Fail the trials of expired leases of a study (caller holds its lock) and re-enqueue
        their parameters within the retry budget. Returns how many leases expired."""
        with self.store.sessions() as session:
            expired = list(
                session.scalars(
                    select(Lease).where(
                        Lease.study_name == name,
                        Lease.state == LeaseState.ACTIVE,
                        Lease.expires_at < now(),
                    )
                )
            )
            for lease in expired:
                session.expunge(lease)
        if not expired:
            return 0
        spec, _ = self.store.spec(name)
        # claim the expired leases first: a heartbeat that renewed one meanwhile keeps it
        cutoff = now()
        with self.store.sessions.begin() as session:
            taken = set(
                session.scalars(
                    update(Lease)
                    .where(
                        Lease.trial_id.in_([x.trial_id for x in expired]),
                        Lease.state == LeaseState.ACTIVE,
                        Lease.expires_at < cutoff,
                    )
                    .values(state=LeaseState.EXPIRED)
                    .returning(Lease.trial_id)
                )
            )
        if taken:
            metrics.EXPIRED.labels(name).inc(len(taken))
        for lease in expired:
            if lease.trial_id not in taken:
                continue
            self._held.pop(lease.trial_id, None)
            try:
                trial = self.store.storage.get_trial(lease.trial_id)
            except KeyError:  # its Optuna study was deleted: nothing left to fail
                continue
            if trial.state != TrialState.RUNNING:
                continue
            try:
                self.store.storage.set_trial_user_attr(
                    lease.trial_id, "isotune_fail", "lease expired"
                )
                self.store.storage.set_trial_state_values(lease.trial_id, TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # its worker finished it a moment ago
            if lease.attempt <= spec.retries:
                self.enqueue(name, trial.params, lease.attempt + 1)
        return len(taken)

    def enqueue(self, name: str, params: dict[str, Any], attempt: int) -> None:
        """Re-enqueue ``params`` (caller holds the study lock). The count goes up first: should
        the enqueue fail, claims only look for a WAITING trial that is not there."""
        with self.store.sessions.begin() as session:
            session.execute(
                update(StudyRecord)
                .where(StudyRecord.name == name)
                .values(waiting=StudyRecord.waiting + 1)
            )
        study = optuna.load_study(study_name=name, storage=self.store.storage)
        study.enqueue_trial(params, user_attrs={ATTEMPT_ATTR: attempt}, skip_if_exists=False)

    def claim(self, name: str, worker_id: str, capabilities: dict[str, Any]) -> ClaimResponse:
        """A trial for ``worker_id``: its own active one, a re-enqueued one, or a new proposal;
        ``wait`` when the budget is out but trials still run, ``done`` when the study is over."""
        try:
            answer = self._claim(name, worker_id, capabilities)
        except KeyError:  # Optuna lost a record: the study deleted in optuna-dashboard?
            rec = self.store.record(name)
            try:
                self.store.rdb.get_study_name_from_id(rec.optuna_study_id)
            except KeyError:
                self.cache.drop(name)
                raise orphaned(name) from None
            raise
        metrics.CLAIMS.labels(name, answer.status).inc()
        return answer

    def _claim(self, name: str, worker_id: str, capabilities: dict[str, Any]) -> ClaimResponse:
        cached = self.cache.peek(name)
        if not (cached and cached.warmed) and (first := self._active(name, worker_id, now())):
            first[1].warm()  # this process's first claims of the study: first-use work unlocked
        if cached is not None and cached.pooling:
            # a pooled trial, without the study lock, when nothing else is to be done (no trial
            # of its own, no retry); expired leases are left to the reaper's next pass
            if (got := self._active(name, worker_id, now())) is None:
                return ClaimResponse(status="done")
            (_, _, waiting, _, mine, _, pooled, running), info = got
            if pooled and mine is None and waiting <= 0:
                taken = self.pool.take(name, worker_id, capabilities, info.spec.lease_seconds)
                if pooled - 1 < max(1, target(info.spec, running + 1)) / 2:
                    self.refiller.request(name)
                if taken is not None:
                    return self._handed(info, taken.lease, taken.params, taken.theory)
        with self.store.study_lock(name):
            got = self._claim_locked(name, worker_id, capabilities)
        if isinstance(got, ClaimResponse):
            return got
        # the trial is leased: the rest needs no lock (other claims wait less)
        info, lease, trial = got
        theory, attrs = theory_attrs(info, trial.params)
        set_user_attrs(self.store.rdb, trial_id_of(trial), {WORKER_ATTR: worker_id, **attrs})
        return self._handed(info, lease, trial.params, theory)

    def _active(self, name: str, worker_id: str, at: datetime) -> tuple[Any, CachedStudy] | None:
        """The study's claim row (``pool.study_row``) and its cached study; None when the study
        is not active, NotFound when there is none."""
        row = study_row(self.store, name, worker_id, at)
        if row is None:
            raise NotFound("study", name)
        if row[0] != StudyState.ACTIVE:
            return None
        return row, self.cache.get(name, row[1])

    def _claim_locked(
        self, name: str, worker_id: str, capabilities: dict[str, Any]
    ) -> ClaimResponse | tuple[CachedStudy, Lease, optuna.trial.FrozenTrial]:
        """The claim under the study lock: an answer, or a new trial leased (its theory numbers
        are the caller's, after the lock)."""
        t0 = now()
        if (active := self._active(name, worker_id, t0)) is None:
            return ClaimResponse(status="done")
        (_, _, waiting, expired, mine, fresh, pooled, running), info = active
        if expired is not None:
            self.reap_expired(name)
            with self.store.sessions() as session:
                mine = session.scalar(mine_query(name, worker_id))
                waiting = session.scalar(
                    select(StudyRecord.waiting).where(StudyRecord.name == name)
                )
        if mine is not None:  # a restarted worker gets its trial back, if it still runs
            trial = self.store.storage.get_trial(mine)
            if trial.state != TrialState.RUNNING:  # finished, its lease left behind
                self._close(mine)
            else:
                with self.store.sessions.begin() as session:
                    self.workers.saw(session, worker_id, capabilities, t0)
                    lease = session.get(Lease, mine)
                    session.expunge(lease)
                theory = trial.user_attrs.get(THEORY_ATTR)
                return ClaimResponse(
                    status="assigned",
                    trial=info.assignment(lease, trial.params, theory),
                )
        wanted = target(info.spec, running + 1)
        info.pooling = bool(wanted or pooled)
        if wanted > pooled:
            self.refiller.request(name)
        if waiting <= 0 and pooled:
            taken = self.pool.take(name, worker_id, capabilities, info.spec.lease_seconds)
            if taken is not None:
                return self._handed(info, taken.lease, taken.params, taken.theory)
        if fresh + pooled >= info.spec.budget and waiting <= 0:  # only re-enqueued sets left
            sid = info.optuna_id
            queued = self.store.rdb.get_all_trials(
                sid, deepcopy=False, states=(TrialState.WAITING,)
            )
            if not any(enqueued_params(t) for t in queued):
                running_trials = self.store.rdb.get_all_trials(
                    sid, deepcopy=False, states=(TrialState.RUNNING,)
                )
                return ClaimResponse(status="wait" if running_trials else "done")
            waiting = 1
        trial = propose(info, fresh + pooled, waiting)
        retried = ATTEMPT_ATTR in trial.user_attrs  # a re-enqueued trial carries its attempt
        attempt = int(trial.user_attrs.get(ATTEMPT_ATTR, 1))
        t0 = now()
        lease = Lease(
            trial_id=trial_id_of(trial),
            study_name=name,
            trial_number=trial.number,
            worker_id=worker_id,
            claimed_at=t0,
            expires_at=t0 + timedelta(seconds=info.spec.lease_seconds),
            attempt=attempt,
            state=LeaseState.ACTIVE,
        )
        with self.store.sessions.begin() as session:
            self.workers.saw(session, worker_id, capabilities, t0)
            if self.store.sqlite:  # SQLite reuses the ids of a study deleted in Optuna
                stale = (Lease.trial_id == lease.trial_id) & (Lease.study_name != name)
                session.execute(delete(Lease).where(stale))
            session.add(lease)
            if retried:
                session.execute(
                    update(StudyRecord)
                    .where(StudyRecord.name == name, StudyRecord.waiting > 0)
                    .values(waiting=StudyRecord.waiting - 1)
                )
        return info, lease, trial

    def _handed(
        self, info: CachedStudy, lease: Lease, params: dict[str, Any], theory: dict | None
    ) -> ClaimResponse:
        """Remember the lease handed out and answer the claim."""
        self._remember(
            lease.trial_id,
            Held(
                study_name=info.name,
                worker_id=lease.worker_id,
                attempt=lease.attempt,
                trial_number=lease.trial_number,
                optuna_id=info.optuna_id,
                expires_at=aware(lease.expires_at),
            ),
        )
        return ClaimResponse(status="assigned", trial=info.assignment(lease, params, theory))

    def _lease(
        self, trial_id: int, worker_id: str, *, fresh: bool = False
    ) -> tuple[Held, CachedStudy]:
        """The lease of a trial held by ``worker_id`` and its study.

        Who holds a trial never changes (a retry is a new trial), so a lease seen once is
        remembered and later requests of its worker cost no round trip. Whether it is still
        active is not remembered: Optuna refuses to change a finished trial, and a lease stops
        being active only after its trial finished. ``fresh`` reads the lease's state anyway.
        """
        held = self._held.get(trial_id)
        if fresh or held is None or held.worker_id != worker_id:
            with self.store.sessions() as session:
                row = session.execute(
                    select(
                        Lease.study_name,
                        Lease.worker_id,
                        Lease.state,
                        Lease.attempt,
                        Lease.expires_at,
                        Lease.trial_number,
                        StudyRecord.optuna_study_id,
                    )
                    .join(StudyRecord, StudyRecord.name == Lease.study_name)
                    .where(Lease.trial_id == trial_id)
                ).first()
            if row is None:
                try:
                    self.store.storage.get_trial(trial_id)
                except KeyError:
                    raise NotFound("trial", trial_id) from None
                raise Conflict("trial", trial_id, "was not handed out by this service")
            if row.worker_id != worker_id:
                raise Conflict(
                    "worker_id", worker_id, f"trial {trial_id} is leased to another worker"
                )
            held = Held(
                study_name=row.study_name,
                worker_id=row.worker_id,
                attempt=row.attempt,
                trial_number=row.trial_number,
                optuna_id=row.optuna_study_id,
                expires_at=aware(row.expires_at),
                state=row.state,
            )
            self._remember(trial_id, held)
        return held, self.cache.get(held.study_name, held.optuna_id)

    def _remember(self, trial_id: int, held: Held) -> None:
        if len(self._held) >= MAX_HELD:
            self._held.clear()
        self._held[trial_id] = held

    def _extend(self, trial_id: int, seconds: float) -> datetime | None:
        """Renew an active lease; None if it is no longer active (reaped meanwhile)."""
        until = now() + timedelta(seconds=seconds)
        with self.store.sessions.begin() as session:
            done = session.execute(
                update(Lease)
                .where(Lease.trial_id == trial_id, Lease.state == LeaseState.ACTIVE)
                .values(expires_at=until)
            )
        return until if done.rowcount else None  # type: ignore[attr-defined]

    def heartbeat(self, trial_id: int, worker_id: str) -> HeartbeatResponse:
        lease, info = self._lease(trial_id, worker_id, fresh=True)
        if lease.state != LeaseState.ACTIVE:
            raise Conflict("trial", trial_id, f"lease is {lease.state}")
        until = self._extend(trial_id, info.spec.lease_seconds)
        if until is None:
            raise Conflict("trial", trial_id, "lease is expired")
        lease.expires_at = until
        return HeartbeatResponse(lease_expires=until.isoformat())

    def report(
        self, trial_id: int, worker_id: str, points: list[tuple[int, float]]
    ) -> ReportResponse:
        """Record intermediate values; answer whether the pruner stops the trial. A report also
        renews the lease, at most every tenth of its length (a write per report would cost
        more than the report)."""
        lease, info = self._lease(trial_id, worker_id)
        if lease.state != LeaseState.ACTIVE:
            return ReportResponse(prune=True, state=self._trial(trial_id).state.name)
        with self.store.sessions.begin() as session:
            written = report_values(session.connection(), trial_id, points)
            if not written:
                session.rollback()
        if not written:  # reaped or finished meanwhile, or its study deleted (NotFound)
            self._held.pop(trial_id, None)
            return ReportResponse(prune=True, state=self._trial(trial_id).state.name)
        study = info.study
        prune = False
        if not isinstance(study.pruner, optuna.pruners.NopPruner):
            prune = bool(study.pruner.prune(study, self._trial(trial_id)))
        seconds = info.spec.lease_seconds
        if lease.expires_at - now() < timedelta(seconds=0.9 * seconds):
            lease.expires_at = self._extend(trial_id, seconds) or lease.expires_at
        return ReportResponse(prune=prune, state=TrialState.RUNNING.name)

    def finish(
        self,
        trial_id: int,
        worker_id: str,
        state: TrialState,
        value: float | None = None,
        reason: str = "",
        retry: bool = False,
    ) -> TrialOutcome:
        """Complete, prune or fail a trial. Repeating the call (an answer lost on the way)
        answers the recorded outcome; asking its worker's finished trial for another outcome is a
        :class:`Conflict`. A late call for a trial the reaper failed answers its state."""
        lease, info = self._lease(trial_id, worker_id)
        if lease.state != LeaseState.ACTIVE:
            outcome = self._outcome(trial_id)
            if lease.state != LeaseState.EXPIRED:
                same_outcome(outcome, state, value)
            return outcome
        if state == TrialState.COMPLETE and value is not None and not reason:
            # the common case in one transaction: the trial completed, its lease ended
            with self.store.sessions.begin() as session:
                if done := complete_trial(session.connection(), trial_id, value):
                    session.execute(_ending(trial_id, LeaseState.FINISHED))
            if done:
                self._held.pop(trial_id, None)
                metrics.FINISHED.labels(lease.study_name, state.name).inc()
                number, value = lease.trial_number, finite_or_none(value)
                return TrialOutcome(trial_id=trial_id, number=number, state="COMPLETE", value=value)
            # not RUNNING: a repeated call, or the reaper was first; answered below
        requeue = retry and state == TrialState.FAIL and lease.attempt <= info.spec.retries
        # a retry is enqueued under the study lock, so that no claim sees the study "done"
        # between this failure and the re-enqueued parameters
        with self.store.study_lock(lease.study_name) if requeue else contextlib.nullcontext():
            values = None if value is None or state != TrialState.COMPLETE else [value]
            params: dict[str, Any] = {}
            if state == TrialState.PRUNED or requeue:  # needs the trial's values or parameters
                trial = self._trial(trial_id)
                if trial.state in FINISHED:
                    self._close(trial_id)
                    return self._outcome(trial_id)
                params = trial.params
                if state == TrialState.PRUNED and trial.intermediate_values:
                    values = [trial.intermediate_values[max(trial.intermediate_values)]]
            try:
                if reason:
                    self.store.storage.set_trial_user_attr(trial_id, "isotune_fail", reason)
                self.store.storage.set_trial_state_values(trial_id, state, values)
            except optuna.exceptions.UpdateFinishedTrialError:  # finished before, or reaped
                # (a repeated call after a lost answer: the lease must not stay active)
                self._close(trial_id)
                return self._outcome(trial_id)
            except KeyError:  # its study was deleted
                self._held.pop(trial_id, None)
                raise NotFound("trial", trial_id) from None
            metrics.FINISHED.labels(lease.study_name, state.name).inc()
            if requeue:
                self.enqueue(lease.study_name, params, lease.attempt + 1)
            self._close(trial_id, LeaseState.RELEASED if retry else LeaseState.FINISHED)
        return TrialOutcome(
            trial_id=trial_id,
            number=lease.trial_number,
            state=state.name,
            value=finite_or_none(values[0]) if values else None,
        )

    def _close(self, trial_id: int, state: LeaseState = LeaseState.FINISHED) -> None:
        """End a lease whose trial is finished (if it is still active)."""
        self._held.pop(trial_id, None)
        with self.store.sessions.begin() as session:
            session.execute(_ending(trial_id, state))

    def _trial(self, trial_id: int) -> optuna.trial.FrozenTrial:
        try:
            return self.store.trial(trial_id)
        except NotFound:
            self._held.pop(trial_id, None)
            raise

    def _outcome(self, trial_id: int) -> TrialOutcome:
        t = self._trial(trial_id)
        value = t.value if t.values is not None and len(t.values) == 1 else None
        return TrialOutcome(
            trial_id=trial_id, number=t.number, state=t.state.name, value=finite_or_none(value)
        )


def _ending(trial_id: int, state: LeaseState) -> Any:
    """The statement that ends a trial's lease, if it is still active, in ``state``."""
    active = Lease.trial_id == trial_id, Lease.state == LeaseState.ACTIVE
    return update(Lease).where(*active).values(state=state)
