"""What a server process keeps of each study between requests (the per-process study cache).

Everything cached is immutable once the study exists (its specification, distributions, pruner);
its state, which can change, is always read from the database. The mean-field prior is built
lazily, at the first claim or prior map that needs it: heartbeats, reports and completions on a
process that has not seen the study never pay for the prior's creation scan.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from contract.wire import TrialAssignment
from service.models import Lease
from service.optuna_compat import SkipWaitingStudy, study_id
from service.prior import Prior
from service.schemas import StudyCreate
from service.search import make_pruner, make_sampler, study_prior, to_distribution
from service.store import Store, aware, orphaned

__all__ = ["CachedStudy", "StudyCache"]

_UNSET = object()


@dataclass
class CachedStudy:
    """A study as one server process keeps it. ``study``: its pruner prunes; claims set its
    sampler under the study lock. :attr:`prior` is computed at first use, once."""

    name: str
    optuna_id: int
    spec: StudyCreate
    distributions: dict[str, BaseDistribution]
    study: SkipWaitingStudy
    _prior: object = field(default=_UNSET, repr=False)
    _guard: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: the last calibration (``service.calibration``) and how many finished trials it saw
    calibration: Any = None
    calibrated_on: int = -1
    #: the prior from other studies (``prior.calibrate_from``): (posterior, names, outcomes)
    source: Any = None
    #: whether the study samples ahead (``service.pool``), as this process last saw it: claims
    #: look for a pooled trial before the study lock only then
    pooling: bool = False
    #: whether :meth:`warm` has run in this process
    warmed: bool = False
    _warming: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def prior(self) -> Prior | None:
        """The study's prior (``service.search.study_prior``), built on first use."""
        if self._prior is _UNSET:
            with self._guard:
                if self._prior is _UNSET:
                    self._prior = study_prior(self.spec)
        return self._prior  # type: ignore[return-value]

    def warm(self) -> None:
        """A process's first-use work for the study, for its first claim to do before the study
        lock: the prior built, and the study's history read into Optuna's cache (else the first
        search for a re-enqueued trial reads every trial under the lock: seconds at 10,000).
        Done once; claims that come meanwhile wait for it instead of doing it again."""
        with self._warming:
            if not self.warmed:
                _ = self.prior
                self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
                self.warmed = True

    @property
    def prior_built(self) -> bool:
        return self._prior is not _UNSET

    def assignment(
        self, lease: Lease, params: dict[str, Any], theory: dict[str, Any] | None
    ) -> TrialAssignment:
        """What a worker is handed for a trial of this study under ``lease``."""
        return TrialAssignment(
            study=self.name,
            trial_id=lease.trial_id,
            number=lease.trial_number,
            params=params,
            task=self.spec.task.model_dump(mode="json"),
            cell=self.spec.cell,
            training=dict(self.spec.training),
            direction=self.spec.direction,
            attempt=lease.attempt,
            lease_expires=aware(lease.expires_at).isoformat(),
            lease_seconds=self.spec.lease_seconds,
            theory=theory,
        )


class StudyCache:
    """Study name → :class:`CachedStudy`, for one process and one :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._studies: dict[str, CachedStudy] = {}

    def get(self, name: str, optuna_id: int, prior: Prior | object | None = _UNSET) -> CachedStudy:
        """The cached study ``name`` whose Optuna study is ``optuna_id`` (read from the database
        by the caller, so a study deleted and created again under the same name is never
        mistaken for the old one). ``prior``: one already built for it (its creation's check)."""
        got = self._studies.get(name)
        if got is not None and got.optuna_id == optuna_id:
            return got
        spec, rec = self.store.spec(name)
        try:
            study = SkipWaitingStudy(
                study_name=name,
                storage=self.store.storage,
                sampler=make_sampler(spec),
                pruner=make_pruner(spec),
            )
        except KeyError:  # no Optuna study of that name any more
            raise orphaned(name) from None
        if study_id(study) != rec.optuna_study_id:  # the name now belongs to another study
            raise orphaned(name)
        got = CachedStudy(
            name=name,
            optuna_id=rec.optuna_study_id,
            spec=spec,
            distributions={k: to_distribution(d) for k, d in spec.space.items()},
            study=study,
            _prior=prior,
        )
        self._studies[name] = got
        return got

    def drop(self, name: str) -> None:
        self._studies.pop(name, None)

    def peek(self, name: str) -> CachedStudy | None:
        """The study if this process has cached it (nothing is read)."""
        return self._studies.get(name)

    def cached(self) -> list[CachedStudy]:
        """The studies this process has cached."""
        return list(self._studies.values())
