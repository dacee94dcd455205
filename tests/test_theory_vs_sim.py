"""Mean-field theory against finite-width simulation (docs/theory.md §3, §6, §7.1 and §7.3).

Every cell, both input regimes, three configurations per cell (A: short memory with bias noise,
B: orthogonal recurrent weights, C: near criticality, ξ_C ≥ 50). The *untied* simulation (fresh
weights at every step: the theory's own assumption) must agree with the theory within TOL = 5 %:

- Q*: time and seed average of ⟨h, h⟩/n after a burn-in of 4·ξ_Q + 20 steps (with shared inputs
  4·max(ξ_Q, ξ_C) + 20), and the LSTM's cell-state E[c²]. C*: the tail t ≥ 5·ξ_C of the
  relaxation, where the run reaches it; 1 with shared inputs.
- C_t: max_t |C̄_sim(t) − C_th(t)| relative to the relaxation amplitude |C_0 − C*|. Independent
  inputs: from C_0 = 1 (start ``identical``) towards C* (0, or small with bias noise), over
  3·ξ_C steps. Shared inputs: C* = 1, so from decorrelated examples (start ``independent``)
  towards 1, compared over the first 2·ξ_C steps.
- ξ_C: ``fit_timescale`` over a window of |C_t − C*| relative to the amplitude. Independent
  inputs: window [0.2, 0.9], far above the finite-width noise; the reference is the same fit of
  the theory's trajectory, because the LSTM's C_t is a sum of two modes that reaches its slow rate
  ξ_C only below ~0.25 (``test_theory_trajectory_relaxes_at_xi_c`` checks that it does). Shared
  inputs: 1 − C_t decays multiplicatively (no noise floor): window [3e-3, 0.05], against ξ_C.

Widths. The noise of C_t is ~1/√(n·seeds), correlated over ~ξ steps, so ξ fits scatter by ~10 %
per seed at n = 1000: the independent regime uses n·seeds = 32000 for a 5 % check at ~3 standard
errors (96000 for the short cases A, whose fit window holds only ~7 steps; 24000 for the medium
cases B, which scatter less), the shared regime 16000. The vanilla RNN's ξ is bounded at fixed R
and grows like 1/√R at nu = 1; its case C (R = 2e-4, ξ_C ≈ 50) is a nearly linear critical
recurrence whose noise grows like √(t/n) (docs/theory.md §6) and needs n ≈ 10⁵.
``benchmarks/theory_vs_simulation.py`` repeats all of this with wider networks and reports the
tied simulation beside each case.

With shared inputs the pairs of pre-activations are correlated near 1, where ``expect2`` must be
accurate to ~1e-7: the nested 8-node rule it used before (ORDER_2D = 8, errors up to 6e-5 for
saturated sigmoids) made the theory's shared-input trajectories stall short of C = 1 (e.g.
minimalRNN C at C ≈ 0.46), which ``test_correlation_trajectory_matches_untied_simulation`` and
``test_theory_trajectory_relaxes_at_xi_c`` catch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from meanfield import Config, Inputs, fixed_point, trajectory
from meanfield.simulate import SimulationResult, fit_timescale
from tests.support import shared
from tests.support.simcache import simulate

pytestmark = pytest.mark.slow  # simulations at width 1000 and more: seconds a test

TOL = 0.05
WINDOW = {"independent": (0.2, 0.9), "shared": (3e-3, 0.05)}


@dataclass(frozen=True)
class Case:
    cell: str
    label: str
    values: tuple[tuple[str, float], ...]
    weights: str = "gaussian"
    R: float = 1.0
    #: (n, seeds) of the untied simulation with independent and with shared inputs.
    independent: tuple[int, int] = (16_000, 2)
    shared: tuple[int, int] = (8_000, 2)

    @property
    def key(self) -> str:
        return f"{self.cell}-{self.label}"

    def config(self) -> Config:
        return Config.from_flat(self.cell, dict(self.values), weights=self.weights)


#: Short memories (ξ ≈ 5) leave few steps in the fit window: more seeds (they are cheap).
SHORT = (16_000, 6)
#: Medium memories (ξ ≈ 10-25, orthogonal: 2-3 times dearer per step) scatter less.
MEDIUM = (12_000, 2)
CASES = {
    c.key: c
    for c in (
        Case("lstm", "A", (("mu_f", 2.5), ("rho", 0.3)), independent=SHORT),
        Case(
            "lstm",
            "B",
            (("mu_f", 3.5), ("nu", 0.5), ("sigma", 0.8)),
            "orthogonal",
            independent=MEDIUM,
        ),
        Case("lstm", "C", (("mu_f", 4.9), ("nu", 0.5), ("sigma", 0.8))),
        Case("gru", "A", (("mu_z", 2.5), ("rho", 0.3)), independent=SHORT),
        Case("gru", "B", (("mu_z", 3.5), ("nu", 1.5)), "orthogonal", independent=MEDIUM),
        Case("gru", "C", (("mu_z", 5.1),)),
        Case("minimalrnn", "A", (("mu_u", 2.5), ("rho", 0.3)), independent=SHORT),
        Case("minimalrnn", "B", (("mu_u", 4.0), ("nu", 1.5)), "orthogonal", independent=MEDIUM),
        Case("minimalrnn", "C", (("mu_u", 4.8),)),
        Case("vanilla", "A", (("nu", 1.0), ("rho", 0.05)), R=1e-2, independent=SHORT),
        Case("vanilla", "B", (("nu", 1.0),), "orthogonal", R=1e-3, independent=MEDIUM),
        Case("vanilla", "C", (("nu", 1.0),), R=2e-4, independent=(256_000, 1), shared=(128_000, 1)),
    )
}
PARAMS = [(key, regime) for key in CASES for regime in ("independent", "shared")]


@pytest.fixture(autouse=True, scope="module")
def _single_threaded() -> Iterator[None]:
    """One BLAS thread: on a shared 2-core machine a multi-threaded gemv waits for a busy core at
    every step, which makes the tied and the widest simulations 3-20 times slower. Results do not
    depend on it."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@dataclass(frozen=True)
class Run:
    case: Case
    regime: str
    q_star: float
    s_star: float
    c_star: float
    xi_c: float
    theory_corr: np.ndarray  # (T + 1,), T ≤ the simulation's steps
    sim: SimulationResult

    @property
    def amplitude(self) -> float:
        return abs(float(self.theory_corr[0]) - self.c_star)

    @property
    def corr(self) -> np.ndarray:
        return self.sim.corr.mean(axis=0)

    def fit(self, y: np.ndarray) -> float:
        lo, hi = WINDOW[self.regime]
        return fit_timescale(y, self.c_star, lo=lo * self.amplitude, hi=hi * self.amplitude)


@cache
def run(key: str, regime: str) -> Run:
    """Theory and untied simulation of one case (cached: three tests read each run)."""
    case = CASES[key]
    cfg, inputs = case.config(), Inputs(case.R, regime)
    fp = fixed_point(cfg, inputs)
    assert bool(fp.converged)
    xi, xi_q = float(fp.xi_c), float(fp.xi_q)
    if regime == "independent":  # the burn-in relaxes Q; then b copies a (C_0 = 1)
        # 3·ξ_C steps; the short cases A (C* > 0) run on to measure C* over t ≥ 5·ξ_C.
        steps = math.ceil(5 * xi) + 10 if case.label == "A" else math.ceil(3 * xi)
        start, compare = "identical", None
        (n, seeds), burn = case.independent, math.ceil(4 * xi_q) + 20
    else:  # the burn-in also decorrelates a and b, at the independent-input time scale
        start, steps, compare = "independent", math.ceil(6.5 * xi), math.ceil(2 * xi)
        xi_ind = float(fixed_point(cfg, Inputs(case.R, "independent")).xi_c)
        (n, seeds), burn = case.shared, math.ceil(4 * max(xi_q, xi_ind)) + 20
    theory_corr = trajectory(cfg, inputs, compare or steps, start=start)["corr"]
    sim = simulate(
        cfg, inputs, folder=shared.folder(),  # computed once in the run, read by three tests
        n=n, steps=steps, seeds=range(seeds), start=start, burn_in=burn,
    )  # fmt: skip
    return Run(
        case,
        regime,
        float(fp.q_star),
        float(fp.s_star),
        float(fp.c_star),
        xi,
        theory_corr,
        sim,
    )


@pytest.mark.parametrize(("key", "regime"), PARAMS)
def test_fixed_point_matches_untied_simulation(key: str, regime: str) -> None:
    r = run(key, regime)
    q_sim = 0.5 * (r.sim.q.mean() + r.sim.q_b.mean())
    assert q_sim == pytest.approx(r.q_star, rel=TOL)
    if r.case.cell == "lstm":  # the cell state's second moment (exact in the untied limit)
        assert r.sim.s is not None
        assert r.sim.s.mean() == pytest.approx(r.s_star, rel=TOL)
    corr, tail = r.corr, math.ceil(5 * r.xi_c)
    if regime == "shared":
        assert r.c_star == 1.0
        assert 0.0 <= 1.0 - corr[-1] <= 1e-2 * r.amplitude
    elif r.case.label == "A":  # C* > 0 from bias noise; short ξ: the run reaches the tail
        assert corr.size - tail >= 5
        assert r.c_star > 0.03
        assert corr[tail:].mean() == pytest.approx(r.c_star, abs=TOL * r.amplitude)
    else:
        assert abs(r.c_star) < 1e-9  # no bias noise, zero-mean candidate: C* = 0 by symmetry


@pytest.mark.parametrize(("key", "regime"), PARAMS)
def test_correlation_trajectory_matches_untied_simulation(key: str, regime: str) -> None:
    r = run(key, regime)
    th = r.theory_corr
    assert r.amplitude > 0.5  # a real relaxation is compared, not a flat line
    assert np.max(np.abs(r.corr[: th.size] - th)) <= TOL * r.amplitude


@pytest.mark.parametrize(("key", "regime"), PARAMS)
def test_memory_time_matches_untied_simulation(key: str, regime: str) -> None:
    r = run(key, regime)
    xi_sim = r.fit(r.corr)
    # Independent inputs: the same estimator on the theory's trajectory. Shared inputs: ξ_C itself.
    reference = r.fit(r.theory_corr) if regime == "independent" else r.xi_c
    assert np.isfinite(xi_sim)
    assert xi_sim == pytest.approx(reference, rel=TOL)
    if r.case.label == "C":
        assert r.xi_c >= 50.0


@pytest.mark.parametrize(("key", "regime"), PARAMS)
def test_theory_trajectory_relaxes_at_xi_c(key: str, regime: str) -> None:
    """The theory's own trajectory relaxes at ξ_C: its log-slope at small |C_t − C*| matches the
    fixed point's χ_C within 1 % (this ties the window fits above to ξ_C)."""
    case = CASES[key]
    cfg, inputs = case.config(), Inputs(case.R, regime)
    fp = fixed_point(cfg, inputs)
    xi, c_star = float(fp.xi_c), float(fp.c_star)
    if case.cell == "gru" and regime == "shared":
        # The GRU's shared-input map is the slowest (~6 ms a step): reuse ``run``'s 2·ξ_C steps.
        corr, (lo, hi) = run(key, regime).theory_corr, (0.15, 0.6)
    else:
        start = "identical" if regime == "independent" else "independent"
        corr, (lo, hi) = (
            trajectory(cfg, inputs, math.ceil(8 * xi), start=start)["corr"],
            (1e-3, 0.03),
        )
    amp = abs(float(corr[0]) - c_star)
    assert fit_timescale(corr, c_star, lo=lo * amp, hi=hi * amp) == pytest.approx(xi, rel=0.01)


# -- docs/theory.md §6: the tied LSTM remembers longer than the untied theory ----------------------

GAP = {"mu_f": 4.0, "nu_g": 1.5}


def _fit_window(corr: np.ndarray, c_star: float) -> float:
    amp = abs(float(corr[0]) - c_star)
    lo, hi = WINDOW["independent"]
    return fit_timescale(corr, c_star, lo=lo * amp, hi=hi * amp)


def test_tied_lstm_remembers_longer_than_untied_theory() -> None:
    """Large forget bias, sizeable nu_g, independent inputs: a real (tied) LSTM integrates its
    candidate coherently; its cell state is many times larger and its memory of the input many
    times longer than the untied theory says, which is only a lower bound there. The untied
    simulation of the same configuration agrees with the theory (the contrast)."""
    cfg, inputs = Config.from_flat("lstm", GAP), Inputs(1.0, "independent")
    fp = fixed_point(cfg, inputs)
    xi_c, s_star = float(fp.xi_c), float(fp.s_star)
    kw = {"steps": math.ceil(3 * xi_c), "burn_in": math.ceil(4 * float(fp.xi_q)) + 20}
    xi_theory = _fit_window(trajectory(cfg, inputs, kw["steps"], start="identical")["corr"], 0.0)
    assert abs(float(fp.c_star)) < 1e-9

    untied = simulate(cfg, inputs, n=16_000, seeds=range(2), start="identical", **kw)
    assert untied.s is not None
    assert _fit_window(untied.corr.mean(axis=0), 0.0) == pytest.approx(xi_theory, rel=TOL)
    assert untied.s.mean() == pytest.approx(s_star, rel=TOL)

    tied = simulate(cfg, inputs, n=1000, seeds=(0,), tied=True, start="identical", **kw)
    # The tied network's own C*: the same weights (same seed), examples decorrelated by
    # independent inputs during the burn-in.
    stationary = simulate(
        cfg,
        inputs,
        n=1000,
        seeds=(0,),
        tied=True,
        start="independent",
        steps=50,
        burn_in=kw["burn_in"],
    )
    c_star_tied = float(stationary.corr.mean())
    assert abs(c_star_tied) < 0.3
    assert tied.s is not None
    xi_tied = _fit_window(tied.corr[0], c_star_tied)
    assert xi_tied > 3.0 * max(xi_theory, xi_c)  # measured 9× (seeds 0-2): a lower bound only
    assert tied.s.mean() > 3.0 * s_star  # measured 15-17×


#: Cases with a non-zero candidate mean (the LSTM's mu_g, the GRU's mu_n, the minimalRNN's mu_e):
#: the state's mean m* is then non-zero, and every term of the moment map that carries it (the
#: LSTM cell state's −m² in its variance, the cross-moments that set C*) is exercised.
CANDIDATE_MEAN = {
    "lstm": {"mu_f": 2.0, "mu_g": 1.0},
    "gru": {"mu_z": 2.0, "mu_n": 1.0},
    "minimalrnn": {"mu_u": 2.0, "mu_e": 1.0},
}


@pytest.mark.parametrize("regime", ["independent", "shared"])
@pytest.mark.parametrize("cell", sorted(CANDIDATE_MEAN))
def test_a_candidate_mean_matches_untied_simulation(cell: str, regime: str) -> None:
    """Q*, the state's mean (the LSTM: its cell state's, and E[c²]) and, with independent inputs,
    C* (> 0.5: the means correlate the examples) against the untied simulation at width 8000 × 2
    seeds. Q* within TOL; C* within 0.02 (the LSTM's is 0.011 off at this width)."""
    cfg, inputs = Config.from_flat(cell, CANDIDATE_MEAN[cell]), Inputs(1.0, regime)
    fp = fixed_point(cfg, inputs)
    assert bool(fp.converged)
    xi, burn = float(fp.xi_c), math.ceil(4 * float(fp.xi_q)) + 20
    start = "identical" if regime == "independent" else "independent"
    steps = math.ceil(6 * xi) + 10
    sim = simulate(cfg, inputs, n=8000, steps=steps, seeds=range(2), start=start, burn_in=burn)
    assert 0.5 * (sim.q.mean() + sim.q_b.mean()) == pytest.approx(float(fp.q_star), rel=TOL)
    mean = sim.cm if cell == "lstm" else sim.m
    assert abs(float(fp.m_star)) > 0.3  # a mean the checks can see
    assert mean.mean() == pytest.approx(float(fp.m_star), rel=TOL)
    if cell == "lstm":
        assert sim.s.mean() == pytest.approx(float(fp.s_star), rel=TOL)
    if regime == "independent":
        tail = sim.corr.mean(axis=0)[math.ceil(5 * xi) :].mean()
        assert float(fp.c_star) > 0.5 and tail == pytest.approx(float(fp.c_star), abs=0.02)


@pytest.mark.parametrize("regime", ["independent", "shared"])
@pytest.mark.parametrize("cell", sorted(CANDIDATE_MEAN))
def test_the_moment_map_iterated_from_zero_reaches_the_closed_form_fixed_point(
    cell: str, regime: str
) -> None:
    """The fixed point is solved in closed form where the map allows (the LSTM's cell-state
    moments, for instance), while trajectories step the full map: with a non-zero candidate
    mean, every term that carries the mean (its sign, the cross term of E[c²], the −m² of the
    variance) must lead both to the same place."""
    cfg, inputs = Config.from_flat(cell, CANDIDATE_MEAN[cell]), Inputs(1.0, regime)
    fp = fixed_point(cfg, inputs)
    steps = math.ceil(30 * max(float(fp.xi_q), float(fp.xi_c))) + 100
    tr = trajectory(cfg, inputs, steps=steps, start="zero")
    assert float(tr["q"][-1]) == pytest.approx(float(fp.q_star), rel=1e-6)
    assert float(tr["m"][-1]) == pytest.approx(float(fp.m_star), rel=1e-6)
    if cell == "lstm":
        assert float(tr["s"][-1]) == pytest.approx(float(fp.s_star), rel=1e-6)
    assert float(tr["corr"][-1]) == pytest.approx(float(fp.c_star), abs=1e-6)
