"""The trainability map: which initializations learn a task whose answer lies T steps back.

A grid over one initialization hyperparameter (by default the memory-gate bias, mu_f for the LSTM)
× the bridge length T, a few seeds each, every run a :func:`workers.train.train` in its own process.
The mean-field theory predicts a run trainable when T ≤ c·ξ_C, ξ_C the memory time of its
initialization for the task's input statistics (docs/theory.md §5). :func:`fit_boundary` measures
c: the value that puts the most runs on their predicted side (trained inside, failed outside), with
a bootstrap interval; it also fits the two-edged band T/c ≤ ξ_C ≤ c_high·T of docs/theory.md §5.1
and reports whether the upper edge is supported by the data.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing as mp
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from contract.tasks import task_spec
from meanfield import MEMORY_GATE, Config, Inputs, memory_time_scale
from meanfield.params import split_name
from workers.train import TrainConfig, TrainError, train

__all__ = [
    "Boundary",
    "MapRun",
    "fit_boundary",
    "headline_runs",
    "memory_gate_param",
    "run_map",
    "success_threshold",
    "summarize",
    "xi_of",
]


@dataclass(frozen=True)
class MapRun:
    """One cell of the grid: the hyperparameter value, T, the seed and what came out."""

    value: float
    T: int
    seed: int
    xi_c: float
    accuracy: float
    best_accuracy: float
    chance: float
    trained: bool
    seconds: float


@dataclass(frozen=True)
class Boundary:
    """The fitted trainability constant(s) and how well they separate the runs.

    ``c`` is the geometric middle of ``c_range``, the values of c that put the most runs on their
    predicted side (the grid cannot tell them apart); ``c_interval`` is a 68% bootstrap interval
    over runs and ``plateau`` the values of c within 2 points of the best separation. ``profile``
    lists (c, separation) on a geometric grid.
    """

    c: float
    c_range: tuple[float, float]
    c_interval: tuple[float, float]
    plateau: tuple[float, float]
    accuracy: float  # fraction of runs on their predicted side with the one-edged rule T ≤ c·ξ
    c_high: float | None  # upper edge of the band ξ ≤ c_high·T, None if it does not help
    band_accuracy: float
    n_runs: int
    profile: tuple[tuple[float, float], ...] = ()


def success_threshold(chance: float) -> float:
    """A run is *trained* when its test accuracy is at least halfway from chance to perfect."""
    return chance + 0.5 * (1.0 - chance)


def xi_of(base: Config, param: str, values: Sequence[float], inputs: Inputs) -> np.ndarray:
    """ξ_C of ``base`` with ``param`` set to each of ``values`` (one vectorized engine call)."""
    cfg = base.with_values(**{param: np.asarray(values, float)})
    xi, _ = memory_time_scale(cfg, inputs)
    return np.asarray(xi, float)


def _side_accuracy(
    xi: np.ndarray, T: np.ndarray, trained: np.ndarray, c: float, c_high: float = math.inf
) -> float:
    predicted = (T <= c * xi) & (xi <= c_high * T)
    return float(np.mean(predicted == trained))


def _best_c(
    xi: np.ndarray, T: np.ndarray, trained: np.ndarray
) -> tuple[float, float, float, float]:
    """(c, separation, lowest and highest c of the best separation): c between two consecutive
    ratios T/ξ all classify alike, so the best set is a union of such intervals."""
    ratios = np.unique(np.clip(T / np.maximum(xi, 1e-300), 1e-6, 1e9))
    # candidate boundaries: between consecutive ratios, and beyond both ends
    edges = np.concatenate([[ratios[0] / 2], np.sqrt(ratios[:-1] * ratios[1:]), [ratios[-1] * 2]])
    scores = np.array([_side_accuracy(xi, T, trained, c) for c in edges])
    best = np.flatnonzero(scores == scores.max())
    lo_idx, hi_idx = best[0], best[-1]
    # the best set extends from the ratio below the first best edge to the ratio above the last
    lo = float(ratios[lo_idx - 1]) if lo_idx > 0 else 0.0
    hi = float(ratios[hi_idx]) if hi_idx < len(ratios) else math.inf
    c = float(np.exp(np.mean(np.log(edges[[lo_idx, hi_idx]]))))
    return c, float(scores.max()), lo, hi


def fit_boundary(runs: Sequence[MapRun], *, bootstrap: int = 400, seed: int = 0) -> Boundary:
    """Fit c (and the band's c_high) to the runs; see :class:`Boundary`."""
    xi = np.array([r.xi_c for r in runs])
    T = np.array([r.T for r in runs], float)
    ok = np.array([r.trained for r in runs])
    c, acc, lo_c, hi_c = _best_c(xi, T, ok)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(bootstrap):
        j = rng.integers(0, len(runs), len(runs))
        boots.append(_best_c(xi[j], T[j], ok[j])[0])
    lo, hi = (float(v) for v in np.percentile(boots, [16, 84]))
    grid = np.geomspace(0.25, 256, 49)
    prof = [(float(g), _side_accuracy(xi, T, ok, float(g))) for g in grid]
    near = [g for g, a in prof if a >= acc - 0.02]
    plateau = (min(near), max(near)) if near else (c, c)
    # upper edge: does excluding very long memories (ξ > c_high·T) separate better?
    ratios = np.unique(xi / T)
    finite = ratios[np.isfinite(ratios)]
    best_high, band_acc = None, acc
    for ch in np.concatenate([finite * 1.0001, [math.inf]]):
        a = _side_accuracy(xi, T, ok, c, ch)
        if a > band_acc + 1e-12:
            best_high, band_acc = float(ch), a
    return Boundary(
        c=c,
        c_range=(lo_c, hi_c),
        c_interval=(lo, hi),
        plateau=plateau,
        accuracy=acc,
        c_high=best_high,
        band_accuracy=band_acc,
        n_runs=len(runs),
        profile=tuple(prof[::4]),
    )


def _run_one(cfg: TrainConfig, value: float, xi_c: float) -> MapRun:
    res = train(cfg)
    chance = res.final["chance_accuracy"]
    acc = res.final["test_accuracy"]
    best = res.final["best_test_accuracy"]
    return MapRun(
        value=value,
        T=cfg.T,
        seed=cfg.seed,
        xi_c=xi_c,
        accuracy=acc,
        best_accuracy=best,
        chance=chance,
        trained=bool(acc >= success_threshold(chance)),
        seconds=res.seconds,
    )


def run_map(
    base: TrainConfig,
    base_params: Mapping[str, float],
    param: str,
    values: Sequence[float],
    Ts: Sequence[int],
    seeds: Sequence[int],
    *,
    workers: int | None = None,
    on_result: Callable[[MapRun, int, int], None] | None = None,
) -> list[MapRun]:
    """Train every (value, T, seed) with init ``base_params`` + ``{param: value}``.

    Runs in ``workers`` processes (default: the CPU count), one torch thread each. ``on_result`` is
    called after each run with (run, done, total).
    """
    if split_name(param) is None:
        raise TrainError("param", param, "must be an initialization hyperparameter, e.g. mu_f")
    if not values or not Ts or not seeds:
        raise TrainError("grid", (values, Ts, seeds), "needs values, T values and seeds")
    base_cfg = Config.from_flat(base.cell, dict(base_params), weights=base.weights)
    spec = task_spec(base.task, int(Ts[0]), **dict(base.task_options))
    inputs = Inputs(R=spec.R, regime=spec.regime, R_ab=spec.R_ab)
    xis = xi_of(base_cfg, param, values, inputs)
    jobs = []
    for (i, v), T, s in itertools.product(enumerate(values), Ts, seeds):
        init = {**dict(base_params), param: float(v)}
        cfg = replace(base, T=int(T), seed=int(s), init=init, threads=1).validate()
        jobs.append((cfg, float(v), float(xis[i])))
    workers = workers or os.cpu_count() or 1
    out: list[MapRun] = []
    if workers == 1:
        for job in jobs:
            out.append(_run_one(*job))
            if on_result:
                on_result(out[-1], len(out), len(jobs))
        return out
    # spawn, not fork: a forked child of a process that already ran torch can deadlock in OpenMP
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_run_one, *job) for job in jobs]
        for fut in as_completed(futures):
            out.append(fut.result())
            if on_result:
                on_result(out[-1], len(out), len(jobs))
    out.sort(key=lambda r: (r.value, r.T, r.seed))
    return out


def _run_headline(cfg: TrainConfig) -> tuple[str, int, float, float | None]:
    res = train(cfg)
    return str(cfg.init), cfg.T, res.final["test_accuracy"], res.xi_c


def headline_runs(
    base: TrainConfig, Ts: Sequence[int], seeds: Sequence[int], *, workers: int | None = None
) -> list[dict[str, float]]:
    """PyTorch's default against the critical initialization (c = 1) at each T: mean test
    accuracy over seeds, and the critical initialization's ξ_C."""
    jobs = [
        replace(base, T=int(T), seed=int(s), init=init, c=1.0, threads=1).validate()
        for T in Ts
        for s in seeds
        for init in ("default", "critical")
    ]
    workers = workers or os.cpu_count() or 1
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        results = list(pool.map(_run_headline, jobs))
    rows = []
    for T in Ts:
        row: dict[str, float] = {"T": int(T)}
        for init in ("default", "critical"):
            accs = [a for i, t, a, _ in results if i == init and t == T]
            row[init] = float(np.mean(accs))
        xis = [x for i, t, _, x in results if i == "critical" and t == T and x is not None]
        row["critical_xi_c"] = float(np.mean(xis)) if xis else math.nan
        rows.append(row)
    return rows


def memory_gate_param(cell: str) -> str:
    gate = MEMORY_GATE.get(cell)
    if not gate:
        raise TrainError("cell", cell, "has no memory gate; give --param explicitly")
    return f"mu_{gate}"


def summarize(runs: Sequence[MapRun]) -> dict[str, Any]:
    """Mean accuracy per (value, T) over seeds, as nested lists for the JSON and the plot."""
    values = sorted({r.value for r in runs})
    Ts = sorted({r.T for r in runs})
    acc = np.full((len(Ts), len(values)), np.nan)
    for i, T in enumerate(Ts):
        for j, v in enumerate(values):
            a = [r.accuracy for r in runs if r.T == T and r.value == v]
            acc[i, j] = float(np.mean(a)) if a else np.nan
    return {"values": values, "Ts": Ts, "accuracy": acc.tolist()}
