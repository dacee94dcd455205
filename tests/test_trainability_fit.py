"""The fits of ``benchmarks/trainability_c.py`` on made-up outcomes with a known edge: c and its
profile-likelihood interval, the upper edge's likelihood-ratio test, the held-out scores."""

from __future__ import annotations

import importlib.util
import math

import numpy as np

from tests.support import ROOT

spec = importlib.util.spec_from_file_location(
    "trainability_c", ROOT / "benchmarks/trainability_c.py"
)
tc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tc)

RATIOS = (0.1, 0.3, 1.0, 2.0, 3.5, 6.0, 10.0, 18.0, 40.0)


def outcomes(c: float, *, low: float | None = None, flip: float = 0.0, seeds: int = 4, seed=0):
    """Runs at every ratio T/ξ_C and T in {30, 100}: trained when ratio ≤ c (and ≥ ``low``), each
    outcome flipped with probability ``flip``."""
    rng = np.random.default_rng(seed)
    runs = []
    for s in range(seeds):
        for T in (30, 100):
            for r in RATIOS:
                ok = r <= c and (low is None or r >= low)
                if rng.random() < flip:
                    ok = not ok
                run = {"T": T, "xi_c": T / r, "T_log_m1": -r, "trained": ok, "seed": s}
                runs.append({**run, "nu": 1.0, "ratio": r, "accuracy": float(ok), "seconds": 1.0})
    return runs


def arrays(runs):
    u = np.array([math.log(r["T"] / r["xi_c"]) for r in runs])
    return u, np.array([float(r["trained"]) for r in runs])


def test_a_clean_edge_gives_the_gap_between_the_classes() -> None:
    """Trained up to ratio 6, failed from 10: the best c lies between, and the intervals cover
    exactly the c the data cannot tell apart (no narrower, not degenerate)."""
    fit = tc.profile_c(*arrays(outcomes(8.0)))
    assert 6.0 < fit["c"] < 10.0
    lo, hi = fit["c68"]
    assert 5.0 < lo <= 6.0 * 1.1 and 10.0 / 1.1 <= hi < 12.0  # the c grid steps by 4 %
    assert fit["c95"][0] <= lo and fit["c95"][1] >= hi


def test_noisy_outcomes_widen_the_interval_around_the_true_edge() -> None:
    fit = tc.profile_c(*arrays(outcomes(4.0, flip=0.15, seeds=8, seed=1)))
    lo, hi = fit["c95"]
    assert lo < 4.0 < hi
    clean = tc.profile_c(*arrays(outcomes(4.0, seeds=8)))
    assert hi / lo > clean["c95"][1] / clean["c95"][0]


def test_the_upper_edge_is_found_only_where_it_is() -> None:
    u, y = arrays(outcomes(8.0, low=0.5))
    band = tc.band_test(u, y, tc.profile_c(u, y))
    assert band["significant"] and 0.3 <= band["l"] <= 1.0
    u, y = arrays(outcomes(8.0))
    assert not tc.band_test(u, y, tc.profile_c(u, y))["significant"]


def test_held_out_seeds_are_predicted_by_the_fitted_rule() -> None:
    got = tc.held_out("lstm", outcomes(4.0, flip=0.05, seed=2))
    assert got["rule_fitted"]["accuracy"] >= 0.9
    # the fixed rule (c = 13.6) calls ratios 6 and 10 trainable: those runs fail here
    assert got["rule_fixed"]["accuracy"] < got["rule_fitted"]["accuracy"]
    for n in ("10", "20", "40"):
        assert got["after_n"][n]["model"] < got["after_n"][n]["rule"]
