"""Vectorized solvers: fixed points, monotone roots, Jacobians of moment maps.

Like ``scipy.optimize``, every iterative solver returns a result with ``converged``, ``iterations``
and ``residual``; the caller decides whether non-convergence is an error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["Solution", "bisect_increasing", "jacobian", "spectral_radius", "steffensen"]


@dataclass(frozen=True)
class Solution:
    """Result of a vectorized solver (arrays of the shape of the problem)."""

    x: np.ndarray
    converged: np.ndarray
    iterations: int
    residual: np.ndarray


def steffensen(
    g: Callable[[np.ndarray], np.ndarray],
    x0: np.ndarray,
    lo: np.ndarray | float,
    hi: np.ndarray | float,
    *,
    tol: float = 1e-13,
    max_iter: int = 100,
) -> Solution:
    """Fixed point x = g(x) by Steffensen's (Aitken Δ²) iteration, kept inside [lo, hi].

    Converges quadratically even where g'(x*) is close to 1, which plain iteration does not. A step
    that leaves [lo, hi] or divides by ~0 falls back to the plain iterate g(g(x)).
    """
    x = np.array(x0, dtype=float, copy=True)
    lo = np.broadcast_to(np.asarray(lo, float), x.shape)
    hi = np.broadcast_to(np.asarray(hi, float), x.shape)
    residual = np.full(x.shape, np.inf)
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 - reported below
        g1 = g(x)
        residual = np.abs(g1 - x)
        if np.all(residual <= tol * (1.0 + np.abs(x))):
            break
        g2 = g(g1)
        d = g2 - 2.0 * g1 + x
        with np.errstate(divide="ignore", invalid="ignore"):
            aitken = x - (g1 - x) ** 2 / d
        good = np.isfinite(aitken) & (np.abs(d) > 1e-300) & (aitken >= lo) & (aitken <= hi)
        x = np.where(good, aitken, g2)
    converged = residual <= 1e3 * tol * (1.0 + np.abs(x))
    return Solution(x=x, converged=converged, iterations=it, residual=residual)


def bisect_increasing(
    f: Callable[[np.ndarray], np.ndarray],
    target: np.ndarray,
    lo: np.ndarray | float,
    hi: np.ndarray | float,
    *,
    x0: np.ndarray | None = None,
    xtol: float = 1e-10,
    ftol: float = 1e-10,
    max_iter: int = 100,
) -> Solution:
    """Solve f(x) = target for f increasing on [lo, hi] (vectorized bracketed search).

    Illinois (modified regula falsi): superlinear on smooth f, never leaves the bracket. ``x0``
    (e.g. a closed-form estimate) shrinks the initial bracket.
    """
    target = np.asarray(target, float)
    lo = np.array(np.broadcast_to(lo, target.shape), dtype=float)
    hi = np.array(np.broadcast_to(hi, target.shape), dtype=float)
    flo, fhi = f(lo) - target, f(hi) - target
    bracketed = (flo <= 0) & (fhi >= 0)
    if x0 is not None:
        x0 = np.clip(x0, lo, hi)
        f0 = f(x0) - target
        below = f0 < 0
        lo, flo = np.where(below, x0, lo), np.where(below, f0, flo)
        hi, fhi = np.where(below, hi, x0), np.where(below, fhi, f0)
    side = np.zeros(target.shape, dtype=int)
    x, fx = lo.copy(), flo.copy()
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 - reported below
        with np.errstate(divide="ignore", invalid="ignore"):
            x = (lo * fhi - hi * flo) / (fhi - flo)
        x = np.where(np.isfinite(x) & (x > lo) & (x < hi), x, 0.5 * (lo + hi))
        fx = f(x) - target
        below = fx < 0
        lo, flo = np.where(below, x, lo), np.where(below, fx, flo)
        hi, fhi = np.where(below, hi, x), np.where(below, fhi, fx)
        # Illinois: halve the stale end's value when the same end moved twice in a row.
        fhi = np.where(below & (side == -1), fhi / 2, fhi)
        flo = np.where(~below & (side == 1), flo / 2, flo)
        side = np.where(below, -1, 1)
        done = (np.abs(fx) <= ftol) | ((hi - lo) <= xtol * (1.0 + np.abs(lo)))
        if done.all():
            break
    residual = np.abs(fx)
    converged = bracketed & ((residual <= 10 * ftol) | ((hi - lo) <= 10 * xtol * (1 + np.abs(lo))))
    return Solution(x=x, converged=converged, iterations=it, residual=residual)


State = Mapping[str, np.ndarray]


def jacobian(
    step: Callable[[State], State],
    state: State,
    keys: tuple[str, ...],
    *,
    one_sided: bool = False,
    rel: float = 1e-5,
) -> np.ndarray:
    """Finite-difference Jacobian ∂step(state)[keys]/∂state[keys], shape (..., d, d).

    Central differences by default; ``one_sided`` uses the second-order backward formula, for
    states on a boundary (a correlation of exactly 1).
    """
    cols = []
    for key in keys:
        x = np.asarray(state[key], float)
        h = rel * np.maximum(np.abs(x), 1e-3)

        def at(delta: np.ndarray, key: str = key, x: np.ndarray = x) -> np.ndarray:
            out = step({**state, key: x + delta})
            return np.stack([np.asarray(out[k], float) for k in keys], axis=-1)

        if one_sided:
            col = (3.0 * at(0.0 * h) - 4.0 * at(-h) + at(-2.0 * h)) / (2.0 * h[..., None])
        else:
            col = (at(h) - at(-h)) / (2.0 * h[..., None])
        cols.append(col)
    return np.stack(cols, axis=-1)


def spectral_radius(jac: np.ndarray) -> np.ndarray:
    """Largest |eigenvalue| of each matrix in a stack (..., d, d)."""
    if jac.shape[-1] == 1:
        return np.abs(jac[..., 0, 0])
    return np.max(np.abs(np.linalg.eigvals(jac)), axis=-1)
