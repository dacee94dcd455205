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
import logging
import math
import threading
import warnings
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
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
from pydantic import ValidationError
from sqlalchemy import Engine, delete, func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from meanfield import Inputs, MeanFieldError
from service import metrics
from service.models import Lease, StudyRecord, WorkerRecord
from service.plots import PriorMap, prior_map
from service.prior import Prior, PriorError, PriorSampler, build_prior
from service.schemas import (
    EXPORT_FORMAT,
    ClaimResponse,
    Distribution,
    StudyCreate,
    StudyExport,
    TrialAssignment,
    TrialOutcome,
)
from workers.taskspec import TaskError, task_spec

__all__ = ["Conflict", "Invalid", "NotFound", "Service", "study_prior"]

optuna.logging.set_verbosity(optuna.logging.WARNING)

log = logging.getLogger("isotune.service")

ATTEMPT_ATTR = "isotune_attempt"
THEORY_ATTR = "isotune_theory"
WORKER_ATTR = "isotune_worker"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class NotFound(LookupError):
    """An unknown study or trial (HTTP 404); names what was looked up."""

    def __init__(self, field: str, value: object) -> None:
        self.field, self.value = field, value
        super().__init__(f"{field}={value!r}: not found")


class Invalid(ValueError):
    """A study specification that passes the schema but not the theory or the task (HTTP 422)."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field, self.value, self.reason = field, value, reason
        super().__init__(f"{field}={value!r}: {reason}")


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
    if name == "qmc":  # experimental in Optuna; chosen by the study's author
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(spec: StudyCreate) -> optuna.pruners.BasePruner:
    """The study's pruner with its ``pruner_options``; raises :class:`Invalid` naming the option
    Optuna rejects. The median pruner defaults to 3 startup trials and 1 warm-up step."""
    options = dict(spec.pruner_options)
    kinds = {
        "median": optuna.pruners.MedianPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        "threshold": optuna.pruners.ThresholdPruner,
        "none": optuna.pruners.NopPruner,
    }
    if spec.pruner == "median":
        options = {"n_startup_trials": 3, "n_warmup_steps": 1, **options}
    try:
        return kinds[spec.pruner](**options)
    except TypeError as e:  # an option the pruner does not take
        raise Invalid("pruner_options", spec.pruner_options, f"{spec.pruner}: {e}") from None
    except ValueError as e:  # a value it refuses
        raise Invalid("pruner_options", spec.pruner_options, str(e)) from None


class _ServiceStudy(optuna.Study):
    """An Optuna study whose ``ask`` can skip the search for WAITING trials.

    That search reads every unfinished trial of the study with all its attributes, which is most
    of a claim's cost when many trials run at once. A claim sets ``skip_waiting`` (under the study
    lock) when isotune's own count says nothing is waiting. Should Optuna rename the method, the
    override goes unused and claims are slower, never wrong.
    """

    skip_waiting = False

    def _pop_waiting_trial_id(self) -> int | None:
        return None if self.skip_waiting else super()._pop_waiting_trial_id()


@dataclass(frozen=True)
class _Cached:
    """What a server process keeps of a study between requests: all of it immutable once the
    study exists (its state, which can change, is always read from the database)."""

    name: str
    optuna_id: int
    spec: StudyCreate
    distributions: dict[str, BaseDistribution]
    prior: Prior | None
    study: _ServiceStudy  # its pruner prunes; claims set its sampler under the study lock


@dataclass
class _Held:
    """A lease as this process last saw it: who holds it (immutable) and until when."""

    study_name: str
    worker_id: str
    attempt: int
    trial_number: int
    optuna_id: int
    expires_at: datetime
    state: str = "active"


#: Leases (and workers) remembered per server process (about 200 bytes each).
MAX_HELD = 100_000
#: How often a worker's ``last_seen`` is written at most.
WORKER_SEEN_S = 30.0
WORKER_SEEN = timedelta(seconds=WORKER_SEEN_S)


def study_prior(spec: StudyCreate) -> Prior | None:
    """The study's mean-field prior, built from its task's bridge and input statistics; raises
    :class:`Invalid` naming the field when the task or the prior cannot be honored. With the
    prior off it only computes each trial's theory numbers, and is None where the theory does not
    apply (a cell without memory gate, a task it cannot describe)."""
    try:
        task = task_spec(spec.task.name, spec.task.T, **spec.task.options)
        inputs = Inputs(R=task.R, regime=task.regime, R_ab=task.R_ab)
        space = {k: to_distribution(d) for k, d in spec.space.items()}
        weights = str(spec.training.get("weights", "orthogonal"))
        return build_prior(spec.cell, spec.prior, task.T, inputs, space, weights, spec.seed or 0)
    except TaskError as e:
        raise Invalid(f"task.{e.field}", e.value, e.reason) from None
    except (PriorError, MeanFieldError) as e:
        if spec.prior.mode == "off":
            return None
        raise Invalid(e.field, e.value, e.reason) from None


class Service:
    """The service over one database: ``sessions`` for isotune's tables, ``storage`` Optuna's.

    Optuna writes through its own connections. On SQLite (one writer at a time) a transaction of
    ours must never be open while Optuna writes, or the two wait on each other until the busy
    timeout: every operation below reads our tables in one short session, lets Optuna write, then
    writes our tables in another short session.

    Which steps need the study lock: a claim (the budget check, the sampler's proposal and the
    lease must be one step), and every path that re-enqueues a failed trial's parameters (so that
    a claim never answers "done" between a failure and its retry). Reports, heartbeats and
    completions do not: Optuna refuses to change a finished trial (``UpdateFinishedTrialError``,
    under a row lock on PostgreSQL), so of a completion racing the reaper exactly one wins, and
    the loser answers with the recorded state.
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
        # for state-filtered reads that the cache would answer by reading every trial once
        self.rdb = storage
        self.sqlite = sqlite
        # Waiting for a study lock holds a connection: they come from their own pool, so that
        # waiters can never starve the lock holder of the connections it works with.
        self.lock_engine = lock_engine
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._cache: dict[str, _Cached] = {}
        self._held: dict[int, _Held] = {}
        self._workers: dict[str, tuple[dict[str, Any], datetime]] = {}

    # -- helpers ----------------------------------------------------------------------------------
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

    def _record(self, name: str) -> StudyRecord:
        with self.sessions() as session:
            rec = session.get(StudyRecord, name)
            if rec is None:
                raise NotFound("study", name)
            session.expunge(rec)
        return rec

    def _spec(self, name: str) -> tuple[StudyCreate, StudyRecord]:
        rec = self._record(name)
        return StudyCreate.model_validate(rec.spec), rec

    def _cached(self, name: str, optuna_id: int, prior: Prior | None = None) -> _Cached:
        """The cached study ``name`` whose Optuna study is ``optuna_id`` (read from the database
        by the caller, so a study deleted and created again under the same name is never
        mistaken for the old one). ``prior``: one already built for it (None: build it)."""
        got = self._cache.get(name)
        if got is not None and got.optuna_id == optuna_id:
            return got
        spec, rec = self._spec(name)
        got = _Cached(
            name=name,
            optuna_id=rec.optuna_study_id,
            spec=spec,
            distributions={k: to_distribution(d) for k, d in spec.space.items()},
            prior=prior if prior is not None else study_prior(spec),
            study=_ServiceStudy(
                study_name=name,
                storage=self.storage,
                sampler=make_sampler(spec),
                pruner=make_pruner(spec),
            ),
        )
        self._cache[name] = got
        return got

    # -- studies ----------------------------------------------------------------------------------
    def create_study(self, spec: StudyCreate, state: str = "active") -> dict[str, Any]:
        # refuse a pruner, a task or a prior that cannot be honored before storing anything
        make_pruner(spec)
        prior = study_prior(spec)
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
            try:
                study.set_user_attr("isotune_spec", spec.model_dump(mode="json"))
                with self.sessions.begin() as session:
                    session.add(
                        StudyRecord(
                            name=spec.name,
                            optuna_study_id=study._study_id,
                            spec=spec.model_dump(mode="json"),
                            state=state,
                            created_at=now(),
                        )
                    )
            except Exception:  # no Optuna study without its record: the name stays free
                optuna.delete_study(study_name=spec.name, storage=self.storage)
                raise
            self._cached(spec.name, study._study_id, prior)  # the checked prior, not built again
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
            self._record(name)
            optuna.delete_study(study_name=name, storage=self.storage)
            with self.sessions.begin() as session:
                session.execute(delete(Lease).where(Lease.study_name == name))
                session.execute(delete(StudyRecord).where(StudyRecord.name == name))
            self._cache.pop(name, None)
            for trial_id in [k for k, v in self._held.items() if v.study_name == name]:
                self._held.pop(trial_id, None)

    def export_study(self, name: str) -> dict[str, Any]:
        """The study's specification and every trial, as JSON (:class:`StudyExport`)."""
        _, rec = self._spec(name)
        trials = self.storage.get_all_trials(rec.optuna_study_id, deepcopy=False)
        return {
            "format": EXPORT_FORMAT,
            "name": name,
            "state": rec.state,
            "exported_at": now().isoformat(),
            "spec": rec.spec,
            "trials": [_export_trial(t) for t in trials],
        }

    def import_study(self, data: StudyExport, name: str | None = None) -> dict[str, Any]:
        """Create a study from an export, under ``name`` (default: the exported one).

        Finished trials come back as they were (values, intermediate values, attributes, times)
        and count against the budget as before; queued (WAITING) parameters are queued again; a
        trial RUNNING at export time comes back FAILED ("running when exported") with its
        parameters queued for a retry while retries remain. The study is created ``importing``
        (claims answer ``done``) and takes its exported state last. All or nothing: a trial that
        does not fit the study's space leaves no study behind (422 naming ``trials[i]``)."""
        try:
            spec = StudyCreate.model_validate({**data.spec, "name": name or data.name})
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise Invalid(f"spec.{where}", first.get("input"), first["msg"]) from None
        self.create_study(spec, state="importing")
        try:
            self._add_trials(spec, data)
            with self.sessions.begin() as session:
                session.get(StudyRecord, spec.name).state = data.state
        except BaseException:
            try:
                self.delete_study(spec.name)
            except Exception:  # keep the import's own error; the half study is logged
                log.exception("could not delete the half-imported study %r", spec.name)
            raise
        return self.get_study(spec.name)

    def _add_trials(self, spec: StudyCreate, data: StudyExport) -> None:
        """The exported trials, checked against the study's space, then stored in one pass."""
        name = spec.name
        space = {k: to_distribution(d) for k, d in spec.space.items()}
        rec = self._record(name)
        frozen: list[tuple[optuna.trial.FrozenTrial, int, str]] = []
        retry: list[tuple[dict[str, Any], int]] = []
        for i, t in enumerate(sorted(data.trials, key=lambda t: t.number)):
            try:
                attempt = int(t.user_attrs.get(ATTEMPT_ATTR, 1))
                params = _checked_params(t.params, space)
                if t.state == "WAITING":
                    retry.append((params, attempt))
                    continue
                dists = {}
                for k, v in t.distributions.items():
                    dists[k] = optuna.distributions.json_to_distribution(v)
                    if dists[k] != space.get(k):
                        raise ValueError(f"parameter {k!r}: {dists[k]} is not the study's {k}")
                state, attrs = TrialState[t.state], dict(t.user_attrs)
                start, complete = _when(t.datetime_start), _when(t.datetime_complete)
                if state == TrialState.RUNNING:
                    state, attrs["isotune_fail"] = TrialState.FAIL, "running when exported"
                    complete = max(datetime.now(), start or datetime.now())  # Optuna's clock
                    if attempt <= spec.retries:
                        retry.append((params, attempt + 1))
                trial = optuna.trial.FrozenTrial(
                    number=0, trial_id=0, state=state,
                    value=t.value if state != TrialState.FAIL else None, values=None,
                    datetime_start=start, datetime_complete=complete,
                    params=t.params, distributions=dists, user_attrs=attrs, system_attrs={},
                    intermediate_values={int(k): v for k, v in t.intermediate_values.items()},
                )  # fmt: skip
                trial._validate()
            except (ValueError, TypeError, KeyError) as e:
                raise Invalid(f"trials[{i}]", t.number, str(e)) from None
            frozen.append((trial, attempt, str(attrs.get(WORKER_ATTR, "imported"))[:200]))
        with self.study_lock(name):
            leases = []
            for trial, attempt, worker in frozen:
                trial_id = self.storage.create_new_trial(rec.optuna_study_id, template_trial=trial)
                stamp = (trial.datetime_start or datetime.now()).astimezone(UTC)
                leases.append(
                    Lease(
                        trial_id=trial_id, study_name=name,
                        trial_number=self.storage.get_trial_number_from_id(trial_id),
                        worker_id=worker, claimed_at=stamp, expires_at=stamp, attempt=attempt,
                        state="finished",
                    )
                )  # fmt: skip
            with self.sessions.begin() as session:  # the budget counts them as before
                session.add_all(leases)
            for params, attempt in retry:
                self._enqueue(name, params, attempt)

    def list_trials(self, name: str, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        rec = self._record(name)
        trials = self.storage.get_all_trials(rec.optuna_study_id, deepcopy=False)
        page = trials[offset : offset + limit]
        return {"total": len(trials), "offset": offset, "trials": [_trial_dict(t) for t in page]}

    def prior_map(self, name: str) -> PriorMap:
        """The study's prior map (``service.plots``): ξ_C, the criterion's contour, the trials."""
        rec = self._record(name)
        info = self._cached(name, rec.optuna_study_id)
        if info.prior is None:
            raise NotFound("prior map", f"{name} (no initialization hyperparameter to map)")
        trials = [_trial_dict(t) for t in self.storage.get_all_trials(rec.optuna_study_id)]
        spec = info.spec
        trained = -math.inf  # minimized: every completed trial counts
        if spec.direction == "maximize":
            chance = task_spec(spec.task.name, spec.task.T, **spec.task.options).chance
            trained = 0.5 * (chance + 1.0)
        title = (
            f"{name}: {spec.cell} on {spec.task.name}, T = {spec.task.T}, prior {spec.prior.mode}"
        )
        return prior_map(info.prior, trials, title, trained)

    def get_trial(self, trial_id: int) -> dict[str, Any]:
        try:
            return _trial_dict(self.storage.get_trial(trial_id))
        except KeyError:
            raise NotFound("trial", trial_id) from None

    # -- leases -----------------------------------------------------------------------------------
    def reap_all(self) -> int:
        """One pass of the reaper: every study with expired leases, and every RUNNING trial of
        an active study that no lease covers (a claim cut off between Optuna's ask and its
        lease, e.g. by a database restart). Returns how many trials it failed."""
        with self.sessions() as session:
            names = set(
                session.scalars(
                    select(Lease.study_name).where(
                        Lease.state == "active", Lease.expires_at < now()
                    )
                )
            )
            active = list(
                session.execute(
                    select(StudyRecord.name, StudyRecord.optuna_study_id).where(
                        StudyRecord.state == "active"
                    )
                )
            )
        total = 0
        for name in names:
            try:
                with self.study_lock(name):
                    total += self._reap(name)
            except Exception:  # one study's trouble must not stop the others' reaping
                log.exception("reaping expired leases of study %r failed", name)
        for name, optuna_id in active:
            try:
                total += self._reap_orphans(name, optuna_id)
            except Exception:
                log.exception("reaping unleased trials of study %r failed", name)
        return total

    def _reap_orphans(self, name: str, optuna_id: int) -> int:
        info = self._cached(name, optuna_id)
        # Optuna stamps datetime_start in naive local time
        cutoff = datetime.now() - timedelta(seconds=info.spec.lease_seconds)
        running = self.rdb.get_all_trials(optuna_id, deepcopy=False, states=(TrialState.RUNNING,))
        old = [t._trial_id for t in running if t.datetime_start and t.datetime_start < cutoff]
        if not old:
            return 0
        with self.study_lock(name):  # no claim is between its ask and its lease meanwhile
            with self.sessions() as session:
                leased = set(session.scalars(select(Lease.trial_id).where(Lease.trial_id.in_(old))))
            failed = 0
            for trial_id in old:
                if trial_id in leased:
                    continue
                try:
                    self.storage.set_trial_user_attr(
                        trial_id, "isotune_fail", "claimed but never handed out"
                    )
                    self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
                    failed += 1
                except optuna.exceptions.UpdateFinishedTrialError:
                    pass
        return failed

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
        # claim the expired leases first: a heartbeat that renewed one meanwhile keeps it
        cutoff = now()
        with self.sessions.begin() as session:
            taken = set(
                session.scalars(
                    update(Lease)
                    .where(
                        Lease.trial_id.in_([x.trial_id for x in expired]),
                        Lease.state == "active",
                        Lease.expires_at < cutoff,
                    )
                    .values(state="expired")
                    .returning(Lease.trial_id)
                )
            )
        if taken:
            metrics.EXPIRED.labels(name).inc(len(taken))
        for lease in expired:
            if lease.trial_id not in taken:
                continue
            self._held.pop(lease.trial_id, None)
            trial = self.storage.get_trial(lease.trial_id)
            if trial.state != TrialState.RUNNING:
                continue
            try:
                self.storage.set_trial_user_attr(lease.trial_id, "isotune_fail", "lease expired")
                self.storage.set_trial_state_values(lease.trial_id, TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # its worker finished it a moment ago
            if lease.attempt <= spec.retries:
                self._enqueue(name, trial.params, lease.attempt + 1)
        return len(taken)

    def _enqueue(self, name: str, params: dict[str, Any], attempt: int) -> None:
        """Re-enqueue ``params`` (caller holds the study lock). The count goes up first: should
        the enqueue fail, claims only look for a WAITING trial that is not there."""
        with self.sessions.begin() as session:
            session.execute(
                update(StudyRecord)
                .where(StudyRecord.name == name)
                .values(waiting=StudyRecord.waiting + 1)
            )
        study = optuna.load_study(study_name=name, storage=self.storage)
        study.enqueue_trial(params, user_attrs={ATTEMPT_ATTR: attempt}, skip_if_exists=False)

    def claim(self, name: str, worker_id: str, capabilities: dict[str, Any]) -> ClaimResponse:
        """A trial for ``worker_id``: its own active one, a re-enqueued one, or a new proposal;
        ``wait`` when the budget is out but trials still run, ``done`` when the study is over."""
        answer = self._claim(name, worker_id, capabilities)
        metrics.CLAIMS.labels(name, answer.status).inc()
        return answer

    def _claim(self, name: str, worker_id: str, capabilities: dict[str, Any]) -> ClaimResponse:
        with self.study_lock(name):
            t0 = now()
            # one round trip: the study's state, whether leases have expired, this worker's
            # active lease, and how many fresh parameter sets were handed out (indexed lookups)
            leases = select(Lease).where(Lease.study_name == name)
            mine_q = (
                leases.where(Lease.worker_id == worker_id, Lease.state == "active")
                .with_only_columns(Lease.trial_id)
                .limit(1)
            )
            with self.sessions() as session:
                row = session.execute(
                    select(
                        StudyRecord.state,
                        StudyRecord.optuna_study_id,
                        StudyRecord.waiting,
                        leases.where(Lease.state == "active", Lease.expires_at < t0)
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
            if state != "active":
                return ClaimResponse(status="done")
            info = self._cached(name, optuna_id)
            if expired is not None:
                self._reap(name)
                with self.sessions() as session:
                    mine = session.scalar(mine_q)
                    waiting = session.scalar(
                        select(StudyRecord.waiting).where(StudyRecord.name == name)
                    )
            if mine is not None:  # a restarted worker gets its trial back, if it still runs
                trial = self.storage.get_trial(mine)
                if trial.state != TrialState.RUNNING:  # finished, its lease left behind
                    self._close(mine)
                else:
                    with self.sessions.begin() as session:
                        self._saw_worker(session, worker_id, capabilities, t0)
                        lease = session.get(Lease, mine)
                        session.expunge(lease)
                    theory = trial.user_attrs.get(THEORY_ATTR)
                    return ClaimResponse(
                        status="assigned",
                        trial=self._assignment(info, lease, trial.params, theory),
                    )
            if fresh >= info.spec.budget:  # only re-enqueued parameters are left to try
                sid = info.optuna_id
                if not self.rdb.get_all_trials(sid, deepcopy=False, states=(TrialState.WAITING,)):
                    running = self.rdb.get_all_trials(
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
                trial_id=trial._trial_id,
                study_name=name,
                trial_number=trial.number,
                worker_id=worker_id,
                claimed_at=t0,
                expires_at=t0 + timedelta(seconds=info.spec.lease_seconds),
                attempt=attempt,
                state="active",
            )
            with self.sessions.begin() as session:
                self._saw_worker(session, worker_id, capabilities, t0)
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
            _Held(
                study_name=name,
                worker_id=worker_id,
                attempt=attempt,
                trial_number=lease.trial_number,
                optuna_id=info.optuna_id,
                expires_at=lease.expires_at,
            ),
        )
        theory = None
        if info.prior is not None:
            try:
                theory = info.prior.numbers(trial.params)
            except MeanFieldError:  # the theory has no answer here: the trial runs without
                log.warning("no theory numbers for trial %s of %r", trial._trial_id, name)
            else:
                trial.set_user_attr(THEORY_ATTR, theory)
        trial.set_user_attr(WORKER_ATTR, worker_id)
        return ClaimResponse(
            status="assigned", trial=self._assignment(info, lease, trial.params, theory)
        )

    def _saw_worker(
        self, session: Session, worker_id: str, capabilities: dict[str, Any], at: datetime
    ) -> None:
        """Record a worker's capabilities and when it was last seen: at most every
        :data:`WORKER_SEEN_S` seconds per worker and process, unless its capabilities changed."""
        last = self._workers.get(worker_id)
        if last is not None and last[0] == capabilities and at - last[1] < WORKER_SEEN:
            return
        if len(self._workers) >= MAX_HELD:
            self._workers.clear()
        self._workers[worker_id] = (capabilities, at)
        seen = session.execute(
            update(WorkerRecord)
            .where(WorkerRecord.id == worker_id)
            .values(capabilities=capabilities, last_seen=at)
        )
        if not seen.rowcount:  # type: ignore[attr-defined]
            session.add(WorkerRecord(id=worker_id, capabilities=capabilities, last_seen=at))

    @staticmethod
    def _assignment(
        info: _Cached, lease: Lease, params: dict[str, Any], theory: dict[str, Any] | None
    ) -> TrialAssignment:
        return TrialAssignment(
            study=info.name,
            trial_id=lease.trial_id,
            number=lease.trial_number,
            params=params,
            task=info.spec.task.model_dump(mode="json"),
            cell=info.spec.cell,
            training=dict(info.spec.training),
            direction=info.spec.direction,
            attempt=lease.attempt,
            lease_expires=_aware(lease.expires_at).isoformat(),
            lease_seconds=info.spec.lease_seconds,
            theory=theory,
        )

    def _lease(
        self, trial_id: int, worker_id: str, *, fresh: bool = False
    ) -> tuple[_Held, _Cached]:
        """The lease of a trial held by ``worker_id`` and its study.

        Who holds a trial never changes (a retry is a new trial), so a lease seen once is
        remembered and later requests of its worker cost no round trip. Whether it is still
        active is not remembered: Optuna refuses to change a finished trial, and a lease stops
        being active only after its trial finished. ``fresh`` reads the lease's state anyway.
        """
        held = self._held.get(trial_id)
        if fresh or held is None or held.worker_id != worker_id:
            with self.sessions() as session:
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
                    self.storage.get_trial(trial_id)
                except KeyError:
                    raise NotFound("trial", trial_id) from None
                raise Conflict("trial", trial_id, "was not handed out by this service")
            if row.worker_id != worker_id:
                raise Conflict(
                    "worker_id", worker_id, f"trial {trial_id} is leased to another worker"
                )
            held = _Held(
                study_name=row.study_name,
                worker_id=row.worker_id,
                attempt=row.attempt,
                trial_number=row.trial_number,
                optuna_id=row.optuna_study_id,
                expires_at=_aware(row.expires_at),
                state=row.state,
            )
            self._remember(trial_id, held)
        return held, self._cached(held.study_name, held.optuna_id)

    def _remember(self, trial_id: int, held: _Held) -> None:
        if len(self._held) >= MAX_HELD:
            self._held.clear()
        self._held[trial_id] = held

    def _extend(self, trial_id: int, seconds: float) -> datetime | None:
        """Renew an active lease; None if it is no longer active (reaped meanwhile)."""
        until = now() + timedelta(seconds=seconds)
        with self.sessions.begin() as session:
            done = session.execute(
                update(Lease)
                .where(Lease.trial_id == trial_id, Lease.state == "active")
                .values(expires_at=until)
            )
        return until if done.rowcount else None  # type: ignore[attr-defined]

    def heartbeat(self, trial_id: int, worker_id: str) -> dict[str, Any]:
        lease, info = self._lease(trial_id, worker_id, fresh=True)
        if lease.state != "active":
            raise Conflict("trial", trial_id, f"lease is {lease.state}")
        until = self._extend(trial_id, info.spec.lease_seconds)
        if until is None:
            raise Conflict("trial", trial_id, "lease is expired")
        lease.expires_at = until
        return {"lease_expires": until.isoformat()}

    def report(self, trial_id: int, worker_id: str, points: list[tuple[int, float]]) -> dict:
        """Record intermediate values; answer whether the pruner stops the trial. A report also
        renews the lease, at most every tenth of its length (a write per report would cost
        more than the report)."""
        lease, info = self._lease(trial_id, worker_id)
        if lease.state != "active":
            return {"prune": True, "state": self._trial(trial_id).state.name}
        try:
            for step, value in points:
                self.storage.set_trial_intermediate_value(trial_id, step, value)
        except optuna.exceptions.UpdateFinishedTrialError:  # reaped or finished meanwhile
            self._held.pop(trial_id, None)
            return {"prune": True, "state": self._trial(trial_id).state.name}
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
        return {"prune": prune, "state": TrialState.RUNNING.name}

    def finish(
        self,
        trial_id: int,
        worker_id: str,
        state: TrialState,
        value: float | None = None,
        reason: str = "",
        retry: bool = False,
    ) -> TrialOutcome:
        """Complete, prune or fail a trial; repeating the call answers the recorded state."""
        lease, info = self._lease(trial_id, worker_id)
        if lease.state != "active":
            return self._outcome(trial_id)
        requeue = retry and state == TrialState.FAIL and lease.attempt <= info.spec.retries
        # a retry is enqueued under the study lock, so that no claim sees the study "done"
        # between this failure and the re-enqueued parameters
        with self.study_lock(lease.study_name) if requeue else contextlib.nullcontext():
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
                    self.storage.set_trial_user_attr(trial_id, "isotune_fail", reason)
                self.storage.set_trial_state_values(trial_id, state, values)
            except optuna.exceptions.UpdateFinishedTrialError:  # finished before, or reaped
                # (a repeated call after a lost answer: the lease must not stay active)
                self._close(trial_id)
                return self._outcome(trial_id)
            except KeyError:  # its study was deleted
                self._held.pop(trial_id, None)
                raise NotFound("trial", trial_id) from None
            metrics.FINISHED.labels(lease.study_name, state.name).inc()
            if requeue:
                self._enqueue(lease.study_name, params, lease.attempt + 1)
            self._close(trial_id, "released" if retry else "finished")
        return TrialOutcome(
            trial_id=trial_id,
            number=lease.trial_number,
            state=state.name,
            value=_finite(values[0]) if values else None,
        )

    def _close(self, trial_id: int, state: str = "finished") -> None:
        """End a lease whose trial is finished (if it is still active)."""
        self._held.pop(trial_id, None)
        with self.sessions.begin() as session:
            session.execute(
                update(Lease)
                .where(Lease.trial_id == trial_id, Lease.state == "active")
                .values(state=state)
            )

    def _trial(self, trial_id: int) -> optuna.trial.FrozenTrial:
        try:
            return self.storage.get_trial(trial_id)
        except KeyError:
            self._held.pop(trial_id, None)
            raise NotFound("trial", trial_id) from None

    def _outcome(self, trial_id: int) -> TrialOutcome:
        t = self._trial(trial_id)
        value = t.value if t.values is not None and len(t.values) == 1 else None
        return TrialOutcome(
            trial_id=trial_id, number=t.number, state=t.state.name, value=_finite(value)
        )


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else x


def _when(text: str | None) -> datetime | None:
    """An exported time as Optuna stores it: naive local time (an offset is converted)."""
    if not text:
        return None
    t = datetime.fromisoformat(text)
    return t.astimezone().replace(tzinfo=None) if t.tzinfo is not None else t


def _stamp(t: datetime | None) -> str | None:
    """Optuna's naive local time, exported with the local offset."""
    return t.astimezone().isoformat() if t else None


def _checked_params(params: dict[str, Any], space: dict[str, BaseDistribution]) -> dict[str, Any]:
    """Parameters (external form) that the study's space can hold; ValueError otherwise."""
    for k, v in params.items():
        if k not in space:
            raise ValueError(f"parameter {k!r} is not in the study's space")
        dist = space[k]
        if not dist._contains(dist.to_internal_repr(v)):
            raise ValueError(f"parameter {k}={v!r} lies outside {dist}")
    return params


def _export_trial(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    value = t.value if t.values is not None and len(t.values) == 1 else None
    waiting = t.state == TrialState.WAITING
    return {
        "number": t.number,
        "state": t.state.name,
        "value": _finite(value),
        # a WAITING trial has no parameters yet: export those it is queued with
        "params": dict(t.system_attrs.get("fixed_params") or {}) if waiting else t.params,
        "distributions": {
            k: optuna.distributions.distribution_to_json(d) for k, d in t.distributions.items()
        },
        "intermediate_values": {str(k): v for k, v in t.intermediate_values.items()},
        "user_attrs": t.user_attrs,
        "datetime_start": _stamp(t.datetime_start),
        "datetime_complete": _stamp(t.datetime_complete),
    }


def _trial_dict(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    value = t.value if t.values is not None and len(t.values) == 1 else None
    return {
        "trial_id": t._trial_id,
        "number": t.number,
        "state": t.state.name,
        "value": _finite(value),
        # a WAITING trial has no parameters yet: show those it is queued with
        "params": t.params or dict(t.system_attrs.get("fixed_params") or {}),
        "user_attrs": t.user_attrs,
        "intermediate_values": {str(k): v for k, v in t.intermediate_values.items()},
        "datetime_start": t.datetime_start.isoformat() if t.datetime_start else None,
        "datetime_complete": t.datetime_complete.isoformat() if t.datetime_complete else None,
    }
