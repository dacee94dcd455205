"""Critical initialization: the memory-gate bias that gives a target time scale (docs/theory.md §5).

Given the cell, the bridge length T, the input statistics and the trainability constant c, solve the
forget (LSTM) / update (GRU, minimalRNN) gate bias mean for ξ_C = T/c. ξ_C grows monotonically,
roughly like exp(mu)/2 (the large-bias law of §3), so a bracketed search seeded by that law is
reliable. Bias spreads are set to 0 and recurrent weights default to orthogonal. The recurrent scale
nu (shared by all gates) is the largest candidate whose T-step Jacobian stays near-isometric,
|T log m₁| ≤ 1 and T (m₂/m₁² − 1) ≤ 1 (docs/theory.md §4): a smaller nu is always more isometric
(the Jacobian tends to the diagonal D[f]) but leaves the recurrent weights too small to learn with.
If no candidate meets both bounds, the one closest to them is taken. The bound on |T log m₁| has a
slack of :data:`LOG_M1_SLACK`: with shared inputs m₁ is χ_C, so at the target ξ_C = T/c the
rule's own quantity is T log m₁ = −T/ξ_C = −c, exactly on the bound for c = 1, where the
solver's last digits (and m₁'s small departure from χ_C) decided, and every candidate failed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from meanfield.constants import CRITICAL_C
from meanfield.errors import MeanFieldError
from meanfield.jacobian import Isometry, isometry
from meanfield.params import MEMORY_GATE, Config, Inputs, positive_number
from meanfield.solvers import bisect_increasing
from meanfield.theory import FixedPointResult, fixed_point, memory_time_scale

__all__ = ["DEFAULT_C", "ISOMETRY_BOUND", "NU_CANDIDATES", "CriticalResult", "critical_init"]

#: The critical recipe's c (ξ_C = T/c = T): see :mod:`meanfield.constants`.
DEFAULT_C = CRITICAL_C
#: Recurrent weight scales tried for near-isometry (1.0 with orthogonal weights: an exact rotation).
NU_CANDIDATES = (0.25, 0.5, 0.75, 1.0)
#: Bound on |T log m₁| and on T (m₂/m₁² − 1) for a near-isometric T-step Jacobian.
ISOMETRY_BOUND = 1.0
#: Relative slack on the |T log m₁| bound (see the module's docstring).
LOG_M1_SLACK = 0.05
#: Search range of the memory-gate bias mean.
MU_RANGE = (-6.0, 40.0)


@dataclass(frozen=True)
class CriticalResult:
    """A full hyperparameter set whose ξ_C equals ``target_xi`` = T/c."""

    cell: str
    gate: str
    mu: float
    params: dict[str, float]
    config: Config
    target_xi: float
    xi_c: float
    converged: bool
    fixed_point: FixedPointResult
    isometry: Isometry


def critical_init(
    cell: str,
    T: float,
    inputs: Inputs | None = None,
    *,
    c: float = DEFAULT_C,
    weights: str = "orthogonal",
    base: Mapping[str, object] | None = None,
    nu_candidates: Sequence[float] | None = None,
) -> CriticalResult:
    """Solve the memory-gate bias for ξ_C = T/c and return the whole configuration.

    ``base`` sets other hyperparameters (flat names, e.g. ``{"sigma": 1}``); a ``nu`` in ``base``
    fixes the recurrent scale instead of choosing it for isometry.
    """
    inputs = inputs or Inputs()
    gate = MEMORY_GATE.get(cell, "") if isinstance(cell, str) else ""
    if cell in MEMORY_GATE and gate is None:
        raise MeanFieldError("cell", cell, "has no memory gate; its ξ is bounded with inputs")
    T = positive_number("T", T)
    c = positive_number("c", c)
    base = dict(base or {})
    base.setdefault("rho", 0.0)
    if any(k == "nu" or k.startswith("nu_") for k in base):
        nus = np.array([np.nan])
    else:
        nus = np.asarray(nu_candidates or NU_CANDIDATES, float)
    target = float(T) / c
    mem = f"mu_{gate}"

    def build(mu: np.ndarray) -> Config:
        values = {**base, mem: mu}
        if not np.isnan(nus).all():
            values["nu"] = nus
        return Config.from_flat(cell, values, weights=weights)

    build(np.zeros(nus.shape))  # validates names and values before the search

    def log_xi(mu: np.ndarray) -> np.ndarray:
        xi, _ = memory_time_scale(build(mu), inputs, tol=1e-13)
        return np.log(np.maximum(xi, 1e-300))

    # Large-bias law ξ ≈ exp(mu - Σ/2)/2, with Σ estimated at Q = 0.5.
    seed = np.log(2.0 * target) + 0.5 * (1.0 + 0.5 * np.nan_to_num(nus, nan=1.0) ** 2)
    sol = bisect_increasing(
        log_xi, np.full(nus.shape, np.log(target)), MU_RANGE[0], MU_RANGE[1], x0=seed, ftol=1e-9
    )
    cfg = build(sol.x)
    fp = fixed_point(cfg, inputs)
    iso = isometry(fp.m1, fp.m2, max(1, round(T)), fp.unit_moments)
    log_m1 = np.abs(iso.log_m1) / (1.0 + LOG_M1_SLACK)
    excess = np.maximum(log_m1, np.abs(iso.spread)) - ISOMETRY_BOUND
    excess = np.where(sol.converged & np.isfinite(excess), excess, np.inf)
    feasible = np.flatnonzero(excess <= 0)
    if feasible.size:  # the largest feasible nu (candidates are in increasing order)
        best = int(feasible[np.argmax(np.nan_to_num(nus[feasible], nan=0.0))])
    else:
        best = int(np.argmin(excess))
    params = {k: float(np.asarray(v)[best]) for k, v in cfg.to_flat_dict().items()}
    best_cfg = Config.from_flat(cell, params, weights=weights)
    best_fp = fixed_point(best_cfg, inputs)
    xi = float(best_fp.xi_c)
    return CriticalResult(
        cell=cell,
        gate=gate,
        mu=params[mem],
        params=params,
        config=best_cfg,
        target_xi=target,
        xi_c=xi,
        converged=bool(sol.converged[best]) and abs(xi / target - 1) < 1e-3,
        fixed_point=best_fp,
        isometry=isometry(best_fp.m1, best_fp.m2, max(1, round(T)), best_fp.unit_moments),
    )
