"""Moments of the state-to-state Jacobian and T-step dynamical isometry (THEORY.md §4).

One step has the form J = D[a] + D[b] W D[c] with per-unit (a, b, c) i.i.d.; several recurrent
matrices fold into one b_eff² = Σ_k ν_k² b_k² when they are Gaussian. With W Gaussian (variance 1/n)
or Haar-orthogonal:

    m₁ = tr(JJᵀ)/n = E[a²] + E[b²] E[c²]
    m₂ = tr((JJᵀ)²)/n = E[a⁴] + 2 E[a²b²] E[c²] + 2 E[b²] E[a²c²] + E[b⁴] E[c²]² + E[b²]² E[c⁴]
         − [orthogonal] Σ_k (ν_k² E[b_k²])² E[c²]²

Over T steps of asymptotically free factors, m₁(T) = Π m₁ and Var(λ)/E[λ]² = Σ (m₂/m₁² − 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from meanfield.cells.base import JacobianMoments

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


def isometry(m1: np.ndarray, m2: np.ndarray, T: int) -> Isometry:
    with np.errstate(divide="ignore", invalid="ignore"):
        return Isometry(T=T, log_m1=T * np.log(m1), spread=T * (m2 / m1**2 - 1.0))
