"""Every private Optuna name isotune relies on, in one place (Optuna ``>=4,<6``).

Optuna's public API does not offer these; each use below is one line, and :func:`check` verifies
that every one of them still exists and behaves as assumed in the installed Optuna
(``tests/test_optuna_compat.py`` calls it, so an Optuna release that renames one fails that test
loudly, naming the name, instead of slowing claims or breaking imports in production):

- ``Study._pop_waiting_trial_id``: the search for a WAITING trial that ``Study.ask`` makes;
  :class:`SkipWaitingStudy` skips it when isotune's own count says nothing waits.
- ``Study._study_id``, ``FrozenTrial._trial_id``: the storage ids of a study and a trial.
- ``FrozenTrial._validate``: the consistency check of a trial built from an export.
- ``BaseDistribution._contains``: whether an internal value lies in a distribution.
- the ``fixed_params`` system attribute: the parameters a WAITING (enqueued) trial will get.
- ``optuna.storages._rdb``: the folder of Optuna's own Alembic migrations (its schema's head).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial

__all__ = [
    "SkipWaitingStudy",
    "check",
    "contains",
    "enqueued_params",
    "migrations_dir",
    "study_id",
    "trial_id",
    "validate_trial",
]


class SkipWaitingStudy(optuna.Study):
    """An Optuna study whose ``ask`` can skip the search for WAITING trials.

    That search reads every unfinished trial of the study with all its attributes, which is most
    of a claim's cost when many trials run at once. A claim sets ``skip_waiting`` (under the study
    lock) when isotune's own count says nothing is waiting.
    """

    skip_waiting = False

    def _pop_waiting_trial_id(self) -> int | None:
        return None if self.skip_waiting else super()._pop_waiting_trial_id()


def study_id(study: optuna.Study) -> int:
    """The storage id of a study."""
    return study._study_id


def trial_id(trial: FrozenTrial | optuna.Trial) -> int:
    """The storage id of a trial (unique across studies; ``number`` is per study)."""
    return trial._trial_id


def validate_trial(trial: FrozenTrial) -> None:
    """Optuna's own consistency check of a trial built by hand (raises ValueError)."""
    trial._validate()


def contains(dist: BaseDistribution, value: Any) -> bool:
    """Whether the external ``value`` lies in ``dist``."""
    return bool(dist._contains(dist.to_internal_repr(value)))


def enqueued_params(trial: FrozenTrial) -> dict[str, Any]:
    """The parameters a WAITING trial was enqueued with (empty for any other trial)."""
    return dict(trial.system_attrs.get("fixed_params") or {})


def migrations_dir() -> Path:
    """The folder of Optuna's own Alembic migrations."""
    import optuna.storages._rdb.storage as rdb

    return Path(rdb.__file__).resolve().parent / "alembic"


def check() -> list[str]:
    """What of the above the installed Optuna no longer offers (empty: all is well). Runs each
    name on a throwaway in-memory study, so a changed meaning shows as well as a removed name."""
    problems: list[str] = []
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    if not callable(getattr(optuna.Study, "_pop_waiting_trial_id", None)):
        problems.append("optuna.Study._pop_waiting_trial_id is gone (claims would not skip it)")
    if not isinstance(getattr(study, "_study_id", None), int):
        problems.append("optuna.Study._study_id is gone")
    dist = optuna.distributions.FloatDistribution(0.0, 1.0)
    study.enqueue_trial({"x": 0.25})
    waiting = study.get_trials(deepcopy=False)[0]
    if getattr(waiting, "system_attrs", {}).get("fixed_params") != {"x": 0.25}:
        problems.append("an enqueued trial no longer keeps its parameters in 'fixed_params'")
    trial = study.ask({"x": dist})
    if not isinstance(getattr(trial, "_trial_id", None), int):
        problems.append("optuna.Trial._trial_id is gone")
    study.tell(trial, 1.0)
    frozen = study.get_trials(deepcopy=False)[0]
    if not isinstance(getattr(frozen, "_trial_id", None), int):
        problems.append("optuna.trial.FrozenTrial._trial_id is gone")
    if not callable(getattr(frozen, "_validate", None)):
        problems.append("optuna.trial.FrozenTrial._validate is gone")
    try:
        if not (contains(dist, 0.5) and not contains(dist, 2.0)):
            problems.append("BaseDistribution._contains no longer tells inside from outside")
    except AttributeError:
        problems.append("optuna.distributions.BaseDistribution._contains is gone")
    try:
        if not (migrations_dir() / "versions").is_dir():
            problems.append("optuna.storages._rdb has no alembic/versions folder")
    except ImportError:
        problems.append("optuna.storages._rdb.storage is gone")
    return problems
