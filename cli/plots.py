"""The ξ_C map of ``isotune theory map``: a 2-D grid of fixed points and its heatmap.

:func:`xi_grid` evaluates :func:`meanfield.fixed_point` on the whole grid in one vectorized call;
:func:`draw_xi_map` draws it. matplotlib is imported inside :func:`draw_xi_map` only, so the other
theory commands need just numpy and scipy; figures go to an explicit Agg canvas (no pyplot state).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from meanfield import Config, FixedPointResult, Inputs, MeanFieldError, fixed_point
from meanfield.params import split_name

__all__ = ["GATE_MEANING", "Marker", "XiGrid", "describe", "draw_xi_map", "xi_grid"]

#: What each per-gate hyperparameter is (docs/theory.md §2).
HYPERPARAMETER_MEANING = {
    "mu": "bias mean",
    "rho": "bias std",
    "sigma": "input-weight scale",
    "nu": "recurrent-weight scale",
}

#: What each gate of each cell is (docs/theory.md §1, PyTorch's gate names).
GATE_MEANING = {
    "lstm": {"i": "input gate", "f": "forget gate", "g": "candidate", "o": "output gate"},
    "gru": {"r": "reset gate", "z": "update gate", "n": "candidate"},
    "minimalrnn": {"e": "input embedding", "u": "update gate"},
    "vanilla": {"h": "hidden"},
}


#: Smallest ξ_C shown (shorter memories are all "none"; keeps round-off near ξ = 0 off the scale).
XI_FLOOR = 1e-2


def describe(name: str, cell: str) -> str:
    """Meaning of a flat hyperparameter name: ``mu_f`` → ``forget-gate bias mean``."""
    hp, gate = split_name(name) or (name, None)
    what = HYPERPARAMETER_MEANING.get(hp, hp)
    if not gate:
        return f"{what}, all gates"
    where = GATE_MEANING.get(cell, {}).get(gate, f"gate {gate}")
    return f"{where.replace(' gate', '-gate')} {what}"


@dataclass(frozen=True)
class XiGrid:
    """Fixed points on a grid: ``result`` arrays have shape (len(ys), len(xs)), row i at ys[i]."""

    cell: str
    inputs: Inputs
    weights: str
    base: Mapping[str, float]
    x_name: str
    xs: np.ndarray
    y_name: str
    ys: np.ndarray
    result: FixedPointResult

    def to_record(self) -> dict[str, Any]:
        """Plain values for JSON: ``xi_c[i][j]`` is ξ_C at ``y.values[i]``, ``x.values[j]``."""
        r, cell = self.result, self.cell
        return {
            "cell": self.cell,
            "inputs": self.inputs.regime,
            "input_var": float(self.inputs.R),
            "weights": self.weights,
            "base": dict(self.base),
            "x": {"name": self.x_name, "meaning": describe(self.x_name, cell), "values": self.xs},
            "y": {"name": self.y_name, "meaning": describe(self.y_name, cell), "values": self.ys},
            "shape": list(r.xi_c.shape),
            "xi_c": r.xi_c,
            "chi_c": r.chi_c,
            "q_star": r.q_star,
            "converged": r.converged,
        }


def xi_grid(
    cell: str,
    x: tuple[str, np.ndarray],
    y: tuple[str, np.ndarray],
    base: Mapping[str, float],
    inputs: Inputs,
    weights: str,
) -> XiGrid:
    """Fixed points over x × y (other hyperparameters from ``base``) in one vectorized call.

    The axes follow :meth:`Config.from_flat`'s rule like ``base``: an axis ``mu`` does not move a
    gate whose ``mu_<gate>`` is set in ``base``.
    """
    (x_name, xs), (y_name, ys) = x, y
    if x_name == y_name:
        raise MeanFieldError("y", y_name, "must differ from the --x hyperparameter")
    X, Y = np.meshgrid(xs, ys)  # (ny, nx)
    cfg = Config.from_flat(cell, {**base, x_name: X, y_name: Y}, weights=weights)
    result = fixed_point(cfg, inputs)
    return XiGrid(cell, inputs, weights, dict(base), x_name, xs, y_name, ys, result)


@dataclass(frozen=True)
class Marker:
    """A labelled point drawn on the map (e.g. a critical initialization)."""

    x: float
    y: float
    label: str


def draw_xi_map(
    path: Path, grid: XiGrid, *, T: int, c: float, markers: Sequence[Marker] = ()
) -> Path:
    """Heatmap of log10 ξ_C with the contour ξ_C = T/c; writes a PNG to ``path``.

    ξ_C = ∞ (χ_C ≥ 1) is drawn in the colormap's "over" colour, ξ_C below ``XI_FLOOR`` as the
    floor, undefined values in grey; non-converged points are hatched.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    xs, ys, target = grid.xs, grid.ys, T / c
    xi = np.asarray(grid.result.xi_c, float)  # (ny, nx)
    finite, infinite = np.isfinite(xi), np.isposinf(xi)
    log_xi = np.where(finite, np.log10(np.clip(np.where(finite, xi, 1.0), XI_FLOOR, None)), np.nan)
    level = float(np.log10(target))
    lo = float(np.nanmin(log_xi)) if finite.any() else level - 1.0
    hi = float(np.nanmax(log_xi)) if finite.any() else level + 1.0
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    shown = np.ma.masked_invalid(np.where(infinite, hi + 1.0, log_xi))  # ∞ → "over", NaN → "bad"

    fig = Figure(figsize=(8.0, 5.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cmap = _colormap()
    mesh = ax.pcolormesh(xs, ys, shown, shading="nearest", cmap=cmap, norm=Normalize(lo, hi))
    bar = fig.colorbar(mesh, ax=ax, extend="max" if infinite.any() else "neither")
    bar.set_label("ξ_C (time steps, log10)")

    handles: list[Any] = []
    label = f"ξ_C = T/c = {target:g}"
    if lo < level < hi:
        ax.contour(xs, ys, log_xi, levels=[level], colors="#d62728", linewidths=2.2)
        handles.append(Line2D([], [], color="#d62728", lw=2.2, label=label))
    else:
        handles.append(Line2D([], [], color="none", label=f"{label} (outside this map)"))
    if infinite.any():
        handles.append(Patch(color=cmap.get_over(), label="ξ_C = ∞ (χ_C ≥ 1)"))
    if np.isnan(xi).any():
        handles.append(Patch(color=cmap.get_bad(), label="ξ_C undefined"))
    bad = ~np.asarray(grid.result.converged, bool)
    if bad.any():
        ax.contourf(xs, ys, bad.astype(float), levels=[0.5, 1.5], colors="none", hatches=["xx"])
        handles.append(Patch(facecolor="none", hatch="xx", label="fixed point not converged"))
    for m in markers:
        (point,) = ax.plot(
            [m.x], [m.y], marker="*", ms=13, color="white", mec="black", ls="none", label=m.label
        )
        handles.append(point)

    ax.set_xlabel(f"{grid.x_name} ({describe(grid.x_name, grid.cell)})")
    ax.set_ylabel(f"{grid.y_name} ({describe(grid.y_name, grid.cell)})")
    ax.set_title(
        f"{grid.cell.upper()} memory time ξ_C (mean-field)\n"
        f"inputs {grid.inputs.regime} (R = {float(grid.inputs.R):g}), {grid.weights} weights, "
        f"T = {T}, c = {c:g}"
    )
    ax.legend(handles=handles, loc="upper left", framealpha=0.85, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _colormap() -> Any:
    from matplotlib import colormaps

    return colormaps["viridis"].with_extremes(over="#fde0ef", bad="#bbbbbb")
