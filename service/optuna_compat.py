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
  for each; a claim sets six); and, in :func:`to_waiting` / :func:`start_waiting`, the trial's
  ``state`` and ``datetime_start`` columns: a trial sampled ahead of its claim is put back to
  WAITING with its parameters, and a claim starts it in the transaction that writes its lease
  (Optuna's public API has no WAITING trial with parameters, nor a start inside another
  transaction); :func:`report_values` and :func:`complete_trial` write intermediate values and a
  completion with one statement each, guarded by the trial being RUNNING, where Optuna's public
  calls read the trial through its ORM first (the hot routes of a worker's lifecycle).
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import Connection, bindparam, insert, select, update

__all__ = [
    "SkipWaitingStudy",
    "check",
    "complete_trial",
    "contains",
    "enqueued_params",
    "migrations_dir",
    "report_values",
    "set_user_attrs",
    "start_waiting",
    "study_id",
    "to_waiting",
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
        """Optuna's search, over the enqueued trials only: a WAITING trial of the pool
        (``service.pool``, its parameters already set) is taken by a claim, never here."""
        if self.skip_waiting:
            return None
        for trial in self._storage.get_all_trials(
            self._study_id, deepcopy=False, states=(optuna.trial.TrialState.WAITING,)
        ):
            if "fixed_params" not in trial.system_attrs:
                continue
            try:
                if self._storage.set_trial_state_values(
                    trial._trial_id, state=optuna.trial.TrialState.RUNNING
                ):
                    return trial._trial_id
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
        return None


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


def _tables() -> Any:
    from optuna.storages._rdb import models

    return models


@functools.cache
def _statements(dialect: str) -> dict[str, Any]:
    """The statements below, built once per dialect with bind parameters (building one costs
    more than running it)."""
    models = _tables()
    trials = models.TrialModel.__table__
    values = models.TrialIntermediateValueModel.__table__
    tid, state = bindparam("tid"), trials.c.state
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as upsert
    else:
        from sqlalchemy.dialects.sqlite import insert as upsert
    running = select(
        tid, bindparam("step"), bindparam("value", type_=values.c.intermediate_value.type),
        bindparam("kind", type_=values.c.intermediate_value_type.type),
    ).where(trials.c.trial_id == tid, state == TrialState.RUNNING)  # fmt: skip
    report = upsert(values).from_select(
        ["trial_id", "step", "intermediate_value", "intermediate_value_type"], running
    )
    report = report.on_conflict_do_update(
        index_elements=["trial_id", "step"],
        set_={
            "intermediate_value": report.excluded.intermediate_value,
            "intermediate_value_type": report.excluded.intermediate_value_type,
        },
    ).returning(values.c.trial_id)  # an INSERT ... SELECT's rowcount is not reliable on psycopg
    return {
        "to_waiting": update(trials)
        .where(trials.c.trial_id == tid, state == TrialState.RUNNING)
        .values(state=TrialState.WAITING, datetime_start=None),
        "start": update(trials)
        .where(trials.c.trial_id == tid, state == TrialState.WAITING)
        .values(state=TrialState.RUNNING, datetime_start=bindparam("at")),
        "attr": insert(models.TrialUserAttributeModel.__table__),
        "report": report,
        "complete": update(trials)
        .where(trials.c.trial_id == tid, state == TrialState.RUNNING)
        .values(state=TrialState.COMPLETE, datetime_complete=bindparam("at")),
        "value": insert(models.TrialValueModel.__table__),
    }


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # Optuna's RDB storage stores naive UTC


def to_waiting(conn: Connection, trial_id: int) -> bool:
    """Turn a RUNNING trial that nobody runs into a WAITING one (its parameters stay); whether it
    was RUNNING. ``conn``: a connection to the same database, in the caller's transaction."""
    done = conn.execute(_statements(conn.dialect.name)["to_waiting"], {"tid": trial_id})
    return bool(done.rowcount)


def start_waiting(conn: Connection, trial_id: int, attrs: Mapping[str, Any]) -> bool:
    """Turn a WAITING trial RUNNING from now, with the user attributes ``attrs`` (new keys), in
    the caller's transaction on ``conn``; whether it was WAITING (False: nothing written)."""
    sql = _statements(conn.dialect.name)
    if not conn.execute(sql["start"], {"tid": trial_id, "at": _utcnow()}).rowcount:
        return False
    if attrs:
        rows = [
            {"trial_id": trial_id, "key": k, "value_json": json.dumps(a)} for k, a in attrs.items()
        ]
        conn.execute(sql["attr"], rows)
    return True


def report_values(conn: Connection, trial_id: int, points: list[tuple[int, float]]) -> bool:
    """Record intermediate values of a RUNNING trial (a step reported again is replaced, as
    ``Trial.report`` does), in the caller's transaction on ``conn``: one statement a point, each
    writing only while the trial is RUNNING. False when the trial is not RUNNING (finished, or
    gone; the caller rolls back and asks Optuna why)."""
    sql = _statements(conn.dialect.name)["report"]
    repr_ = _tables().TrialIntermediateValueModel.intermediate_value_to_stored_repr
    for step, value in points:
        stored, kind = repr_(value)
        got = conn.execute(sql, {"tid": trial_id, "step": step, "value": stored, "kind": kind})
        if got.first() is None:
            return False
    return True


def complete_trial(conn: Connection, trial_id: int, value: float) -> bool:
    """Complete a RUNNING trial with its (single-objective) ``value``, in the caller's
    transaction on ``conn``, as ``Study.tell`` stores it; False, with nothing written, when the
    trial is not RUNNING."""
    sql = _statements(conn.dialect.name)
    if not conn.execute(sql["complete"], {"tid": trial_id, "at": _utcnow()}).rowcount:
        return False
    stored, kind = _tables().TrialValueModel.value_to_stored_repr(value)
    row = {"trial_id": trial_id, "objective": 0, "value": stored, "value_type": kind}
    conn.execute(sql["value"], row)
    return True


@contextlib.contextmanager
def _probe(problems: list[str], names: str) -> Iterator[optuna.storages.RDBStorage]:
    """An in-memory RDB storage for one probe of :func:`check`, closed afterwards; an Optuna
    internal the probe of ``names`` finds missing becomes a problem, not an exception."""
    rdb = optuna.storages.RDBStorage("sqlite://")
    try:
        yield rdb
    except (AttributeError, ImportError, TypeError) as e:
        problems.append(f"{names}: Optuna's RDB storage internals changed ({e})")
    finally:
        rdb.engine.dispose()


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
    with _probe(problems, "set_user_attrs") as rdb:
        asked = optuna.create_study(storage=rdb).ask()
        asked.set_user_attr("a", 0)  # set before: replaced
        set_user_attrs(rdb, trial_id(asked), {"a": 1, "b": {"c": [None, 2.5]}})
        if rdb.get_trial(trial_id(asked)).user_attrs != {"a": 1, "b": {"c": [None, 2.5]}}:
            problems.append("set_user_attrs no longer sets what Trial.set_user_attr would")
    with _probe(problems, "to_waiting/start_waiting") as rdb:
        # a trial sampled, put back to WAITING, then started with an attribute
        asked = optuna.create_study(storage=rdb).ask({"x": dist})
        with rdb.engine.begin() as conn:
            back = to_waiting(conn, trial_id(asked))
        waiting = rdb.get_trial(trial_id(asked))
        with rdb.engine.begin() as conn:
            started = start_waiting(conn, trial_id(asked), {"w": "x"})
        running = rdb.get_trial(trial_id(asked))
        if not (back and waiting.state == TrialState.WAITING and waiting.params == asked.params):
            problems.append("to_waiting: Optuna's trials table changed (state, datetime_start)")
        elif not (started and running.state == TrialState.RUNNING and running.datetime_start):
            problems.append("start_waiting: Optuna's trials table changed")
        elif running.user_attrs != {"w": "x"}:
            problems.append("start_waiting: Optuna's trial_user_attributes table changed")
    with _probe(problems, "report_values/complete_trial") as rdb:
        # reports (one replaced, one infinite), a completion, then a refused report
        study = optuna.create_study(storage=rdb)
        asked = study.ask({"x": dist})
        tid = trial_id(asked)
        with rdb.engine.begin() as conn:
            wrote = report_values(conn, tid, [(1, 0.5), (2, float("inf")), (1, 0.25)])
        with rdb.engine.begin() as conn:
            completed = complete_trial(conn, tid, 0.75)
        with rdb.engine.begin() as conn:
            late = report_values(conn, tid, [(3, 1.0)]) or complete_trial(conn, tid, 1.0)
        got = rdb.get_trial(tid)
        if not wrote or got.intermediate_values != {1: 0.25, 2: float("inf")}:
            problems.append("report_values: Optuna's trial_intermediate_values table changed")
        elif not (completed and got.state == TrialState.COMPLETE and got.value == 0.75):
            problems.append("complete_trial: Optuna's trials or trial_values table changed")
        elif got.datetime_complete is None or study.best_value != 0.75:
            problems.append("complete_trial: Optuna reads the completed trial differently")
        elif late:
            problems.append("report_values/complete_trial wrote to a finished trial")
    try:
        if not (migrations_dir() / "versions").is_dir():
            problems.append("optuna.storages._rdb has no alembic/versions folder")
    except ImportError:
        problems.append("optuna.storages._rdb.storage is gone")
    return problems
