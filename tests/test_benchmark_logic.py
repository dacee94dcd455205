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


load_spec = importlib.util.spec_from_file_location("load", ROOT / "benchmarks/load.py")
load = importlib.util.module_from_spec(load_spec)
load_spec.loader.exec_module(load)


def attempt(params: float, n: int, state: str) -> dict:
    return {"params": {"lr": params}, "state": state, "user_attrs": {"isotune_attempt": n}}


def test_requeues_are_checked_lease_by_lease() -> None:
    """``load.py``'s re-queue check: one next attempt per failed one within the retries, none
    from nowhere; the totals could balance while two leases are wrong (one re-queued twice, one
    never), which the check per lease sees."""
    good = [attempt(0.1, 1, "FAIL"), attempt(0.1, 2, "COMPLETE"), attempt(0.2, 1, "COMPLETE")]
    assert load.requeue_check(good, retries=10) == []
    twice_and_never = [
        attempt(0.1, 1, "FAIL"), attempt(0.1, 2, "COMPLETE"), attempt(0.1, 2, "COMPLETE"),
        attempt(0.3, 1, "FAIL"),
    ]  # fmt: skip
    problems = load.requeue_check(twice_and_never, retries=10)
    assert any("ran 2 times" in p for p in problems) and any("0.3" in p for p in problems)
    # the audit's mutation: a trial its worker finished during the reap re-queued anyway
    finished_then_requeued = [attempt(0.4, 1, "COMPLETE"), attempt(0.4, 2, "COMPLETE")]
    assert any("follows no failed" in p for p in load.requeue_check(finished_then_requeued, 10))
    # past the retries nothing more is queued
    assert load.requeue_check([attempt(0.5, 1, "FAIL")], retries=0) == []


def test_misspecified_arms_are_compared_with_their_reference_of_the_same_run() -> None:
    def runs(*to_target: float) -> list[dict]:
        return [{"trials_to_target": n} for n in to_target]

    # medians 6 over 4: the calibrated restrict arm needs 1.5× its reference's trials
    assert hpo.reference_ratio(runs(5, 6, 9), runs(3, 4, 4)) == 1.5
    assert math.isinf(hpo.reference_ratio(runs(math.inf, math.inf, 2), runs(1, 2, 2)))
    assert math.isnan(hpo.reference_ratio(runs(math.inf), runs(math.inf)))
    report = {
        "arms": {
            "g": {"runs": runs(4, 6, 8)},  # median 6
            "h": {"runs": runs(1, 2, 9)},  # median 2, reference absent: no row
            "r": {"runs": runs(2, 3, 4)},  # median 3
        }
    }
    rows = [line for line in hpo.reference_lines(report) if line.startswith("| g")]
    assert rows == [f"| g: {hpo.ARMS['g']} | r | 2.00 |"]
    assert not [line for line in hpo.reference_lines(report) if line.startswith("| h")]
    assert hpo.reference_lines({"arms": {"d": {"runs": runs(1)}}}) == []


def test_baselines_search_without_the_prior() -> None:
    """Arms a, b, c, f and k say ``prior: off`` (a spec naming none gets restrict where the space
    holds the memory-gate bias); d, e, g, h carry theirs."""
    from service.schemas import StudyCreate

    settings = {**hpo.DEFAULTS, "space": "full"}
    args = argparse.Namespace(**settings, T=100, steps=20, trials=2, c_scale=1.0,
                              mu_f=(-3.0, 6.0), suffix="")  # fmt: skip
    modes = {
        arm: StudyCreate.model_validate(hpo.arm_spec(arm, 0, args)).prior.mode
        for arm in "abcdefghk"
    }
    assert modes == {"a": "off", "b": "off", "c": "off", "d": "restrict", "e": "soft",
                     "f": "off", "g": "restrict", "h": "soft", "k": "off"}  # fmt: skip
