"""Mean-field maps of the vanilla tanh RNN and the minimalRNN [C18] (docs/theory.md §3)."""

from __future__ import annotations

import numpy as np

from meanfield.cells.base import (
    CellTheory,
    JacobianMoments,
    State,
    convex_moments,
    gate_power_moments,
)
from meanfield.quadrature import DSIGMOID, DTANH, SIGMOID, TANH, expect1, expect2, power, product

__all__ = ["MinimalRNNTheory", "VanillaTheory"]

TANH2 = power(TANH, 2)


class VanillaTheory(CellTheory):
    """h_t = tanh(W x_t + U h_{t-1} + b)."""

    name = "vanilla"
    single_keys = ("q",)
    cross_keys = ("q_ab",)

    def reduced_single(self, q: np.ndarray) -> State:
        mu, v = self.gate("h").mu, self.var("h", q)
        return {"q": expect1(TANH2, mu, v), "m": expect1(TANH, mu, v)}

    def reduced_cross(self, q_ab: np.ndarray, single: State) -> State:
        mu, v = self.gate("h").mu, self.var("h", single["q"])
        return {"q_ab": expect2(TANH, TANH, mu, v, mu, v, self.cov("h", q_ab))}

    def step_single(self, state: State) -> State:
        return {"q": expect1(TANH2, self.gate("h").mu, self.var("h", state["q"]))}

    def step_cross(self, state: State) -> State:
        mu, v = self.gate("h").mu, self.var("h", state["q"])
        return {"q_ab": expect2(TANH, TANH, mu, v, mu, v, self.cov("h", state["q_ab"]))}

    def identical(self, single: State) -> State:
        return {"q_ab": single["q"]}

    def jacobian_moments(self, single: State) -> JacobianMoments:
        # J = D[tanh'(u)] U: a = 0, b = tanh'(u), c = 1.
        p = self.gate("h")
        mu, v = p.mu, self.var("h", single["q"])
        b2 = p.nu**2 * expect1(power(DTANH, 2), mu, v)
        b4 = p.nu**4 * expect1(power(DTANH, 4), mu, v)
        zero, one = np.zeros_like(b2), np.ones_like(b2)
        return JacobianMoments(zero, zero, one, one, zero, b2, b4, zero, (b2,))


class MinimalRNNTheory(CellTheory):
    """e_t = tanh(W_e x_t + b_e); u_t = σ(U_u h + W_u e_t + b_u); h_t = u h + (1 - u) e [C18]."""

    name = "minimalrnn"
    single_keys = ("m", "q")
    cross_keys = ("q_ab",)

    def __init__(self, cfg, inputs) -> None:
        super().__init__(cfg, inputs)
        pe = self.gate("e")
        ve = pe.sigma**2 * self.R + pe.rho**2
        self.e_moments = [np.ones_like(ve)] + [
            expect1(power(TANH, k), pe.mu, ve) for k in range(1, 5)
        ]
        cov_e = pe.sigma**2 * self.R_ab + pe.rho**2
        self.e_ab = expect2(TANH, TANH, pe.mu, ve, pe.mu, ve, cov_e)

    def _u(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.gate("u").mu, self.var("u", q, self.e_moments[2])

    def _u_cov(self, q_ab: np.ndarray) -> np.ndarray:
        return self.cov("u", q_ab, self.e_ab)

    def reduced_single(self, q: np.ndarray) -> State:
        w = gate_power_moments(*self._u(q), pmax=2)
        h = convex_moments(w, self.e_moments[:3], pmax=2)
        return {"m": h[1], "q": h[2]}

    def step_single(self, state: State) -> State:
        mu, v = self._u(state["q"])
        eu, eu2 = expect1(SIGMOID, mu, v), expect1(power(SIGMOID, 2), mu, v)
        e1, e2 = self.e_moments[1], self.e_moments[2]
        m, q = state["m"], state["q"]
        return {
            "m": eu * m + (1 - eu) * e1,
            "q": eu2 * q + 2 * (eu - eu2) * e1 * m + (1 - 2 * eu + eu2) * e2,
        }

    def step_cross(self, state: State) -> State:
        mu, v = self._u(state["q"])
        eu = expect1(SIGMOID, mu, v)
        uu = expect2(SIGMOID, SIGMOID, mu, v, mu, v, self._u_cov(state["q_ab"]))
        e1 = self.e_moments[1]
        q_ab = uu * state["q_ab"] + 2 * (eu - uu) * state["m"] * e1 + (1 - 2 * eu + uu) * self.e_ab
        return {"q_ab": q_ab}

    def reduced_cross(self, q_ab: np.ndarray, single: State) -> State:
        return self.step_cross({**single, "q_ab": q_ab})

    def identical(self, single: State) -> State:
        return {"q_ab": single["q"]}

    def jacobian_moments(self, single: State) -> JacobianMoments:
        # ∂h_i/∂h_j = u_i δ_ij + σ'(pre_u,i) (h_{t-1,i} - e_i) U_ij: a = u, b = σ'(·)(h - e), c = 1.
        nu = self.gate("u").nu
        mu, v = self._u(single["q"])
        w = gate_power_moments(mu, v, pmax=4)
        h = convex_moments(w, self.e_moments, pmax=4)
        e = self.e_moments
        d2 = h[2] - 2 * h[1] * e[1] + e[2]  # E[(h - e)²]
        d4 = h[4] - 4 * h[3] * e[1] + 6 * h[2] * e[2] - 4 * h[1] * e[3] + e[4]
        s2 = expect1(power(DSIGMOID, 2), mu, v)
        b2 = nu**2 * s2 * d2
        b4 = nu**4 * expect1(power(DSIGMOID, 4), mu, v) * d4
        a2b2 = nu**2 * expect1(product(SIGMOID, SIGMOID, DSIGMOID, DSIGMOID), mu, v) * d2
        one = np.ones_like(b2)
        return JacobianMoments(w[(2, 0)], w[(4, 0)], one, one, w[(2, 0)], b2, b4, a2b2, (b2,))
