"""The training options a study may set, checked without torch by the server and the worker alike.

A study's ``training`` mapping and the trial's own parameters become a worker's training run
(``workers.train.TrainConfig``): initialization hyperparameters (``mu_f``, ``nu``… ; which names
those are is the engine's business, so callers pass its predicate ``is_init``) set the model's
initialization, every other name must be one of :data:`TRAINING_OPTIONS`. The server runs
:func:`check_training` when a study is created, so a misspelled option is a 422 naming it before
any trial is handed out, not a failed trial on a worker; the worker runs :func:`resolve_settings`
on each assignment with the same rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from numbers import Integral, Real
from typing import Any

from contract.errors import IsotuneError

__all__ = [
    "INT_OPTIONS",
    "NOT_SEARCHABLE",
    "OPTIMIZERS",
    "TRAINING_OPTIONS",
    "WEIGHTS",
    "TrainError",
    "check_option",
    "check_searchable",
    "check_training",
    "resolve_settings",
]

OPTIMIZERS = ("adam", "rmsprop", "sgd")
WEIGHTS = ("orthogonal", "gaussian")

#: What a study's ``training`` (or a trial parameter of the same name) may set, with its meaning.
TRAINING_OPTIONS: Mapping[str, str] = {
    "hidden": "hidden units n (positive integer)",
    "init": "'default', 'critical' or a mapping of initialization hyperparameters",
    "weights": f"recurrent weights: one of {', '.join(WEIGHTS)}",
    "c": "trainability constant of the 'critical' initialization (positive number)",
    "optimizer": f"one of {', '.join(OPTIMIZERS)}",
    "lr": "learning rate (positive number)",
    "batch_size": "examples per step (positive integer)",
    "steps": "training steps (positive integer)",
    "clip": "gradient-norm clipping (positive number, or null: none)",
    "eval_every": "steps between two evaluations and reports (positive integer)",
    "eval_size": "test examples per evaluation (positive integer)",
    "seed": "random seed (integer; default: the trial's number)",
    "task_options": "options of the task, overriding the study's task.options (mapping)",
}
#: Options that are whole numbers (a float trial parameter such as 64.0 is taken as 64).
INT_OPTIONS = ("hidden", "batch_size", "steps", "eval_every", "eval_size")


class TrainError(IsotuneError, ValueError):
    """A training setting is invalid; names the field and the value."""

    def message(self) -> str:
        return f"{self.field}={self.value}: {self.reason}"


def _positive_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, Integral) or v < 1:
        raise TrainError(name, v, "must be a positive integer")
    return int(v)


def _positive_number(name: str, v: Any, reason: str = "must be a positive number") -> float:
    if isinstance(v, bool) or not isinstance(v, Real) or not (math.isfinite(v) and v > 0):
        raise TrainError(name, v, reason)
    return float(v)


def check_option(name: str, value: Any) -> Any:
    """``value`` for training option ``name``, checked; raises :class:`TrainError` naming it."""
    if name in INT_OPTIONS:
        return _positive_int(name, value)
    if name in ("lr", "c"):
        return _positive_number(name, value)
    if name == "clip":
        if value is None:
            return None
        return _positive_number(name, value, "must be a positive number (or None: no clipping)")
    if name == "optimizer":
        if value not in OPTIMIZERS:
            raise TrainError(name, value, f"choose one of {list(OPTIMIZERS)}")
        return value
    if name == "weights":
        if value not in WEIGHTS:
            raise TrainError(name, value, f"choose one of {list(WEIGHTS)}")
        return value
    if name == "init":
        if isinstance(value, str):
            if value not in ("default", "critical", "chrono"):
                raise TrainError(name, value, "choose default, critical, chrono or hyperparameters")
        elif not isinstance(value, Mapping):
            raise TrainError(name, value, "choose default, critical, chrono or hyperparameters")
        return value
    if name == "seed":
        if isinstance(value, bool) or not isinstance(value, Integral):
            raise TrainError(name, value, "must be an integer")
        return int(value)
    if name == "task_options":
        if not isinstance(value, Mapping):
            raise TrainError(name, value, "must be a mapping of task options")
        return dict(value)
    raise TrainError(name, value, f"not a training setting; use one of {sorted(TRAINING_OPTIONS)}")


#: Options a search space cannot vary (a mapping is no point of a distribution).
NOT_SEARCHABLE = ("task_options",)


def check_searchable(name: str, values: list[Any]) -> None:
    """A search-space parameter ``name`` that is a training option, checked on ``values`` (a
    distribution's bounds or a categorical's choices); raises :class:`TrainError` naming it."""
    if name not in TRAINING_OPTIONS:
        reason = f"not a training setting; use one of {sorted(TRAINING_OPTIONS)}"
        raise TrainError(name, name, reason)
    if name in NOT_SEARCHABLE:
        raise TrainError(name, name, "cannot be searched; set it in the study's training")
    for value in values:
        if name in INT_OPTIONS and isinstance(value, Real) and not isinstance(value, bool):
            value = int(value) if float(value).is_integer() else value
        check_option(name, value)


def check_training(training: Mapping[str, Any], is_init: Callable[[str], bool]) -> dict[str, Any]:
    """A study's ``training`` mapping, every option checked (initialization hyperparameters
    pass as they are); raises :class:`TrainError` naming the first bad one."""
    return {
        name: value if is_init(name) else check_option(name, value)
        for name, value in training.items()
    }


def resolve_settings(
    training: Mapping[str, Any],
    params: Mapping[str, Any],
    number: int,
    is_init: Callable[[str], bool],
) -> dict[str, Any]:
    """The training settings of trial ``number``: the study's ``training``, then the trial's
    parameters over it; the trial's initialization hyperparameters gathered under ``init`` (over
    the study's ``init`` mapping, if it fixes one). The seed defaults to the trial's number.
    Values are not checked beyond their names here: the training run checks them."""
    settings: dict[str, Any] = {"seed": int(number)}
    for source in (training, params):
        for name, value in source.items():
            if is_init(name):
                continue
            if name not in TRAINING_OPTIONS:
                reason = f"not a training setting; use one of {sorted(TRAINING_OPTIONS)}"
                raise TrainError(name, value, reason)
            settings[name] = value
    init = {k: float(v) for k, v in params.items() if is_init(k)}
    if init:
        fixed = settings.get("init")
        settings["init"] = {**(fixed if isinstance(fixed, Mapping) else {}), **init}
    for name in INT_OPTIONS:
        if name in settings and isinstance(settings[name], Real):
            settings[name] = int(settings[name])
    return settings
