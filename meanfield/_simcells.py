"""Weight samplers and one-step updates of the four cells, for :mod:`meanfield.simulate`.

The cells are those of THEORY.md §1, with the initialization of §2. Every array of states has shape
``(2, n)``: the two examples a and b, which always run through the same network.

A *sampler* hands a cell the products of its weight matrices with a pair of vectors and its biases:

- :class:`TiedSampler` draws every matrix and bias once (a real network, THEORY.md §6);
- :class:`FreshMatrixSampler` draws explicit matrices anew at every step (untied, THEORY.md §3);
- :class:`PreactivationSampler` is also untied but never forms a matrix: for a fresh Gaussian matrix M
  of variance s²/d, the pairs ((M v^a)_i, (M v^b)_i) are independent across units and bivariate normal
  with covariance s² G/d, G the 2×2 Gram matrix of (v^a, v^b). For M = s·(Haar orthogonal), M maps an
  orthonormal basis of span(v^a, v^b) to a uniformly random orthonormal 2-frame Q, so M v = s·C Q with
  any C such that C Cᵀ = G (we use C = √G). Both cost O(n) per step.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

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

#: Weight matrices of each cell: slot -> (gates, source). The source is what the matrix multiplies:
#: "x" the input (width n_in, scale sigma_k), "h" the previous state (width n, scale nu_k, may be
#: orthogonal), "e" the minimalRNN embedding (width n, scale sigma_k).
SLOTS: dict[str, dict[str, tuple[tuple[str, ...], str]]] = {
    "lstm": {"W": (CELLS["lstm"], "x"), "U": (CELLS["lstm"], "h")},
    "gru": {"W": (CELLS["gru"], "x"), "U": (CELLS["gru"], "h")},
    "minimalrnn": {"W": (("e",), "x"), "V": (("u",), "e"), "U": (("u",), "h")},
    "vanilla": {"W": (("h",), "x"), "U": (("h",), "h")},
}


def haar_orthogonal(rng: np.random.Generator, n: int) -> np.ndarray:
    """A Haar-distributed n×n orthogonal matrix: QR of a Gaussian matrix with the sign fix."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def sqrt_psd(g: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (eigh-based).

    Eigenvalues below zero (round-off of a singular Gram matrix) are clipped to zero.
    """
    w, v = np.linalg.eigh(g)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


class Sampler:
    """Common state: the cell's scales per slot, bias statistics and the random generator."""

    def __init__(self, cfg: Config, rng: np.random.Generator, n: int, n_in: int) -> None:
        self.rng = rng
        self.n = n
        self.orthogonal = cfg.weights == "orthogonal"
        self.width = {"x": n_in, "h": n, "e": n}
        self.slots = SLOTS[cfg.cell]
        self.scale = {
            slot: np.array([float(getattr(cfg[g], "nu" if src == "h" else "sigma")) for g in gates])
            for slot, (gates, src) in self.slots.items()
        }
        gates = CELLS[cfg.cell]
        self.mu = np.array([float(cfg[g].mu) for g in gates])[:, None]
        self.rho = np.array([float(cfg[g].rho) for g in gates])[:, None]

    def apply(self, slot: str, v: np.ndarray) -> np.ndarray:
        """Products (K, 2, n) of the slot's K matrices with the pair v of shape (2, d)."""
        raise NotImplementedError

    def bias(self) -> np.ndarray:
        """Biases (G, n) of all gates of the cell, in CELLS order (same for both examples)."""
        return self.mu + self.rho * self.rng.standard_normal((self.mu.shape[0], self.n))

    def _matrices(self, slot: str) -> np.ndarray:
        """Fresh explicit matrices (K, n, d) of one slot."""
        gates, src = self.slots[slot]
        d, scale = self.width[src], self.scale[slot]
        if src == "h" and self.orthogonal:
            return np.stack([s * haar_orthogonal(self.rng, self.n) for s in scale])
        z = self.rng.standard_normal((len(gates), self.n, d))
        return z * (scale / np.sqrt(d))[:, None, None]


class FreshMatrixSampler(Sampler):
    """Untied weights as explicit matrices, drawn anew at every use (each is used once per step)."""

    def apply(self, slot: str, v: np.ndarray) -> np.ndarray:
        return np.swapaxes(self._matrices(slot) @ v.T, 1, 2)


class TiedSampler(Sampler):
    """One draw of every matrix and bias, reused at every step."""

    def __init__(self, cfg: Config, rng: np.random.Generator, n: int, n_in: int) -> None:
        super().__init__(cfg, rng, n, n_in)
        # Stored transposed and stacked, (d, K n): one matrix product per slot and step.
        self.stacked = {
            slot: np.ascontiguousarray(self._matrices(slot).reshape(-1, self.width[src]).T)
            for slot, (_, src) in self.slots.items()
        }
        self.fixed_bias = super().bias()

    def apply(self, slot: str, v: np.ndarray) -> np.ndarray:
        k = len(self.slots[slot][0])
        return np.swapaxes((v @ self.stacked[slot]).reshape(2, k, self.n), 0, 1)

    def bias(self) -> np.ndarray:
        return self.fixed_bias


class PreactivationSampler(Sampler):
    """Untied weights sampled through their exact per-unit law given the Gram matrix (O(n))."""

    def apply(self, slot: str, v: np.ndarray) -> np.ndarray:
        gates, src = self.slots[slot]
        root = sqrt_psd(v @ v.T)
        z = self.rng.standard_normal((len(gates), 2, self.n))
        if src == "h" and self.orthogonal:
            # Gram–Schmidt of two Gaussian vectors: a uniformly random orthonormal 2-frame.
            q1 = z[:, 0] / np.linalg.norm(z[:, 0], axis=1, keepdims=True)
            w = z[:, 1] - np.sum(q1 * z[:, 1], axis=1, keepdims=True) * q1
            z = np.stack([q1, w / np.linalg.norm(w, axis=1, keepdims=True)], axis=1)
        else:
            root = root / np.sqrt(self.width[src])
        return self.scale[slot][:, None, None] * (root @ z)


def _lstm(state: tuple[np.ndarray, ...], x: np.ndarray, s: Sampler) -> tuple[np.ndarray, ...]:
    h, c = state
    u = s.apply("U", h) + s.apply("W", x) + s.bias()[:, None, :]
    c = expit(u[1]) * c + expit(u[0]) * np.tanh(u[2])
    return expit(u[3]) * np.tanh(c), c


def _gru(state: tuple[np.ndarray, ...], x: np.ndarray, s: Sampler) -> tuple[np.ndarray, ...]:
    (h,) = state
    rec, inp, b = s.apply("U", h), s.apply("W", x), s.bias()[:, None, :]
    r = expit(inp[0] + rec[0] + b[0])
    z = expit(inp[1] + rec[1] + b[1])
    cand = np.tanh(inp[2] + b[2] + r * rec[2])  # PyTorch: reset gate after the matmul
    return ((1.0 - z) * cand + z * h,)


def _minimalrnn(state: tuple[np.ndarray, ...], x: np.ndarray, s: Sampler) -> tuple[np.ndarray, ...]:
    (h,) = state
    b = s.bias()[:, None, :]
    e = np.tanh(s.apply("W", x)[0] + b[0])
    u = expit(s.apply("U", h)[0] + s.apply("V", e)[0] + b[1])
    return (u * h + (1.0 - u) * e,)


def _vanilla(state: tuple[np.ndarray, ...], x: np.ndarray, s: Sampler) -> tuple[np.ndarray, ...]:
    (h,) = state
    return (np.tanh(s.apply("U", h)[0] + s.apply("W", x)[0] + s.bias()[0]),)


_STEPS = {"lstm": _lstm, "gru": _gru, "minimalrnn": _minimalrnn, "vanilla": _vanilla}


def step(
    cell: str, state: tuple[np.ndarray, ...], x: np.ndarray, sampler: Sampler
) -> tuple[np.ndarray, ...]:
    """One time step of ``cell``: state ``(h,)`` or, for the LSTM, ``(h, c)``; x of shape (2, n_in)."""
    return _STEPS[cell](state, x, sampler)
