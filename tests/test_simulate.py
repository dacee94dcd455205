"""Tests of the finite-width simulator (meanfield/simulate.py, docs/theory.md §1-3, §6)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from meanfield._simcells import PreactivationSampler, TiedSampler, sqrt_psd, step
from meanfield.errors import MeanFieldError
from meanfield.params import CELLS, MEMORY_GATE, Config, Inputs
from meanfield.simulate import SimulationResult, draw_recurrent, fit_timescale, simulate


def _config(cell: str, weights: str = "gaussian", **values: object) -> Config:
    gate = MEMORY_GATE[cell]
    base: dict[str, object] = {f"mu_{gate}": 1.0} if gate else {}
    return Config.from_flat(cell, base | values, weights=weights)


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("tied", [False, True])
def test_shapes(cell: str, tied: bool) -> None:
    r = simulate(_config(cell), Inputs(1.0), n=40, steps=7, seeds=(0, 1, 2), tied=tied)
    for name in ("q", "q_b", "q_ab", "m", "corr"):
        assert getattr(r, name).shape == (3, 8)
        assert r.mean(name).shape == (8,)
    lstm_only = (r.s, r.s_ab, r.cm)
    if cell == "lstm":
        assert all(a is not None and a.shape == (3, 8) for a in lstm_only)
    else:
        assert all(a is None for a in lstm_only)
        with pytest.raises(MeanFieldError):
            r.mean("s")
    assert np.all(r.q[:, 0] == 0)  # zero start
    assert np.all(r.q[:, 1:] > 0)


@pytest.mark.parametrize("tied", [False, True])
def test_seeds_reproducible_and_independent(tied: bool) -> None:
    cfg, inputs = _config("gru", rho=0.3), Inputs(1.0)
    a = simulate(cfg, inputs, n=50, steps=10, seeds=(0, 1), tied=tied)
    b = simulate(cfg, inputs, n=50, steps=10, seeds=(0, 1), tied=tied)
    c = simulate(cfg, inputs, n=50, steps=10, seeds=(1,), tied=tied)
    assert np.array_equal(a.q, b.q) and np.array_equal(a.q_ab, b.q_ab)
    assert not np.array_equal(a.q[0], a.q[1])
    assert np.array_equal(a.q[1], c.q[0])  # each seed is its own run


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("regime", ["independent", "shared"])
def test_identical_start(cell: str, tied: bool, regime: str) -> None:
    kw = {"n": 60, "steps": 20, "start": "identical", "burn_in": 30, "tied": tied}
    r = simulate(_config(cell, rho=0.2), Inputs(1.0, regime), **kw)
    assert np.all(r.corr[:, 0] == 1.0)
    assert r.q[0, 0] > 0
    if regime == "shared":  # the same inputs keep the examples together (singular Gram matrices)
        np.testing.assert_allclose(r.corr, 1.0, atol=1e-9)
    else:
        assert r.corr[0, -1] < 0.9


def test_independent_start_decorrelates() -> None:
    cfg = _config("vanilla", nu=1.0, rho=0.0)
    r = simulate(cfg, Inputs(1.0), n=400, steps=5, seeds=(0, 1), start="independent", burn_in=50)
    assert np.all(np.abs(r.corr[:, 0]) < 0.2)
    with pytest.raises(MeanFieldError) as err:  # zero inputs cannot decorrelate two zero states
        simulate(cfg, Inputs(0.0), n=40, steps=5, start="independent")
    assert err.value.field == "start"


def _reference_step(cell: str, s: TiedSampler, h: np.ndarray, c: np.ndarray, x: np.ndarray):
    """One step written directly from docs/theory.md §1, with the tied sampler's matrices."""
    n = h.shape[1]

    def lin(slot: str, v: np.ndarray, k: int = 0) -> np.ndarray:
        return v @ s.stacked[slot][k * n : (k + 1) * n].T

    b = s.fixed_bias
    if cell == "lstm":
        u = {g: lin("U", h, k) + lin("W", x, k) + b[g] for k, g in enumerate("ifgo")}
        c = expit(u["f"]) * c + expit(u["i"]) * np.tanh(u["g"])
        return expit(u["o"]) * np.tanh(c), c
    if cell == "gru":
        r = expit(lin("W", x, 0) + lin("U", h, 0) + b["r"])
        z = expit(lin("W", x, 1) + lin("U", h, 1) + b["z"])
        cand = np.tanh(lin("Wn", x) + b["n"] + r * lin("Un", h))
        return (1 - z) * cand + z * h, None
    if cell == "minimalrnn":
        e = np.tanh(lin("W", x) + b["e"])
        u = expit(lin("U", h) + lin("V", e) + b["u"])
        return u * h + (1 - u) * e, None
    return np.tanh(lin("W", x) + lin("U", h) + b["h"]), None


@pytest.mark.parametrize("cell", list(CELLS))
def test_cell_equations(cell: str) -> None:
    n, n_in = 30, 17
    cfg = _config(cell, rho=0.5, sigma=1.2, nu=0.9)
    s = TiedSampler(cfg, np.random.default_rng(3), n, n_in)
    rng = np.random.default_rng(4)
    h, c, x = rng.uniform(-1, 1, (2, n)), rng.normal(0, 2, (2, n)), rng.normal(0, 1, (2, n_in))
    got = step(cell, (h, c) if cell == "lstm" else (h,), x, s)
    want_h, want_c = _reference_step(cell, s, h, c, x)
    np.testing.assert_allclose(got[0], want_h, rtol=1e-12, atol=1e-12)
    if cell == "lstm":
        np.testing.assert_allclose(got[1], want_c, rtol=1e-12, atol=1e-12)


def test_preactivation_sampler_covariance() -> None:
    """Pre-activations have mean mu and covariance sigma² G_x/n_in + nu² G_h/n + rho² per gate."""
    n, n_in = 200_000, 30
    values = {
        "mu_i": 0.5,
        "mu_f": -1,
        "mu_o": 2,
        "sigma": 1.3,
        "nu": 0.7,
        "rho_f": 0.6,
        "nu_g": 1.5,
    }
    cfg = Config.from_flat("lstm", values | {"sigma_o": 0.0})
    rng = np.random.default_rng(5)
    x = rng.normal(0, 1, (2, n_in))
    x[1] = 0.8 * x[0] + 0.6 * x[1]
    h = np.stack([rng.normal(0, 0.5, n), np.zeros(n)])
    h[1] = 0.6 * h[0] + rng.normal(0, 0.3, n)
    s = PreactivationSampler(cfg, rng, n, n_in)
    u = s.affine([("U", h), ("W", x @ x.T / n_in)], bias=True)
    for k, g in enumerate(CELLS["lstm"]):
        p = cfg[g]
        want = p.sigma**2 * x @ x.T / n_in + p.nu**2 * h @ h.T / n + p.rho**2
        sd = np.sqrt(np.diag(want))
        tol = 5 * np.sqrt((np.outer(sd, sd) ** 2 + want**2) / n)  # 5 standard errors
        np.testing.assert_allclose(u[k].mean(axis=1), p.mu, atol=5 * sd.max() / np.sqrt(n))
        assert np.all(np.abs(np.cov(u[k]) - want) < tol)
        assert want[0, 1] > 0.05


@pytest.mark.parametrize("shared", [False, True])
def test_input_gram_is_wishart(shared: bool) -> None:
    """The pre-activation sampler draws ⟨x^a, x^b⟩/n_in directly; compare with explicit inputs."""
    R, d, draws = 2.0, 5, 20_000
    s = PreactivationSampler(_config("vanilla"), np.random.default_rng(10), 3, d)
    grams = np.stack([s.inputs(R, shared) for _ in range(draws)])
    x = np.random.default_rng(11).normal(0, np.sqrt(R), (draws, 2, d))
    if shared:
        x[:, 1] = x[:, 0]
    ref = x @ np.swapaxes(x, 1, 2) / d
    sd = np.sqrt(2 * R**2 / d / draws)
    np.testing.assert_allclose(grams.mean(axis=0), ref.mean(axis=0), atol=8 * sd)
    np.testing.assert_allclose(grams.var(axis=0), ref.var(axis=0), rtol=0.08)


def test_orthogonal_preactivation_is_a_rotation() -> None:
    """Untied orthogonal U h^a, U h^b keep norms and inner product exactly, even when degenerate."""
    n, nu = 500, 1.7
    cfg = _config("minimalrnn", "orthogonal", nu=nu)
    s = PreactivationSampler(cfg, np.random.default_rng(6), n, n)
    rng = np.random.default_rng(7)
    ha = rng.normal(0, 1, n)
    for h in (np.stack([ha, rng.normal(0, 1, n)]), np.stack([ha, -2 * ha]), np.zeros((2, n))):
        uh = s.affine([("U", h)])[0]
        np.testing.assert_allclose(uh @ uh.T, nu**2 * h @ h.T, rtol=1e-10, atol=1e-10)
    singular = np.array([[4.0, 4.0], [4.0, 4.0]])
    np.testing.assert_allclose(sqrt_psd(singular), np.full((2, 2), 2**0.5))


@pytest.mark.parametrize(
    ("cell", "weights", "n", "steps"),
    [("lstm", "gaussian", 120, 200), ("gru", "gaussian", 120, 200), ("gru", "orthogonal", 60, 60)],
)
def test_preactivation_matches_matrices(cell: str, weights: str, n: int, steps: int) -> None:
    """Both untied modes sample the same law; compare time-averaged moments (n_in ≠ n)."""
    cfg = _config(cell, weights, nu=1.5, rho=0.5)
    kw = {"n": n, "n_in": n // 2, "steps": steps}
    exact = simulate(cfg, Inputs(1.0), seeds=range(30), **kw)
    explicit = simulate(cfg, Inputs(1.0), seeds=(0, 1), mode="matrices", **kw)
    for name in ("q", "s") if cell == "lstm" else ("q",):
        want, got = getattr(exact, name)[:, 10:].mean(), getattr(explicit, name)[:, 10:].mean()
        assert got == pytest.approx(want, rel=0.05), name
    corr_exact, corr_explicit = exact.corr[:, 10:].mean(), explicit.corr[:, 10:].mean()
    assert corr_explicit == pytest.approx(corr_exact, abs=0.03)


def test_vanilla_zero_inputs_order_and_chaos() -> None:
    kw = {"n": 400, "steps": 60, "start": "identical", "burn_in": 20, "burn_in_R": 1.0}
    ordered = simulate(Config.from_flat("vanilla", {"nu": 0.5}), Inputs(0.0), **kw)
    assert ordered.q[0, 0] > 0.1 and ordered.q[0, -1] < 1e-12
    chaotic = simulate(Config.from_flat("vanilla", {"nu": 2.0}), Inputs(0.0), **kw)
    assert 0.2 < chaotic.q[0, -10:].mean() < 1.0


def test_draw_recurrent() -> None:
    rng = np.random.default_rng(8)
    u = draw_recurrent(rng, 300, 1.7, "orthogonal")
    np.testing.assert_allclose(u @ u.T, 1.7**2 * np.eye(300), atol=1e-10)
    g = draw_recurrent(rng, 300, 1.7, "gaussian")
    assert g.var() == pytest.approx(1.7**2 / 300, rel=0.02)
    assert not np.allclose(g @ g.T, 1.7**2 * np.eye(300), atol=0.1)
    with pytest.raises(MeanFieldError):
        draw_recurrent(rng, 3, 1.0, "uniform")


def test_tied_reuses_weights() -> None:
    cfg = Config.from_flat("vanilla", {"nu": 0.0, "sigma": 0.0, "rho": 1.0})  # h_t = tanh(b)
    tied = simulate(cfg, Inputs(1.0), n=50, steps=6, tied=True)
    untied = simulate(cfg, Inputs(1.0), n=50, steps=6)
    assert np.all(tied.q[0, 1:] == tied.q[0, 1])
    assert np.ptp(untied.q[0, 1:]) > 1e-3


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("tied", [False, True])
def test_states_bounded(cell: str, tied: bool) -> None:
    """Gates in [0, 1] keep |h| ≤ 1 however large the weights (the LSTM cell state is unbounded)."""
    cfg = _config(cell, nu=4.0, sigma=4.0, rho=2.0, mu=3.0)
    r = simulate(cfg, Inputs(4.0), n=80, steps=40, tied=tied)
    assert r.q.max() <= 1.0 and r.q_b.max() <= 1.0 and np.abs(r.m).max() <= 1.0
    if cell == "lstm":
        assert r.s.max() > 1.0


def test_fit_timescale() -> None:
    t = np.arange(300)
    noise = np.random.default_rng(9).normal(0, 0.02, t.size)
    y = 0.3 + 0.5 * np.exp(-t / 15.0) * (1 + noise)
    assert fit_timescale(y, 0.3, lo=1e-4, hi=0.4) == pytest.approx(15.0, rel=0.03)
    assert np.isnan(fit_timescale(y[:4], 0.3, lo=1e-4, hi=1.0))  # too few points
    assert np.isnan(fit_timescale(0.3 + np.exp(t / 50), 0.3, lo=0.1, hi=10))  # growing
    with pytest.raises(MeanFieldError):
        fit_timescale(y, 0.3, lo=0.0, hi=1.0)


def test_invalid_arguments() -> None:
    with pytest.raises(MeanFieldError) as err:
        simulate(Config.from_flat("lstm", {"mu_f": [1.0, 2.0]}), Inputs(1.0), n=10, steps=2)
    assert err.value.field == "config"
    one = simulate(Config.from_flat("lstm", {"mu_f": [2.0]}), Inputs(1.0), n=10, steps=2)
    assert one.q.shape == (1, 3)  # a grid of one configuration is fine
    cfg = _config("lstm")
    for kwargs, field in [
        ({"tied": True, "mode": "preactivation"}, "mode"),
        ({"mode": "exact"}, "mode"),
        ({"start": "random"}, "start"),
        ({"n": 0}, "n"),
        ({"seeds": ()}, "seeds"),
        ({"seeds": 3}, "seeds"),
        ({"seeds": (-1,)}, "seeds"),
        ({"burn_in": 5}, "burn_in"),
    ]:
        with pytest.raises(MeanFieldError) as err:
            simulate(cfg, Inputs(1.0), steps=2, **kwargs)
        assert err.value.field == field


def test_result_fields() -> None:
    q, q_b, q_ab = np.array([[0.0, 1.0]]), np.array([[0.0, 4.0]]), np.array([[0.0, 1.0]])
    r = SimulationResult(q=q, q_b=q_b, q_ab=q_ab, m=np.zeros((1, 2)))
    assert np.isnan(r.corr[0, 0]) and r.corr[0, 1] == 0.5
    with pytest.raises(MeanFieldError):
        r.mean("nope")


def test_tied_inputs_precomputed() -> None:
    """The tied sampler multiplies inputs ahead of time; the products must match explicit ones."""
    s = TiedSampler(_config("gru"), np.random.default_rng(12), 20, 9)
    for shared in (False, True, True):
        x = s.inputs(1.5, shared)
        assert shared == np.array_equal(x["x"][0], x["x"][1])
        for slot in ("W", "Wn"):
            np.testing.assert_allclose(s.affine([(slot, x)]), s.affine([(slot, x["x"])]))
