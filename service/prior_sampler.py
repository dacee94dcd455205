"""The sampler a study's prior wraps around its base sampler (TPE, GP, CMA-ES…): ``soft`` picks
among the base's proposals by πBO weights, ``restrict`` redraws an infeasible proposal and then
fixes it by the prior's strategy (``service.prior`` says what each mode means)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler

from service.calibration import features
from service.prior import Prior

__all__ = ["REDRAWS", "PriorSampler"]

#: Redraws of an infeasible proposal before it is repaired.
REDRAWS = 4


class PriorSampler(BaseSampler):
    """A base sampler under a :class:`Prior`: the whole space is sampled as one "relative" point,
    so that feasibility (a joint property) is decided before anything is stored.

    ``n_trials`` (trials so far) sets the soft prior's decay.
    """

    def __init__(
        self, base: BaseSampler, prior: Prior, space: Mapping[str, BaseDistribution], n_trials: int,
        seed: int | None = None,
    ) -> None:  # fmt: skip
        self.base, self.prior, self.space, self.n_trials = base, prior, dict(space), n_trials
        self.rng = np.random.default_rng(seed)
        self.redraws = 0
        self.repairs = 0

    def reseed_rng(self) -> None:
        self.base.reseed_rng()
        self.rng = np.random.default_rng()

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.base.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: Any,
                    values: Sequence[float] | None) -> None:  # fmt: skip
        self.base.after_trial(study, trial, state, values)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: optuna.trial.FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return dict(self.space)

    def _propose(
        self, study: optuna.Study, trial: optuna.trial.FrozenTrial, relative: bool
    ) -> dict[str, Any]:
        point: dict[str, Any] = {}
        if relative:
            space = self.base.infer_relative_search_space(study, trial)
            if space:
                point.update(self.base.sample_relative(study, trial, space))
        for name, dist in self.space.items():
            if name not in point:
                point[name] = self.base.sample_independent(study, trial, name, dist)
        return point

    def sample_relative(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        search_space: dict[str, BaseDistribution],
    ) -> dict[str, Any]:
        if set(search_space) != set(self.space):  # not the study's space: leave it to the base
            return self.base.sample_relative(study, trial, search_space)
        first = self._propose(study, trial, relative=True)
        if self.prior.mode == "soft":
            pool = [first] + [
                self._propose(study, trial, relative=False)
                for _ in range(self.prior.candidates - 1)
            ]
            got = self.prior.evaluate(pool)
            feats = features(got["cell_moment"])
            weights = self.prior.soft_weights(
                got["margin"], self.n_trials, feats, got.get("log_m1")
            )
            chosen = pool[int(self.rng.choice(len(pool), p=weights / weights.sum()))]
        else:
            chosen = self._restrict(study, trial, first)
        return chosen

    def _restrict(
        self, study: optuna.Study, trial: optuna.trial.FrozenTrial, first: dict[str, Any]
    ) -> dict[str, Any]:
        point = first
        for attempt in range(REDRAWS + 1):
            if self.prior.evaluate([point])["ok"][0]:
                return point
            if attempt < REDRAWS:
                self.redraws += 1
                point = self._propose(study, trial, relative=False)
        self.repairs += 1
        for candidate in (first, point):
            if self.prior.strategy == "timescale":
                fixed = self.prior.resample(candidate, self.rng)
            else:
                fixed = self.prior.repair(candidate)
            if fixed is not None:
                return fixed
        region = self.prior.region  # a gated study's scan: any of its feasible points
        if region:
            return {**first, **region[int(self.rng.integers(len(region)))]}
        assert self.prior.witness is not None  # found at creation, else the study was refused
        return {**first, **self.prior.witness}

    def sample_independent(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self.base.sample_independent(study, trial, param_name, param_distribution)
