"""The trainability model: the probability that a trial trains, given the theory's numbers, fitted
to a study's outcomes by Bayesian logistic regression (docs/theory.md §5).

The rule "trainable when T ≤ c·ξ_C" is a step in u = log(T/ξ_C) at log c. The model softens it
into a logistic whose parameters are learnt:

    logit P(trained) = a + b·v + q·v² + g·(T·log m₁) + h·max(0, log(s*/s₀)),   v = u − log c₀

with s* = E[c²], the LSTM's cell state's second moment at the fixed point (docs/theory.md §5.4):
the memory time judges the forget gate, s* what the input gate pours into the cell. It counts
past a knee only (:data:`CELL_KNEE`): a cell state past s₀ saturates tanh, and a straight line in
log s* would reward a cell that holds nothing. A cell without it (the GRU) sits at the knee.

- Before any outcome it equals the rule with the study's c₀: the prior is a Gaussian centred on
  a = 0, b = −1/w, q = 0, g = h = 0 (w: the width of the logistic in u, the soft
  prior's ``width``), with stated spreads (:data:`PRIOR_SD`): the edge log c may move by about
  2 (a factor e²) either way before the data have a say, the slope by half its size.
- A negative q lets the trainable set be a band in u: too long a memory (ξ_C ≫ T) can fail too.
- The posterior is the Laplace approximation at the maximum a posteriori (Newton's method on the
  log posterior, which is concave): a Gaussian with the inverse Hessian as covariance. A point's
  probability averages the logistic over it (the probit approximation of MacKay 1992); its lower
  credible bound uses the logit's posterior spread.
- The edge ``c`` (where the logit crosses 0 on the falling side, T·log m₁ = 0, s* at most its
  knee) and its interval come from draws of the posterior. A calibrated ``restrict`` that
  starts from other studies gates each point by its own mean logit, its s* included
  (:meth:`TrainabilityModel.mean_logit`).

An outcome is (u, T·log m₁, trained, s*): ``trained`` from the study's own threshold (see
:func:`outcome`); a failed trial counts as nothing. numpy only: the service fits it, and anyone
may fit it on exported outcomes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "PRIOR_SD",
    "Calibration",
    "Posterior",
    "TrainabilityModel",
    "acceptance_model",
    "add_outcomes",
    "calibrate",
    "features",
    "outcome",
    "source_prior",
    "trained_threshold",
]

#: Prior standard deviations of (a, b, q, g, h): a, b and q in units of the rule's slope 1/w (a:
#: the edge's shift in log c), g in logit units per unit of T·log m₁, h per unit of log s* past
#: its knee (a cell state tenfold past it may move the logit by about 1 before the data speak).
PRIOR_SD = (2.0, 0.5, 0.1, 0.5, 0.5)
#: The cell state's knee s₀: a variance of 10 (|c| ≈ 3, where tanh is flat).
CELL_KNEE = 10.0
#: How far past its knee s* counts, in log units (a factor 100): further out the logit would rest
#: on a weight fitted where no outcome lies.
FEATURE_SPAN = math.log(100.0)
#: Draws of the posterior for the interval of c.
DRAWS = 4000


def outcome(
    state: str, value: float | None, threshold: float, pruned_value: float | None = None
) -> bool | None:
    """Whether a finished trial trained: COMPLETE with ``value`` ≥ ``threshold`` (for a minimized
    study pass negated values and threshold); PRUNED counts as not trained (pruned at chance);
    FAIL, RUNNING and WAITING count as nothing (None)."""
    if state == "COMPLETE" and value is not None and math.isfinite(value):
        return value >= threshold
    if state == "PRUNED":
        return False
    return None


@dataclass
class Posterior:
    """A Gaussian over (a, b, q, g, h)."""

    mean: np.ndarray
    cov: np.ndarray

    #: log c₀, the centre of the design (v = u − center)
    center: float = 0.0

    def logit(
        self, u: np.ndarray, grad: np.ndarray, feats: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The logit's posterior mean and standard deviation at each point (``feats``: the cell
        moment past its knee, :func:`features`; None: at it)."""
        X = _design(np.asarray(u, float) - self.center, grad, feats)
        mu = X @ self.mean
        var = np.einsum("ij,jk,ik->i", X, self.cov, X)
        return mu, np.sqrt(np.maximum(var, 0.0))


@dataclass
class TrainabilityModel:
    """P(trained | u = log(T/ξ_C), T·log m₁, s*) for one study; see the module's docstring.

    ``c`` and ``width``: the rule the prior is centred on (the study's c and the soft prior's
    width in log units).
    """

    c: float
    width: float = 0.5
    outcomes: list[tuple[float, float, bool, float]] = field(default_factory=list)
    #: a prior fitted elsewhere (other studies' outcomes: :func:`source_prior`) instead of the rule
    base: Posterior | None = None
    _posterior: Posterior | None = None

    @property
    def prior(self) -> Posterior:
        if self.base is not None:
            return self.base
        s = 1.0 / self.width
        mean = np.array([0.0, -s, 0.0, 0.0, 0.0])
        sd = np.array(PRIOR_SD) * np.array([s, s, s, 1.0, 1.0])
        return Posterior(mean, np.diag(sd**2), math.log(self.c))

    def add(
        self,
        u: float,
        grad: float,
        trained: bool,
        cell_moment: float | None = None,
    ) -> None:
        """One outcome (a point with infinite u, ξ_C = 0, is clipped to the far side; a missing
        cell moment counts as at its knee)."""
        if not (math.isfinite(grad)):
            grad = 0.0
        (fs,) = features([cell_moment])[0]
        u = float(np.clip(u, -20.0, 20.0))
        self.outcomes.append((u, float(grad), bool(trained), float(fs)))
        self._posterior = None

    @property
    def posterior(self) -> Posterior:
        if self._posterior is None:
            self._posterior = self._fit()
        return self._posterior

    def _fit(self) -> Posterior:
        prior = self.prior
        if not self.outcomes:
            return prior
        u, g, y, fs = (np.array(col, float) for col in zip(*self.outcomes, strict=True))
        X = _design(u - prior.center, g, fs[:, None])
        precision = np.linalg.inv(prior.cov)

        def log_posterior(w: np.ndarray) -> float:
            z = X @ w
            d = w - prior.mean
            return float(y @ z - np.logaddexp(0.0, z).sum() - 0.5 * d @ precision @ d)

        w = prior.mean.copy()
        current = log_posterior(w)
        for _ in range(100):  # Newton's method with backtracking: the log posterior is concave
            p = _sigmoid(X @ w)
            grad = X.T @ (y - p) - precision @ (w - prior.mean)
            hess = X.T @ (X * (p * (1 - p))[:, None]) + precision
            step = np.linalg.solve(hess, grad)
            t = 1.0
            while t > 1e-8 and log_posterior(w + t * step) < current:
                t *= 0.5  # a full step overshoots where the logistic is saturated
            w = w + t * step
            current = log_posterior(w)
            if np.max(np.abs(t * step)) < 1e-10:
                break
        p = _sigmoid(X @ w)
        hess = X.T @ (X * (p * (1 - p))[:, None]) + precision
        return Posterior(w, np.linalg.inv(hess), prior.center)

    def probability(
        self,
        u: Sequence[float],
        grad: Sequence[float] | None = None,
        feats: np.ndarray | None = None,
    ) -> np.ndarray:
        """The posterior probability that each point trains (the logistic averaged over the
        posterior, by the probit approximation)."""
        u_arr = np.clip(np.asarray(u, float), -20.0, 20.0)
        g_arr = np.zeros_like(u_arr) if grad is None else np.nan_to_num(np.asarray(grad, float))
        mu, sd = self.posterior.logit(u_arr, g_arr, feats)
        return _sigmoid(mu / np.sqrt(1.0 + math.pi * sd**2 / 8.0))

    def lower_bound(
        self,
        u: Sequence[float],
        grad: Sequence[float] | None = None,
        z: float = 1.0,
        feats: np.ndarray | None = None,
    ) -> np.ndarray:
        """A lower credible bound of each point's probability of training (the logit's mean
        minus ``z`` posterior standard deviations: z = 1, about 84 % one-sided)."""
        u_arr = np.clip(np.asarray(u, float), -20.0, 20.0)
        g_arr = np.zeros_like(u_arr) if grad is None else np.nan_to_num(np.asarray(grad, float))
        mu, sd = self.posterior.logit(u_arr, g_arr, feats)
        return _sigmoid(mu - z * sd)

    def edge_at(self, p: float) -> float:
        """The c at which the posterior mean logit equals logit(``p``) on the falling side
        (T·log m₁ = 0): points with log(T/ξ_C) below log c reach ``p``. NaN if none does."""
        a, b, q = self.posterior.mean[:3]
        root = _falling_root(a - math.log(p / (1.0 - p)), b, q)
        return math.exp(root + self.posterior.center) if math.isfinite(root) else math.nan

    def mean_logit(
        self, u: Sequence[float], grad: Sequence[float] | None = None, feats: Any = None
    ) -> np.ndarray:
        """The posterior mean of each point's logit (NaN u or T·log m₁ read as the far side and
        0): a calibrated ``restrict`` accepts a point where it reaches logit(level)."""
        u_arr = np.clip(np.nan_to_num(np.asarray(u, float), nan=20.0), -20.0, 20.0)
        g_arr = np.zeros_like(u_arr) if grad is None else np.nan_to_num(np.asarray(grad, float))
        return self.posterior.logit(u_arr, g_arr, feats)[0]

    def edge(self, level: float = 0.68, seed: int = 0) -> tuple[float, float, float]:
        """The fitted c: exp of the u where the logit falls through 0 (T·log m₁ = 0), as the
        posterior median and its central ``level`` interval (from posterior draws)."""
        rng = np.random.default_rng(seed)
        post = self.posterior
        draws = rng.multivariate_normal(post.mean, post.cov, size=DRAWS)
        roots = np.array([_falling_root(a, b, q) for a, b, q, *_ in draws])
        roots = roots[np.isfinite(roots)]
        if not roots.size:
            return (math.nan, math.nan, math.nan)
        tail = 0.5 * (1.0 - level)
        lo, mid, hi = np.quantile(roots + post.center, [tail, 0.5, 1.0 - tail])
        return (math.exp(mid), math.exp(lo), math.exp(hi))


def features(cell_moment: Sequence[Any]) -> np.ndarray:
    """The cell moment as the model sees it, one column: max(0, log(s*/s₀)), at most
    :data:`FEATURE_SPAN`; 0 where it is missing or NaN."""
    x = np.array([np.nan if v is None else float(v) for v in cell_moment], float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.clip(np.log(np.maximum(x, 0.0) / CELL_KNEE), 0.0, FEATURE_SPAN)
    return np.where(np.isnan(out), 0.0, out)[:, None]


def _design(u: np.ndarray, grad: np.ndarray, feats: np.ndarray | None = None) -> np.ndarray:
    u = np.asarray(u, float)
    f = np.zeros((len(u), 1)) if feats is None else np.asarray(feats, float).reshape(len(u), 1)
    return np.column_stack([np.ones_like(u), u, u**2, np.asarray(grad, float), f])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _falling_root(a: float, b: float, q: float) -> float:
    """The larger u at which a + b·u + q·u² = 0 with the logit falling there (the edge past
    which memory is too short); NaN if there is none within |u| ≤ 20."""
    if abs(q) < 1e-12:
        return -a / b if b < 0 and abs(a / b) <= 20 else math.nan
    disc = b * b - 4 * q * a
    if disc < 0:
        return math.nan
    r = np.sort(np.array([(-b - math.sqrt(disc)) / (2 * q), (-b + math.sqrt(disc)) / (2 * q)]))
    for root in r[::-1]:  # the larger root where the derivative b + 2 q u is negative
        if abs(root) <= 20 and b + 2 * q * root < 0:
            return float(root)
    return math.nan


def trained_threshold(chance: float, maximize: bool, baseline_loss: float) -> float:
    """The default "trained" threshold of a study: halfway from the task's chance level to
    perfect on its metric (accuracy 1 when maximized; loss 0 when minimized)."""
    return 0.5 * (chance + 1.0) if maximize else 0.5 * baseline_loss


@dataclass(frozen=True)
class Calibration:
    """A study's calibrated criterion: the c it uses now (``c``, where the posterior reaches
    ``p_min``), the fitted edge with its 68 % interval, and what it rests on."""

    c0: float
    c: float
    edge: float
    low: float
    high: float
    p_min: float
    outcomes: int
    trained: int
    threshold: float
    #: the studies whose outcomes made the prior (``calibrate_from``), and how many they had
    sources: tuple[str, ...] = ()
    source_outcomes: int = 0
    #: the probability a ``restrict`` study gated by its model asks of each point
    #: (``Prior.set_gate``); None where it hands out by ``c``
    gate_p: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            k: list(v) if isinstance(v, tuple) else _json_number(v)
            for k, v in self.__dict__.items()
        }


#: How much wider than their posterior the prior from other studies is (its standard deviations
#: times this): studies of one task still differ in budget and space.
SOURCE_INFLATION = 2.0


def source_prior(model: TrainabilityModel) -> Posterior:
    """The posterior of other studies' outcomes as a prior for a new study (empirical Bayes),
    widened by :data:`SOURCE_INFLATION`."""
    post = model.posterior
    return Posterior(post.mean.copy(), post.cov * SOURCE_INFLATION**2, post.center)


def add_outcomes(
    model: TrainabilityModel,
    threshold: float,
    maximize: bool,
    trials: Sequence[tuple[str, float | None, dict | None]],
    gradient: bool = True,
) -> int:
    """Add a study's finished trials, each (state, value, theory numbers), to ``model``;
    returns how many trained. ``gradient``: with each trial's T·log m₁; False: at 0, for a study
    whose prior does not compute it for the points it judges (no ``gradient_bounds``), since a
    model fitted on it and read at 0 extrapolates (T·log m₁ reaches −50 and beyond at T = 300)."""
    trained = 0
    for state, value, theory in trials:
        if not theory or theory.get("xi_c") is None:
            continue
        signed = value if maximize or value is None else -value
        got = outcome(state, signed, threshold if maximize else -threshold)
        if got is None:
            continue
        xi = float(theory["xi_c"])
        u = math.log(theory["T"] / xi) if xi > 0 else 20.0
        grad = float(theory.get("T_log_m1") or 0.0) if gradient else 0.0
        model.add(u, grad, got, theory.get("cell_moment"))
        trained += got
    return trained


def calibrate(
    c0: float,
    width: float,
    p_min: float,
    threshold: float,
    maximize: bool,
    trials: Sequence[tuple[str, float | None, dict | None]],
    base: Posterior | None = None,
    sources: Sequence[str] = (),
    source_outcomes: int = 0,
    gradient: bool = True,
) -> tuple[Calibration, TrainabilityModel]:
    """Fit the trainability model to a study's finished trials, each (state, value, theory
    numbers), from the rule (or from ``base``, other studies' posterior); the c it hands out
    from is where the posterior reaches ``p_min`` (kept within [c0/100, 100·c0]), or the prior's
    while no trial has trained. ``gradient``: as in :func:`add_outcomes`."""
    model = TrainabilityModel(c=c0, width=width, base=base)
    trained = add_outcomes(model, threshold, maximize, trials, gradient)
    c = model.edge_at(p_min)
    if model.outcomes and not trained:
        # nothing has trained yet: one class does not place a logistic's edge, and the failures
        # may have other causes (the learning rate, other hyperparameters); fitted, they would
        # push c down to its floor and every trial to the top of the memory-gate range. Hand out
        # from the prior's edge until the first trial trains (the fitted edge is still shown).
        c = TrainabilityModel(c=c0, width=width, base=base).edge_at(p_min)
    c = c0 if not math.isfinite(c) else min(max(c, c0 / 100.0), 100.0 * c0)
    mid, low, high = model.edge()
    cal = Calibration(
        c0=c0, c=c, edge=mid, low=low, high=high, p_min=p_min,
        outcomes=len(model.outcomes), trained=trained, threshold=threshold,
        sources=tuple(sources), source_outcomes=source_outcomes,
    )  # fmt: skip
    return cal, model


def acceptance_model(cal: Calibration, model: TrainabilityModel) -> TrainabilityModel | None:
    """The model a ``restrict`` study gates by (``Prior.set_gate``) when its calibration starts
    from other studies' outcomes (``calibrate_from``): the fitted one once a trial of its own has
    trained, other studies' alone before (a study's own failures do not place an edge, see
    :func:`calibrate`). None, the rule with ``cal.c``, for a study calibrated on its own outcomes
    only: a handful of them does not yet say how much the cell moment matters."""
    if model.base is None:
        return None
    if cal.trained:
        return model
    return TrainabilityModel(c=model.c, width=model.width, base=model.base)


def _json_number(x: float | int | None) -> float | int | None:
    return x if x is None or isinstance(x, int) or math.isfinite(x) else None
