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
- ``_create_scoped_session`` and the ``models.TrialModel`` / ``TrialUserAttributeModel`` tables
  of ``optuna.storages._rdb``: several user attributes of a trial in one transaction and three
  statements (Optuna's public ``set_trial_user_attr`` takes a transaction of three statements
  for each; a claim sets six).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
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
    "set_user_attrs",
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


def set_user_attrs(
    storage: optuna.storages.RDBStorage, trial_id: int, attrs: Mapping[str, Any]
) -> None:
    """Set several user attributes of an unfinished trial in one transaction (JSON values, as
    ``Trial.set_user_attr``); Optuna's errors as its public call raises them."""
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(storage.scoped_session, True) as session:
        trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
        storage.check_trial_is_updatable(trial_id, trial.state)
        Attr = models.TrialUserAttributeModel
        have = {a.key: a for a in session.query(Attr).filter(Attr.trial_id == trial_id)}
        for key, value in attrs.items():
            text = json.dumps(value)
            if key in have:
                have[key].value_json = text
            else:
                session.add(Attr(trial_id=trial_id, key=key, value_json=text))


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
    rdb = optuna.storages.RDBStorage("sqlite://")  # in memory
    asked = optuna.create_study(storage=rdb).ask()
    try:
        asked.set_user_attr("a", 0)  # set before: replaced
        set_user_attrs(rdb, trial_id(asked), {"a": 1, "b": {"c": [None, 2.5]}})
        if rdb.get_trial(trial_id(asked)).user_attrs != {"a": 1, "b": {"c": [None, 2.5]}}:
            problems.append("set_user_attrs no longer sets what Trial.set_user_attr would")
    except (AttributeError, ImportError, TypeError) as e:
        problems.append(f"set_user_attrs: Optuna's RDB storage internals changed ({e})")
    finally:
        rdb.engine.dispose()
    try:
        if not (migrations_dir() / "versions").is_dir():
            problems.append("optuna.storages._rdb has no alembic/versions folder")
    except ImportError:
        problems.append("optuna.storages._rdb.storage is gone")
    return problems
