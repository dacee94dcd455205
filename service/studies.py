"""Studies: create, list, show, archive, delete, export and import; their trials; prior maps.

A study is an Optuna study plus isotune's row (:class:`~service.models.StudyRecord`: the
specification, the state, the count of re-enqueued parameters). Creation checks everything the
schema cannot (``service.search.check_study``) before anything is stored, and leaves no Optuna
study without its row.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import optuna
from optuna.trial import TrialState
from pydantic import ValidationError
from sqlalchemy import delete, select

from contract.tasks import task_spec
from meanfield.constants import MEASURED_C
from service.cache import StudyCache
from service.calibration import (
    TrainabilityModel,
    acceptance_model,
    add_outcomes,
    calibrate,
    source_prior,
    trained_threshold,
)
from service.errors import Conflict, Invalid, NotFound
from service.exports import export_trial, import_trial, trial_info
from service.leases import THEORY_ATTR, Leases
from service.models import Lease, PoolEntry, StudyRecord
from service.optuna_compat import enqueued_params, study_id
from service.optuna_compat import trial_id as id_of
from service.plots import PriorMap, prior_map
from service.schemas import EXPORT_FORMAT, StudyCreate, StudyExport
from service.search import check_study, make_pruner, make_sampler, to_distribution
from service.states import LeaseState, StudyState
from service.store import Store, now

__all__ = ["Studies"]

log = logging.getLogger("isotune.service")


class Studies:
    """The study side of the service over one :class:`~service.store.Store`."""

    def __init__(self, store: Store, cache: StudyCache, leases: Leases) -> None:
        self.store, self.cache, self.leases = store, cache, leases

    def create_study(
        self, spec: StudyCreate, state: StudyState = StudyState.ACTIVE
    ) -> dict[str, Any]:
        # refuse a pruner, a task or a prior that cannot be honored before storing anything
        prior = check_study(spec)
        sources = spec.prior.calibrate_from
        if isinstance(sources, list):
            with self.store.sessions() as session:
                for source in sources:
                    if source == spec.name or session.get(StudyRecord, source) is None:
                        raise Invalid("prior.calibrate_from", source, "no such other study")
        with self.store.study_lock(spec.name):
            with self.store.sessions() as session:
                if session.get(StudyRecord, spec.name) is not None:
                    raise Conflict("name", spec.name, "a study of that name exists")
            try:
                study = optuna.create_study(
                    study_name=spec.name,
                    storage=self.store.storage,
                    direction=spec.direction,
                    sampler=make_sampler(spec),
                    pruner=make_pruner(spec),
                )
            except optuna.exceptions.DuplicatedStudyError:
                raise Conflict("name", spec.name, "an Optuna study of that name exists") from None
            try:
                study.set_user_attr("isotune_spec", spec.model_dump(mode="json"))
                with self.store.sessions.begin() as session:
                    session.add(
                        StudyRecord(
                            name=spec.name,
                            optuna_study_id=study_id(study),
                            spec=spec.model_dump(mode="json"),
                            state=state,
                            created_at=now(),
                        )
                    )
            except Exception:  # no Optuna study without its record: the name stays free
                optuna.delete_study(study_name=spec.name, storage=self.store.storage)
                raise
            self.cache.get(spec.name, study_id(study), prior)  # the checked prior, not built again
        return self.get_study(spec.name)

    def list_studies(self) -> list[dict[str, Any]]:
        with self.store.sessions() as session:
            names = list(session.scalars(select(StudyRecord.name).order_by(StudyRecord.created_at)))
        return [self.get_study(n) for n in names]

    def get_study(self, name: str) -> dict[str, Any]:
        """The study with its trials' counts; one whose Optuna study is gone (deleted or renamed
        in optuna-dashboard) shows as ``orphaned`` with no trials, and can be deleted."""
        spec_model, rec = self.store.spec(name)
        spec, state = rec.spec, rec.state
        try:
            trials = self.store.trials(rec)
        except Conflict:
            trials, state = [], StudyState.ORPHANED
        counts = Counter(t.state.name for t in trials)
        best = None
        complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
        if complete:
            pick = max if spec_model.direction == "maximize" else min
            b = pick(complete, key=lambda t: t.value)
            best = {
                "number": b.number,
                "trial_id": id_of(b),
                "value": b.value,
                "params": b.params,
                "theory": b.user_attrs.get("isotune_theory"),
            }
        return {
            "name": name,
            "state": state,
            "spec": spec,
            "counts": {s.name: counts.get(s.name, 0) for s in TrialState},
            "n_trials": len(trials),
            "best": best,
            "calibration": self._calibration(name),
        }

    def archive_study(self, name: str) -> dict[str, Any]:
        with self.store.sessions.begin() as session:
            rec = session.get(StudyRecord, name)
            if rec is None:
                raise NotFound("study", name)
            rec.state = StudyState.ARCHIVED
        return self.get_study(name)

    def delete_study(self, name: str) -> None:
        """Delete the study, its trials and its leases. An orphaned study (its Optuna study
        gone) loses what isotune kept of it; an Optuna study that took its name is not touched."""
        with self.store.study_lock(name):
            rec = self.store.record(name)
            with contextlib.suppress(KeyError):  # already gone (deleted in optuna-dashboard)
                self.store.storage.delete_study(rec.optuna_study_id)
            with self.store.sessions.begin() as session:
                session.execute(delete(Lease).where(Lease.study_name == name))
                session.execute(delete(PoolEntry).where(PoolEntry.study_name == name))
                session.execute(delete(StudyRecord).where(StudyRecord.name == name))
            self.cache.drop(name)
            self.leases.forget(name)

    def adopt_study(self, name: str, optuna_study: str | None = None) -> dict[str, Any]:
        """Re-attach an orphaned study to the Optuna study ``optuna_study`` (default: one of its
        own name), which then carries the study on under that name. optuna-dashboard's rename
        copies a study under the new name and deletes the old: adopting the copy continues the
        search with its trials. The orphan's leases end (their trials were the old study's); a
        trial the copy holds RUNNING is failed by the reaper once older than a lease."""
        target = optuna_study or name
        with self.store.study_lock(name):
            spec, rec = self.store.spec(name)
            try:
                self.store.trials(rec)
            except Conflict:
                pass  # orphaned: what adopting is for
            else:
                raise Conflict(
                    "study", name, "is not orphaned: its Optuna study is there (nothing to adopt)"
                )
            try:
                new_id = self.store.rdb.get_study_id_from_name(target)
            except KeyError:
                raise NotFound("optuna_study", target) from None
            direction = self.store.rdb.get_study_directions(new_id)
            if [d.name.lower() for d in direction] != [spec.direction]:
                raise Conflict(
                    "optuna_study", target, f"its direction is not the study's {spec.direction}"
                )
            queued = self.store.rdb.get_all_trials(
                new_id, deepcopy=False, states=(TrialState.WAITING,)
            )
            # a WAITING trial is enqueued parameters (a retry) or sampled ahead (the pool's)
            waiting = sum(1 for t in queued if enqueued_params(t))
            pooled = [t for t in queued if not enqueued_params(t) and t.params]
            with self.store.sessions.begin() as session:
                owner = session.scalars(
                    select(StudyRecord.name).where(StudyRecord.optuna_study_id == new_id)
                ).first()
                if owner is not None:
                    raise Conflict("optuna_study", target, f"belongs to isotune study {owner!r}")
                if target != name and session.get(StudyRecord, target) is not None:
                    raise Conflict("optuna_study", target, "an isotune study has that name")
                session.execute(delete(Lease).where(Lease.study_name == name))
                session.execute(delete(PoolEntry).where(PoolEntry.study_name == name))
                session.execute(delete(StudyRecord).where(StudyRecord.name == name))
                session.flush()
                session.add(
                    StudyRecord(
                        name=target,
                        optuna_study_id=new_id,
                        spec={**rec.spec, "name": target},
                        state=rec.state,
                        created_at=rec.created_at,
                        waiting=waiting,
                    )
                )
                session.flush()
                stamp = now()
                session.add_all(
                    PoolEntry(
                        trial_id=id_of(t), study_name=target, trial_number=t.number,
                        params=t.params, theory=t.user_attrs.get(THEORY_ATTR), created_at=stamp,
                    )
                    for t in pooled
                )  # fmt: skip
            for n in {name, target}:
                self.cache.drop(n)
                self.leases.forget(n)
        return self.get_study(target)

    def _source_prior(self, spec: StudyCreate, c0: float) -> tuple[Any, list[str], int]:
        """The prior other studies' outcomes give (``prior.calibrate_from``): the posterior of a
        model fitted to them, widened (``service.calibration.source_prior``); None without."""
        wanted = spec.prior.calibrate_from
        if wanted == "none":
            return None, [], 0
        with self.store.sessions() as session:
            records = list(session.scalars(select(StudyRecord)))
        same = [
            r for r in records
            if r.name != spec.name and (
                r.name in wanted if isinstance(wanted, list)
                else r.spec.get("cell") == spec.cell and r.spec.get("task", {}).get("name")
                == spec.task.name and r.spec.get("task", {}).get("options", {}) == spec.task.options
            )
        ]  # fmt: skip
        model = TrainabilityModel(c=c0, width=spec.prior.width)
        names = []
        for rec in sorted(same, key=lambda r: r.name):
            try:
                trials = self.store.trials(rec)
                other = StudyCreate.model_validate(rec.spec)
            except (Conflict, ValueError):
                continue
            threshold, maximize = _threshold(other)
            before = len(model.outcomes)
            add_outcomes(
                model, threshold, maximize,
                [(t.state.name, t.value, t.user_attrs.get(THEORY_ATTR)) for t in trials],
                gradient=spec.prior.gradient_bounds is not None,
            )  # fmt: skip
            if len(model.outcomes) > before:
                names.append(rec.name)
        if not model.outcomes:
            return None, [], 0
        return source_prior(model), names, len(model.outcomes)

    def _calibration(self, name: str) -> dict[str, Any] | None:
        info = self.cache.peek(name)
        return info.calibration.as_dict() if info is not None and info.calibration else None

    def recalibrate(self) -> int:
        """Refit the trainability model of every study this process serves with a calibrated
        prior and new finished trials since its last fit, and hand out from the c it gives
        (``service.calibration``). Runs in the server's background pass, never in a claim.
        Returns how many studies were refitted."""
        done = 0
        for info in self.cache.cached():
            spec = info.spec
            if not (info.prior_built and spec.prior.calibrate and spec.prior.mode != "off"):
                continue
            prior = info.prior
            if prior is None:
                continue
            try:
                trials = self.store.trials(self.store.record(info.name))
            except (Conflict, NotFound):
                continue
            finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
            fresh = info.calibrated_on < 0 and spec.prior.calibrate_from != "none"
            if len(finished) == max(info.calibrated_on, 0) and not fresh:
                continue  # nothing new (or nothing yet, and nothing to start from)
            c0 = spec.prior.c if spec.prior.c is not None else MEASURED_C[spec.cell]
            if info.source is None:  # other studies' outcomes: read once per process
                info.source = self._source_prior(spec, c0)
            base, names, count = info.source
            threshold, maximize = _threshold(spec)
            cal, model = calibrate(
                c0, spec.prior.width, spec.prior.p_min, threshold, maximize,
                [(t.state.name, t.value, t.user_attrs.get(THEORY_ATTR)) for t in finished],
                base=base, sources=names, source_outcomes=count,
                # T·log m₁ only where the prior computes it for the points it judges
                gradient=spec.prior.gradient_bounds is not None,
            )  # fmt: skip
            prior.c, prior.model = cal.c, model  # claims read them from here on
            if spec.prior.mode == "restrict":
                gate = acceptance_model(cal, model)
                if prior.set_gate(gate, seed=len(finished)):
                    cal = dataclasses.replace(cal, gate_p=prior.gate_p)
                elif gate is not None:
                    log.warning(
                        "study %r: no point of a scan of its space passes its model's gate; it "
                        "hands out by c = %.3g", info.name, cal.c,
                    )  # fmt: skip
            info.calibration, info.calibrated_on = cal, len(finished)
            done += 1
        return done

    def export_study(self, name: str) -> dict[str, Any]:
        """The study's specification and every trial, as JSON (:class:`StudyExport`)."""
        _, rec = self.store.spec(name)
        trials = self.store.trials(rec)
        return {
            "format": EXPORT_FORMAT,
            "name": name,
            "state": rec.state,
            "exported_at": now().isoformat(),
            "spec": rec.spec,
            "trials": [export_trial(t) for t in trials],
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
        self.create_study(spec, state=StudyState.IMPORTING)
        try:
            self._add_trials(spec, data)
            with self.store.sessions.begin() as session:
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
        rec = self.store.record(name)
        frozen: list[tuple[optuna.trial.FrozenTrial, int, str]] = []
        retry: list[tuple[dict[str, Any], int]] = []
        for i, t in enumerate(sorted(data.trials, key=lambda t: t.number)):
            try:
                got = import_trial(t, space, spec.retries)
            except (ValueError, TypeError, KeyError) as e:
                raise Invalid(f"trials[{i}]", t.number, str(e)) from None
            if got.trial is not None:
                frozen.append((got.trial, got.attempt, got.worker))
            if got.requeue is not None:
                retry.append(got.requeue)
        with self.store.study_lock(name):
            leases, storage = [], self.store.storage
            for trial, attempt, worker in frozen:
                trial_id = storage.create_new_trial(rec.optuna_study_id, template_trial=trial)
                stamp = (trial.datetime_start or datetime.now()).astimezone(UTC)
                leases.append(
                    Lease(
                        trial_id=trial_id, study_name=name,
                        trial_number=storage.get_trial_number_from_id(trial_id),
                        worker_id=worker, claimed_at=stamp, expires_at=stamp, attempt=attempt,
                        state=LeaseState.FINISHED,
                    )
                )  # fmt: skip
            with self.store.sessions.begin() as session:  # the budget counts them as before
                session.add_all(leases)
            for params, attempt in retry:
                self.leases.enqueue(name, params, attempt)

    def list_trials(self, name: str, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        rec = self.store.record(name)
        trials = self.store.trials(rec)
        page = trials[offset : offset + limit]
        return {"total": len(trials), "offset": offset, "trials": [trial_info(t) for t in page]}

    def prior_map(self, name: str) -> PriorMap:
        """The study's prior map (``service.plots``): ξ_C, the criterion's contour, the trials."""
        rec = self.store.record(name)
        info = self.cache.get(name, rec.optuna_study_id)
        if info.prior is None:
            raise NotFound("prior map", f"{name} (no initialization hyperparameter to map)")
        trials = [trial_info(t) for t in self.store.trials(rec)]
        spec = info.spec
        trained = -math.inf  # minimized: every completed trial counts
        means = "every completed trial (a minimized study)"
        if spec.direction == "maximize":
            chance = task_spec(spec.task.name, spec.task.T, **spec.task.options).chance
            trained = 0.5 * (chance + 1.0)
            means = f"value ≥ {trained:.3g}: halfway from chance {chance:.3g} to 1"
        title = (
            f"{name}: {spec.cell} on {spec.task.name}, T = {spec.task.T}, prior {spec.prior.mode}"
        )
        if info.calibration is not None:  # the line below is drawn at the calibrated c
            cal = info.calibration
            title += f"\nc calibrated {cal.c0:g} → {cal.c:.3g} from {cal.outcomes} outcomes"
            if cal.sources:
                title += f" and {cal.source_outcomes} of {', '.join(cal.sources)}"
        return prior_map(info.prior, trials, title, trained, means)

    def get_trial(self, trial_id: int) -> dict[str, Any]:
        try:
            return trial_info(self.store.storage.get_trial(trial_id))
        except KeyError:
            raise NotFound("trial", trial_id) from None


def _threshold(spec: StudyCreate) -> tuple[float, bool]:
    """The value from which a completed trial of ``spec`` trained, and whether it maximizes."""
    maximize = spec.direction == "maximize"
    if spec.prior.trained is not None:
        return spec.prior.trained, maximize
    task = task_spec(spec.task.name, spec.task.T, **spec.task.options)
    return trained_threshold(task.chance, maximize, task.baseline_loss), maximize
