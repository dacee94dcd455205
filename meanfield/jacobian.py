"""Moments of the state-to-state Jacobian and T-step dynamical isometry (docs/theory.md §4).

One step has the form J = D[a] + D[b] W D[c] with per-unit (a, b, c) i.i.d.; several recurrent
matrices fold into one b_eff² = Σ_k ν_k² b_k² when they are Gaussian. With W Gaussian (variance 1/n)
or Haar-orthogonal:

    m₁ = tr(JJᵀ)/n = E[a²] + E[b²] E[c²]
    m₂ = tr((JJᵀ)²)/n = E[a⁴] + 2 E[a²b²] E[c²] + 2 E[b²] E[a²c²] + E[b⁴] E[c²]² + E[b²]² E[c⁴]
         − [orthogonal] Σ_k (ν_k² E[b_k²])² E[c²]²

Over T steps m₁(T) = Π m₁. The spread Var(λ)/E[λ]² of PPᵀ, P = J_T ⋯ J_1, is Σ (m₂/m₁² − 1) only
for asymptotically free factors (the vanilla cell, or factors rotated at random). Independently
drawn *gated* Jacobians are not free: their diagonal parts D[a] commute. With X = P_{t-1}P_{t-1}ᵀ
and Y = J_tᵀJ_t independent and invariant under signed permutations,
φ(XYXY) = φ(X)²(φ(Y²) − d(Y)) + φ(Y)²(φ(X²) − d(X)) + d(X) d(Y), d(·) the mean squared diagonal
entry. Writing s = m₂/m₁² − 1, δ_Y = d(Y)/m₁² − 1 = (E[a⁴] + 2E[b²]E[a²c²] + E[b²]²E[c⁴])/m₁² − 1
and δ_t = d(X_t)/φ(X_t)² − 1 (X_ii ← a_i² X_ii + b_i² E[c²] φ(X)):

    S_t = S_{t−1} + s + δ_{t−1} δ_Y,
    1 + δ_t = (E[a⁴](1 + δ_{t−1}) + 2E[a²b²]E[c²] + E[b⁴]E[c²]²)/m₁²,   S_0 = δ_0 = 0,

which :func:`isometry` evaluates in closed form (checked against explicit products of n = 1000
Jacobians in the tests).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from meanfield.cells.base import JacobianMoments
from meanfield.errors import MeanFieldError

__all__ = ["Isometry", "isometry", "moments"]


def moments(j: JacobianMoments, weights: str) -> tuple[np.ndarray, np.ndarray]:
    """(m₁, m₂) per step from per-unit moments."""
    m1 = j.a2 + j.b2 * j.c2
    m2 = j.a4 + 2 * j.a2b2 * j.c2 + 2 * j.b2 * j.a2c2 + j.b4 * j.c2**2 + j.b2**2 * j.c4
    if weights == "orthogonal":
        m2 = m2 - sum(b * b for b in j.b2_per_gate) * j.c2**2
    return m1, m2


@dataclass(frozen=True)
class Isometry:
    """T-step isometry measures: ``log_m1`` = T log m₁ and ``spread`` = T (m₂/m₁² − 1).

    Dynamical isometry over T steps needs both to be ≲ 1 in magnitude.
    """

    T: int
    log_m1: np.ndarray
    spread: np.ndarray


def _diagonal_sum(alpha: np.ndarray, beta: np.ndarray, T: int) -> np.ndarray:
    """Σ_{t=0}^{T-1} δ_t for 1 + δ_t = α (1 + δ_{t-1}) + β, δ_0 = 0."""
    # u_t = 1 + δ_t = α^t + β (1 - α^t)/(1 - α); near α = 1 its limit 1 + β t
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        one_minus = 1.0 - alpha
        geo = np.where(
            np.abs(one_minus) > 1e-9,
            -np.expm1(T * np.log(np.maximum(alpha, 1e-300)))
            / np.where(one_minus == 0, 1, one_minus),
            T * 1.0,
        )  # Σ α^t
        near = np.abs(one_minus) <= 1e-9
        total_u = np.where(
            near,
            T + beta * T * (T - 1) / 2.0,
            geo + beta * (T - geo) / np.where(near, 1.0, one_minus),
        )
    return total_u - T


def isometry(
    m1: np.ndarray, m2: np.ndarray, T: int, unit: JacobianMoments | None = None
) -> Isometry:
    """T-step measures. With the per-unit moments ``unit`` (``FixedPointResult.unit_moments``)
    the spread is that of independently drawn Jacobians (not free, see the module docstring);
    without, that of free factors, T (m₂/m₁² − 1)."""
    if isinstance(T, bool) or not isinstance(T, int | np.integer) or T < 1:
        raise MeanFieldError("T", T, "must be a positive whole number of steps")
    m1, m2 = np.asarray(m1, float), np.asarray(m2, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = m2 / m1**2 - 1.0
        spread = T * s
        if unit is not None:
            a4, b2, c2 = unit.a4, unit.b2, unit.c2
            d_y = (a4 + 2 * b2 * unit.a2c2 + b2 * b2 * unit.c4) / m1**2 - 1.0
            alpha = a4 / m1**2
            beta = (2 * unit.a2b2 * c2 + unit.b4 * c2 * c2) / m1**2
            spread = spread + d_y * _diagonal_sum(alpha, beta, int(T))
        return Isometry(T=int(T), log_m1=T * np.log(m1), spread=spread)
