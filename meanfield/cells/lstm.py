"""Mean-field map of torch.nn.LSTM (THEORY.md §3).

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
    DSIGMOID,
    DTANH,
    SIGMOID,
    SIGMOID_NEG,
    TANH,
    Activation,
    expect1,
    expect2,
    power,
    product,
)

__all__ = ["LSTMTheory"]

SIG2 = power(SIGMOID, 2)
ONE_MINUS_SIG2 = product(SIGMOID_NEG, Activation("1+sigmoid", lambda x: 1 + SIGMOID(x), 16.0, 1.2))


class LSTMTheory(CellTheory):
    name = "lstm"
    single_keys = ("m", "s", "q")
    cross_keys = ("s_ab", "q_ab")

    def _gates(self, q: np.ndarray) -> dict[str, np.ndarray]:
        """First and second moments of the four gates given Q_{t-1}."""
        g: dict[str, np.ndarray] = {}
        for k in "ifo":
            mu, v = self.gate(k).mu, self.var(k, q)
            g[k] = expect1(SIGMOID, mu, v)
            g[k + "2"] = expect1(SIG2, mu, v)
        mu, v = self.gate("g").mu, self.var("g", q)
        g["g"], g["g2"] = expect1(TANH, mu, v), expect1(power(TANH, 2), mu, v)
        pf = self.gate("f")
        vf = self.var("f", q)
        g["1-f"] = expect1(SIGMOID_NEG, pf.mu, vf)  # full relative precision near saturation
        g["1-f2"] = expect1(ONE_MINUS_SIG2, pf.mu, vf)
        return g

    @staticmethod
    def _tanh2(m: np.ndarray, s: np.ndarray) -> np.ndarray:
        return expect1(power(TANH, 2), m, np.maximum(s - m * m, 0.0))

    def reduced_single(self, q: np.ndarray) -> State:
        g = self._gates(q)
        m = g["i"] * g["g"] / g["1-f"]
        s = (2 * g["f"] * g["i"] * g["g"] * m + g["i2"] * g["g2"]) / g["1-f2"]
        return {"m": m, "s": s, "q": g["o2"] * self._tanh2(m, s)}

    def _cross_gates(self, q: np.ndarray, q_ab: np.ndarray) -> dict[str, np.ndarray]:
        out = {}
        for k in "ifgo":
            act = TANH if k == "g" else SIGMOID
            mu, v = self.gate(k).mu, self.var(k, q)
            out[k] = expect2(act, act, mu, v, mu, v, self.cov(k, q_ab))
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
        s_ab = (2 * g["f"] * g["i"] * g["g"] * m + x["i"] * x["g"]) / (1.0 - x["f"])
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
        mv = {k: (p[k].mu, self.var(k, q)) for k in "ifgo"}

        def e(act: Activation, k: str) -> np.ndarray:
            return expect1(act, *mv[k])

        f2, f4 = e(power(SIGMOID, 2), "f"), e(power(SIGMOID, 4), "f")
        i2, i4 = e(power(SIGMOID, 2), "i"), e(power(SIGMOID, 4), "i")
        g2, g4 = e(power(TANH, 2), "g"), e(power(TANH, 4), "g")
        o2, o4 = e(power(SIGMOID, 2), "o"), e(power(SIGMOID, 4), "o")
        c4 = m**4 + 6 * m * m * v + 3 * v * v  # E[c⁴], Gaussian closure
        # column factor c = o_{t-1} tanh'(c_{t-1})
        col2 = o2 * expect1(power(DTANH, 2), m, v)
        col4 = o4 * expect1(power(DTANH, 4), m, v)
        nf2, ni2, ng2 = p["f"].nu ** 2, p["i"].nu ** 2, p["g"].nu ** 2
        sf2, sf4 = e(power(DSIGMOID, 2), "f"), e(power(DSIGMOID, 4), "f")
        si2, si4 = e(power(DSIGMOID, 2), "i"), e(power(DSIGMOID, 4), "i")
        tg2, tg4 = e(power(DTANH, 2), "g"), e(power(DTANH, 4), "g")
        bf2, bi2, bg2 = nf2 * sf2 * s, ni2 * si2 * g2, ng2 * i2 * tg2
        b2 = bf2 + bi2 + bg2
        si2_i2 = e(product(DSIGMOID, DSIGMOID, SIGMOID, SIGMOID), "i")  # E[σ'(u_i)² i²]
        g2_tg2 = e(product(TANH, TANH, DTANH, DTANH), "g")  # E[g² tanh'(u_g)²]
        b4 = (
            nf2**2 * sf4 * c4
            + ni2**2 * si4 * g4
            + ng2**2 * i4 * tg4
            + 2 * bf2 * bi2
            + 2 * bf2 * bg2
            + 2 * ni2 * ng2 * si2_i2 * g2_tg2
        )
        f2sf2 = e(product(SIGMOID, SIGMOID, DSIGMOID, DSIGMOID), "f")
        a2b2 = nf2 * f2sf2 * s + f2 * (bi2 + bg2)
        return JacobianMoments(f2, f4, col2, col4, f2 * col2, b2, b4, a2b2, (bf2, bi2, bg2))
