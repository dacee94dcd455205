"""The counting in ``benchmarks/hpo_efficiency.py`` on hand-made studies: trials to the target,
to the first trained trial, the share that trained, the best so far with pruned and failed
trials in it."""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys

from tests.support import ROOT

if str(ROOT / "benchmarks") not in sys.path:  # as the script finds its helper when run
    sys.path.append(str(ROOT / "benchmarks"))
spec = importlib.util.spec_from_file_location(
    "hpo_efficiency", ROOT / "benchmarks/hpo_efficiency.py"
)
hpo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hpo)
ARGS = argparse.Namespace(trained=0.55, target=0.8)


def trial(number: int, state: str, value: float | None = None) -> dict:
    return {"number": number, "state": state, "value": value}


def test_counts_are_one_based_and_pruned_trials_keep_what_they_reached() -> None:
    got = hpo.summarize(
        [
            trial(3, "COMPLETE", 0.6),  # out of order on purpose: numbers decide
            trial(0, "PRUNED", 0.12),  # reached 0.12 before the pruner stopped it
            trial(1, "FAIL"),
            trial(2, "PRUNED", 0.7),  # high, but pruned: not trained
            trial(4, "COMPLETE", 0.85),
        ],
        ARGS,
    )
    assert got["best_curve"] == [0.12, 0.12, 0.7, 0.7, 0.85]
    assert got["best"] == 0.85
    assert got["first_trained"] == 4  # trial 3, the fourth: 0.6 ≥ 0.55 and completed
    assert got["trials_to_target"] == 5  # the fifth trial's 0.85 ≥ 0.8
    assert got["trained"] == 2 / 5


def test_nothing_reached_is_never_and_a_failure_first_has_no_value() -> None:
    got = hpo.summarize([trial(0, "FAIL"), trial(1, "PRUNED", 0.1)], ARGS)
    assert math.isnan(got["best_curve"][0]) and got["best_curve"][1] == 0.1
    assert got["trials_to_target"] == math.inf and got["first_trained"] == math.inf
    assert hpo.first_at([0.2, 0.8, 0.9], 0.8) == 2 and hpo.first_at([], 0.8) == math.inf
    assert hpo.trials(math.inf) == "never" and hpo.trials(3.0) == "3"
