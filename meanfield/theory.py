"""Fixed points, time scales and trajectories of the mean-field maps (docs/theory.md §3).

:func:`fixed_point` is the entry point: for a :class:`~meanfield.params.Config` (one configuration
or an array of them) and the input statistics it returns Q*, C*, the slopes χ_Q, χ_C of the moment
map at its fixed point, the time scales ξ = −1/log χ, and the Jacobian moments m₁, m₂.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from meanfield.cells import THEORIES, CellTheory, JacobianMoments, State
from meanfield.errors import MeanFieldError
from meanfield.jacobian import moments
from meanfield.params import Config, Inputs, positive_number
from meanfield.solvers import jacobian, spectral_radius, steffensen

__all__ = [
    "FixedPointResult",
    "MemoryCheck",
    "fixed_point",
    "memory_and_moments",
    "memory_check",
    "memory_time_scale",
    "theory_for",
    "time_scale",
    "trajectory",
]


def theory_for(cfg: Config, inputs: Inputs) -> CellTheory:
    return THEORIES[cfg.cell](cfg, inputs)


#: Slopes within this of 1 give ξ = ∞: the slopes come from differences of the moment map, whose
#: rounding (~1e-13 relative) leaves 1 - χ meaningless below this, i.e. ξ above ~1e11 steps.
CHI_RESOLUTION = 1e-11


def time_scale(chi: np.ndarray) -> np.ndarray:
    """ξ = −1/log χ (∞ for χ ≥ 1 - CHI_RESOLUTION, 0 for χ = 0)."""
    chi = np.asarray(chi, float)
    with np.errstate(divide="ignore"):
        xi = -1.0 / np.log(np.clip(chi, 0.0, 1.0))
    return np.where(chi >= 1.0 - CHI_RESOLUTION, np.inf, xi)


@dataclass(frozen=True)
class FixedPointResult:
    """Mean-field fixed point of one configuration or an array of them (arrays of ``shape``).

    q_star: E[h²] at the fixed point. m_star: the state's mean, E[h] (LSTM: E[c], the cell
    state's mean). s_star: E[c²] (LSTM; NaN otherwise).
    c_star: correlation C* of two examples. chi_q, xi_q: slope and time scale of Q's relaxation.
    chi_c, xi_c: slope and time scale of C's relaxation (the memory of the input).
    m1, m2: per-step Jacobian moments. converged, iterations, residual: of the fixed-point solves.
    """

    q_star: np.ndarray
    m_star: np.ndarray
    s_star: np.ndarray
    c_star: np.ndarray
    chi_q: np.ndarray
    xi_q: np.ndarray
    chi_c: np.ndarray
    xi_c: np.ndarray
    m1: np.ndarray
    m2: np.ndarray
    converged: np.ndarray
    iterations: int
    residual: np.ndarray
    #: Per-unit Jacobian moments (arrays of ``shape``), for the T-step spread of
    #: :func:`~meanfield.jacobian.isometry`; None when the moments were not computed.
    unit_moments: JacobianMoments | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready values: floats (None for NaN, "inf" kept as float) or lists for arrays."""
        out: dict[str, object] = {}
        for f in fields(self):
            if f.name == "unit_moments":
                continue
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray) and v.ndim == 0:
                v = v.item()
            elif isinstance(v, np.ndarray):
                v = v.tolist()
            if isinstance(v, float) and np.isnan(v):
                v = None
            out[f.name] = v
        return out


def _solve_single(th: CellTheory, tol: float):
    q0 = np.full(th.cfg.size, 0.3)
    sol = steffensen(lambda q: th.reduced_single(q)["q"], q0, 0.0, 1.0, tol=tol)
    state = th.reduced_single(sol.x)
    state["q"] = sol.x
    return state, sol


def _solve_cross(th: CellTheory, single: State, tol: float):
    """Cross fixed point, its slope χ_C, convergence and residual.

    With shared inputs C = 1 is a fixed point; where it is stable (one-sided slope < 1) it is the
    answer, and only the other configurations are solved for an interior C* < 1.
    """
    q = single["q"]
    n = q.shape[0]
    ident = th.identical(single)
    chi = np.full(n, np.nan)
    conv = np.ones(n, bool)
    residual = np.zeros(n)
    cross = {k: np.array(v, float, copy=True) for k, v in ident.items()}
    # Shared inputs, or inputs with no variance left to decorrelate the examples (R_ab = R, e.g.
    # R = 0 in either regime): C = 1 is a fixed point, the answer where it is stable.
    shared = th.R_ab >= th.R * (1.0 - 1e-12)
    if shared.any():
        # The step is small enough for pair expectations to stay on their ρ → 1 (Price) branch,
        # which is linear in the covariance: the one-sided difference is then exact.
        jac = jacobian(
            lambda s: th.step_cross({**single, **s}), ident, th.cross_keys, one_sided=True, rel=1e-7
        )
        chi[shared] = spectral_radius(jac)[shared]
    todo = np.flatnonzero(~(shared & (chi < 1.0)))
    x0 = np.where(shared[todo], 0.5 * q[todo], 0.0)
    if todo.size == 0:
        return cross, chi, conv, residual
    sub = th if todo.size == n else th.subset(todo)
    sub_single = single if todo.size == n else {k: v[todo] for k, v in single.items()}
    qs = sub_single["q"]
    sol = steffensen(lambda x: sub.reduced_cross(x, sub_single)["q_ab"], x0, -qs, qs, tol=tol)
    sub_cross = sub.reduced_cross(sol.x, sub_single)
    sub_cross["q_ab"] = sol.x
    sub_cross = {k: sub_cross[k] for k in th.cross_keys}
    jac = jacobian(lambda s: sub.step_cross({**sub_single, **s}), sub_cross, th.cross_keys)
    sub_chi = spectral_radius(jac)
    # C* = 1 (e.g. zero inputs in either regime): central differences would straddle the boundary
    edge = sol.x >= qs * (1.0 - 1e-9)
    if edge.any():
        ident_sub = sub.identical(sub_single)
        jac_edge = jacobian(
            lambda s: sub.step_cross({**sub_single, **s}),
            ident_sub,
            th.cross_keys,
            one_sided=True,
            rel=1e-7,
        )
        sub_chi = np.where(edge, spectral_radius(jac_edge), sub_chi)
        sub_cross = {k: np.where(edge, ident_sub[k], sub_cross[k]) for k in th.cross_keys}
    chi[todo] = sub_chi
    for k in th.cross_keys:
        cross[k][todo] = sub_cross[k]
    conv[todo] = sol.converged
    residual[todo] = sol.residual
    return cross, chi, conv, residual


def fixed_point(
    cfg: Config, inputs: Inputs | None = None, *, tol: float = 1e-13, jacobian_moments: bool = True
) -> FixedPointResult:
    """Fixed point, time scales and Jacobian moments of the untied mean-field map.

    ``jacobian_moments=False`` skips m₁, m₂ (NaN) when only the time scales are needed.
    """
    inputs = inputs or Inputs()
    th = theory_for(cfg, inputs)
    single, sol = _solve_single(th, tol)
    cross, chi_c, conv_c, res_c = _solve_cross(th, single, tol)
    jq = jacobian(th.step_single, single, th.single_keys)
    chi_q = spectral_radius(jq)
    q = single["q"]
    unit = None
    if jacobian_moments:
        unit = th.jacobian_moments(single)
        m1, m2 = moments(unit, cfg.weights)
        unit = JacobianMoments(
            **{
                f.name: (
                    tuple(np.asarray(b).reshape(cfg.shape) for b in getattr(unit, f.name))
                    if f.name == "b2_per_gate"
                    else np.asarray(getattr(unit, f.name)).reshape(cfg.shape)
                )
                for f in fields(unit)
            }
        )
    else:
        m1 = m2 = np.full(q.shape, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        # a correlation: rounding of the quadrature may leave it a hair outside [-1, 1]
        c_star = np.clip(np.where(q > 0, cross["q_ab"] / q, 1.0), -1.0, 1.0)
    nan = np.full(q.shape, np.nan)
    values = {
        "q_star": q,
        "m_star": single.get("m", nan),
        "s_star": single.get("s", nan),
        "c_star": c_star,
        "chi_q": chi_q,
        "xi_q": time_scale(chi_q),
        "chi_c": chi_c,
        "xi_c": time_scale(chi_c),
        "m1": m1,
        "m2": m2,
        "converged": sol.converged & conv_c,
        "residual": np.maximum(sol.residual, res_c),
    }
    shaped = {k: np.asarray(v).reshape(cfg.shape) for k, v in values.items()}
    return FixedPointResult(iterations=sol.iterations, unit_moments=unit, **shaped)


def memory_time_scale(
    cfg: Config, inputs: Inputs | None = None, *, tol: float = 1e-11
) -> tuple[np.ndarray, np.ndarray]:
    """(ξ_C, converged) only: the fast path of :func:`fixed_point` for screening candidates.

    Skips the single-example slope and the Jacobian moments; a looser default tolerance suffices
    for a time scale (relative error far below 1e-6).
    """
    xi, _, _, converged = memory_and_moments(cfg, inputs, tol=tol)
    return xi, converged


def memory_and_moments(
    cfg: Config, inputs: Inputs | None = None, *, tol: float = 1e-11
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ξ_C, s*, q*, converged): :func:`memory_time_scale` with two moments at the fixed point
    from the same solve: the LSTM cell state's s* = E[c²] (NaN for the other cells) and the
    hidden state's q* = E[h²] (docs/theory.md §5.2)."""
    inputs = inputs or Inputs()
    th = theory_for(cfg, inputs)
    single, sol = _solve_single(th, tol)
    _, chi_c, conv_c, _ = _solve_cross(th, single, tol)
    xi = time_scale(chi_c).reshape(cfg.shape)
    s = single.get("s")
    s_star = np.full(cfg.shape, np.nan) if s is None else np.asarray(s, float).reshape(cfg.shape)
    q_star = np.asarray(single["q"], float).reshape(cfg.shape)
    return xi, s_star, q_star, (sol.converged & conv_c).reshape(cfg.shape)


@dataclass(frozen=True)
class MemoryCheck:
    """The mean-field trainability criterion ξ_C ≥ T/c for one configuration or an array.

    ``margin`` = log(ξ_C c / T): positive where the criterion holds, the softer the closer to 0.
    """

    xi_c: np.ndarray
    required: float
    ok: np.ndarray
    margin: np.ndarray
    converged: np.ndarray


def memory_check(cfg: Config, T: float, c: float, inputs: Inputs | None = None) -> MemoryCheck:
    """Is the memory time scale long enough for a bridge of T steps (ξ_C ≥ T/c,
    docs/theory.md §5)?"""
    T = positive_number("T", T)
    c = positive_number("c", c)
    xi, conv = memory_time_scale(cfg, inputs)
    required = T / c
    with np.errstate(divide="ignore"):
        margin = np.log(np.maximum(xi, 0.0)) - np.log(required)
    return MemoryCheck(xi_c=xi, required=required, ok=xi >= required, margin=margin, converged=conv)


def trajectory(
    cfg: Config,
    inputs: Inputs | None = None,
    steps: int = 100,
    *,
    start: str = "zero",
) -> dict[str, np.ndarray]:
    """Iterate the joint moment map for ``steps`` steps; arrays of shape (steps+1, *cfg.shape).

    start: ``zero`` (h₀ = 0), ``identical`` (both examples at the single fixed point, C₀ = 1),
    ``independent`` (both at the fixed point, decorrelated as by independent inputs).
    Adds ``corr`` = Q^ab/Q, the correlation C_t of two examples.
    """
    inputs = inputs or Inputs()
    th = theory_for(cfg, inputs)
    if start == "zero":
        state = th.zero_state()
    elif start in ("identical", "independent"):
        single, _ = _solve_single(th, 1e-13)
        single = {k: single[k] for k in th.single_keys}
        if start == "identical":
            state = {**single, **th.identical(single)}
        else:
            ind = theory_for(cfg, Inputs(R=inputs.R, regime="independent"))
            cross, *_ = _solve_cross(ind, single, 1e-13)
            state = {**single, **cross}
    else:
        raise MeanFieldError("start", start, "must be 'zero', 'identical' or 'independent'")
    keys = (*th.single_keys, *th.cross_keys)
    hist = {k: [state[k]] for k in keys}
    for _ in range(steps):
        state = th.step(state)
        for k in keys:
            hist[k].append(state[k])
    out = {k: np.stack(v).reshape(steps + 1, *cfg.shape) for k, v in hist.items()}
    with np.errstate(divide="ignore", invalid="ignore"):
        out["corr"] = np.where(out["q"] > 0, out["q_ab"] / out["q"], 1.0)
    return out
