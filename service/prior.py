"""The mean-field prior of a study: which trials the theory expects to train, and a sampler that
proposes them.

A study's ``prior`` names a mode:

- ``restrict``: every trial handed out satisfies T ≤ c·ξ_C (docs/theory.md §5; ξ_C the memory
  time of the initialization, T the task's bridge) and, when ``gradient_bounds`` are set,
  lo ≤ T·log m₁ ≤ hi (the log of the mean squared singular value of the T-step Jacobian); when
  ``max_cell_moment`` is set (LSTM), the cell state's second moment s* = E[c²] ≤ it (tanh(c) not
  saturated).
- ``soft``: the base sampler proposes ``candidates`` points; one is drawn with probability ∝
  π(x)^(β/n) (πBO, Hvarfner et al., ICLR 2022), π(x) = sigmoid(log(c·ξ_C/T) / width), β the
  ``confidence`` and n the number of trials so far. The weight tends to 1 as trials accumulate, so a
  wrong prior is escaped. A calibrated study (``calibrate: true``) escapes a wrong c by learning it
  instead: its π(x) is the lower credible bound of its trainability model's probability of training
  (``service.calibration``; before any outcome the model is the rule with its spread), which does
  not fade, since the model already rests on the study's outcomes.
- ``off``: the base sampler alone (the control).

Restriction as :class:`service.prior_sampler.PriorSampler` does it: the base sampler (TPE, GP,
CMA-ES…) proposes a full point; an infeasible proposal is redrawn up to ``REDRAWS`` times, then the
first proposal is repaired (:meth:`Prior.repair`: its memory-gate bias, ``mu_f`` for the LSTM,
raised to the smallest feasible value; ξ_C grows with it) or given a memory time
(:meth:`Prior.resample`). A repaired point is what Optuna stores, so the base sampler learns from
the trials that actually ran. Should no bias in range make a proposal feasible (its other parameters
forbid it), the point found when the study was created stands in.

The theory sees only initialization hyperparameters (flat names of :class:`meanfield.Config`:
``mu_f``, ``nu``, ``sigma_i``…); other parameters of the space (``lr``, ``hidden``…) pass through.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from contract.errors import IsotuneError
from meanfield import (
    MEMORY_GATE,
    Config,
    Inputs,
    MeanFieldError,
    fixed_point,
    isometry,
    memory_and_moments,
)
from meanfield.constants import MEASURED_C
from meanfield.params import CELLS, split_name
from service.calibration import TrainabilityModel, features

__all__ = ["MEASURED_C", "Prior", "PriorError", "build_prior", "theory_names"]

#: Most points of the memory-gate bias a repair round scans (vectorized).
SCAN = 48
#: ``repair`` stops refining when its bracket is this share of the memory-gate bias range
REPAIR_TOL = 1e-5
#: Random points of the space scanned at creation for the largest reachable ξ_C.
CREATION_SCAN = 512
#: The soft prior of a calibrated study weighs a point by its probability of training less this
#: many standard deviations of the model's logit (1: about an 84 % one-sided bound).
CAUTION = 1.0
#: A gated ``restrict`` keeps at least this share of the space open (the points its model rates
#: best), however low the model puts every point's probability of training.
MIN_SHARE = 0.02
#: The gate's scan of the space: random points in chunks of GATE_CHUNK for about GATE_SECONDS
#: (at least one chunk), GATE_SCAN at most.
GATE_SCAN, GATE_CHUNK, GATE_SECONDS = 2048, 256, 1.5


class PriorError(IsotuneError, ValueError):
    """A prior that cannot be honored: names the field, its value and what to change."""


def theory_names(cell: str, names: Sequence[str]) -> list[str]:
    """The parameters among ``names`` that are initialization hyperparameters of ``cell``
    (``mu``, ``nu_f``…); raises :class:`PriorError` for a hyperparameter of an unknown gate."""
    out = []
    for name in names:
        parts = split_name(name)
        if parts is None:
            continue
        gate = parts[1]
        if gate is not None and gate not in CELLS[cell]:
            raise PriorError(
                f"space.{name}", name, f"unknown gate {gate!r} for {cell}; gates are {CELLS[cell]}"
            )
        out.append(name)
    return out


@dataclass
class Prior:
    """The criterion of one study, evaluated on (arrays of) parameter sets."""

    cell: str
    mode: str
    T: int
    c: float
    inputs: Inputs
    weights: str
    space: dict[str, BaseDistribution]
    gradient_bounds: tuple[float, float] | None = None
    max_cell_moment: float | None = None
    confidence: float = 10.0
    width: float = 0.5
    candidates: int = 8
    strategy: str = "timescale"
    names: list[str] = field(default_factory=list)
    witness: dict[str, Any] | None = None  # a feasible point found at creation
    #: seconds the engine takes per configuration, measured at creation (the GRU's theory costs
    #: a few hundred times the LSTM's): scans are sized by it
    cost: float = 1e-4
    #: the study's fitted trainability model (``service.calibration``), set with ``c`` by the
    #: server's background pass: the soft prior's π(x) is then its probability of training
    model: Any = None
    #: (model, level) of a ``restrict`` calibrated from other studies (:meth:`set_gate`): a point
    #: is feasible where the model's probability of training (the logistic of its posterior mean
    #: logit, s* included) reaches the level; None: ξ_C ≥ T/c. One tuple, replaced whole, so that
    #: a claim never pairs one model with another's level.
    gate: tuple[Any, float] | None = None
    p_min: float = 0.5
    #: feasible points of the gate's scan: what stands in for a proposal that cannot be repaired
    region: list[dict[str, float]] = field(default_factory=list)

    def points_for(self, seconds: float, low: int, high: int) -> int:
        """How many configurations fit in ``seconds``, within [low, high]."""
        return int(min(high, max(low, seconds / max(self.cost, 1e-7))))

    @property
    def required(self) -> float:
        """The smallest memory time the criterion accepts, T/c."""
        return self.T / self.c

    @property
    def gate_param(self) -> str:
        return f"mu_{MEMORY_GATE[self.cell]}"

    def config(self, points: Sequence[Mapping[str, Any]]) -> Config:
        values = {n: np.array([float(p[n]) for p in points]) for n in self.names}
        return Config.from_flat(self.cell, values, weights=self.weights)

    def scalar(self, point: Mapping[str, Any]) -> Config:
        """The initialization of one point (every hyperparameter, defaults filled in)."""
        values = {n: float(point[n]) for n in self.names}
        return Config.from_flat(self.cell, values, weights=self.weights)

    def evaluate(self, points: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        """ξ_C, the margin log(c·ξ_C/T), T·log m₁ (when bounded), the cell moment s*, and
        feasibility per point."""
        cfg = self.config(points)
        out: dict[str, np.ndarray] = {}
        if self.gradient_bounds is None:  # s* comes from ξ_C's own solve: no extra cost
            xi, out["cell_moment"], _, _ = memory_and_moments(cfg, self.inputs)
        else:
            fp = fixed_point(cfg, self.inputs)
            xi = fp.xi_c
            out["log_m1"] = self.T * np.log(fp.m1)
            out["cell_moment"] = fp.s_star
        out["xi_c"] = xi = np.asarray(xi, float)
        out["margin"], ok = self.judge(xi, out.get("log_m1"), out["cell_moment"])
        out["ok"] = self.within_bounds(ok, out.get("log_m1"), out["cell_moment"])
        return out

    @property
    def gate_p(self) -> float:
        """The probability a gated study asks of each point (``p_min`` without a gate)."""
        gate = self.gate
        return self.p_min if gate is None else gate[1]

    def judge(self, xi: Any, log_m1: Any, s: Any) -> tuple[np.ndarray, np.ndarray]:
        """(margin, memory long enough) per point: log(c·ξ_C/T) and ξ_C ≥ T/c; with a ``gate``,
        the mean logit less logit(level), ≥ 0 where the model's probability reaches the level
        (the optional bounds are :meth:`within_bounds`)."""
        gate = self.gate  # read once: the background pass may replace it meanwhile
        xi = np.atleast_1d(np.asarray(xi, float))
        with np.errstate(divide="ignore", invalid="ignore"):
            if gate is None:
                margin = np.log(np.maximum(xi, 0.0)) + math.log(self.c / self.T)
            else:
                model, level = gate
                u = np.log(self.T / np.maximum(xi, 1e-300))
                grad = None if log_m1 is None else np.atleast_1d(log_m1)
                logit = model.mean_logit(u, grad, features(np.atleast_1d(s)))
                margin = logit - math.log(level / (1.0 - level))
        ok = np.isfinite(xi) & (margin >= 0.0)
        return margin, ok

    def set_gate(self, model: Any, seed: int = 0) -> bool:
        """Gate by ``model`` (None: the rule ξ_C ≥ T/c again). Feasible: a probability of training
        of at least ``p_min``, or, where less than :data:`MIN_SHARE` of the space reaches it (a
        model fitted to a short or hard task may promise it almost nowhere), at least the level
        the best :data:`MIN_SHARE` reach. A random scan of the space finds that level and the
        feasible points (``region``) that stand in for a proposal no repair makes feasible.
        Returns whether the study is gated now: a scan with no feasible point (no finite ξ_C
        within the bounds) keeps the rule."""
        if model is None:
            self.gate, self.region = None, []
            return False
        rng = np.random.default_rng(seed)
        size = self.points_for(0.5, 16, GATE_CHUNK)  # the GRU's theory costs far more a point
        points: list[dict[str, Any]] = []
        parts: list[dict[str, np.ndarray]] = []
        start = time.perf_counter()
        while len(points) < GATE_SCAN and (not parts or time.perf_counter() - start < GATE_SECONDS):
            chunk = [
                {n: _on_grid(self.space[n], v) for n, v in _random_point(self, rng).items()}  # type: ignore[arg-type]
                for _ in range(size)
            ]
            points += chunk
            parts.append(self.evaluate(chunk))
        got = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        xi, log_m1, s = got["xi_c"], got.get("log_m1"), got["cell_moment"]
        usable = self.within_bounds(np.isfinite(xi), log_m1, s)
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.log(self.T / np.maximum(xi, 1e-300))
        logit = model.mean_logit(u, log_m1, features(s))
        if not usable.any():
            self.gate, self.region = None, []
            return False
        best = float(np.quantile(logit[usable], 1.0 - MIN_SHARE))
        level = min(self.p_min, max(1e-6, 0.5 * (1.0 + math.tanh(0.5 * best))))
        ok = usable & (logit >= math.log(level / (1.0 - level)))  # what judge says, no second pass
        region = [p for p, k in zip(points, ok, strict=True) if k]
        if not region:  # rounding at the level itself: keep the rule
            self.gate, self.region = None, []
            return False
        self.region, self.gate = region, (model, level)  # the gate last: claims read it
        return True

    def within_bounds(self, ok: Any, log_m1: Any, cell_moment: Any) -> Any:
        """``ok`` (arrays or a bool) and the optional bounds: lo ≤ T·log m₁ ≤ hi and E[c²] ≤
        ``max_cell_moment``, each where set."""
        if self.gradient_bounds is not None:
            lo, hi = self.gradient_bounds
            ok = ok & (log_m1 >= lo) & (log_m1 <= hi)
        if self.max_cell_moment is not None:
            ok = ok & (cell_moment <= self.max_cell_moment)
        return ok

    def density(self, margin: np.ndarray) -> np.ndarray:
        """π(x): a logistic in the margin log(c·ξ_C/T), ½ on the boundary."""
        with np.errstate(over="ignore", invalid="ignore"):
            p = 1.0 / (1.0 + np.exp(-np.nan_to_num(margin, nan=-50.0) / self.width))
        return p

    def log_density(
        self, margin: np.ndarray, feats: np.ndarray | None = None, grad: Any = None
    ) -> np.ndarray:
        """log π(x), computed without underflow (−log(1 + e^(−m/w))); for a calibrated study, the
        log of the lower credible bound (:data:`CAUTION` standard deviations of the logit) of its
        model's probability of training at log(T/ξ_C) = log c − m and the point's cell moment
        (``feats``: :func:`service.calibration.features`; None: at its knee) and T·log m₁
        (``grad``, computed for a study with ``gradient_bounds``; None: 0)).

        The bound, not the mean: where the model is unsure (few outcomes, and far from the
        outcomes it has) a point weighs less than where it is sure, so a study started from a
        wrong c still prefers the memory times that train under any c near it (ξ_C ≈ T) to those
        only its c accepts."""
        m = np.nan_to_num(np.asarray(margin, float), nan=-50.0, neginf=-50.0, posinf=50.0)
        if self.model is not None:
            p = self.model.lower_bound(math.log(self.c) - m, grad, z=CAUTION, feats=feats)
            return np.log(np.clip(p, 1e-300, 1.0))
        return -np.logaddexp(0.0, -m / self.width)

    def soft_weights(
        self, margin: np.ndarray, n_trials: int, feats: np.ndarray | None = None, grad: Any = None
    ) -> np.ndarray:
        """πBO's weights π(x)^(β/n), n = trials so far + 1: a fixed prior fades as data
        accumulates; a calibrated one (``model`` set) keeps the exponent β, since its π(x) is
        itself fitted to the study's outcomes. Scaled so that the largest is 1 (they are only
        compared), never all zero."""
        fade = 1.0 if self.model is not None else 1.0 / (n_trials + 1)
        log_w = self.log_density(margin, feats, grad) * (self.confidence * fade)
        return np.exp(log_w - log_w.max())

    def repair(self, point: Mapping[str, Any], margin: float = 0.0) -> dict[str, Any] | None:
        """The point with its memory-gate bias raised to the smallest value in range that is
        feasible with log(c·ξ_C/T) ≥ ``margin``; None when no value in range is."""
        dist = self.space[self.gate_param]
        assert isinstance(dist, FloatDistribution | IntDistribution)

        def good(points: list[dict[str, Any]]) -> np.ndarray:
            got = self.evaluate(points)
            return got["ok"] & (got["margin"] >= margin)

        lo, hi = float(point[self.gate_param]), float(dist.high)
        # scan, then scan the first feasible bracket again until it is narrow: as many points a
        # round as the time allows (the cost of the theory is measured), as many rounds as the
        # precision needs, however busy the machine
        scan = self.points_for(0.3, 12, SCAN)
        grid = np.linspace(lo, hi, scan)
        known = None  # the smallest value found feasible so far
        while True:
            ok = good([{**point, self.gate_param: b} for b in grid])
            if not ok.any():  # on the boundary the solver's last digits can flip the answer
                break
            first = int(np.argmax(ok))
            known = float(grid[first])
            if first == 0 or grid[first] - grid[first - 1] <= REPAIR_TOL * (hi - lo):
                break
            grid = np.linspace(grid[first - 1], grid[first], scan)
        if known is None:
            return None
        # a hair inside the boundary, onto the distribution's step, and checked once more
        step = dist.step or (1 if isinstance(dist, IntDistribution) else 0)
        nudges = [1e-6, 1e-4, 1e-2] if not step else [0.0, float(step)]
        for nudge in nudges:
            value = _on_grid(dist, min(known + nudge * (1.0 if step else (hi - lo)), hi))
            fixed = {**point, self.gate_param: value}
            if good([fixed])[0]:
                return fixed
        return None

    def resample(self, point: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any] | None:
        """The point with a memory time drawn for it: log(c·ξ_C/T) uniform between 0 and what the
        largest bias in range reaches, and the bias solved for (ξ_C grows with it)."""
        top = {**point, self.gate_param: self.space[self.gate_param].high}  # type: ignore[attr-defined]
        reach = float(self.evaluate([top])["margin"][0])
        if not math.isfinite(reach) or reach < 0:
            # with a gate s* makes the margin fall again at the top of the range (a
            # saturated cell): the first feasible bias may lie below it
            return self.repair(point) if self.gate is not None else None
        return self.repair(point, float(rng.uniform(0.0, reach))) or self.repair(point)

    def numbers(self, point: Mapping[str, Any]) -> dict[str, Any]:
        """The theory's numbers for one point: user attributes of its trial."""
        cfg = self.config([point])
        fp = fixed_point(cfg, self.inputs)
        iso = isometry(fp.m1, fp.m2, self.T, fp.unit_moments)
        xi = float(fp.xi_c[0])
        grad = iso.log_m1 if self.gradient_bounds is not None else None  # as evaluate has it
        margins, ok = self.judge(xi, grad, fp.s_star)
        margin = float(margins[0]) if xi > 0 else -math.inf
        ok = self.within_bounds(bool(ok[0]), iso.log_m1[0], fp.s_star[0])
        return {
            "xi_c": _finite(xi),
            "m1": _finite(float(fp.m1[0])),
            "m2": _finite(float(fp.m2[0])),
            "T_log_m1": _finite(float(iso.log_m1[0])),
            "cell_moment": _finite(float(fp.s_star[0])),
            "hidden_moment": _finite(float(fp.q_star[0])),
            "spread": _finite(float(iso.spread[0])),
            "required_xi": self.required,
            "margin": _finite(margin),
            "predicted_trainable": bool(ok),
            "T": self.T,
            "c": self.c,
            "mode": self.mode,
            "init": {k: _finite(float(v)) for k, v in self.scalar(point).to_flat_dict().items()},
        }


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _on_grid(dist: FloatDistribution | IntDistribution, value: float) -> float | int:
    """``value`` rounded up onto the distribution's step (if any) and clipped into range."""
    step = dist.step if not isinstance(dist, IntDistribution) else (dist.step or 1)
    if step:
        value = dist.low + math.ceil((value - dist.low) / step - 1e-9) * step
    value = min(max(value, dist.low), dist.high)
    return round(value) if isinstance(dist, IntDistribution) else float(value)


def build_prior(
    cell: str,
    spec: Any,
    T: int,
    inputs: Inputs,
    space: Mapping[str, BaseDistribution],
    weights: str,
    seed: int = 0,
) -> Prior | None:
    """The study's :class:`Prior`, checked: a restricted region that is empty within the ranges
    raises :class:`PriorError` with the largest ξ_C reachable and the range to widen. In mode
    ``off`` it only computes the theory's numbers of each trial."""
    if MEMORY_GATE.get(cell) is None:
        raise PriorError("cell", cell, "no memory gate: the prior needs lstm, gru or minimalrnn")
    if spec.max_cell_moment is not None and (cell != "lstm" or spec.mode != "restrict"):
        reason = "bounds the LSTM's cell state, in mode restrict only"
        raise PriorError("prior.max_cell_moment", spec.max_cell_moment, reason)
    names = theory_names(cell, list(space))
    if not names:
        raise PriorError(
            "space", sorted(space), "no initialization hyperparameter (mu_f, nu, ...) to judge"
        )
    c = spec.c if spec.c is not None else MEASURED_C[cell]
    prior = Prior(
        cell=cell,
        mode=spec.mode,
        T=T,
        c=c,
        inputs=inputs,
        weights=weights,
        space=dict(space),
        gradient_bounds=tuple(spec.gradient_bounds) if spec.gradient_bounds else None,
        max_cell_moment=spec.max_cell_moment,
        confidence=spec.confidence,
        width=spec.width,
        candidates=spec.candidates,
        strategy=spec.strategy,
        names=names,
        p_min=spec.p_min,
    )
    gate = prior.gate_param
    for name in names:
        if isinstance(space[name], CategoricalDistribution):
            raise PriorError(f"space.{name}", "categorical", "the prior needs a numeric range")
    corners = [{n: _edge(space[n], side) for n in names} for side in ("low", "high", "low", "high")]
    try:  # the engine refuses e.g. a negative weight scale: say so now
        prior.evaluate(corners[:2])
        start = time.perf_counter()
        prior.evaluate(corners)
        prior.cost = (time.perf_counter() - start) / len(corners)
    except MeanFieldError as e:
        raise PriorError(f"space.{e.field}", e.value, e.reason) from None
    if spec.mode == "restrict":
        if gate not in space:
            raise PriorError(
                "prior.mode",
                "restrict",
                f"needs the memory-gate bias {gate} in the space (the repair raises it)",
            )
        _check_region(prior, seed)
    if spec.mode == "soft" and spec.calibrate:
        # the model before any outcome (the rule with its spread) until the first refit
        prior.model = TrainabilityModel(c=c, width=spec.width)
    return prior


def _check_region(prior: Prior, seed: int) -> None:
    """Find a feasible point (the witness) or refuse the study."""
    rng = np.random.default_rng(seed)
    gate = prior.gate_param
    points = [
        {**_random_point(prior, rng), gate: prior.space[gate].high}
        for _ in range(prior.points_for(2.0, 32, CREATION_SCAN))
    ]
    if prior.max_cell_moment is not None:  # s* grows with the gate's bias: lower ones too
        points += [_random_point(prior, rng) for _ in range(len(points))]
    top = prior.space[gate].high
    for side in ("low", "high"):  # the corners
        points.append({**{n: _edge(prior.space[n], side) for n in prior.names}, gate: top})
    got = prior.evaluate(points)
    if got["ok"].any():
        order = np.argsort(-np.where(got["ok"], got["xi_c"], -np.inf))
        for index in order[: min(16, int(got["ok"].sum()))]:  # onto each grid, checked again
            snapped = {
                n: _on_grid(prior.space[n], float(v))  # type: ignore[arg-type]
                for n, v in points[int(index)].items()
            }
            if prior.evaluate([snapped])["ok"][0]:
                prior.witness = snapped
                return
    finite = np.where(np.isfinite(got["xi_c"]), got["xi_c"], -np.inf)
    best = int(np.argmax(finite))
    largest = float(finite[best])
    high = prior.space[gate].high
    if largest < prior.required:
        reason = (
            f"the restricted region is empty: the largest xi_C reachable is {largest:.3g} "
            f"(at {gate}={high:g}) but T/c = {prior.T}/{prior.c:g} needs {prior.required:.3g}; "
            f"widen space.{gate} (raise its high above {high:g}), lower T or raise c, or set "
            "prior.mode to off to search the whole space"
        )
        raise PriorError(f"space.{gate}", {"low": prior.space[gate].low, "high": high}, reason)
    if prior.max_cell_moment is not None:
        raise PriorError(
            "prior.max_cell_moment",
            prior.max_cell_moment,
            f"no point found with xi_C >= {prior.required:.3g} and the cell state's E[c^2] "
            "within the bound; raise it, or widen the input gate's range downwards (mu_i)",
        )
    lo, hi = prior.gradient_bounds or (None, None)
    raise PriorError(
        "prior.gradient_bounds",
        [lo, hi],
        f"no point with xi_C >= {prior.required:.3g} has T log m1 within the bounds; widen them",
    )


def _edge(dist: BaseDistribution, side: str) -> float:
    return float(getattr(dist, side))


def _random_point(prior: Prior, rng: np.random.Generator) -> dict[str, float]:
    out = {}
    for n in prior.names:
        d = prior.space[n]
        assert isinstance(d, FloatDistribution | IntDistribution)
        if d.log:
            out[n] = float(np.exp(rng.uniform(math.log(d.low), math.log(d.high))))
        else:
            out[n] = float(rng.uniform(d.low, d.high))
    return out
