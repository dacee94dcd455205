"""The prior map of a study: where the theory expects training to work, and where the trials went.

ξ_C (log scale) over the memory-gate bias (x) and a second initialization hyperparameter (y: the
second one in the study's space, else the weight scale ``nu`` over [0.25, 2]); the other
hyperparameters sit at the middle of their ranges (or the engine's defaults). The line
ξ_C = T/c bounds the region the criterion accepts: solved for on each row of the picture (ξ_C
grows with the memory-gate bias), not read off the grid, so a trial just inside the region is
drawn inside it. Every trial is a marker coloured by its outcome, round where its own theory
numbers predict it trainable and square where they do not (its other hyperparameters may differ
from the picture's); a final outcome is drawn over a failed attempt at the same point. Where ξ_C
diverges (the ridge of the critical initializations) the picture says so.
"""

from __future__ import annotations

import io
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.prior import Prior

__all__ = ["COLORS", "PriorMap", "prior_map"]

#: Outcome colours (RGB): a trial that trained, one that completed without training, pruned,
#: failed, and running or waiting.
COLORS = {
    "trained": (0.10, 0.62, 0.20),
    "complete": (0.95, 0.60, 0.05),
    "PRUNED": (0.85, 0.10, 0.10),
    "FAIL": (0.0, 0.0, 0.0),
    "RUNNING": (0.15, 0.35, 0.95),
}
GRID = 64
#: Drawing order, bottom to top: a retry's outcome covers its failed attempt at the same point.
LAYERS = ("FAIL", "RUNNING", "PRUNED", "complete", "trained")
#: ξ_C above this (steps) is drawn as diverging.
DIVERGING = 1e6
#: A grid cell whose log10 ξ_C exceeds both neighbours in its row by this lies on the ridge.
RIDGE = 0.15


@dataclass
class PriorMap:
    png: bytes
    #: each trial's position in the image, pixels from the top-left corner: (trial number, x, y)
    positions: list[tuple[int, float, float]]
    x: str
    y: str
    #: the legend's entries, in order
    legend: list[str]
    #: where the ridge of diverging ξ_C was labelled ((x, y) in data units), None if not drawn
    ridge: tuple[float, float] | None = None


def _axes(prior: Prior) -> tuple[str, tuple[float, float], str, tuple[float, float]]:
    gate = prior.gate_param
    if gate in prior.space:
        gx = prior.space[gate]
        xr = (float(gx.low), float(gx.high))  # type: ignore[attr-defined]
    else:
        xr = (-2.0, 8.0)
    others = [n for n in prior.names if n != gate]
    if others:
        d = prior.space[others[0]]
        return gate, xr, others[0], (float(d.low), float(d.high))  # type: ignore[attr-defined]
    return gate, xr, "nu", (0.25, 2.0)


def _predicted(trial: dict[str, Any]) -> bool:
    """Whether the trial's own theory numbers predict it trainable (False when it has none)."""
    theory = trial.get("user_attrs", {}).get("isotune_theory") or {}
    return bool(theory.get("predicted_trainable"))


def _outcome(trial: dict[str, Any], trained: float) -> str:
    state = trial["state"]
    if state == "COMPLETE":
        value = trial.get("value")
        return "trained" if value is not None and value >= trained else "complete"
    return state if state in COLORS else "RUNNING"


def _boundary(
    prior: Prior,
    base: dict[str, float],
    xname: str,
    yname: str,
    xs: np.ndarray,
    ys: np.ndarray,
    log_xi: np.ndarray,
) -> np.ndarray:
    """For each row y of the grid, the x where log10 ξ_C first reaches log10(T/c), by bisection
    between the grid's bracketing columns (NaN where the row never reaches it)."""
    level = math.log10(prior.required)
    above = log_xi >= level
    rows = np.flatnonzero(above.any(axis=1) & ~above[:, 0])
    out = np.full(len(ys), np.nan)
    out[above[:, 0]] = xs[0]  # the whole row accepted: the line is the left edge
    if not len(rows):
        return out
    first = above[rows].argmax(axis=1)
    lo, hi = xs[first - 1].astype(float), xs[first].astype(float)
    for _ in range(24):  # (x1 - x0)/n / 2**24: far below a pixel
        mid = 0.5 * (lo + hi)
        pts = [
            {**base, xname: float(m), yname: float(ys[r])} for m, r in zip(mid, rows, strict=True)
        ]
        xi = prior.evaluate(pts)["xi_c"]
        ok = np.where(np.isfinite(xi), xi, np.inf) >= prior.required
        hi, lo = np.where(ok, mid, hi), np.where(ok, lo, mid)
    out[rows] = hi
    return out


@dataclass(frozen=True)
class _Grid:
    gx: np.ndarray
    gy: np.ndarray
    xi: np.ndarray
    log_xi: np.ndarray
    base: dict[str, float]
    edge: np.ndarray


#: The last maps' grids (up to a few seconds of theory each), keyed by everything they depend
#: on: the map is redrawn on each request (its trials change), its ξ_C grid only when the
#: criterion does (a calibration moves c). Bounded; shared by the server's threads.
_GRIDS: OrderedDict[tuple[Any, ...], _Grid] = OrderedDict()
_GRIDS_MAX = 16
_GRIDS_LOCK = threading.Lock()


def _grid_key(prior: Prior, n: int) -> tuple[Any, ...]:
    space = tuple(sorted((k, repr(v)) for k, v in prior.space.items()))
    return (prior.cell, prior.T, prior.c, prior.weights, repr(prior.inputs), space,
            tuple(prior.names), n)  # fmt: skip


def _grid(prior: Prior) -> _Grid:
    """ξ_C on the map's grid and the criterion's edge across it, computed once per criterion."""
    xname, (x0, x1), yname, (y0, y1) = _axes(prior)
    n = int(math.sqrt(prior.points_for(3.0, 64, GRID * GRID)))  # at most about 3 s
    key = _grid_key(prior, n)
    with _GRIDS_LOCK:
        if key in _GRIDS:
            _GRIDS.move_to_end(key)
            return _GRIDS[key]
    xs, ys = np.linspace(x0, x1, n), np.linspace(y0, y1, n)
    gx, gy = np.meshgrid(xs, ys)
    base = {}
    for name in prior.names:
        if name not in (xname, yname):
            d = prior.space[name]
            base[name] = 0.5 * (float(d.low) + float(d.high))  # type: ignore[attr-defined]
    pairs = zip(gx.ravel(), gy.ravel(), strict=True)
    points = [{**base, xname: float(a), yname: float(b)} for a, b in pairs]
    names = sorted({*prior.names, yname})
    grid_prior = Prior(**{**prior.__dict__, "names": names, "gradient_bounds": None})
    xi = grid_prior.evaluate(points)["xi_c"].reshape(gx.shape)
    log_xi = np.log10(np.clip(np.where(np.isfinite(xi), xi, 1e12), 1e-2, 1e12))
    edge = _boundary(grid_prior, base, xname, yname, xs, ys, log_xi)
    grid = _Grid(gx, gy, xi, log_xi, base, edge)
    with _GRIDS_LOCK:
        _GRIDS[key] = grid
        while len(_GRIDS) > _GRIDS_MAX:
            _GRIDS.popitem(last=False)
    return grid


def prior_map(
    prior: Prior,
    trials: list[dict[str, Any]],
    title: str,
    trained: float = 0.55,
    trained_means: str = "",
) -> PriorMap:
    """Render the map (PNG). ``trials`` as the API lists them; ``trained``: the value from which a
    completed trial counts as trained (drawn green, else orange), ``trained_means`` that rule in
    words for the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xname, (x0, x1), yname, (y0, y1) = _axes(prior)
    grid = _grid(prior)
    gx, gy, xi, log_xi, base, edge = grid.gx, grid.gy, grid.xi, grid.log_xi, grid.base, grid.edge
    ys = gy[:, 0]

    fig, ax = plt.subplots(figsize=(6.4, 6.0), dpi=100, layout="constrained")
    mesh = ax.pcolormesh(gx, gy, log_xi, cmap="Greys", shading="auto", alpha=0.55)
    fig.colorbar(mesh, ax=ax, label="log10 ξ_C (steps)")
    ax.plot(edge, ys, color="#1f4e9c", lw=2, label=f"ξ_C = T/c = {prior.T}/{prior.c:.3g}", zorder=2)
    # the ridge of critical initializations, where ξ_C diverges: the grid never lands on it
    # exactly, so it shows as cells far above both neighbours in a row (or as huge values)
    ridge = ~np.isfinite(xi) | (xi >= DIVERGING)
    ridge[:, 1:-1] |= log_xi[:, 1:-1] - np.maximum(log_xi[:, :-2], log_xi[:, 2:]) > RIDGE
    ridge_at = None
    if ridge.sum() >= 3:  # label the point of it nearest the picture's centre
        cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
        d = ((gx - cx) / (x1 - x0)) ** 2 + ((gy - cy) / (y1 - y0)) ** 2
        k = np.unravel_index(np.where(ridge, d, np.inf).argmin(), d.shape)
        ridge_at = (float(gx[k]), float(gy[k]))
        ax.annotate(
            "ridge: ξ_C diverges on the critical line", xy=(gx[k], gy[k]),
            xytext=(0.03, 0.96), textcoords="axes fraction", va="top", fontsize=8,
            arrowprops={"arrowstyle": "->", "color": "#444444"}, zorder=2,
        )  # fmt: skip
    labels = {
        "trained": f"trained ({trained_means})" if trained_means else "trained",
        "complete": "completed, not trained",
        "PRUNED": "pruned",
        "FAIL": "failed",
        "RUNNING": "running or waiting",
    }
    drawn: list[tuple[int, float, float]] = []
    for layer, outcome in enumerate(LAYERS):
        pts = [t for t in trials if _outcome(t, trained) == outcome and xname in t["params"]]
        if not pts:
            continue
        color = COLORS[outcome]
        ax.scatter([], [], s=70, color=color, marker="o", label=labels[outcome])
        for predicted, marker in ((True, "o"), (False, "s")):
            mine = [t for t in pts if _predicted(t) is predicted]
            if not mine:
                continue
            px = [float(t["params"][xname]) for t in mine]
            py = [float(t["params"].get(yname, base.get(yname, 1.0))) for t in mine]
            size = 45 if outcome == "FAIL" else 70
            ax.scatter(px, py, s=size, color=color, marker=marker, edgecolors="white",
                       linewidths=0.8, zorder=3 + layer)  # fmt: skip
    ax.scatter([], [], s=50, facecolors="none", edgecolors="#444444", marker="o",
               label="round: predicted trainable")  # fmt: skip
    ax.scatter([], [], s=50, facecolors="none", edgecolors="#444444", marker="s",
               label="square: predicted not")  # fmt: skip
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel(xname)
    ax.set_ylabel(yname)
    ax.set_title(title, fontsize=10)
    fig.legend(loc="outside lower center", ncol=2, fontsize=8)  # never over a trial
    fig.canvas.draw()
    height = fig.canvas.get_width_height()[1]
    for t in trials:
        if xname in t["params"]:
            y = float(t["params"].get(yname, base.get(yname, 1.0)))
            px, py = ax.transData.transform((float(t["params"][xname]), y))
            drawn.append((int(t["number"]), float(px), float(height - py)))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    return PriorMap(buf.getvalue(), drawn, xname, yname, legend, ridge_at)
