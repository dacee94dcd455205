"""Gaussian expectations of gate nonlinearities, vectorized over configurations.

``expect1(f, m, v)`` is E[f(u)] for u ~ N(m, v); ``expect2`` is E[f(u_a) g(u_b)] for a bivariate
normal. Both broadcast over arrays of means and variances, which is how the engine evaluates
thousands of configurations at once.

Why not plain Gauss–Hermite: near criticality the LSTM cell state has a standard deviation of 10 or
more, and E[tanh(c)²], E[sech(c)²] then depend on a transition of width ~1 that Gauss–Hermite nodes
(spaced ~0.2 standard deviations apart) do not resolve. We integrate over z ~ N(0, 1) on [-L, L]
with Gauss–Legendre panels split where the argument m + s z crosses ±A, the region where the
nonlinearity is not yet flat; each panel is then smooth and converges spectrally whatever the
variance. Where the standard deviation is small enough for the integrand to be smooth on the scale
of the density (``Activation.gh_sd``), a fixed 40-node Gauss–Hermite rule is used instead: it
is cheaper.

For weakly correlated pairs, |ρ| ≤ ``MEHLER_MAX_RHO``, ``expect2`` uses Mehler's expansion
E[f(u_a) g(u_b)] = Σ_k ρ^k a_k b_k with a_k = E[f(m_a + s_a z) He_k(z)]/√k!; by Cauchy–Schwarz its
truncation error is below |ρ|^(K+1) √(E[f²] E[g²]), whatever f and g are. Within 2e-5 of ρ = 1 it
uses Price's theorem, ∂E/∂cov = E[f'(u_a) g'(u_b)], at perfect correlation (1-D). Otherwise it nests
two 1-D rules: u_a = m_a + s_a z₁, and u_b | z₁ is normal.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from functools import cache

import numpy as np
from numpy.polynomial.hermite_e import hermegauss
from numpy.polynomial.legendre import leggauss

__all__ = [
    "SIGMOID",
    "SIGMOID_NEG",
    "TANH",
    "Activation",
    "expect1",
    "expect2",
    "expect_many",
    "mehler_coefficients",
]

#: Half-length of the integration range in standard deviations (mass outside: 2e-19).
L = 9.0
#: Gauss–Legendre nodes per panel (six panels) for 1-D expectations.
ORDER_1D = 16
#: Nodes per panel of the outer (shared-factor) integral of direct 2-D expectations.
ORDER_2D = 16
#: Mehler expansion: highest order and largest |ρ| for which it is used (tail < 0.4^25 ≈ 1e-10).
MEHLER_ORDER = 24
MEHLER_MAX_RHO = 0.4
#: Gauss–Hermite nodes for smooth integrands (standard deviation below ``Activation.gh_sd``).
GH_ORDER = 64
#: Correlations within this gap of 1 use the first-order expansion at ρ = 1 (error O(gap²)).
TAYLOR_MAX_GAP = 2e-5
#: Configurations per chunk in 2-D rules (bounds peak memory).
CHUNK = 512


class Activation:
    """A scalar nonlinearity, the half-width A of the region where it is not flat, the largest
    standard deviation for which a fixed Gauss–Hermite rule is accurate (≲1e-7), and optionally
    its derivative (used at perfect correlation, Price's theorem)."""

    __slots__ = ("deriv", "fn", "gh_sd", "name", "width")

    def __init__(
        self,
        name: str,
        fn: Callable[[np.ndarray], np.ndarray],
        width: float,
        gh_sd: float,
        deriv: Activation | None = None,
    ) -> None:
        self.name = name
        self.fn = fn
        self.width = width
        self.gh_sd = gh_sd
        self.deriv = deriv

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.fn(x)

    def __repr__(self) -> str:
        return f"Activation({self.name})"


def _sech2(x: np.ndarray) -> np.ndarray:
    return 1.0 - np.tanh(x) ** 2


def sigmoid_pair(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """σ(x) and 1 - σ(x) = σ(-x), both with full relative precision (numpy's tanh and exp are
    several times faster than scipy's expit)."""
    x = np.asarray(x, float)
    a = np.abs(x)
    big = 0.5 * (1.0 + np.tanh(0.5 * a))  # σ(|x|)
    small = np.exp(-a) * big  # σ(-|x|) = e^{-|x|} σ(|x|), no cancellation
    pos = x >= 0
    return np.where(pos, big, small), np.where(pos, small, big)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """σ(x) to full absolute precision (relative precision is lost only where σ < 1e-16 or so;
    use :func:`sigmoid_pair` or :func:`sigmoid_neg` where small values matter relatively)."""
    return 0.5 + 0.5 * np.tanh(0.5 * np.asarray(x, float))


def sigmoid_neg(x: np.ndarray) -> np.ndarray:
    """1 - σ(x) = σ(-x)."""
    return sigmoid_pair(x)[1]


def _dsigmoid(x: np.ndarray) -> np.ndarray:
    s, n = sigmoid_pair(x)
    return s * n


DTANH = Activation("tanh'", _sech2, 8.0, 1.2)
DSIGMOID = Activation("sigmoid'", _dsigmoid, 16.0, 2.0)
TANH = Activation("tanh", np.tanh, 8.0, 1.5, DTANH)
SIGMOID = Activation("sigmoid", sigmoid, 16.0, 2.0, DSIGMOID)
SIGMOID_NEG = Activation(
    "1-sigmoid",
    sigmoid_neg,
    16.0,
    2.0,
    Activation("-sigmoid'", lambda x: -_dsigmoid(x), 16.0, 2.0),
)


def product(*acts: Activation, name: str | None = None) -> Activation:
    """Pointwise product of activations of the same argument (e.g. σ(u)², σ(u)(1-σ(u)))."""

    def fn(x: np.ndarray) -> np.ndarray:
        out = acts[0](x)
        for a in acts[1:]:
            out = out * a(x)
        return out

    return Activation(
        name or "*".join(a.name for a in acts),
        fn,
        max(a.width for a in acts),
        # quartic products oscillate faster between Hermite nodes: a smaller smooth range
        min(a.gh_sd for a in acts) * (1.0 if len(acts) <= 2 else 0.75),
    )


def power(act: Activation, p: int) -> Activation:
    return product(*([act] * p), name=f"{act.name}^{p}")


@cache
def _legendre(order: int) -> tuple[np.ndarray, np.ndarray]:
    return leggauss(order)


_FIXED_EDGES = np.array([-L, -3.0, 3.0, L])
_INV_SQRT_2PI = 1.0 / np.sqrt(2 * np.pi)


def _panel_rule(mean: np.ndarray, sd: np.ndarray, width: float, order: int):
    """Nodes z and weights (standard normal density included), shape ``mean.shape + (6*order,)``.

    Six Gauss–Legendre panels on [-L, L], cut at z = ±3 (the bulk of the density) and where the
    argument mean + sd·z equals -width, 0 and +width (the nonlinearity's transition).
    """
    x, w = _legendre(order)
    shape = mean.shape
    pos = sd > 0
    all_pos = pos.all()
    safe = sd if all_pos else np.where(pos, sd, 1.0)
    cuts = np.clip((np.array([-width, 0.0, width]) - mean[..., None]) / safe[..., None], -L, L)
    if not all_pos:
        cuts = np.where(pos[..., None], cuts, L)
    edges = np.concatenate([np.broadcast_to(_FIXED_EDGES, (*shape, 4)), cuts], axis=-1)
    edges.sort(axis=-1)  # (..., 7)
    half = 0.5 * np.diff(edges, axis=-1)[..., None]  # (..., 6, 1)
    z = (edges[..., :-1, None] + half * (x + 1)).reshape(*shape, -1)
    wt = (half * w).reshape(*shape, -1) * np.exp(-0.5 * z * z) * _INV_SQRT_2PI
    return z, wt


def expect1(act: Activation, mean, var, order: int = ORDER_1D) -> np.ndarray:
    """E[act(u)] for u ~ N(mean, var), broadcast over arrays."""
    mean, var = np.broadcast_arrays(np.asarray(mean, float), np.asarray(var, float))
    sd = np.sqrt(np.maximum(var, 0.0))
    smooth = sd <= act.gh_sd
    if smooth.all():
        x, w = _hermite(GH_ORDER)
        return act(mean[..., None] + sd[..., None] * x) @ w
    if not smooth.any():
        z, wt = _panel_rule(mean, sd, act.width, order)
        return np.sum(wt * act(mean[..., None] + sd[..., None] * z), axis=-1)
    out = np.empty(mean.shape)
    if smooth.any():
        x, w = _hermite(GH_ORDER)
        out[smooth] = act(mean[smooth][:, None] + sd[smooth][:, None] * x) @ w
    rough = ~smooth
    m, s = mean[rough], sd[rough]
    z, wt = _panel_rule(m, s, act.width, order)
    out[rough] = np.sum(wt * act(m[:, None] + s[:, None] * z), axis=-1)
    return out


def expect_many(
    fn: Callable[[np.ndarray], tuple[np.ndarray, ...]],
    mean,
    var,
    like: Activation,
    order: int = ORDER_1D,
) -> tuple[np.ndarray, ...]:
    """(E[f₁(u)], E[f₂(u)], …) for u ~ N(mean, var) and ``fn(u) = (f₁(u), f₂(u), …)``.

    One quadrature rule (that of ``like``: its width and smooth range) serves every function, so
    the nonlinearity is evaluated once per node however many of its moments are needed.
    """
    mean, var = np.broadcast_arrays(np.asarray(mean, float), np.asarray(var, float))
    shape = mean.shape
    mean, sd = mean.reshape(-1), np.sqrt(np.maximum(var.reshape(-1), 0.0))
    smooth = sd <= like.gh_sd
    x, w = _hermite(GH_ORDER)
    if smooth.all():
        vals = fn(mean[:, None] + sd[:, None] * x)
        return tuple((v @ w).reshape(shape) for v in vals)
    outs: list[np.ndarray] | None = None
    for part in (smooth, ~smooth):
        if not part.any():
            continue
        m, s = mean[part], sd[part]
        if part is smooth:
            vals = fn(m[:, None] + s[:, None] * x)
            res = [v @ w for v in vals]
        else:
            z, wt = _panel_rule(m, s, like.width, order)
            vals = fn(m[:, None] + s[:, None] * z)
            res = [np.sum(wt * v, axis=-1) for v in vals]
        if outs is None:
            outs = [np.empty(mean.shape) for _ in res]
        for o, r in zip(outs, res, strict=True):
            o[part] = r
    assert outs is not None
    return tuple(o.reshape(shape) for o in outs)


_COEFF_CACHE: OrderedDict = OrderedDict()
_COEFF_CACHE_SIZE = 24


@cache
def _hermite_matrix(order: int, kmax: int) -> np.ndarray:
    """He_k(x_i)/√k! at the Gauss–Hermite nodes, shape (order, kmax+1)."""
    x, _ = _hermite(order)
    h = np.empty((order, kmax + 1))
    h[:, 0] = 1.0
    h[:, 1] = x
    for k in range(1, kmax):
        h[:, k + 1] = (x * h[:, k] - np.sqrt(k) * h[:, k - 1]) / np.sqrt(k + 1)
    return h


def _mehler_coefficients(
    act: Activation, mean: np.ndarray, sd: np.ndarray, order: int = MEHLER_ORDER
) -> np.ndarray:
    """a_k = E[act(mean + sd z) He_k(z)] / √k!, k = 0..order; shape (*mean.shape, order + 1).

    Cached: a fixed-point solve evaluates the same marginals at many correlations.
    """
    key = (act.name, order, mean.shape, mean.tobytes(), sd.tobytes())
    hit = _COEFF_CACHE.get(key)
    if hit is not None:
        _COEFF_CACHE.move_to_end(key)
        return hit
    out = np.empty((*mean.shape, order + 1))
    smooth = sd <= act.gh_sd
    if smooth.any():
        x, w = _hermite(GH_ORDER)
        fw = act(mean[smooth][:, None] + sd[smooth][:, None] * x) * w
        out[smooth] = fw @ _hermite_matrix(GH_ORDER, order)
    rough = ~smooth
    if rough.any():
        m, s = mean[rough], sd[rough]
        z, w = _panel_rule(m, s, act.width, ORDER_1D)
        fw = w * act(m[:, None] + s[:, None] * z)
        h_prev, h = np.zeros_like(z), np.ones_like(z)
        res = np.empty((m.size, order + 1))
        for k in range(order + 1):
            res[:, k] = np.sum(fw * h, axis=-1)
            h_prev, h = h, (z * h - np.sqrt(k) * h_prev) / np.sqrt(k + 1)
        out[rough] = res
    _COEFF_CACHE[key] = out
    if len(_COEFF_CACHE) > _COEFF_CACHE_SIZE:
        _COEFF_CACHE.popitem(last=False)
    return out


def mehler_coefficients(act: Activation, mean, var, order: int = MEHLER_ORDER) -> np.ndarray:
    """The Hermite coefficients a_k = E[act(u) He_k(z)]/√k!, u = mean + √var·z, k = 0..``order``
    (default :data:`MEHLER_ORDER`), shape ``(*shape, order + 1)``: what :func:`expect2` sums for a
    weakly correlated pair. A caller that meets the same marginals many times (or can interpolate
    them, as the GRU's candidate in the reset gate) computes them once and passes them to
    :func:`expect2`."""
    mean, var = np.broadcast_arrays(np.asarray(mean, float), np.asarray(var, float))
    sd = np.sqrt(np.maximum(var, 0.0)).reshape(-1)
    out = _mehler_coefficients(act, np.ascontiguousarray(mean.reshape(-1)), sd, order)
    return out.reshape(*mean.shape, order + 1)


def _mehler(fa, fb, ma, sa, mb, sb, rho, a=None, b=None):
    """Σ_k ρ^k a_k b_k (Horner), |ρ| ≤ MEHLER_MAX_RHO; ``a``, ``b`` the coefficients when the
    caller has them."""
    if a is None:
        a = _mehler_coefficients(fa, ma, sa)
    if b is None:
        b = a if (fb is fa and ma is mb and sa is sb) else _mehler_coefficients(fb, mb, sb)
    K = a.shape[-1] - 1
    if rho.size <= 256:  # few configurations: one vectorized sum beats a Python loop
        return np.sum(a * b * rho[:, None] ** np.arange(K + 1), axis=-1)
    ab = (a * b).T  # (K+1, N): rows contiguous for the loop
    acc = ab[K].copy()
    for k in range(K - 1, -1, -1):
        acc *= rho
        acc += ab[k]
    return acc


def _direct2(fa, fb, ma, sa, mb, sb, rho, order):
    """Correlated pair by a shared factor z₀: z_a = √|ρ| z₀ + √(1-|ρ|) z₁ and
    z_b = ±√|ρ| z₀ + √(1-|ρ|) z₂ (the sign of ρ).

    Given z₀ the two factors are independent, E[fa fb | z₀] = Fa(z₀) Fb(z₀) with Fa, Fb Gaussian
    smoothings of fa, fb of standard deviation s·√(1-|ρ|) (1-D rules, Gauss–Hermite when that is
    small). The outer integral over z₀ uses fa's panels. Unlike a nested rule on (z_a, z_b | z_a),
    this stays accurate as ρ → 1, where the conditional law is narrow.
    """
    r = np.sqrt(np.abs(rho))
    rb = np.where(rho < 0, -r, r)
    q = np.sqrt(np.maximum(1.0 - np.abs(rho), 0.0))
    z0, w0 = _panel_rule(ma, sa * r, fa.width, order)  # (N, P)
    inner_a = _smoothing(fa, ma[:, None] + (sa * r)[:, None] * z0, sa * q)
    inner_b = _smoothing(fb, mb[:, None] + (sb * rb)[:, None] * z0, sb * q)
    return np.sum(w0 * inner_a * inner_b, axis=-1)


#: Gauss–Hermite orders for narrow smoothings, by the largest standard deviation they serve as a
#: fraction of the activation's smooth range (errors ≲ 1e-12 on the sigmoid and tanh families).
_NARROW_GH = ((0.25, 16), (0.5, 32))


def _smoothing(act: Activation, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """E[act(mean + sd z)] for means (N, P) and one sd per row (N,): fewer Hermite nodes for the
    rows whose smoothing is narrow (the common case of a correlation near 1)."""
    out = np.empty(mean.shape)
    todo = np.ones(sd.shape, bool)
    for frac, order in _NARROW_GH:
        rows = todo & (sd <= frac * act.gh_sd)
        if rows.any():
            x, w = _hermite(order)
            out[rows] = act(mean[rows][..., None] + sd[rows][:, None, None] * x) @ w
            todo &= ~rows
    if todo.any():
        out[todo] = expect1(act, mean[todo], (sd[todo] ** 2)[:, None])
    return out


def _price(fa, fb, ma, sa, mb, sb) -> tuple[np.ndarray, np.ndarray]:
    """E[fa(u_a) fb(u_b)] and E[fa'(u_a) fb'(u_b)] at perfect correlation, z shared.

    The rule is the one :func:`expect1` uses for the product fa·fb, so that a pair at ρ = 1 equals
    the single-example moment exactly (two examples in the same state must stay in it).
    """
    prod = product(fa, fb)
    e0, e1 = np.empty(ma.shape), np.empty(ma.shape)
    smooth = sa <= prod.gh_sd
    for part in (smooth, ~smooth):
        if not part.any():
            continue
        m_a, s_a, m_b, s_b = ma[part], sa[part], mb[part], sb[part]
        if part is smooth:
            z, w = _hermite(GH_ORDER)
            z, w = np.broadcast_to(z, (m_a.size, z.size)), np.broadcast_to(w, (m_a.size, w.size))
        else:
            z, w = _panel_rule(m_a, s_a, prod.width, ORDER_1D)
        ua, ub = m_a[:, None] + s_a[:, None] * z, m_b[:, None] + s_b[:, None] * z
        e0[part] = np.sum(w * fa(ua) * fb(ub), axis=-1)
        e1[part] = np.sum(w * fa.deriv(ua) * fb.deriv(ub), axis=-1)
    return e0, e1


def expect2(
    fa: Activation,
    fb: Activation,
    mean_a,
    var_a,
    mean_b,
    var_b,
    cov,
    order: int = ORDER_2D,
    coefficients: tuple[np.ndarray, np.ndarray] | None = None,
    max_rho: float = MEHLER_MAX_RHO,
) -> np.ndarray:
    """E[fa(u_a) fb(u_b)] for (u_a, u_b) bivariate normal, broadcast over arrays.

    ``coefficients``: the two marginals' :func:`mehler_coefficients`, shapes ``(*shape, K+1)``,
    when the caller has them (they are then not computed here); ``max_rho``: the largest |ρ|
    summed by Mehler's expansion, which only a longer expansion than the default may raise."""
    arrays = np.broadcast_arrays(
        *(np.asarray(a, float) for a in (mean_a, var_a, mean_b, var_b, cov))
    )
    shape = arrays[0].shape
    ma, va, mb, vb, c = (a.reshape(-1) for a in arrays)
    sa, sb = np.sqrt(np.maximum(va, 0.0)), np.sqrt(np.maximum(vb, 0.0))
    denom = sa * sb
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.where(denom > 0, c / denom, 0.0)
    rho = np.clip(rho, -1.0, 1.0)
    out = np.empty(ma.shape)
    weak = np.abs(rho) <= max_rho
    near_one = (rho >= 1.0 - TAYLOR_MAX_GAP) & (fa.deriv is not None) & (fb.deriv is not None)
    ca = cb = None
    if coefficients is not None:
        K1 = coefficients[0].shape[-1]
        ca, cb = (np.broadcast_to(k, (*shape, K1)).reshape(-1, K1) for k in coefficients)
    if weak.all():  # the common case (independent inputs): no masking
        return _mehler(fa, fb, ma, sa, mb, sb, rho, ca, cb).reshape(shape)
    if weak.any():
        out[weak] = _mehler(
            fa, fb, ma[weak], sa[weak], mb[weak], sb[weak], rho[weak],
            None if ca is None else ca[weak], None if cb is None else cb[weak],
        )  # fmt: skip
    if near_one.any():
        # Price's theorem at perfect correlation: E(cov) ≈ E(sa sb) + (cov - sa sb) E[fa' fb'].
        j = near_one
        e0, e1 = _price(fa, fb, ma[j], sa[j], mb[j], sb[j])
        out[j] = e0 + (c[j] - sa[j] * sb[j]) * e1
    rest = ~(weak | near_one)
    if rest.any():
        idx = np.flatnonzero(rest)
        for s in range(0, idx.size, CHUNK):
            j = idx[s : s + CHUNK]
            out[j] = _direct2(fa, fb, ma[j], sa[j], mb[j], sb[j], rho[j], order)
    return out.reshape(shape)


def rule(mean, var, width: float = TANH.width, order: int = ORDER_1D):
    """The 1-D rule of :func:`expect1` as (points u, weights), shape ``mean.shape + (6*order,)``.

    Use it to integrate several functions of the same Gaussian variable, or to nest rules.
    """
    mean, var = np.broadcast_arrays(np.asarray(mean, float), np.asarray(var, float))
    sd = np.sqrt(np.maximum(var, 0.0))
    z, w = _panel_rule(mean, sd, width, order)
    return mean[..., None] + sd[..., None] * z, w


def pair_rule(mean_a, var_a, mean_b, var_b, cov, width_a: float, width_b: float, order: int):
    """Nested 2-D rule for a bivariate normal: points (u_a, u_b) and weights, shape (..., P, P)."""
    ma, va, mb, vb, c = np.broadcast_arrays(
        *(np.asarray(a, float) for a in (mean_a, var_a, mean_b, var_b, cov))
    )
    sa, sb = np.sqrt(np.maximum(va, 0.0)), np.sqrt(np.maximum(vb, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.clip(np.where(sa * sb > 0, c / (sa * sb), 0.0), -1.0, 1.0)
    z1, w1 = _panel_rule(ma, sa, width_a, order)
    ua = ma[..., None] + sa[..., None] * z1
    cmean = mb[..., None] + (sb * rho)[..., None] * z1
    csd = np.broadcast_to((sb * np.sqrt(1.0 - rho * rho))[..., None], cmean.shape)
    z2, w2 = _panel_rule(cmean, csd, width_b, order)
    ub = cmean[..., None] + csd[..., None] * z2
    return np.broadcast_to(ua[..., None], ub.shape), ub, w1[..., None] * w2


@cache
def _hermite(order: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = hermegauss(order)
    return x, w / np.sqrt(2 * np.pi)


def smooth_pair_rule(mean, var, cov, order: int = 12, symmetric: bool = False):
    """Tensor Gauss–Hermite rule for a bivariate normal with equal marginals, for smooth
    integrands (the GRU reset gate): points (u_a, u_b) and weights, shape (..., order²).

    The rule lies on the principal axes, u_a,b = mean + sd (α z₁ ± β z₂) with α² = (1 + ρ)/2 and
    β² = (1 − ρ)/2, so the mirror z₂ → −z₂ swaps u_a and u_b. With ``symmetric`` (an integrand
    symmetric in a ↔ b; ``order`` even) only the nodes z₂ > 0 are kept, with twice the weight:
    the same integral from half the points, shape (..., order²/2).
    """
    mean, var, cov = np.broadcast_arrays(*(np.asarray(a, float) for a in (mean, var, cov)))
    x, w = _hermite(order)
    sd = np.sqrt(np.maximum(var, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.clip(np.where(sd > 0, cov / np.maximum(var, 1e-300), 0.0), -1.0, 1.0)
    x2, w2 = x, w
    if symmetric:
        if order % 2:
            raise ValueError(f"a symmetric pair rule needs an even order, not {order}")
        x2, w2 = x[x > 0], 2.0 * w[x > 0]
    z1, z2 = np.repeat(x, x2.size), np.tile(x2, order)
    ww = np.repeat(w, x2.size) * np.tile(w2, order)
    m, s, r = mean[..., None], sd[..., None], rho[..., None]
    along, across = s * np.sqrt((1.0 + r) / 2.0) * z1, s * np.sqrt((1.0 - r) / 2.0) * z2
    return m + along + across, m + along - across, ww


def smooth_rule(mean, var, order: int = 24):
    """Gauss–Hermite rule for smooth integrands: points and weights, shape (..., order)."""
    mean, var = np.broadcast_arrays(np.asarray(mean, float), np.asarray(var, float))
    x, w = _hermite(order)
    return mean[..., None] + np.sqrt(np.maximum(var, 0.0))[..., None] * x, w
