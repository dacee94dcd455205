"""Mean-field map of torch.nn.LSTM (docs/theory.md §3).

c_t = σ(u_f) c_{t-1} + σ(u_i) tanh(u_g);  h_t = σ(u_o) tanh(c_t).

The cell state c has mean ``m`` and second moment ``s`` (E[c²]); its law is not Gaussian, and
Q = E[o²] E[tanh(c)²] uses a Gaussian closure with the tracked moments (as do the two-example
moments, with cross moment ``s_ab``). The closure is the one approximation of this module; it is
measured against the untied simulation in the tests.

The Jacobian reported is the cell-state one, ∂c_t/∂c_{t-1} = D[f_t] + Σ_k D[b_k] U_k D[o_{t-1}
tanh'(c_{t-1})] for k ∈ {f, i, g}, with b_f = σ'(u_f) c_{t-1}, b_i = σ'(u_i) g, b_g = i tanh'(u_g).
"""

from __future__ import annotations

import numpy as np

from meanfield.cells.base import CellTheory, JacobianMoments, State
from meanfield.quadrature import (
    SIGMOID,
    SIGMOID_NEG,
    TANH,
    expect1,
    expect2,
    expect_many,
    power,
    sigmoid_pair,
)

__all__ = ["LSTMTheory"]

SIG4 = power(SIGMOID, 4)
TANH4 = power(TANH, 4)
TANH2 = power(TANH, 2)


def _sigmoid_moments(u: np.ndarray) -> tuple[np.ndarray, ...]:
    """σ, σ², 1 - σ and 1 - σ² = (1 - σ)(1 + σ), the last two with full relative precision."""
    s, n = sigmoid_pair(u)
    return s, s * s, n, n * (1.0 + s)


def _tanh_moments(u: np.ndarray) -> tuple[np.ndarray, ...]:
    t = np.tanh(u)
    return t, t * t


def _sigmoid_jac(u: np.ndarray) -> tuple[np.ndarray, ...]:
    """σ², σ⁴, σ'², σ'⁴, σ² σ'²."""
    s, n = sigmoid_pair(u)
    s2 = s * s
    d2 = (s * n) ** 2
    return s2, s2 * s2, d2, d2 * d2, s2 * d2


def _tanh_jac(u: np.ndarray) -> tuple[np.ndarray, ...]:
    """tanh², tanh⁴, tanh'², tanh'⁴, tanh² tanh'²."""
    t2 = np.tanh(u) ** 2
    d2 = (1.0 - t2) ** 2
    return t2, t2 * t2, d2, d2 * d2, t2 * d2


class LSTMTheory(CellTheory):
    name = "lstm"
    single_keys = ("m", "s", "q")
    cross_keys = ("s_ab", "q_ab")

    def _gates(self, q: np.ndarray) -> dict[str, np.ndarray]:
        """First and second moments of the four gates given Q_{t-1} (memoized per Q)."""
        return self.memo("gates", q, compute=self._compute_gates)

    def _sigmoid_gate_stats(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Means and variances of the sigmoid gates i, f, o stacked on axis 0 (one quadrature)."""
        mus = np.stack([self.gate(k).mu for k in "ifo"])
        return mus, np.stack([self.var(k, q) for k in "ifo"])

    def _compute_gates(self, q: np.ndarray) -> dict[str, np.ndarray]:
        g: dict[str, np.ndarray] = {}
        s1, s2, n1, n2 = expect_many(_sigmoid_moments, *self._sigmoid_gate_stats(q), SIGMOID)
        for j, k in enumerate("ifo"):
            g[k], g[k + "2"] = s1[j], s2[j]
        g["1-f"], g["1-f2"] = n1[1], n2[1]  # full relative precision near saturation
        g["g"], g["g2"] = expect_many(_tanh_moments, self.gate("g").mu, self.var("g", q), TANH)
        return g

    @staticmethod
    def _tanh2(m: np.ndarray, s: np.ndarray) -> np.ndarray:
        return expect1(TANH2, m, np.maximum(s - m * m, 0.0))

    def reduced_single(self, q: np.ndarray) -> State:
        g = self._gates(q)
        m = g["i"] * g["g"] / g["1-f"]
        s = (2 * g["f"] * g["i"] * g["g"] * m + g["i2"] * g["g2"]) / g["1-f2"]
        return {"m": m, "s": s, "q": g["o2"] * self._tanh2(m, s)}

    def _cross_gates(self, q: np.ndarray, q_ab: np.ndarray) -> dict[str, np.ndarray]:
        """E[k_a k_b] of each gate given Q, Q^ab (memoized), and 1 - E[f_a f_b]."""
        return self.memo("cross_gates", q, q_ab, compute=self._compute_cross_gates)

    def _compute_cross_gates(self, q: np.ndarray, q_ab: np.ndarray) -> dict[str, np.ndarray]:
        mus, vs = self._sigmoid_gate_stats(q)
        covs = np.stack([self.cov(k, q_ab) for k in "ifo"])
        x = expect2(SIGMOID, SIGMOID, mus, vs, mus, vs, covs)
        out = {k: x[j] for j, k in enumerate("ifo")}
        mu, v = self.gate("g").mu, self.var("g", q)
        out["g"] = expect2(TANH, TANH, mu, v, mu, v, self.cov("g", q_ab))
        # 1 - E[f_a f_b] = 2 E[1 - f] - E[(1 - f_a)(1 - f_b)]: full relative precision at saturation
        mu, v, c = mus[1], vs[1], covs[1]
        pair = expect2(SIGMOID_NEG, SIGMOID_NEG, mu, v, mu, v, c)
        out["1-f"] = 2.0 * self._gates(q)["1-f"] - pair
        return out

    def step_single(self, state: State) -> State:
        g = self._gates(state["q"])
        m = g["f"] * state["m"] + g["i"] * g["g"]
        s = g["f2"] * state["s"] + 2 * g["f"] * g["i"] * g["g"] * state["m"] + g["i2"] * g["g2"]
        return {"m": m, "s": s, "q": g["o2"] * self._tanh2(m, s)}

    def step_cross(self, state: State) -> State:
        g = self._gates(state["q"])
        x = self._cross_gates(state["q"], state["q_ab"])
        m = g["f"] * state["m"] + g["i"] * g["g"]
        s = g["f2"] * state["s"] + 2 * g["f"] * g["i"] * g["g"] * state["m"] + g["i2"] * g["g2"]
        s_ab = x["f"] * state["s_ab"] + 2 * g["f"] * g["i"] * g["g"] * state["m"] + x["i"] * x["g"]
        v = np.maximum(s - m * m, 0.0)
        return {"s_ab": s_ab, "q_ab": x["o"] * expect2(TANH, TANH, m, v, m, v, s_ab - m * m)}

    def reduced_cross(self, q_ab: np.ndarray, single: State) -> State:
        q, m, s = single["q"], single["m"], single["s"]
        g = self._gates(q)
        x = self._cross_gates(q, q_ab)
        # s_ab = x_f s_ab + 2 E[f]E[i]E[g] m + x_i x_g, solved for s_ab; 1 - x_f ≥ 1 - E[f²] > 0.
        s_ab = (2 * g["f"] * g["i"] * g["g"] * m + x["i"] * x["g"]) / x["1-f"]
        s_ab = np.minimum(s_ab, s)
        v = np.maximum(s - m * m, 0.0)
        t_ab = expect2(TANH, TANH, m, v, m, v, s_ab - m * m)
        return {"s_ab": s_ab, "q_ab": x["o"] * t_ab}

    def identical(self, single: State) -> State:
        return {"s_ab": single["s"], "q_ab": single["q"]}

    def jacobian_moments(self, single: State) -> JacobianMoments:
        q, m, s = single["q"], single["m"], single["s"]
        v = np.maximum(s - m * m, 0.0)
        p = {k: self.gate(k) for k in "ifgo"}
        f2, f4, sf2, sf4, f2sf2 = expect_many(_sigmoid_jac, p["f"].mu, self.var("f", q), SIG4)
        i2, i4, si2, si4, si2_i2 = expect_many(_sigmoid_jac, p["i"].mu, self.var("i", q), SIG4)
        g2, g4, tg2, tg4, g2_tg2 = expect_many(_tanh_jac, p["g"].mu, self.var("g", q), TANH4)
        o2, o4, *_ = expect_many(_sigmoid_jac, p["o"].mu, self.var("o", q), SIG4)
        _, _, dc2, dc4, _ = expect_many(_tanh_jac, m, v, TANH4)
        c4 = m**4 + 6 * m * m * v + 3 * v * v  # E[c⁴], Gaussian closure
        # column factor c = o_{t-1} tanh'(c_{t-1})
        col2, col4 = o2 * dc2, o4 * dc4
        nf2, ni2, ng2 = p["f"].nu ** 2, p["i"].nu ** 2, p["g"].nu ** 2
        bf2, bi2, bg2 = nf2 * sf2 * s, ni2 * si2 * g2, ng2 * i2 * tg2
        b2 = bf2 + bi2 + bg2
        b4 = (
            nf2**2 * sf4 * c4
            + ni2**2 * si4 * g4
            + ng2**2 * i4 * tg4
            + 2 * bf2 * bi2
            + 2 * bf2 * bg2
            + 2 * ni2 * ng2 * si2_i2 * g2_tg2
        )
        a2b2 = nf2 * f2sf2 * s + f2 * (bi2 + bg2)
        return JacobianMoments(f2, f4, col2, col4, f2 * col2, b2, b4, a2b2, (bf2, bi2, bg2))
