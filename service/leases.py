"""Claims, leases, heartbeats, reports, completions, expiry: every lease statement is here.

A :class:`~service.models.Lease` ties each trial handed out to the worker that claimed it until
``expires_at``. Claims of one study are serialized (a PostgreSQL advisory lock held for the
claim's transaction, so several server processes can share one database; an in-process lock on
SQLite, which only one server process may use), which is what keeps two workers from ever
receiving the same trial. An expired lease fails its trial and re-enqueues the same parameters,
at most ``retries`` times (:meth:`Leases.reap_expired`): at every claim of the study, and in the
reaper's passes (``service.reaper``), so no trial stays RUNNING after its worker died.

Which steps need the study lock: a claim (the budget check, the sampler's proposal and the
lease must be one step), and every path that re-enqueues a failed trial's parameters (so that
a claim never answers "done" between a failure and its retry). Reports, heartbeats and
completions do not: Optuna refuses to change a finished trial (``UpdateFinishedTrialError``,
under a row lock on PostgreSQL), so of a completion racing the reaper exactly one wins, and
the loser answers with the recorded state.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import optuna
from optuna.trial import TrialState
from sqlalchemy import delete, func, select, update

from contract.wire import (
    ClaimResponse,
    HeartbeatResponse,
    ReportResponse,
    TrialOutcome,
)
from meanfield import MeanFieldError
from service import metrics
from service.cache import CachedStudy, StudyCache
from service.errors import Conflict, NotFound
from service.exports import ATTEMPT_ATTR, WORKER_ATTR, finite_or_none
from service.models import Lease, StudyRecord
from service.optuna_compat import set_user_attrs
from service.optuna_compat import trial_id as trial_id_of
from service.prior import PriorSampler
from service.search import make_sampler
from service.states import LeaseState, StudyState
from service.store import Store, aware, now, orphaned
from service.workerlog import MAX_HELD, WorkerLog

__all__ = ["ATTEMPT_ATTR", "FINISHED", "THEORY_ATTR", "THEORY_COLUMNS", "WORKER_ATTR", "Leases"]

log = logging.getLogger("isotune.service")

THEORY_ATTR = "isotune_theory"
#: Numbers of the theory record also stored as user attributes of their own (dashboard columns).
THEORY_COLUMNS = ("xi_c", "margin", "predicted_trainable", "T_log_m1")
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
        with self.store.study_lock(name):
            t0 = now()
            # one round trip: the study's state, whether leases have expired, this worker's
            # active lease, and how many fresh parameter sets were handed out (indexed lookups)
            leases = select(Lease).where(Lease.study_name == name)
            mine_q = (
                leases.where(Lease.worker_id == worker_id, Lease.state == LeaseState.ACTIVE)
                .with_only_columns(Lease.trial_id)
                .limit(1)
            )
            with self.store.sessions() as session:
                row = session.execute(
                    select(
                        StudyRecord.state,
                        StudyRecord.optuna_study_id,
                        StudyRecord.waiting,
                        leases.where(Lease.state == LeaseState.ACTIVE, Lease.expires_at < t0)
                        .with_only_columns(Lease.trial_id)
                        .limit(1)
                        .scalar_subquery(),
                        mine_q.scalar_subquery(),
                        leases.where(Lease.attempt == 1)
                        .with_only_columns(func.count())
                        .scalar_subquery(),
                    ).where(StudyRecord.name == name)
                ).first()
            if row is None:
                raise NotFound("study", name)
            state, optuna_id, waiting, expired, mine, fresh = row
            if state != StudyState.ACTIVE:
                return ClaimResponse(status="done")
            info = self.cache.get(name, optuna_id)
            if expired is not None:
                self.reap_expired(name)
                with self.store.sessions() as session:
                    mine = session.scalar(mine_q)
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
            if fresh >= info.spec.budget:  # only re-enqueued parameters are left to try
                sid = info.optuna_id
                if not self.store.rdb.get_all_trials(
                    sid, deepcopy=False, states=(TrialState.WAITING,)
                ):
                    running = self.store.rdb.get_all_trials(
                        sid, deepcopy=False, states=(TrialState.RUNNING,)
                    )
                    return ClaimResponse(status="wait" if running else "done")
                waiting = max(waiting, 1)
            sampler = make_sampler(info.spec, fresh)
            if info.prior is not None and info.prior.mode != "off":
                seed = None if info.spec.seed is None else info.spec.seed + fresh
                sampler = PriorSampler(sampler, info.prior, info.distributions, fresh, seed)
            info.study.sampler = sampler
            info.study.skip_waiting = waiting <= 0
            trial = info.study.ask(info.distributions)
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
        # the trial is leased: the rest needs no lock (other claims wait less)
        self._remember(
            lease.trial_id,
            Held(
                study_name=name,
                worker_id=worker_id,
                attempt=attempt,
                trial_number=lease.trial_number,
                optuna_id=info.optuna_id,
                expires_at=lease.expires_at,
            ),
        )
        theory = None
        attrs: dict[str, Any] = {WORKER_ATTR: worker_id}
        if info.prior is not None:
            try:
                theory = info.prior.numbers(trial.params)
            except MeanFieldError:  # the theory has no answer here: the trial runs without
                log.warning("no theory numbers for trial %s of %r", trial_id_of(trial), name)
            else:
                # the whole record, and its key numbers one by one: optuna-dashboard's table
                # sorts and filters on a user attribute only when it is a plain value
                attrs[THEORY_ATTR] = theory
                attrs.update({k: theory[k] for k in THEORY_COLUMNS})
        set_user_attrs(self.store.rdb, trial_id_of(trial), attrs)
        return ClaimResponse(status="assigned", trial=info.assignment(lease, trial.params, theory))

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
        try:
            for step, value in points:
                self.store.storage.set_trial_intermediate_value(trial_id, step, value)
        except optuna.exceptions.UpdateFinishedTrialError:  # reaped or finished meanwhile
            self._held.pop(trial_id, None)
            return ReportResponse(prune=True, state=self._trial(trial_id).state.name)
        except KeyError:  # its study was deleted
            self._held.pop(trial_id, None)
            raise NotFound("trial", trial_id) from None
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
                _same_outcome(outcome, state, value)
            return outcome
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
            session.execute(
                update(Lease)
                .where(Lease.trial_id == trial_id, Lease.state == LeaseState.ACTIVE)
                .values(state=state)
            )

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


def _same_outcome(recorded: TrialOutcome, state: TrialState, value: float | None) -> None:
    """:class:`Conflict` when a repeated finish asks for another outcome than the recorded one."""
    if recorded.state != state.name:
        raise Conflict(
            "state",
            state.name,
            f"trial {recorded.trial_id} was already finished as {recorded.state}; a repeated "
            "call may only repeat its outcome",
        )
    if state == TrialState.COMPLETE and value is not None and value != recorded.value:
        raise Conflict(
            "value",
            value,
            f"trial {recorded.trial_id} was already completed with value {recorded.value}; a "
            "repeated call may only repeat it",
        )
