"""Weight samplers and one-step updates of the four cells, for :mod:`meanfield.simulate`.

The cells are those of docs/theory.md §1, with the initialization of §2. Every array of states has
shape ``(2, n)``: the two examples a and b, which always run through the same network.

A cell asks its *sampler* for affine maps ``sum_j M_j v_j (+ b)`` of vector pairs v_j = (v^a, v^b):

- :class:`TiedSampler` draws every matrix and bias once (a real network, docs/theory.md §6);
- :class:`FreshMatrixSampler` draws explicit matrices and biases anew at every step (untied, §3);
- :class:`PreactivationSampler` is also untied but forms no matrix. For a fresh Gaussian M of
  variance s²/d, the pairs ((M v^a)_i, (M v^b)_i) are independent across units and bivariate
  normal with covariance s² G/d, G the Gram matrix of (v^a, v^b); independent terms and the bias
  (mean mu, covariance rho² on every entry, as a and b share it) add up to one 2×2 covariance per
  gate, sampled with its eigh-based square root (robust to singular G, e.g. identical examples).
  For M = s·(Haar orthogonal), M maps an orthonormal basis of span(v^a, v^b) to a uniformly random
  orthonormal 2-frame F, so M v = s √G F (any C with C Cᵀ = G gives the same law). Only the Gram
  matrix of the inputs matters, so it is drawn directly (Wishart, Bartlett's construction).
  Cost: O(n) per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import expit

from meanfield.layout import LAYOUTS, SCALE, fan_in
from meanfield.params import CELLS, Config

__all__ = [
    "SLOTS",
    "FreshMatrixSampler",
    "PreactivationSampler",
    "Sampler",
    "TiedSampler",
    "haar_orthogonal",
    "sqrt_psd",
    "step",
]

#: Weight matrices of each cell: slot -> (gates, source), in the order of
#: :data:`meanfield.layout.LAYOUTS` (which says what the sources are). The source is what the matrix
#: multiplies: "x" the input (width n_in, scale sigma_k), "h" the previous state (width n, scale
#: nu_k, may be orthogonal), "e" the minimalRNN embedding (width n, scale sigma_k).
SLOTS: dict[str, dict[str, tuple[tuple[str, ...], str]]] = {
    cell: {m.slot: (m.gates, m.source) for m in layout.matrices} for cell, layout in LAYOUTS.items()
}

Terms = Sequence[tuple[str, Any]]


def haar_orthogonal(rng: np.random.Generator, n: int) -> np.ndarray:
    """A Haar-distributed n×n orthogonal matrix: QR of a Gaussian matrix with the sign fix."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def sqrt_psd(g: np.ndarray) -> np.ndarray:
    """Symmetric square root of (a stack of) symmetric positive semi-definite matrices.

    Eigenvalues below zero (round-off of a singular Gram matrix) are clipped to zero.
    """
    w, v = np.linalg.eigh(g)
    return (v * np.sqrt(np.clip(w, 0.0, None))[..., None, :]) @ np.swapaxes(v, -1, -2)


class Sampler:
    """Explicit inputs and matrices; subclasses decide when weights are drawn."""

    def __init__(self, cfg: Config, rng: np.random.Generator, n: int, n_in: int) -> None:
        self.rng = rng
        self.n = n
        self.orthogonal = cfg.weights == "orthogonal"
        self.width = {src: fan_in(src, n, n_in) for src in SCALE}
        self.slots = SLOTS[cfg.cell]
        self.scale = {
            slot: np.array([getattr(cfg[g], SCALE[src]).item() for g in gates])
            for slot, (gates, src) in self.slots.items()
        }
        self.mu = {g: cfg[g].mu.item() for g in CELLS[cfg.cell]}
        self.rho = {g: cfg[g].rho.item() for g in CELLS[cfg.cell]}

    def inputs(self, R: float, shared: bool) -> Any:
        """The inputs of one step, coordinates N(0, R), as the sampler's ``affine`` takes them."""
        x = self.rng.standard_normal((1 if shared else 2, self.width["x"])) * np.sqrt(R)
        return np.repeat(x, 2, axis=0) if shared else x

    def affine(self, terms: Terms, bias: bool = False) -> np.ndarray:
        """``sum_j M_j v_j`` (plus the gates' biases), shape (K, 2, n) for the K gates of the slots.

        Every slot of ``terms`` must cover the same gates; each slot is used once per step.
        """
        gates = self.slots[terms[0][0]][0]
        out = sum(np.swapaxes(self._weights(slot) @ v.T, 1, 2) for slot, v in terms)
        return out + self._bias(gates)[:, None, :] if bias else out

    def _weights(self, slot: str) -> np.ndarray:
        """Fresh explicit matrices (K, n, d) of one slot."""
        gates, src = self.slots[slot]
        d, scale = self.width[src], self.scale[slot]
        if src == "h" and self.orthogonal:
            return np.stack([s * haar_orthogonal(self.rng, self.n) for s in scale])
        z = self.rng.standard_normal((len(gates), self.n, d))
        return z * (scale / np.sqrt(d))[:, None, None]

    def _bias(self, gates: tuple[str, ...]) -> np.ndarray:
        """Fresh biases (K, n), shared by both examples."""
        mu = np.array([self.mu[g] for g in gates])[:, None]
        rho = np.array([self.rho[g] for g in gates])[:, None]
        return mu + rho * self.rng.standard_normal((len(gates), self.n))


class FreshMatrixSampler(Sampler):
    """Untied weights as explicit matrices and biases, drawn anew at every use (once per step)."""


class TiedSampler(Sampler):
    """One draw of every matrix and bias, reused at every step."""

    #: Steps of inputs drawn at once, so that the input matrices multiply them in one product.
    BLOCK = 32

    def __init__(self, cfg: Config, rng: np.random.Generator, n: int, n_in: int) -> None:
        super().__init__(cfg, rng, n, n_in)
        # Stacked, (K n, d) C-contiguous. Recurrent products take one matrix-vector product per
        # example (for these skinny shapes OpenBLAS's gemv beats its gemm), one if both are equal.
        self.stacked = {
            slot: np.ascontiguousarray(self._weights(slot).reshape(-1, self.width[src]))
            for slot, (_, src) in self.slots.items()
        }
        gates = CELLS[cfg.cell]
        self.fixed_bias = dict(zip(gates, super()._bias(gates), strict=True))
        self._queue: list[dict[str, np.ndarray]] = []
        self._key: tuple[float, bool] | None = None

    def inputs(self, R: float, shared: bool) -> dict[str, np.ndarray]:
        """One step's inputs ``"x"`` (2, n_in) and their products (2, K n) with each input slot.

        Inputs are independent of the state, so they are drawn and multiplied ``BLOCK`` steps ahead.
        """
        if not self._queue or self._key != (R, shared):
            self._key = (R, shared)
            xs = np.stack([Sampler.inputs(self, R, shared) for _ in range(self.BLOCK)])
            flat = xs.reshape(-1, self.width["x"])
            prods = {
                slot: (flat @ m.T).reshape(self.BLOCK, 2, -1)
                for slot, m in self.stacked.items()
                if self.slots[slot][1] == "x"
            }
            self._queue = [
                {"x": xs[t]} | {slot: p[t] for slot, p in prods.items()}
                for t in reversed(range(self.BLOCK))
            ]
        return self._queue.pop()

    def affine(self, terms: Terms, bias: bool = False) -> np.ndarray:
        gates = self.slots[terms[0][0]][0]
        out = np.zeros((2, len(gates) * self.n))
        for slot, v in terms:
            if isinstance(v, dict):  # precomputed by ``inputs``
                out += v[slot]
                continue
            a = self.stacked[slot] @ v[0]
            out[0] += a
            out[1] += a if np.array_equal(v[0], v[1]) else self.stacked[slot] @ v[1]
        out = np.swapaxes(out.reshape(2, len(gates), self.n), 0, 1)
        return out + self._bias(gates)[:, None, :] if bias else out

    def _bias(self, gates: tuple[str, ...]) -> np.ndarray:
        return np.stack([self.fixed_bias[g] for g in gates])


class PreactivationSampler(Sampler):
    """Untied weights sampled through their exact per-unit law given Gram matrices (O(n))."""

    def inputs(self, R: float, shared: bool) -> np.ndarray:
        """Gram matrix ⟨x^a, x^b⟩/n_in (2×2) of the inputs: R/n_in times a Wishart draw."""
        d = self.width["x"]
        a2 = 2.0 * self.rng.standard_gamma(d / 2)  # chi-square with d degrees of freedom
        if shared:
            return np.full((2, 2), R * a2 / d)
        b = self.rng.standard_normal()
        c2 = 2.0 * self.rng.standard_gamma((d - 1) / 2)
        a = np.sqrt(a2)
        return (R / d) * np.array([[a2, a * b], [a * b, b * b + c2]])

    def affine(self, terms: Terms, bias: bool = False) -> np.ndarray:
        gates = self.slots[terms[0][0]][0]
        k = len(gates)
        cov = np.zeros((k, 2, 2))
        out: np.ndarray | float = 0.0
        for slot, v in terms:
            src, scale = self.slots[slot][1], self.scale[slot]
            if src == "h" and self.orthogonal:
                # Frame F = T z from two Gaussian vectors z by Gram–Schmidt (T lower triangular),
                # so that M v = s √G T z: one small matrix product instead of forming F.
                z = self.rng.standard_normal((k, 2, self.n))
                zz = np.einsum("kin,kjn->kij", z, z)
                a = np.sqrt(zz[:, 0, 0])
                proj = zz[:, 0, 1] / a
                w = np.sqrt(zz[:, 1, 1] - proj**2)
                tri = np.zeros((k, 2, 2))
                tri[:, 0, 0], tri[:, 1, 0], tri[:, 1, 1] = 1 / a, -proj / (a * w), 1 / w
                out = out + (scale[:, None, None] * sqrt_psd(v @ v.T)) @ tri @ z
                continue
            gram = v if src == "x" else v @ v.T / self.width[src]
            cov += scale[:, None, None] ** 2 * gram
        mean = np.zeros((k, 1, 1))
        if bias:
            cov += np.array([self.rho[g] ** 2 for g in gates])[:, None, None]
            mean += np.array([self.mu[g] for g in gates])[:, None, None]
        return out + mean + sqrt_psd(cov) @ self.rng.standard_normal((k, 2, self.n))


def _lstm(state: tuple[np.ndarray, ...], x: Any, s: Sampler) -> tuple[np.ndarray, ...]:
    h, c = state
    u = s.affine([("U", h), ("W", x)], bias=True)
    c = expit(u[1]) * c + expit(u[0]) * np.tanh(u[2])
    return expit(u[3]) * np.tanh(c), c


def _gru(state: tuple[np.ndarray, ...], x: Any, s: Sampler) -> tuple[np.ndarray, ...]:
    (h,) = state
    r, z = expit(s.affine([("U", h), ("W", x)], bias=True))
    # PyTorch's reset-after candidate: tanh(W_n x + b_n + r ⊙ (U_n h)).
    cand = np.tanh(s.affine([("Wn", x)], bias=True)[0] + r * s.affine([("Un", h)])[0])
    return ((1.0 - z) * cand + z * h,)


def _minimalrnn(state: tuple[np.ndarray, ...], x: Any, s: Sampler) -> tuple[np.ndarray, ...]:
    (h,) = state
    e = np.tanh(s.affine([("W", x)], bias=True)[0])
    u = expit(s.affine([("U", h), ("V", e)], bias=True)[0])
    return (u * h + (1.0 - u) * e,)


def _vanilla(state: tuple[np.ndarray, ...], x: Any, s: Sampler) -> tuple[np.ndarray, ...]:
    (h,) = state
    return (np.tanh(s.affine([("U", h), ("W", x)], bias=True)[0]),)


_STEPS = {"lstm": _lstm, "gru": _gru, "minimalrnn": _minimalrnn, "vanilla": _vanilla}


def step(
    cell: str, state: tuple[np.ndarray, ...], x: Any, sampler: Sampler
) -> tuple[np.ndarray, ...]:
    """One step of ``cell``: state ``(h,)`` or (LSTM) ``(h, c)``; x from ``sampler.inputs``."""
    return _STEPS[cell](state, x, sampler)
