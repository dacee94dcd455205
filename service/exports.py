"""Trials as the API shows and exports them, and exported trials turned back into Optuna's.

An export (``GET /studies/{name}/export``, :class:`~service.schemas.StudyExport`) carries every
trial with its values, intermediate values, attributes and times; Optuna stores times as naive
local time, exported with the local offset and converted back on import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from service.errors import Conflict
from service.optuna_compat import contains, enqueued_params, trial_id, validate_trial
from service.schemas import ExportedTrial

__all__ = [
    "ATTEMPT_ATTR",
    "WORKER_ATTR",
    "Imported",
    "checked_params",
    "export_trial",
    "finite_or_none",
    "import_trial",
    "parse_time",
    "trial_info",
]

#: Trial attributes isotune sets: the attempt of a re-enqueued trial, the worker that ran it.
ATTEMPT_ATTR = "isotune_attempt"
WORKER_ATTR = "isotune_worker"


def finite_or_none(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else x


def parse_time(text: str | None) -> datetime | None:
    """An exported time as Optuna stores it: naive local time (an offset is converted)."""
    if not text:
        return None
    t = datetime.fromisoformat(text)
    return t.astimezone().replace(tzinfo=None) if t.tzinfo is not None else t


def _stamp(t: datetime | None) -> str | None:
    """Optuna's naive local time, exported with the local offset."""
    return t.astimezone().isoformat() if t else None


def _utc(t: datetime | None) -> str | None:
    """Optuna's naive local time in UTC, with its offset (``+00:00``), as the leases are."""
    return t.astimezone(UTC).isoformat() if t else None


def checked_params(params: dict[str, Any], space: dict[str, BaseDistribution]) -> dict[str, Any]:
    """Parameters (external form) that the study's space can hold; ValueError otherwise."""
    for k, v in params.items():
        if k not in space:
            raise ValueError(f"parameter {k!r} is not in the study's space")
        dist = space[k]
        if not contains(dist, v):
            raise ValueError(f"parameter {k}={v!r} lies outside {dist}")
    return params


def export_trial(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    value = t.value if t.values is not None and len(t.values) == 1 else None
    waiting = t.state == TrialState.WAITING
    return {
        "number": t.number,
        "state": t.state.name,
        "value": finite_or_none(value),
        # an enqueued WAITING trial has no parameters yet: export those it is queued with (one
        # sampled ahead, ``service.pool``, has its own)
        "params": (t.params or enqueued_params(t)) if waiting else t.params,
        "distributions": {
            k: optuna.distributions.distribution_to_json(d) for k, d in t.distributions.items()
        },
        "intermediate_values": {str(k): v for k, v in t.intermediate_values.items()},
        "user_attrs": t.user_attrs,
        "datetime_start": _stamp(t.datetime_start),
        "datetime_complete": _stamp(t.datetime_complete),
    }


def trial_info(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    value = t.value if t.values is not None and len(t.values) == 1 else None
    return {
        "trial_id": trial_id(t),
        "number": t.number,
        "state": t.state.name,
        "value": finite_or_none(value),
        # a WAITING trial has no parameters yet: show those it is queued with
        "params": t.params or enqueued_params(t),
        "user_attrs": t.user_attrs,
        "intermediate_values": {str(k): v for k, v in t.intermediate_values.items()},
        "datetime_start": _utc(t.datetime_start),
        "datetime_complete": _utc(t.datetime_complete),
    }


@dataclass(frozen=True)
class Imported:
    """An exported trial, read back: the trial to store (None for a WAITING one), its attempt,
    the worker that ran it, and the parameters to queue again (None: nothing to queue)."""

    trial: optuna.trial.FrozenTrial | None
    attempt: int
    worker: str
    requeue: tuple[dict[str, Any], int] | None


def import_trial(t: ExportedTrial, space: dict[str, BaseDistribution], retries: int) -> Imported:
    """Check an exported trial against the study's ``space`` and rebuild it. A RUNNING trial
    comes back FAILED ("running when exported") with its parameters queued again while retries
    remain; a WAITING one only queues its parameters. Raises ValueError, TypeError or KeyError
    saying what does not fit."""
    attempt = int(t.user_attrs.get(ATTEMPT_ATTR, 1))
    params = checked_params(t.params, space)
    worker = str(t.user_attrs.get(WORKER_ATTR, "imported"))[:200]
    if t.state == "WAITING":
        return Imported(None, attempt, worker, (params, attempt))
    dists = {}
    for k, v in t.distributions.items():
        dists[k] = optuna.distributions.json_to_distribution(v)
        if dists[k] != space.get(k):
            raise ValueError(f"parameter {k!r}: {dists[k]} is not the study's {k}")
    state, attrs = TrialState[t.state], dict(t.user_attrs)
    start, complete = parse_time(t.datetime_start), parse_time(t.datetime_complete)
    requeue = None
    if state == TrialState.RUNNING:
        state, attrs["isotune_fail"] = TrialState.FAIL, "running when exported"
        complete = max(datetime.now(), start or datetime.now())  # Optuna's clock
        if attempt <= retries:
            requeue = (params, attempt + 1)
    trial = optuna.trial.FrozenTrial(
        number=0, trial_id=0, state=state,
        value=t.value if state != TrialState.FAIL else None, values=None,
        datetime_start=start, datetime_complete=complete,
        params=t.params, distributions=dists, user_attrs=attrs, system_attrs={},
        intermediate_values={int(k): v for k, v in t.intermediate_values.items()},
    )  # fmt: skip
    validate_trial(trial)
    return Imported(trial, attempt, worker, requeue)


def same_outcome(recorded: Any, state: TrialState, value: float | None) -> None:
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
