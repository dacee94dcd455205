"""Mean-field map of torch.nn.GRU, reset *after* the matmul (docs/theory.md §3).

r = σ(u_r), z = σ(u_z), n_t = tanh(A + r ⊙ V) with A = W_n x + b_n and V = U_n h_{t-1};
h_t = (1 - z) n_t + z h_{t-1}.

Given r, the candidate's pre-activation A + rV is Gaussian; n's moments are therefore integrals over
the reset pre-activation of Gaussian integrals (2-D), its two-example moments 4-D. The state is the
mean ``m`` and second moment ``q`` of h and the cross moment ``q_ab``; given Q all of them are exact
in the untied limit (no closure).

The Jacobian ∂h_t/∂h_{t-1} = D[z] + D[b_z] U_z + D[b_n] U_n + D[b_r] U_r with
b_z = σ'(u_z)(h_{t-1} - n), b_n = (1 - z) tanh'(A + rV) r, b_r = (1 - z) tanh'(A + rV) σ'(u_r) V.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from meanfield.cells.base import (
    CellTheory,
    JacobianMoments,
    State,
    convex_moments,
    gate_power_moments,
)
from meanfield.quadrature import (
    DSIGMOID,
    ORDER_1D,
    SIGMOID,
    SIGMOID_NEG,
    TANH,
    expect1,
    expect2,
    mehler_coefficients,
    power,
    product,
    rule,
    sigmoid,
    smooth_pair_rule,
    smooth_rule,
)

__all__ = ["GRUTheory"]

#: Nodes per dimension of the reset-gate rules (the reset gate is a smooth function). The single
#: and the pair moments use the same order, so that two examples in the same state stay in it.
ORDER_R = 8
#: Chebyshev nodes in the reset gate's value r ∈ [0, 1] at which the candidate's Hermite
#: coefficients are tabulated for the pair moments (its variance a_var + r²ν²Q is smooth in r).
TABLE_R = 32
#: With tabulated coefficients a longer Mehler expansion is cheap: order and largest |ρ| of the
#: candidate's pair moment (tail < PAIR_MAX_RHO^(PAIR_ORDER+1)/(1 − PAIR_MAX_RHO), Σ a_k² ≤ 1).
PAIR_ORDER = 48
PAIR_MAX_RHO = 0.6


@cache
def _chebyshev(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Chebyshev points of the first kind on [0, 1] and their barycentric weights."""
    theta = np.pi * (np.arange(n) + 0.5) / n
    return 0.5 * (1.0 - np.cos(theta)), (-1.0) ** np.arange(n) * np.sin(theta)


def _interpolation(r: np.ndarray, n: int) -> np.ndarray:
    """The barycentric weights that interpolate values at the :func:`_chebyshev` points to each
    ``r``: shape ``(*r.shape, n)``."""
    x, w = _chebyshev(n)
    d = r[..., None] - x
    hit = d == 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = w / d
    lam = np.where(hit.any(axis=-1, keepdims=True), hit.astype(float), lam)
    return lam / lam.sum(axis=-1, keepdims=True)


class GRUTheory(CellTheory):
    name = "gru"
    single_keys = ("m", "q")
    cross_keys = ("q_ab",)

    def __init__(self, cfg, inputs) -> None:
        super().__init__(cfg, inputs)
        pn = self.gate("n")
        self.a_var = pn.sigma**2 * self.R + pn.rho**2  # Var(W_n x + b_n)
        self.a_cov = pn.sigma**2 * self.R_ab + pn.rho**2

    def _n_moments(self, q: np.ndarray, pmax: int) -> list[np.ndarray]:
        """E[n^p], p = 0..pmax: average over the reset gate of a Gaussian integral."""
        ur, wr = smooth_rule(self.gate("r").mu, self.var("r", q), ORDER_R)
        r = sigmoid(ur)
        nu2 = self.gate("n").nu ** 2
        v = self.a_var[:, None] + r * r * (nu2 * q)[:, None]
        mu = self.gate("n").mu[:, None]
        out = [np.ones_like(q)]
        out += [np.sum(wr * expect1(power(TANH, p), mu, v), axis=-1) for p in range(1, pmax + 1)]
        return out

    def _n_cross(self, q: np.ndarray, q_ab: np.ndarray) -> np.ndarray:
        """E[n^a n^b]: 2-D over the two reset pre-activations (smooth), 2-D Gaussian inside."""
        mu_r, vr = self.gate("r").mu, self.var("r", q)
        # the integrand is symmetric in a ↔ b: half the pair nodes suffice
        ua, ub, w = smooth_pair_rule(mu_r, vr, self.cov("r", q_ab), ORDER_R, symmetric=True)
        ra, rb = sigmoid(ua), sigmoid(ub)
        nu2 = (self.gate("n").nu ** 2)[:, None]
        a_var, a_cov = self.a_var[:, None], self.a_cov[:, None]
        qq, qab = q[:, None], q_ab[:, None]
        mu = self.gate("n").mu[:, None]
        va, vb = a_var + ra * ra * nu2 * qq, a_var + rb * rb * nu2 * qq
        # the candidate's Hermite coefficients depend on r alone (Q is fixed while the pair
        # moment is solved): tabulated once at Chebyshev points in r, interpolated to the nodes
        x, _ = _chebyshev(TABLE_R)
        table = mehler_coefficients(TANH, mu, a_var + x * x * nu2 * qq, PAIR_ORDER)
        coef_a = _interpolation(ra, TABLE_R) @ table  # (N, P, K+1)
        coef_b = _interpolation(rb, TABLE_R) @ table
        cov = a_cov + ra * rb * nu2 * qab
        nn = expect2(
            TANH, TANH, mu, va, mu, vb, cov, coefficients=(coef_a, coef_b), max_rho=PAIR_MAX_RHO
        )
        return np.sum(w * nn, axis=-1)

    def reduced_single(self, q: np.ndarray) -> State:
        w = gate_power_moments(self.gate("z").mu, self.var("z", q), pmax=2)
        h = convex_moments(w, self._n_moments(q, 2), pmax=2)
        return {"m": h[1], "q": h[2]}

    def step_single(self, state: State) -> State:
        q, m = state["q"], state["m"]
        mu, v = self.gate("z").mu, self.var("z", q)
        ez, ez2 = expect1(SIGMOID, mu, v), expect1(power(SIGMOID, 2), mu, v)
        _, en, en2 = self._n_moments(q, 2)
        return {
            "m": ez * m + (1 - ez) * en,
            "q": ez2 * q + 2 * (ez - ez2) * en * m + (1 - 2 * ez + ez2) * en2,
        }

    def step_cross(self, state: State) -> State:
        q, m, q_ab = state["q"], state["m"], state["q_ab"]
        mu, v = self.gate("z").mu, self.var("z", q)
        ez = expect1(SIGMOID, mu, v)
        zz = expect2(SIGMOID, SIGMOID, mu, v, mu, v, self.cov("z", q_ab))
        en = self._n_moments(q, 1)[1]
        nn = self._n_cross(q, q_ab)
        return {"q_ab": zz * q_ab + 2 * (ez - zz) * m * en + (1 - 2 * ez + zz) * nn}

    def reduced_cross(self, q_ab: np.ndarray, single: State) -> State:
        return self.step_cross({**single, "q_ab": q_ab})

    def identical(self, single: State) -> State:
        return {"q_ab": single["q"]}

    def _unit_integrals(self, q: np.ndarray, m: np.ndarray) -> dict[str, np.ndarray]:
        """Integrals over (u_r, V, A) of the per-unit factors of b_n and b_r, as 2-D integrals.

        Given r, the candidate pre-activation p = A + rV is N(mu_n, a_var + r² ν² Q) and V | p is
        normal with mean β (p - mu_n), β = r ν² Q / Var(p), and variance
        s² = ν² Q - r² ν⁴ Q² / Var(p): the powers of V are integrated in closed form, which leaves
        u_r and p.
        """
        ur, wr = smooth_rule(self.gate("r").mu, self.var("r", q), 2 * ORDER_R)  # (N, P)
        wr = np.broadcast_to(wr, ur.shape)
        r, dr = sigmoid(ur), DSIGMOID(ur)
        vV = ((self.gate("n").nu ** 2) * q)[:, None]  # Var(V)
        vp = self.a_var[:, None] + r * r * vV  # Var(p | r)
        mu_n = self.gate("n").mu[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            beta = np.where(vp > 0, r * vV / vp, 0.0)
        s2 = np.maximum(vV - beta * r * vV, 0.0)
        pn, wp = rule(mu_n, vp, TANH.width, ORDER_1D)  # (N, P, Pp)
        w = wr[..., None] * wp
        dev2 = (beta[..., None] * (pn - mu_n[..., None])) ** 2
        v2 = s2[..., None] + dev2  # E[V² | p]
        v4 = 3 * s2[..., None] ** 2 + 6 * s2[..., None] * dev2 + dev2 * dev2  # E[V⁴ | p]
        n = np.tanh(pn)
        t2 = (1 - n * n) ** 2
        r2, d2 = (r * r)[..., None], (dr * dr)[..., None]

        def e(f: np.ndarray) -> np.ndarray:
            return np.sum(w * f, axis=(-2, -1))

        qq, mm = q[:, None, None], m[:, None, None]
        dev_h = qq - 2 * mm * n + n * n  # E[(h - n)²] given n, h independent of this unit's n
        return {
            "T1": e(t2 * r2),  # E[tanh'² r²]
            "T2": e(t2 * d2 * v2),  # E[tanh'² σ'(u_r)² V²]
            "T1_4": e(t2 * t2 * r2 * r2),
            "T2_4": e(t2 * t2 * d2 * d2 * v4),
            "T12": e(t2 * t2 * r2 * d2 * v2),
            "D1": e(dev_h * t2 * r2),
            "D2": e(dev_h * t2 * d2 * v2),
        }

    def jacobian_moments(self, single: State) -> JacobianMoments:
        q, m = single["q"], single["m"]
        mu, v = self.gate("z").mu, self.var("z", q)
        w = gate_power_moments(mu, v, pmax=4)
        nm = self._n_moments(q, 4)
        h = convex_moments(w, nm, pmax=4)
        d2 = h[2] - 2 * h[1] * nm[1] + nm[2]
        d4 = h[4] - 4 * h[3] * nm[1] + 6 * h[2] * nm[2] - 4 * h[1] * nm[3] + nm[4]
        u = self._unit_integrals(q, m)
        nz2, nn2, nr2 = (self.gate(k).nu ** 2 for k in "znr")
        sz2 = expect1(power(DSIGMOID, 2), mu, v)
        omz2, omz4 = w[(0, 2)], w[(0, 4)]  # E[(1-z)²], E[(1-z)⁴]
        bz2, bn2, br2 = nz2 * sz2 * d2, nn2 * omz2 * u["T1"], nr2 * omz2 * u["T2"]
        b2 = bz2 + bn2 + br2
        sz2_omz2 = expect1(product(DSIGMOID, DSIGMOID, SIGMOID_NEG, SIGMOID_NEG), mu, v)
        b4 = (
            nz2**2 * expect1(power(DSIGMOID, 4), mu, v) * d4
            + nn2**2 * omz4 * u["T1_4"]
            + nr2**2 * omz4 * u["T2_4"]
            + 2 * nz2 * nn2 * sz2_omz2 * u["D1"]
            + 2 * nz2 * nr2 * sz2_omz2 * u["D2"]
            + 2 * nn2 * nr2 * omz4 * u["T12"]
        )
        z2sz2 = expect1(product(SIGMOID, SIGMOID, DSIGMOID, DSIGMOID), mu, v)
        a2b2 = nz2 * z2sz2 * d2 + w[(2, 2)] * (nn2 * u["T1"] + nr2 * u["T2"])
        one = np.ones_like(b2)
        return JacobianMoments(
            w[(2, 0)], w[(4, 0)], one, one, w[(2, 0)], b2, b4, a2b2, (bz2, bn2, br2)
        )
