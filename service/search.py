"""How a study searches: its distributions, its base sampler, its pruner and its mean-field prior.

Pure functions of a study's specification (:class:`~service.schemas.StudyCreate`); the claim in
:mod:`service.leases` puts them together (the prior wraps the base sampler, ``service.prior``).
"""

from __future__ import annotations

import warnings

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from contract.tasks import TaskError, task_spec
from contract.training import TRAINING_OPTIONS, TrainError, check_searchable, check_training
from meanfield import Inputs, MeanFieldError
from meanfield.params import CELLS, is_init, split_name
from service.errors import Invalid
from service.prior import Prior, PriorError, build_prior
from service.schemas import Distribution, StudyCreate

__all__ = [
    "check_study",
    "is_init",
    "make_pruner",
    "make_sampler",
    "proposal_seed",
    "study_prior",
    "to_distribution",
]


def to_distribution(d: Distribution) -> BaseDistribution:
    if d.type == "categorical":
        return CategoricalDistribution(list(d.choices or ()))
    if d.type == "int":
        return IntDistribution(int(d.low), int(d.high), log=d.log, step=int(d.step or 1))  # type: ignore[arg-type]
    return FloatDistribution(float(d.low), float(d.high), log=d.log, step=d.step)  # type: ignore[arg-type]


def proposal_seed(seed: int | None, index: int) -> int | None:
    """The seed of a study's ``index``-th proposal, drawn from (study seed, index): with
    ``seed + index`` the studies of seeds s and s + 1 would share their proposals, trial n of one
    being trial n − 1 of the other. None (unseeded) stays None."""
    if seed is None:
        return None
    return int(np.random.SeedSequence([seed % 2**64, index]).generate_state(1)[0])


def make_sampler(spec: StudyCreate, trials_so_far: int = 0) -> optuna.samplers.BaseSampler:
    seed = proposal_seed(spec.seed, trials_so_far)
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


def check_study(spec: StudyCreate) -> Prior | None:
    """Everything about a new study that the schema cannot check, before anything is stored:
    its training options (the rules workers train by), its pruner, its task and its prior.
    Returns the prior (:func:`study_prior`); raises :class:`Invalid` naming the field."""
    try:
        check_training(spec.training, is_init)
    except (TrainError, MeanFieldError) as e:
        raise Invalid(f"training.{e.field}", e.value, e.reason) from None
    for name, dist in spec.space.items():
        _check_parameter(spec.cell, name, dist)
    make_pruner(spec)
    return study_prior(spec)


def _check_parameter(cell: str, name: str, dist: Distribution) -> None:
    """A search-space parameter is an initialization hyperparameter of ``cell`` (``mu``,
    ``nu_f``…) or a training option whose every value a worker accepts; :class:`Invalid`
    naming ``space.<name>`` otherwise."""
    field = f"space.{name}"
    try:
        parsed = split_name(name)
    except MeanFieldError as e:
        raise Invalid(field, name, e.reason) from None
    if parsed is not None:
        gate = parsed[1]
        if gate is not None and gate not in CELLS[cell]:
            gates = ", ".join(CELLS[cell])
            raise Invalid(field, name, f"{cell} has no gate {gate!r}; its gates: {gates}")
        if dist.type == "categorical" and not all(
            isinstance(c, int | float) and not isinstance(c, bool) for c in dist.choices or ()
        ):
            raise Invalid(field, dist.choices, "an initialization hyperparameter takes numbers")
        return
    values = list(dist.choices or ()) if dist.type == "categorical" else [dist.low, dist.high]
    try:
        check_searchable(name, values)
    except TrainError as e:
        known = "an initialization hyperparameter (mu, rho, sigma, nu, optionally _<gate>) or "
        reason = e.reason
        if reason.startswith("not a training setting"):
            reason = f"neither {known}a training option: {', '.join(sorted(TRAINING_OPTIONS))}"
        raise Invalid(field, e.value, reason) from None
