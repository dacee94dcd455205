"""Does sampling ahead (the pool, ``service/pool.py``) cost TPE its quality? On surrogates.

A pooled trial is proposed before the outcomes of the trials claimed between its sampling and its
claim are known. With W workers, TPE already proposes every trial without the outcomes of the
W - 1 others running (Optuna's TPE ignores RUNNING trials); a pool of K adds up to K more. This
script runs that, in virtual time, on Optuna's TPE with in-memory storage: W workers, trial
durations drawn from an exponential law (mean 1), each finished trial followed at once by its
worker's next claim; ``pool 0`` samples each trial at its claim (what a claim does without a
pool), ``pool K`` takes the oldest trial sampled ahead and then, with fewer than K/2 left, samples
up to K ahead at once (what a claim and the refill thread do), ``auto`` is the service's
default (W // 8, at most 64). The objective is a surrogate of known optimum (Hartmann-3, and
Branin), the budget the same for every arm, and the score the best value found (the regret to
the optimum), over many seeds.

Reports the median regret per arm, its interquartile range, and a two-sided Mann-Whitney test of
each pooled arm against ``pool 0`` at the same W (scipy), so "the same within noise" is a
statement a reader can check.

Usage: python benchmarks/pool_quality.py [--seeds 20] [--trials 80] [--workers 1,8,32]
       [--pools 0,auto,4,16] [--jobs 2]
Writes benchmarks/results/pool_quality.{md,json}. About 10 minutes on 2 cores with the defaults.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import optuna
from scipy.stats import mannwhitneyu

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from reporting import recorded_args  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"

# Hartmann-3 on [0, 1]^3 (minimum -3.86278 at (0.114614, 0.555649, 0.852547))
_H_A = np.array([[3.0, 10, 30], [0.1, 10, 35], [3.0, 10, 30], [0.1, 10, 35]])
_H_P = 1e-4 * np.array(
    [[3689, 1170, 2673], [4699, 4387, 7470], [1091, 8732, 5547], [381, 5743, 8828]]
)
_H_C = np.array([1.0, 1.2, 3.0, 3.2])


def hartmann3(x: dict[str, float]) -> float:
    v = np.array([x["x0"], x["x1"], x["x2"]])
    return float(-np.sum(_H_C * np.exp(-np.sum(_H_A * (v - _H_P) ** 2, axis=1))))


def branin(x: dict[str, float]) -> float:
    a, b, c = 1.0, 5.1 / (4 * math.pi**2), 5 / math.pi
    r, s, t = 6.0, 10.0, 1 / (8 * math.pi)
    x1, x2 = x["x0"], x["x1"]
    return a * (x2 - b * x1**2 + c * x1 - r) ** 2 + s * (1 - t) * math.cos(x1) + s


F = optuna.distributions.FloatDistribution
#: name -> (objective, space, optimum)
SURROGATES = {
    "hartmann3": (hartmann3, {f"x{i}": F(0.0, 1.0) for i in range(3)}, -3.86278),
    "branin": (branin, {"x0": F(-5.0, 10.0), "x1": F(0.0, 15.0)}, 0.397887),
}


def pool_size(pool: str, workers: int) -> int:
    """``auto`` as ``service.pool.target`` with ``workers`` trials running."""
    return min(64, workers // 8) if pool == "auto" else int(pool)


def run_one(surrogate: str, workers: int, pool: str, trials: int, seed: int) -> float:
    """One study in virtual time; the regret of its best value after ``trials`` trials."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    objective, space, optimum = SURROGATES[surrogate]
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    rng = np.random.default_rng(seed + 10_000)
    k = pool_size(pool, workers)
    ahead: list[optuna.trial.Trial] = []
    asked = 0

    def claim() -> optuna.trial.Trial | None:
        # as service.leases: take the oldest pooled trial, else sample one in the claim; then,
        # with fewer than half the pool left, the refill samples up to k ahead (at once here)
        nonlocal asked
        got = None
        if ahead:
            got = ahead.pop(0)
        elif asked < trials:
            got = study.ask(space)
            asked += 1
        if k and len(ahead) < max(1, k) / 2:
            while len(ahead) < k and asked < trials:
                ahead.append(study.ask(space))
                asked += 1
        return got

    running: list[tuple[float, int, optuna.trial.Trial]] = []
    for w in range(workers):
        t = claim()
        if t is not None:
            heapq.heappush(running, (rng.exponential(), w, t))
    while running:
        clock, w, t = heapq.heappop(running)
        study.tell(t, objective(t.params))
        nxt = claim()
        if nxt is not None:
            heapq.heappush(running, (clock + rng.exponential(), w, nxt))
    return study.best_value - optimum


def _job(args: tuple[str, int, str, int, int]) -> tuple[tuple[str, int, str], float]:
    surrogate, workers, pool, trials, seed = args
    return (surrogate, workers, pool), run_one(surrogate, workers, pool, trials, seed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--trials", type=int, default=80)
    ap.add_argument("--workers", default="1,8,32")
    ap.add_argument("--pools", default="0,auto,4,16")
    ap.add_argument("--surrogates", default="hartmann3,branin")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    pools = args.pools.split(",")
    surrogates = args.surrogates.split(",")
    jobs = [
        (s, w, p, args.trials, seed)
        for s in surrogates
        for w in workers
        for p in pools
        for seed in range(args.seeds)
        if not (p == "auto" and pool_size(p, w) == 0 and "0" in pools)  # the same as pool 0
    ]
    t0 = time.perf_counter()
    regrets: dict[tuple[str, int, str], list[float]] = {}
    with ProcessPoolExecutor(args.jobs) as ex:
        for key, regret in ex.map(_job, jobs, chunksize=4):
            regrets.setdefault(key, []).append(regret)
    rows = []
    for (s, w, p), values in sorted(regrets.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        base = regrets[(s, w, "0")]
        q1, med, q3 = np.percentile(values, [25, 50, 75])
        row = {"surrogate": s, "workers": w, "pool": p, "pool_size": pool_size(p, w),
               "median": float(med), "q1": float(q1), "q3": float(q3),
               "regrets": values}  # fmt: skip
        if p != "0":
            row["p_value"] = float(mannwhitneyu(values, base, alternative="two-sided").pvalue)
            row["ratio_to_pool0"] = float(med / statistics.median(base))
        rows.append(row)
    report = {
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, Optuna {optuna.__version__}",
        "date": time.strftime("%Y-%m-%d"),
        "args": recorded_args(args),
        "seconds": time.perf_counter() - t0,
        "rows": rows,
    }
    write(report, args.out)


def write(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "pool_quality.json").write_text(json.dumps(report, indent=2) + "\n")
    a = report["args"]
    lines = [
        "# Sampling ahead: TPE with a pool against TPE sampling at each claim",
        "",
        f"Written by `python benchmarks/pool_quality.py` on {report['machine']}, "
        f"{report['date']}, in {report['seconds'] / 60:.1f} min: {a['seeds']} seeds per arm, "
        f"{a['trials']} trials per study, W workers in virtual time (exponential trial "
        "durations), Optuna's TPE (default settings) on in-memory storage. Regret = best value "
        "found − the surrogate's optimum (lower is better); p = two-sided Mann-Whitney test "
        "against pool 0 at the same W.",
        "",
        "| surrogate | W | pool | K | median regret | IQR | ratio to pool 0 | p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        ratio = f"{r['ratio_to_pool0']:.2f}" if "ratio_to_pool0" in r else "–"
        p = f"{r['p_value']:.2f}" if "p_value" in r else "–"
        lines.append(
            f"| {r['surrogate']} | {r['workers']} | {r['pool']} | {r['pool_size']} | "
            f"{r['median']:.4f} | {r['q1']:.4f}–{r['q3']:.4f} | {ratio} | {p} |"
        )
    pooled = [r for r in report["rows"] if "p_value" in r]
    worse = [r for r in pooled if r["p_value"] < 0.05 and r["ratio_to_pool0"] > 1]
    lines += [
        "",
        f"{len(worse)} of {len(pooled)} pooled arms differ from pool 0 at p < 0.05 (worse): "
        + (
            ", ".join(f"{r['surrogate']} W={r['workers']} K={r['pool_size']}" for r in worse)
            or "none"
        )
        + ".",
    ]
    (out / "pool_quality.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
