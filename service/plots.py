"""The prior map of a study: where the theory expects training to work, and where the trials went.

ξ_C (log scale) over the memory-gate bias (x) and a second initialization hyperparameter (y: the
second one in the study's space, else the weight scale ``nu`` over [0.25, 2]); the other
hyperparameters sit at the middle of their ranges (or the engine's defaults). The contour
ξ_C = T/c bounds the region the criterion accepts; every trial is a point coloured by its outcome.
"""

from __future__ import annotations

import io
import math
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


@dataclass
class PriorMap:
    png: bytes
    #: each trial's position in the image, pixels from the top-left corner: (trial number, x, y)
    positions: list[tuple[int, float, float]]
    x: str
    y: str


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


def _outcome(trial: dict[str, Any], trained: float) -> str:
    state = trial["state"]
    if state == "COMPLETE":
        value = trial.get("value")
        return "trained" if value is not None and value >= trained else "complete"
    return state if state in COLORS else "RUNNING"


def prior_map(
    prior: Prior, trials: list[dict[str, Any]], title: str, trained: float = 0.55
) -> PriorMap:
    """Render the map (PNG). ``trials`` as the API lists them; ``trained``: the value from which a
    completed trial counts as trained (drawn green, else orange)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xname, (x0, x1), yname, (y0, y1) = _axes(prior)
    n = int(math.sqrt(prior.points_for(3.0, 64, GRID * GRID)))  # at most about 3 s
    xs, ys = np.linspace(x0, x1, n), np.linspace(y0, y1, n)
    gx, gy = np.meshgrid(xs, ys)
    base = {}
    for n in prior.names:
        if n not in (xname, yname):
            d = prior.space[n]
            base[n] = 0.5 * (float(d.low) + float(d.high))  # type: ignore[attr-defined]
    pairs = zip(gx.ravel(), gy.ravel(), strict=True)
    points = [{**base, xname: float(a), yname: float(b)} for a, b in pairs]
    names = sorted({*prior.names, yname})
    grid_prior = Prior(**{**prior.__dict__, "names": names, "gradient_bounds": None})
    xi = grid_prior.evaluate(points)["xi_c"].reshape(gx.shape)
    log_xi = np.log10(np.clip(np.where(np.isfinite(xi), xi, 1e12), 1e-2, 1e12))

    fig, ax = plt.subplots(figsize=(6.4, 5.2), dpi=100, layout="constrained")
    mesh = ax.pcolormesh(gx, gy, log_xi, cmap="Greys", shading="auto", alpha=0.55)
    fig.colorbar(mesh, ax=ax, label="log10 ξ_C (steps)")
    level = math.log10(prior.required)
    if log_xi.min() < level < log_xi.max():
        ax.contour(gx, gy, log_xi, levels=[level], colors=["#1f4e9c"], linewidths=2)
    ax.plot([], [], color="#1f4e9c", lw=2, label=f"ξ_C = T/c = {prior.T}/{prior.c:g}")
    drawn: list[tuple[int, float, float]] = []
    for outcome, color in COLORS.items():
        pts = [t for t in trials if _outcome(t, trained) == outcome and xname in t["params"]]
        if not pts:
            continue
        px = [float(t["params"][xname]) for t in pts]
        py = [float(t["params"].get(yname, base.get(yname, 1.0))) for t in pts]
        ax.scatter(px, py, s=70, color=color, edgecolors="white", linewidths=0.8, label=outcome,
                   zorder=3)  # fmt: skip
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel(xname)
    ax.set_ylabel(yname)
    ax.set_title(title, fontsize=10)
    fig.legend(loc="outside lower center", ncol=3, fontsize=8)  # never over a trial
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
    return PriorMap(png=buf.getvalue(), positions=drawn, x=xname, y=yname)
