"""Finite-width simulation of the RNN cells, to check the mean-field theory (docs/theory.md §3, §6).

Two examples a and b run through the same random network of width n, initialized as in
docs/theory.md §2 and fed inputs whose coordinates are N(0, R), fresh at every step, independent
between the examples or shared (:class:`~meanfield.params.Inputs`). The simulator records the
moments that the theory predicts: Q_t = ⟨h^a_t, h^a_t⟩/n, the cross moment Q^{ab}_t, hence the
correlation C_t, the mean of h^a_t and, for the LSTM, the cell-state moments.

Weights are either *untied* (fresh matrices and biases at every step, the mean-field assumption of
docs/theory.md §3) or *tied* (one draw reused at every step, a real network: docs/theory.md §6
lists where the two differ). Untied simulation by default samples the pre-activations directly from
their exact per-unit Gaussian law given the Gram matrix of (h^a, h^b), which costs O(n) per step;
see :mod:`meanfield._simcells`. :func:`fit_timescale` measures the relaxation time ξ of a
trajectory.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from meanfield._simcells import (
    FreshMatrixSampler,
    PreactivationSampler,
    Sampler,
    TiedSampler,
    haar_orthogonal,
    step,
)
from meanfield.errors import MeanFieldError
from meanfield.params import Config, Inputs

__all__ = [
    "SimulationResult",
    "draw_recurrent",
    "fit_timescale",
    "simulate",
]

Start = Literal["zero", "identical", "independent"]
Mode = Literal["preactivation", "matrices"]

_FIELDS = ("q", "q_b", "q_ab", "m", "s", "s_ab", "cm", "corr")


@dataclass(frozen=True)
class SimulationResult:
    """Moments of two examples a, b over time; every array has shape (seeds, steps + 1).

    Attributes:
        q: Q_t = ⟨h^a_t, h^a_t⟩/n.
        q_b: the same for example b.
        q_ab: ⟨h^a_t, h^b_t⟩/n.
        m: mean over units of h^a_t.
        s: LSTM only, ⟨c^a_t, c^a_t⟩/n (None for other cells).
        s_ab: LSTM only, ⟨c^a_t, c^b_t⟩/n.
        cm: LSTM only, mean over units of c^a_t.
    """

    q: np.ndarray
    q_b: np.ndarray
    q_ab: np.ndarray
    m: np.ndarray
    s: np.ndarray | None = None
    s_ab: np.ndarray | None = None
    cm: np.ndarray | None = None

    @property
    def corr(self) -> np.ndarray:
        """C_t = Q^{ab}_t / √(Q_t Q^b_t) per seed (NaN where a state is zero)."""
        denom = np.sqrt(self.q * self.q_b)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, self.q_ab / np.where(denom > 0, denom, 1.0), np.nan)

    def mean(self, name: str) -> np.ndarray:
        """Average over seeds of one field (``q``, ``q_b``, ``q_ab``, ``m``, ``s``, ``s_ab``,
        ``cm`` or ``corr``), shape (steps + 1,)."""
        if name not in _FIELDS:
            raise MeanFieldError("name", name, f"unknown field; choose one of {list(_FIELDS)}")
        value = getattr(self, name)
        if value is None:
            raise MeanFieldError("name", name, "recorded for the LSTM only")
        return value.mean(axis=0)


def draw_recurrent(
    rng: np.random.Generator, n: int, nu: float, weights: str = "gaussian"
) -> np.ndarray:
    """One recurrent matrix U (n×n): entries N(0, nu²/n), or nu times a Haar-orthogonal matrix."""
    if weights == "orthogonal":
        return nu * haar_orthogonal(rng, n)
    if weights == "gaussian":
        return rng.standard_normal((n, n)) * (nu / np.sqrt(n))
    raise MeanFieldError("weights", weights, "must be 'gaussian' or 'orthogonal'")


def _positive_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise MeanFieldError(name, value, f"must be an integer >= {minimum}")
    return int(value)


def _scalar(name: str, value: object) -> float:
    arr = np.asarray(value, dtype=float)
    if arr.size != 1:
        raise MeanFieldError(name, value, "the simulator takes a single value")
    return float(arr.reshape(()))


def _run_seed(
    cfg: Config,
    sampler: Sampler,
    *,
    n: int,
    steps: int,
    R: float,
    shared: bool,
    start: Start,
    burn_in: int,
    burn_in_R: float,
) -> np.ndarray:
    """One seed; returns the recorded moments, shape (7, steps + 1) (LSTM rows zero otherwise)."""
    lstm = cfg.cell == "lstm"
    state = tuple(np.zeros((2, n)) for _ in range(2 if lstm else 1))
    if start != "zero":
        for _ in range(burn_in):
            x = sampler.inputs(burn_in_R, shared=start == "identical")
            state = step(cfg.cell, state, x, sampler)
        if start == "identical":  # C_0 = 1 exactly, whatever the round-off of the burn-in
            state = tuple(np.repeat(v[:1], 2, axis=0) for v in state)
    out = np.zeros((7, steps + 1))
    for t in range(steps + 1):
        if t > 0:
            state = step(cfg.cell, state, sampler.inputs(R, shared), sampler)
        h = state[0]
        gram = h @ h.T / n
        out[:4, t] = gram[0, 0], gram[1, 1], gram[0, 1], h[0].mean()
        if lstm:
            c = state[1]
            out[4:, t] = c[0] @ c[0] / n, c[0] @ c[1] / n, c[0].mean()
    return out


def simulate(
    cfg: Config,
    inputs: Inputs,
    *,
    n: int = 1000,
    steps: int = 200,
    seeds: Iterable[int] = (0,),
    tied: bool = False,
    start: Start = "zero",
    burn_in: int | None = None,
    burn_in_R: float | None = None,
    n_in: int | None = None,
    mode: Mode | None = None,
) -> SimulationResult:
    """Simulate two examples through a random network of width ``n`` for ``steps`` steps.

    Args:
        cfg: one configuration (``cfg.size == 1``) of any cell; ``cfg.weights`` picks Gaussian or
            orthogonal recurrent matrices.
        inputs: input second moment R and regime (independent or shared between a and b).
        n: hidden width.
        steps: number of recorded steps after t = 0.
        seeds: one independent run (``numpy.random.default_rng(seed)``) per seed, stacked on axis 0.
        tied: reuse one draw of weights and biases at every step (a real network) instead of fresh
            ones per step (untied, the mean-field assumption).
        start: ``zero`` (h_0 = c_0 = 0); ``identical`` (burn in a, copy its state to b: C_0 = 1);
            ``independent`` (burn in a and b with independent inputs through the same weights).
        burn_in: burn-in steps for the non-zero starts; default max(200, steps).
        burn_in_R: input second moment during burn-in; default ``inputs.R``. Give it when R = 0
            (zero padding), otherwise the burn-in leaves the state at its zero start.
        n_in: input width, default n.
        mode: ``preactivation`` (untied only, the default there: exact O(n) sampling) or
            ``matrices`` (explicit weight matrices; the default and only choice when tied).

    Returns:
        The recorded moments at t = 0 (end of burn-in) to t = steps.

    Raises:
        MeanFieldError: for several configurations (field ``config``) or an invalid argument.
    """
    if not isinstance(cfg, Config) or cfg.size != 1:
        size = getattr(cfg, "size", None)
        raise MeanFieldError("config", f"<{size} configurations>", "simulate takes one config")
    if not isinstance(inputs, Inputs):
        raise MeanFieldError("inputs", inputs, "must be an Inputs")
    n = _positive_int("n", n, 2)
    steps = _positive_int("steps", steps, 0)
    n_in = n if n_in is None else _positive_int("n_in", n_in, 1)
    if isinstance(seeds, int | np.integer):
        raise MeanFieldError("seeds", seeds, "must be a sequence of seeds, e.g. range(4)")
    seed_list = [_positive_int("seeds", s, 0) for s in seeds]
    if not seed_list:
        raise MeanFieldError("seeds", seeds, "needs at least one seed")
    if start not in ("zero", "identical", "independent"):
        raise MeanFieldError("start", start, "must be 'zero', 'identical' or 'independent'")
    if mode is None:
        mode = "matrices" if tied else "preactivation"
    if mode not in ("preactivation", "matrices"):
        raise MeanFieldError("mode", mode, "must be 'preactivation' or 'matrices'")
    if tied and mode == "preactivation":
        raise MeanFieldError(
            "mode", mode, "pre-activation sampling is exact only for untied weights"
        )
    R = _scalar("input_var", inputs.R)
    if inputs.regime == "independent" and np.any(np.asarray(inputs.R_ab) != 0):
        raise MeanFieldError(
            "input_cross", inputs.R_ab, "the simulator draws centred inputs: R_ab must be 0"
        )
    if start == "zero":
        if burn_in not in (None, 0) or burn_in_R is not None:
            raise MeanFieldError(
                "burn_in", burn_in, "only used with start 'identical'/'independent'"
            )
        burn_in = 0
    burn_in = max(200, steps) if burn_in is None else _positive_int("burn_in", burn_in, 0)
    b_R = R if burn_in_R is None else _scalar("burn_in_R", burn_in_R)
    if b_R < 0:
        raise MeanFieldError("burn_in_R", burn_in_R, "must be >= 0")
    if start == "independent" and (b_R == 0 or burn_in == 0):
        raise MeanFieldError(
            "start", start, "decorrelating the examples needs burn_in > 0 and burn_in_R > 0"
        )

    sampler_cls = {
        (True, "matrices"): TiedSampler,
        (False, "matrices"): FreshMatrixSampler,
        (False, "preactivation"): PreactivationSampler,
    }[(bool(tied), mode)]
    runs = []
    for seed in seed_list:
        runs.append(
            _run_seed(
                cfg,
                sampler_cls(cfg, np.random.default_rng(seed), n, n_in),
                n=n,
                steps=steps,
                R=R,
                shared=inputs.regime == "shared",
                start=start,
                burn_in=burn_in,
                burn_in_R=b_R,
            )
        )
    data = np.stack(runs, axis=1)  # (7, seeds, steps + 1)
    lstm = cfg.cell == "lstm"
    return SimulationResult(
        q=data[0],
        q_b=data[1],
        q_ab=data[2],
        m=data[3],
        s=data[4] if lstm else None,
        s_ab=data[5] if lstm else None,
        cm=data[6] if lstm else None,
    )


def fit_timescale(y: np.ndarray, y_star: float, *, lo: float, hi: float) -> float:
    """Relaxation time ξ of a trajectory y_t → y_star, assuming |y_t − y_star| ∝ exp(−t/ξ).

    Least-squares slope of log|y_t − y_star| against t over the steps t where
    lo ≤ |y_t − y_star| ≤ hi; ξ = −1/slope. NaN when fewer than 5 steps qualify or the distance
    does not decrease (slope ≥ 0).
    """
    y = np.asarray(y, dtype=float)
    if y.ndim != 1:
        raise MeanFieldError("y", f"<array of shape {y.shape}>", "must be one trajectory (1-D)")
    if not 0 < lo < hi:
        raise MeanFieldError("lo", (lo, hi), "need 0 < lo < hi")
    dist = np.abs(y - y_star)
    keep = (dist >= lo) & (dist <= hi)  # NaN entries compare False and are dropped
    if np.count_nonzero(keep) < 5:
        return float("nan")
    t = np.flatnonzero(keep).astype(float)
    slope = np.polyfit(t, np.log(dist[keep]), 1)[0]
    return float(-1.0 / slope) if slope < 0 else float("nan")
