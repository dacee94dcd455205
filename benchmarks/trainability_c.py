"""The measured trainability constant c per task, cell and training budget.

The rule "trainable when T ≤ c·ξ_C" (docs/theory.md §5) with one c per cell rests on one task and
one budget. This benchmark measures c where it moves: on several tasks (padded digits with noise
padding, the copy task with one symbol, the adding problem), for the LSTM and the GRU, at two
training budgets, on a design laid out in the quantity the rule is about, the ratio T/ξ_C:

- For each T and each target ratio r the memory-gate bias is solved (:func:`critical_init` with
  c = r) so that ξ_C = T/r; r runs from 0.1 (a memory ten times longer than the bridge, to see the
  upper edge) to 40, finest around the edges seen so far. The LSTM is laid out at two recurrent
  scales nu (0.7, 1.4), so that the Jacobian's T·log m₁ varies at a fixed ξ_C; the GRU at nu = 1.
- Every (task, cell, budget, T, nu, r) trains ``--seeds`` times (hidden 64, Adam 3e-3, batch 32);
  a run *trained* when its final test accuracy is at least halfway from chance to 1.
- Each run is appended to a JSON-lines file as it finishes (``--runs``); a second invocation
  trains only what is missing, so an interrupted run resumes, and ``--fit-only`` refits.

For each (task, cell, budget) the report gives:

- c with **profile-likelihood** intervals: P(trained) = σ(s·(log c − log(T/ξ_C))); for each c the
  slope s is maximized (0 < s ≤ 200: up to a step), and the 68 % / 95 % intervals are the c whose
  profile log likelihood is within 0.5 / 1.92 of the best (χ²₁), on a grid of c in steps of 4 %.
  Where the runs separate perfectly the interval is the whole gap between the classes: the data
  cannot say more, and the interval says so.
- The upper edge: the band σ(s(log c − u))·σ(s(u − log l)) (too long a memory, ξ_C > T/l, fails
  too), its l and the likelihood-ratio statistic against the one-edged rule.
- Leave-one-seed-out prediction: the fitted c (step rule) and the service's trainability model
  (:mod:`service.calibration`, prior centred on the cell's measured c) fitted on the other seeds,
  scored on the held-out seed: separation accuracy and log loss, with ξ_C alone and with ξ_C plus
  the Jacobian's T·log m₁; and the calibrated model after 10, 20 and 40 outcomes against the fixed
  rule.

    python benchmarks/trainability_c.py                   # the full matrix (about 1.5 h, 2 cores)
    python benchmarks/trainability_c.py --fit-only        # refit the recorded runs
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import multiprocessing as mp
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.reporting import recorded_args
from contract.tasks import task_spec
from meanfield import Inputs, fixed_point, isometry
from meanfield.constants import MEASURED_C
from meanfield.critical import critical_init
from service.calibration import TrainabilityModel

RESULTS = Path(__file__).resolve().parent / "results"
TASK_OPTIONS: dict[str, dict[str, Any]] = {
    "padded_digits": {"padding": "noise"},
    "copy": {"n_symbols": 1},
    "adding": {},
    "mnist1d": {"padding": "noise"},
}
RATIOS = (0.1, 0.3, 1.0, 2.0, 3.5, 6.0, 10.0, 18.0, 40.0)
NUS = {"lstm": (0.7, 1.4), "gru": (1.0,), "minimalrnn": (1.0,)}
S_MAX = 200.0  # the steepest logistic the profile fit allows (per unit of log(T/ξ_C)): a step
C_GRID = np.geomspace(0.02, 2000.0, 281)
KEY = ("task", "cell", "steps", "T", "nu", "ratio", "seed")


# ---------------------------------------------------------------------------- the design


def design(task: str, cell: str, Ts: list[int], ratios: list[float]) -> list[dict[str, Any]]:
    """One point per (T, nu, ratio): the initialization and its theory numbers."""
    points = []
    for T in Ts:
        spec = task_spec(task, T, **TASK_OPTIONS[task])
        inputs = Inputs(R=spec.R, regime=spec.regime, R_ab=spec.R_ab)
        for nu, r in itertools.product(NUS[cell], ratios):
            base = {"mu": 0.0, "rho": 0.0, "sigma": 1.0, "nu": nu}
            res = critical_init(cell, T, inputs, c=r, base=base)
            fp = fixed_point(res.config, inputs)
            iso = isometry(fp.m1, fp.m2, T, fp.unit_moments)
            points.append(
                {
                    "T": T,
                    "nu": nu,
                    "ratio": r,
                    "init": res.params,
                    "xi_c": float(np.ravel(fp.xi_c)[0]),
                    "T_log_m1": float(np.ravel(iso.log_m1)[0]),
                    "spread": float(np.ravel(iso.spread)[0]),
                }
            )
    return points


def _train(job: dict[str, Any]) -> dict[str, Any]:
    from workers.train import TrainConfig, train
    from workers.trainmap import success_threshold

    cfg = TrainConfig(
        task=job["task"], T=job["T"], cell=job["cell"], hidden=job["hidden"], init=job["init"],
        lr=job["lr"], batch_size=job["batch_size"], steps=job["steps"],
        eval_every=max(1, job["steps"] // 4), seed=job["seed"], device="cpu", threads=1,
        task_options=TASK_OPTIONS[job["task"]],
    )  # fmt: skip
    cpu = time.process_time()
    res = train(cfg)
    cpu = time.process_time() - cpu
    acc, chance = res.final["test_accuracy"], res.final["chance_accuracy"]
    return {
        **job,
        "accuracy": acc,
        "chance": chance,
        "trained": bool(acc >= success_threshold(chance)),
        "seconds": res.seconds,
        "cpu_seconds": cpu,
    }


def _key(run: dict[str, Any]) -> tuple:
    return tuple(run[k] for k in KEY)


def load_runs(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_matrix(args: argparse.Namespace) -> None:
    done = {_key(r) for r in load_runs(args.runs)}
    jobs = []
    # cheap budgets first, so that an interrupted matrix has every task at the first budget
    for steps, task, cell in itertools.product(args.steps, args.tasks, args.cells):
        for p in design(task, cell, args.T, args.ratios):
            for seed in range(args.seeds):
                job = {
                    "task": task, "cell": cell, "steps": steps, "seed": seed, "hidden": 64,
                    "lr": 3e-3, "batch_size": 32, **p,
                }  # fmt: skip
                if _key(job) not in done:
                    jobs.append(job)
    print(f"{len(jobs)} runs to train ({len(done)} recorded)", flush=True)
    if not jobs:
        return
    t0 = time.monotonic()
    args.runs.parent.mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("spawn")
    with (
        ProcessPoolExecutor(max_workers=args.workers, mp_context=ctx) as pool,
        args.runs.open("a") as out,
    ):
        futures = [pool.submit(_train, job) for job in jobs]
        for i, fut in enumerate(as_completed(futures), 1):
            run = fut.result()
            out.write(json.dumps(run) + "\n")
            out.flush()
            if i % 10 == 0 or i == len(jobs):
                print(f"{i}/{len(jobs)} runs, {time.monotonic() - t0:.0f} s", flush=True)


# ---------------------------------------------------------------------------- the fits


def _loglik(u: np.ndarray, y: np.ndarray, log_c: float, s: float) -> float:
    z = s * (log_c - u)
    return float(np.sum(y * -np.logaddexp(0.0, -z) + (1 - y) * -np.logaddexp(0.0, z)))


def _profile_at(u: np.ndarray, y: np.ndarray, log_c: float) -> float:
    res = minimize_scalar(
        lambda s: -_loglik(u, y, log_c, s), bounds=(1e-3, S_MAX), method="bounded"
    )
    return -float(res.fun)


def profile_c(u: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """c by maximum likelihood with its profile-likelihood intervals (see the module docstring)."""
    prof = np.array([_profile_at(u, y, math.log(c)) for c in C_GRID])
    best = int(np.argmax(prof))
    out: dict[str, Any] = {"c": float(C_GRID[best]), "loglik": float(prof[best])}
    for name, drop in (("c68", 0.5), ("c95", 1.92)):
        inside = np.flatnonzero(prof >= prof[best] - drop)
        lo, hi = int(inside[0]), int(inside[-1])
        out[name] = [
            float(C_GRID[lo]) if lo > 0 else 0.0,
            float(C_GRID[hi]) if hi < len(C_GRID) - 1 else math.inf,
        ]
    # where several c reach the best likelihood (perfect separation), report their middle
    top = np.flatnonzero(prof >= prof[best] - 1e-6)
    out["c"] = float(np.exp(np.mean(np.log(C_GRID[[top[0], top[-1]]]))))
    return out


def band_test(u: np.ndarray, y: np.ndarray, one_edge: dict[str, Any]) -> dict[str, Any]:
    """The two-edged band against the one-edged rule: best l (memory too long when T/ξ_C < l) and
    the likelihood-ratio statistic 2·Δ log L (one more parameter: > 3.84 is significant at 5 %)."""
    best = (one_edge["loglik"], None)
    log_cs = np.log(C_GRID[::4])
    for log_l in np.log(np.geomspace(0.01, 3.0, 25)):
        for log_c in log_cs[log_cs > log_l]:

            def nll(s: float, log_c: float = log_c, log_l: float = log_l) -> float:
                p = _sig(s * (log_c - u)) * _sig(s * (u - log_l))
                p = np.clip(p, 1e-12, 1 - 1e-12)
                return -float(np.sum(y * np.log(p) + (1 - y) * np.log(1 - p)))

            res = minimize_scalar(nll, bounds=(1e-3, S_MAX), method="bounded")
            if -res.fun > best[0] + 1e-9:
                best = (-float(res.fun), math.exp(log_l))
    stat = 2.0 * (best[0] - one_edge["loglik"])
    return {"l": best[1], "lr_stat": max(0.0, stat), "significant": bool(stat > 3.84)}


def _sig(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _logloss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _model(cell: str, u: np.ndarray, g: np.ndarray, y: np.ndarray) -> TrainabilityModel:
    m = TrainabilityModel(c=MEASURED_C[cell], width=0.5)
    for ui, gi, yi in zip(u, g, y, strict=True):
        m.add(float(ui), float(gi), bool(yi))
    return m


def held_out(cell: str, runs: list[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    """Leave-one-seed-out scores (accuracy at p = 0.5 and log loss on the held-out seed)."""
    u = np.array([math.log(r["T"] / r["xi_c"]) for r in runs])
    g = np.array([r["T_log_m1"] for r in runs])
    y = np.array([float(r["trained"]) for r in runs])
    seeds = np.array([r["seed"] for r in runs])
    c0 = MEASURED_C[cell]
    preds: dict[str, list[np.ndarray]] = {
        k: [] for k in ("rule_fixed", "rule_fitted", "model_xi", "model_xi_jac")
    }
    ys = []
    curve: dict[int, dict[str, list[float]]] = {n: {"model": [], "rule": []} for n in (10, 20, 40)}
    rng = np.random.default_rng(seed)
    for k in np.unique(seeds):
        tr, te = seeds != k, seeds == k
        ys.append(y[te])
        preds["rule_fixed"].append(_sig((math.log(c0) - u[te]) / 0.5))
        c_fit = profile_c(u[tr], y[tr])["c"]
        preds["rule_fitted"].append((u[te] <= math.log(c_fit)).astype(float))
        preds["model_xi"].append(_model(cell, u[tr], 0 * g[tr], y[tr]).probability(u[te]))
        preds["model_xi_jac"].append(_model(cell, u[tr], g[tr], y[tr]).probability(u[te], g[te]))
        idx = np.flatnonzero(tr)
        for n in curve:
            if n > idx.size:
                continue
            for _ in range(5):  # random arrival orders of the other seeds' outcomes
                pick = rng.choice(idx, n, replace=False)
                p = _model(cell, u[pick], g[pick], y[pick]).probability(u[te], g[te])
                curve[n]["model"].append(_logloss(p, y[te]))
                curve[n]["rule"].append(_logloss(preds["rule_fixed"][-1], y[te]))
    y_all = np.concatenate(ys)
    out: dict[str, Any] = {}
    for name, ps in preds.items():
        p = np.concatenate(ps)
        out[name] = {"accuracy": float(np.mean((p >= 0.5) == (y_all > 0.5)))}
        if name != "rule_fitted":  # a step rule has no useful log loss
            out[name]["log_loss"] = _logloss(p, y_all)
    out["after_n"] = {
        str(n): {k: float(np.mean(v)) for k, v in d.items() if v} for n, d in curve.items()
    }
    return out


def fit_group(cell: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    u = np.array([math.log(r["T"] / r["xi_c"]) for r in runs])
    y = np.array([float(r["trained"]) for r in runs])
    one = profile_c(u, y)
    rule = float(np.mean((u <= math.log(MEASURED_C[cell])) == (y > 0.5)))
    fitted = float(np.mean((u <= math.log(one["c"])) == (y > 0.5)))
    return {
        "runs": len(runs),
        "trained": int(y.sum()),
        "ratio_range": [float(np.exp(u.min())), float(np.exp(u.max()))],
        "cpu_seconds": float(sum(r["seconds"] for r in runs)),
        **one,
        "separation": fitted,
        "separation_measured_c": rule,
        "band": band_test(u, y, one),
        "held_out": held_out(cell, runs),
        "table": _accuracy_table(runs),
    }


def _accuracy_table(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean accuracy and trained share per (T, nu) row × ratio column."""
    rows = sorted({(r["T"], r["nu"]) for r in runs})
    ratios = sorted({r["ratio"] for r in runs})
    cells = []
    for T, nu in rows:
        line = []
        for ratio in ratios:
            sel = [r for r in runs if (r["T"], r["nu"], r["ratio"]) == (T, nu, ratio)]
            acc = float(np.mean([r["accuracy"] for r in sel])) if sel else math.nan
            line.append([acc, sum(r["trained"] for r in sel), len(sel)] if sel else None)
        cells.append(line)
    return {"rows": rows, "ratios": ratios, "cells": cells}


def fit_all(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One fit per (task, cell, budget) over all its T ("T": "all"), and one per T where there are
    several: whether c holds across T is part of what the rule claims."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["task"], r["cell"], r["steps"]), []).append(r)
    out = []
    for (task, cell, steps), sel in sorted(groups.items()):
        Ts = sorted({r["T"] for r in sel})
        label = "all" if len(Ts) > 1 else Ts[0]
        out.append({"task": task, "cell": cell, "steps": steps, "T": label, **fit_group(cell, sel)})
        if len(Ts) > 1:
            for T in Ts:
                one = [r for r in sel if r["T"] == T]
                out.append({"task": task, "cell": cell, "steps": steps, "T": T,
                            **fit_group(cell, one)})  # fmt: skip
    return out


# ---------------------------------------------------------------------------- the report


def _fmt_c(x: float) -> str:
    if x == 0.0:
        return "0"
    if math.isinf(x):
        return "∞"
    return f"{x:.3g}"


def _interval(iv: list[float]) -> str:
    return f"{_fmt_c(iv[0])}–{_fmt_c(iv[1])}"


def _c_text(f: dict[str, Any]) -> str:
    """c, or the bound the runs set when the design holds no edge on one side (every run on the
    trainable side: c is only bounded below, and the reverse)."""
    lo, hi = f["c68"]
    if math.isinf(hi):
        return f"> {f['ratio_range'][1]:.3g}"
    if lo == 0.0:
        return f"< {f['ratio_range'][0]:.3g}"
    return _fmt_c(f["c"])


def summary_table(fits: list[dict[str, Any]]) -> list[str]:
    """One row per task and cell, one column per (budget, T): c and its 68 % interval, the runs
    (trained) it rests on. The README quotes this table."""
    cols = sorted({(f["steps"], f["T"]) for f in fits if f["T"] != "all"})
    rows = sorted({(f["task"], f["cell"]) for f in fits})
    head = " | ".join(f"{steps} steps, T = {T}" for steps, T in cols)
    out = [f"| task | cell | {head} |", "|---|---|" + "---|" * len(cols)]
    for task, cell in rows:
        cells = []
        for steps, T in cols:
            f = next((g for g in fits if (g["task"], g["cell"], g["steps"], g["T"]) ==
                      (task, cell, steps, T)), None)  # fmt: skip
            if f is None:
                cells.append("–")
            else:
                iv = "" if _c_text(f).startswith((">", "<")) else f" ({_interval(f['c68'])})"
                cells.append(f"**{_c_text(f)}**{iv}; {f['trained']}/{f['runs']}")
        out.append(f"| {task} | {cell} | " + " | ".join(cells) + " |")
    return out


def render(fits: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# The measured trainability constant c per task, cell and budget",
        "",
        f"Written by `python benchmarks/trainability_c.py` on {meta['machine']}: "
        f"{meta['runs']} training runs, {meta['cpu_hours']:.2f} CPU hours of training. Design: "
        "for each T the memory-gate bias is solved for ξ_C = T/r, r ∈ "
        f"{{{', '.join(f'{r:g}' for r in meta['ratios'])}}}; LSTM at nu ∈ {{0.7, 1.4}}, GRU at "
        f"nu = 1; mu = 0, rho = 0, sigma = 1, orthogonal recurrent weights; hidden 64, Adam 3e-3, "
        f"batch 32; {meta['seeds']} seeds per point. Trained: final test accuracy at least halfway "
        "from chance to 1. Tasks: padded digits with noise padding, copy with one symbol (alphabet "
        "8), adding (a sum counts when within the task's tolerance).",
        "",
        "c: maximum likelihood of P(trained) = σ(s·(log c − log(T/ξ_C))), 0 < s ≤ 200, with "
        "**profile-likelihood** intervals (68 %: Δ log L ≤ 0.5; 95 %: ≤ 1.92). Separation: runs on "
        "their predicted side with the fitted c, and with the cell's constant "
        f"({', '.join(f'{k} {v:g}' for k, v in MEASURED_C.items() if k != 'minimalrnn')}). "
        "Held out: each seed predicted from the others (accuracy at p = 0.5 / log loss): the "
        "fitted step rule, and the service's trainability model with ξ_C alone or with ξ_C and "
        "T·log m₁. Upper edge: the band that also fails when ξ_C > T/l, its likelihood-ratio "
        "statistic against the one-edged rule (> 3.84: significant at 5 %).",
        "",
        "| task | cell | steps | T | runs (trained) | c | 68 % | 95 % | separation (fitted / "
        "measured c) | held out: fitted c | model ξ_C | model ξ_C + T·log m₁ | upper edge |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in fits:
        h = f["held_out"]
        band = f["band"]
        edge = "none"
        if band["l"] is not None:
            sig = " (sig.)" if band["significant"] else ""
            edge = f"l = {band['l']:.2g}, LR {band['lr_stat']:.1f}{sig}"
        lines.append(
            f"| {f['task']} | {f['cell']} | {f['steps']} | {f['T']} | "
            f"{f['runs']} ({f['trained']}) | "
            f"**{_c_text(f)}** | {_interval(f['c68'])} | {_interval(f['c95'])} | "
            f"{f['separation']:.0%} / {f['separation_measured_c']:.0%} | "
            f"{h['rule_fitted']['accuracy']:.0%} | "
            f"{h['model_xi']['accuracy']:.0%} / {h['model_xi']['log_loss']:.2f} | "
            f"{h['model_xi_jac']['accuracy']:.0%} / {h['model_xi_jac']['log_loss']:.2f} | {edge} |"
        )
    lines += [
        "",
        "## c per task, cell, budget and T",
        "",
        "c (68 % profile-likelihood interval); trained / runs. "
        "> r: no edge up to the design's largest T/ξ_C (c is at least r); < r: hardly any run "
        "trained, not even at the smallest T/ξ_C.",
        "",
        *summary_table(fits),
        "",
        "## Prediction after 10, 20 and 40 outcomes",
        "",
        "The service's model (prior centred on the cell's constant) fitted to 10, 20 or 40 "
        "outcomes drawn from the other seeds (5 random orders each), log loss on the held-out "
        "seed, beside the fixed rule (the prior before any outcome: a logistic of width 0.5 in "
        "log(T/ξ_C) at the cell's constant).",
        "",
        "| task | cell | steps | T | fixed rule | after 10 | after 20 | after 40 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in fits:
        a = f["held_out"]["after_n"]
        vals = [a.get(n, {}).get("model") for n in ("10", "20", "40")]
        lines.append(
            f"| {f['task']} | {f['cell']} | {f['steps']} | {f['T']} | "
            f"{f['held_out']['rule_fixed']['log_loss']:.2f} | "
            + " | ".join("–" if v is None else f"{v:.2f}" for v in vals)
            + " |"
        )
    lines += ["", "## Mean test accuracy (trained / runs) per point", ""]
    for f in fits:
        if f["T"] != "all" and any(
            g["T"] == "all"
            and (g["task"], g["cell"], g["steps"]) == (f["task"], f["cell"], f["steps"])
            for g in fits
        ):
            continue  # its rows are in the pooled table
        t = f["table"]
        lines += [
            f"### {f['task']}, {f['cell']}, {f['steps']} steps",
            "",
            "| T, nu \\ T/ξ_C | " + " | ".join(f"{r:g}" for r in t["ratios"]) + " |",
            "|---" * (len(t["ratios"]) + 1) + "|",
        ]
        for (T, nu), line in zip(t["rows"], t["cells"], strict=True):
            cells = ["–" if c is None else f"{c[0]:.2f} ({c[1]}/{c[2]})" for c in line]
            lines.append(f"| {T}, {nu:g} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _whole_numbers(text: str) -> list[int]:
    """Comma-separated positive whole numbers (argparse names this function in its error)."""
    values = [int(x) for x in _names(text)]
    if not values or min(values) < 1:
        raise ValueError(text)
    return values


def _positive_numbers(text: str) -> list[float]:
    values = [float(x) for x in _names(text)]
    if not values or min(values) <= 0:
        raise ValueError(text)
    return values


_whole_numbers.__name__ = "comma-separated whole numbers"
_positive_numbers.__name__ = "comma-separated positive numbers"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    tasks = ["padded_digits", "copy", "adding"]
    p.add_argument("--tasks", type=_names, default=tasks)
    p.add_argument("--cells", type=_names, default=["lstm", "gru"])
    p.add_argument("--steps", type=_whole_numbers, default=[500, 2000])
    p.add_argument("--T", type=_whole_numbers, default=[30, 100])
    p.add_argument("--ratios", type=_positive_numbers, default=list(RATIOS))
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--name", default="trainability_c")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--runs", type=Path, default=None, help="JSON lines of the runs (resumable)")
    p.add_argument("--fit-only", action="store_true", help="refit the recorded runs, train none")
    args = p.parse_args(argv)
    for task in args.tasks:
        if task not in TASK_OPTIONS:
            p.error(f"--tasks: unknown task {task!r}; choose from {', '.join(TASK_OPTIONS)}")
    for cell in args.cells:
        if cell not in NUS:
            p.error(f"--cells: unknown or memoryless cell {cell!r}; choose from {', '.join(NUS)}")
    args.runs = args.runs or args.out / f"{args.name}.runs.jsonl"
    if not args.fit_only:
        run_matrix(args)
    wanted = {(t, c, s) for t in args.tasks for c in args.cells for s in args.steps}
    runs = [r for r in load_runs(args.runs) if (r["task"], r["cell"], r["steps"]) in wanted]
    if not runs:
        print(f"no runs recorded in {args.runs}", file=sys.stderr)
        return 1
    fits = fit_all(runs)
    meta = {
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores",
        "runs": len(runs),
        "cpu_hours": sum(r["seconds"] for r in runs) / 3600,
        "ratios": sorted({r["ratio"] for r in runs}),
        "seeds": len({r["seed"] for r in runs}),
        "args": recorded_args(args),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(
        json.dumps({"meta": meta, "fits": fits}, indent=1, default=float) + "\n"
    )
    (args.out / f"{args.name}.md").write_text(render(fits, meta))
    print((args.out / f"{args.name}.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
