"""What every cell's mean-field theory provides (docs/theory.md §3–4).

A cell's theory is a moment map on a *state*: a dict of arrays (one entry per configuration) holding
the single-example moments (``single_keys``: e.g. Q = ⟨h,h⟩/n) and the two-example cross moments
(``cross_keys``: e.g. Q^ab = ⟨h^a,h^b⟩/n). :meth:`CellTheory.step` advances the joint state by one
time step under the untied (fresh weights each step) wide-network limit.

For fixed points each cell also gives *reduced* maps: every state variable that enters linearly (the
LSTM cell-state moments, the GRU/minimalRNN mean) is solved in closed form given Q (or Q^ab), which
leaves a scalar equation Q = G(Q) that stays well conditioned even when the time scale ξ is huge.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

import numpy as np

from meanfield.errors import MeanFieldError
from meanfield.params import Config, GateParams, Inputs
from meanfield.quadrature import SIGMOID, SIGMOID_NEG, Activation, expect1, product

State = dict[str, np.ndarray]

__all__ = ["CellTheory", "JacobianMoments", "State", "convex_moments", "gate_power_moments"]


@dataclass(frozen=True)
class JacobianMoments:
    """Per-unit moments of J = D[a] + Σ_k D[b_k] U_k D[c] (docs/theory.md §4).

    ``b2``/``b4``/``a2b2`` are those of b_eff with b_eff² = Σ_k ν_k² b_k² (the recurrent scales are
    folded in); ``b2_per_gate`` keeps ν_k² E[b_k²] for the orthogonal correction.
    """

    a2: np.ndarray
    a4: np.ndarray
    c2: np.ndarray
    c4: np.ndarray
    a2c2: np.ndarray
    b2: np.ndarray
    b4: np.ndarray
    a2b2: np.ndarray
    b2_per_gate: tuple[np.ndarray, ...]


class CellTheory:
    """Base class: holds a flat array of configurations and the input statistics."""

    name: str = ""
    single_keys: tuple[str, ...] = ()
    cross_keys: tuple[str, ...] = ()

    def __init__(self, cfg: Config, inputs: Inputs) -> None:
        self.cfg = cfg.flat()
        n = self.cfg.size
        try:
            self.R = np.broadcast_to(np.asarray(inputs.R, float), cfg.shape).reshape(n)
            self.R_ab = np.broadcast_to(np.asarray(inputs.R_ab, float), cfg.shape).reshape(n)
        except ValueError:
            raise MeanFieldError(
                "input_var",
                inputs.R,
                f"shape {np.shape(inputs.R)} does not broadcast to the configurations' {cfg.shape}",
            ) from None
        self.inputs = inputs

    def subset(self, index: np.ndarray) -> CellTheory:
        """The theory of the configurations ``index`` only (solvers work on what is left)."""
        sub = Inputs(R=self.R[index], regime=self.inputs.regime, R_ab=self.R_ab[index])
        return type(self)(self.cfg.take(index), sub)

    # -- helpers ------------------------------------------------------------------------------
    def memo(self, name: str, *xs: np.ndarray, compute):
        """``compute(*xs)``, remembered for the last few distinct ``xs`` (solvers and finite
        differences revisit the same states)."""
        cache = self.__dict__.setdefault("_memo", {})
        key = (name, *(np.asarray(x).tobytes() for x in xs))
        if key not in cache:
            if len(cache) >= 16:
                cache.pop(next(iter(cache)))
            cache[key] = compute(*xs)
        return cache[key]

    def gate(self, k: str) -> GateParams:
        return self.cfg.gates[k]

    def var(self, k: str, q: np.ndarray, r: np.ndarray | None = None) -> np.ndarray:
        """Pre-activation variance sigma_k² R + nu_k² Q + rho_k²."""
        p = self.gate(k)
        r = self.R if r is None else r
        return p.sigma**2 * r + p.nu**2 * q + p.rho**2

    def cov(self, k: str, q_ab: np.ndarray, r_ab: np.ndarray | None = None) -> np.ndarray:
        """Pre-activation covariance of two examples sigma_k² R^ab + nu_k² Q^ab + rho_k²."""
        p = self.gate(k)
        r_ab = self.R_ab if r_ab is None else r_ab
        return p.sigma**2 * r_ab + p.nu**2 * q_ab + p.rho**2

    # -- the interface ------------------------------------------------------------------------
    def zero_state(self) -> State:
        """State of h_0 = 0 (and c_0 = 0) for both examples."""
        n = self.cfg.size
        return {k: np.zeros(n) for k in (*self.single_keys, *self.cross_keys)}

    def reduced_single(self, q: np.ndarray) -> State:
        """Stationary single-example state given Q; its ``q`` entry is G(Q)."""
        raise NotImplementedError

    def reduced_cross(self, q_ab: np.ndarray, single: State) -> State:
        """Stationary cross state given Q^ab (single state at its fixed point); ``q_ab`` is G_C."""
        raise NotImplementedError

    def step_single(self, state: State) -> State:
        """One time step of the single-example moments."""
        raise NotImplementedError

    def step_cross(self, state: State) -> State:
        """One time step of the cross moments (reads the single moments of the previous step)."""
        raise NotImplementedError

    def step(self, state: State) -> State:
        """One time step of the joint (single + cross) moment map."""
        return {**self.step_single(state), **self.step_cross(state)}

    def jacobian_moments(self, single: State) -> JacobianMoments:
        raise NotImplementedError

    def identical(self, single: State) -> State:
        """Cross state of two identical examples (C = 1)."""
        raise NotImplementedError


def gate_power_moments(mean: np.ndarray, var: np.ndarray, pmax: int = 4) -> dict:
    """E[w^j (1-w)^k] for w = σ(u), u ~ N(mean, var), all j + k ≤ pmax; plus 1 - E[w^p].

    ``one_minus[p]`` = E[1 - w^p] = E[(1-w)(1 + w + … + w^(p-1))] is computed directly, so that it
    keeps full relative precision when the gate saturates at 1 (large bias: long memory).
    """
    out: dict = {}
    for p in range(1, pmax + 1):
        for j in range(p + 1):
            acts: list[Activation] = [SIGMOID] * j + [SIGMOID_NEG] * (p - j)
            out[(j, p - j)] = expect1(product(*acts), mean, var)
    # E[1 - w^p] = Σ_{j<p} E[w^j (1 - w)]
    out["one_minus"] = {p: sum(out[(j, 1)] for j in range(p)) for p in range(1, pmax + 1)}
    return out


def convex_moments(w: dict, v: list[np.ndarray], pmax: int = 4) -> list[np.ndarray]:
    """Stationary moments E[h^p], p = 0..pmax, of h ← w h + (1 - w) v (w, h, v independent).

    ``w`` is :func:`gate_power_moments` of the gate; ``v[q]`` = E[v^q] for q = 0..pmax.
    """
    h = [np.ones_like(v[0])]
    for p in range(1, pmax + 1):
        rhs = sum(comb(p, j) * w[(j, p - j)] * h[j] * v[p - j] for j in range(p))
        h.append(rhs / w["one_minus"][p])
    return h
