"""``isotune theory``: the mean-field engine on the command line (docs/theory.md §3-5).

Commands only translate between flags and :mod:`meanfield` calls. Bad input raises
:class:`~meanfield.MeanFieldError` (field, value, reason); :mod:`cli.main` turns it into one line on
stderr and exit code 2. JSON output is one object per call; ξ = ∞ is written as the string ``"inf"``
(``float("inf")`` parses it), an undefined value as ``null``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from cli.plots import GATE_MEANING, Marker, XiGrid, describe, xi_grid
from meanfield import (
    CELLS,
    MEMORY_GATE,
    Config,
    FixedPointResult,
    Inputs,
    MeanFieldError,
    fixed_point,
    isometry,
)
from meanfield.constants import MEASURED_C
from meanfield.critical import DEFAULT_C, critical_init
from meanfield.params import HYPERPARAMETERS

__all__ = ["emit", "parse_axis", "parse_sets", "theory_app", "to_json"]

theory_app = typer.Typer(
    name="theory",
    help="Mean-field theory of the cells: fixed points, memory time ξ, critical initialization.",
    short_help="Mean-field fixed points, ξ, critical init.",
    no_args_is_help=True,
    rich_markup_mode=None,  # help texts use brackets: E[x²], xi_c[i][j]
)

#: Largest COUNT of a map axis (a 1024×1024 LSTM grid already takes minutes).
MAX_AXIS_COUNT = 1024

CellOpt = Annotated[str, typer.Option("--cell", help="lstm, gru, minimalrnn or vanilla.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="NAME=VALUE",
        help="Hyperparameter mu, rho, sigma or nu, optionally with a gate suffix (mu_f, nu_g). "
        "Without suffix it sets every gate; a gate-specific value wins whatever the order. "
        "Repeat for several; a later repeat of the same name wins.",
    ),
]
InputVarOpt = Annotated[
    float, typer.Option("--input-var", help="R = E[x²] of the inputs over the span to bridge.")
]
InputsOpt = Annotated[
    str,
    typer.Option(
        "--inputs", help="independent (two examples see independent inputs) or shared (same input)."
    ),
]
JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json",
        help='Print one JSON object instead of a table. ξ = ∞ is the string "inf"; '
        "undefined values are null.",
    ),
]
COpt = Annotated[float, typer.Option("--c", help="Trainability constant: trainable if T ≤ c·ξ_C.")]
WeightsOpt = Annotated[
    str, typer.Option("--weights", help="Recurrent weights: gaussian or orthogonal (Haar).")
]

MEANING = {
    "q_star": "Q* = E[h²] at the fixed point",
    "m_star": "mean E[h] at the fixed point (LSTM: E[c], the cell state's)",
    "s_star": "E[c²] of the LSTM cell state",
    "c_star": "C*, correlation of two examples' states",
    "chi_q": "slope of the Q map at Q*",
    "xi_q": "steps for Q to relax to Q*",
    "chi_c": "slope of the C map at C*",
    "xi_c": "memory time: an input is forgotten after a few ξ_C steps",
    "m1": "one-step Jacobian: mean squared singular value",
    "m2": "one-step Jacobian: second moment of JJᵀ's spectrum",
    "log_m1_T": "T log m1: gradient growth over T steps (|·| ≲ 1 is isometric)",
    "spread_T": "spread Var/mean² of the T-step JJᵀ spectrum (≲ 1 is isometric)",
    "converged": "fixed-point solve converged",
}


# --- parsing -------------------------------------------------------------------------------------


def parse_sets(items: list[str] | None) -> dict[str, float]:
    """``["mu=0", "mu_f=2"]`` → ``{"mu": 0.0, "mu_f": 2.0}``; names are checked by the engine."""
    out: dict[str, float] = {}
    for item in items or ():
        name, sep, raw = (part.strip() for part in item.partition("="))
        if not sep or not name:
            raise MeanFieldError("set", item, "expected NAME=VALUE, e.g. mu_f=2")
        try:
            value = float(raw)
        except ValueError:
            raise MeanFieldError(name, raw, "must be a number") from None
        if not math.isfinite(value):
            raise MeanFieldError(name, raw, "must be finite (not NaN or infinity)")
        out[name] = value
    return out


def parse_axis(option: str, spec: str) -> tuple[str, np.ndarray]:
    """``"mu_f:0:8:64"`` → ``("mu_f", linspace(0, 8, 64))``."""
    parts = spec.split(":")
    hint = "expected NAME:START:STOP:COUNT, e.g. mu_f:0:8:64"
    if len(parts) != 4 or not parts[0].strip():
        raise MeanFieldError(option, spec, hint)
    name = parts[0].strip()
    try:
        start, stop, count = float(parts[1]), float(parts[2]), int(parts[3])
    except ValueError:
        raise MeanFieldError(option, spec, hint) from None
    if not (math.isfinite(start) and math.isfinite(stop)) or start == stop:
        raise MeanFieldError(option, spec, "START and STOP must be finite and differ")
    if not 2 <= count <= MAX_AXIS_COUNT:
        raise MeanFieldError(option, spec, f"COUNT must be between 2 and {MAX_AXIS_COUNT}")
    return name, np.linspace(start, stop, count)


def _positive_steps(T: int | None) -> None:
    if T is not None and T < 1:
        raise MeanFieldError("T", T, "must be a positive number of steps")


# --- output --------------------------------------------------------------------------------------


def to_json(value: Any) -> Any:
    """JSON-safe copy: numpy → Python, ±∞ → ``"inf"``/``"-inf"``, NaN → ``None``."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
    return value


def emit(record: dict[str, Any]) -> None:
    typer.echo(json.dumps(to_json(record), allow_nan=False))


def _fmt(value: Any, digits: int = 6) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "NO"
    if isinstance(value, float | int | np.floating | np.integer):
        v = float(value)
        if math.isnan(v):
            return "-"
        return "∞" if math.isinf(v) else f"{v:.{digits}g}"
    return str(value)


def _table(rows: list[list[str]], header: list[str] | None = None) -> str:
    rows = [header, *rows] if header else rows
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
    return "\n".join(line.rstrip() for line in lines)


def _params_table(cell: str, params: dict[str, Any]) -> str:
    rows = [[g, *(_fmt(params[f"{hp}_{g}"]) for hp in HYPERPARAMETERS)] for g in CELLS[cell]]
    return _table(rows, ["gate", *HYPERPARAMETERS])


def _record(cfg: Config, inputs: Inputs, res: FixedPointResult, T: int | None) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "cell": cfg.cell,
        "inputs": inputs.regime,
        "input_var": float(inputs.R),
        "weights": cfg.weights,
        "params": cfg.to_flat_dict(),
        **res.to_dict(),
    }
    if cfg.cell != "lstm":
        rec["s_star"] = None
    if T is not None:
        iso = isometry(res.m1, res.m2, T, res.unit_moments)
        rec.update(T=T, log_m1_T=float(iso.log_m1), spread_T=float(iso.spread))
    return rec


def _print_record(rec: dict[str, Any], headline: str) -> None:
    typer.echo(headline)
    typer.echo(f"inputs {rec['inputs']} (R = {rec['input_var']:g}), weights {rec['weights']}\n")
    typer.echo(_params_table(rec["cell"], rec["params"]) + "\n")
    rows = [
        [k, _fmt(rec[k]), MEANING[k]]
        for k in MEANING
        if k in rec and not (k == "s_star" and rec[k] is None)
    ]
    typer.echo(_table(rows, ["quantity", "value", "meaning"]))


# --- commands ------------------------------------------------------------------------------------


@theory_app.command("fixed-point", short_help="Fixed point and time scales of one config.")
def fixed_point_cmd(
    cell: CellOpt = "lstm",
    sets: SetOpt = None,
    input_var: InputVarOpt = 1.0,
    inputs: InputsOpt = "independent",
    weights: WeightsOpt = "gaussian",
    T: Annotated[
        int | None, typer.Option("--T", help="Bridge length: adds T-step isometry measures.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Fixed point, time scales ξ_Q and ξ_C, and Jacobian moments of one configuration."""
    stats = Inputs(R=input_var, regime=inputs)  # type: ignore[arg-type]
    cfg = Config.from_flat(cell, parse_sets(sets), weights=weights)
    _positive_steps(T)
    rec = _record(cfg, stats, fixed_point(cfg, stats), T)
    if as_json:
        emit(rec)
    else:
        _print_record(rec, f"{cell}: mean-field fixed point")


@theory_app.command("critical", short_help="Memory-gate bias that gives ξ_C = T/c.")
def critical_cmd(
    T: Annotated[int, typer.Option("--T", help="Bridge length in steps (target ξ_C = T/c).")],
    cell: CellOpt = "lstm",
    c: COpt = DEFAULT_C,
    sets: SetOpt = None,
    input_var: InputVarOpt = 1.0,
    inputs: InputsOpt = "independent",
    weights: WeightsOpt = "orthogonal",
    as_json: JsonOpt = False,
) -> None:
    """Critical initialization: the memory-gate bias that gives ξ_C = T/c (docs/theory.md §5)."""
    stats = Inputs(R=input_var, regime=inputs)  # type: ignore[arg-type]
    base = parse_sets(sets)
    _positive_steps(T)
    r = critical_init(cell, T, stats, c=c, weights=weights, base=base)
    rec = _record(r.config, stats, r.fixed_point, T)
    ok = bool(r.converged) and bool(r.fixed_point.converged)
    rec.update(c=c, gate=r.gate, mu=r.mu, target_xi=r.target_xi, converged=ok)
    if as_json:
        emit(rec)
        return
    _print_record(
        rec,
        f"{cell}: critical initialization for T = {T}, c = {c:g} → target ξ_C = {r.target_xi:g}\n"
        f"solved: mu_{r.gate} = {r.mu:.6g} ({describe('mu_' + r.gate, cell)})",
    )


@theory_app.command("map", short_help="Heatmap of ξ_C over two hyperparameters.")
def map_cmd(
    T: Annotated[int, typer.Option("--T", help="Bridge length; the contour ξ_C = T/c is drawn.")],
    out: Annotated[Path, typer.Option("--out", help="PNG file to write.")],
    cell: CellOpt = "lstm",
    x: Annotated[
        str | None,
        typer.Option("--x", help="Axis NAME:START:STOP:COUNT; default mu_<memory gate>:0:10:64."),
    ] = None,
    y: Annotated[str, typer.Option("--y", help="Axis NAME:START:STOP:COUNT.")] = "nu:0.05:2:64",
    c: COpt = DEFAULT_C,
    sets: SetOpt = None,
    input_var: InputVarOpt = 1.0,
    inputs: InputsOpt = "independent",
    weights: WeightsOpt = "gaussian",
    json_out: Annotated[
        Path | None,
        typer.Option("--json-out", help="Also write the grid as JSON: xi_c[i][j] at y[i], x[j]."),
    ] = None,
) -> None:
    """Heatmap of ξ_C over two hyperparameters, with the contour ξ_C = T/c."""
    stats = Inputs(R=input_var, regime=inputs)  # type: ignore[arg-type]
    if cell not in CELLS:
        raise MeanFieldError("cell", cell, f"unknown cell; choose one of {sorted(CELLS)}")
    _positive_steps(T)
    if not (math.isfinite(c) and c > 0):
        raise MeanFieldError("c", c, "must be positive")
    x = x or f"mu_{MEMORY_GATE[cell] or 'h'}:0:10:64"
    grid = xi_grid(cell, parse_axis("x", x), parse_axis("y", y), parse_sets(sets), stats, weights)
    _write_map(grid, T=T, c=c, out=out, json_out=json_out)
    xi, ok = grid.result.xi_c, grid.result.converged
    typer.echo(
        f"wrote {out} ({xi.shape[1]}×{xi.shape[0]} grid, ξ_C from {_fmt(np.min(xi), 4)} to "
        f"{_fmt(np.max(xi), 4)}, {int(np.sum(xi >= T / c))} points with ξ_C ≥ T/c = {T / c:g}, "
        f"{int(np.sum(~ok))} not converged)"
    )
    if json_out is not None:
        typer.echo(f"wrote {json_out}")


def _write_map(
    grid: XiGrid,
    *,
    T: int,
    c: float,
    out: Path,
    json_out: Path | None,
    markers: Sequence[Marker] = (),
) -> None:
    from cli.plots import draw_xi_map  # imports matplotlib

    try:
        draw_xi_map(out, grid, T=T, c=c, markers=markers)
        if json_out is not None:
            record = {**grid.to_record(), "T": T, "c": c, "target_xi": T / c}
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(to_json(record), allow_nan=False) + "\n")
    except OSError as e:
        reason = f"cannot write ({e.strerror or e}: {e.filename})" if e.filename else str(e)
        raise MeanFieldError("out", out, reason) from None


# --- report --------------------------------------------------------------------------------------

#: PyTorch's default initialization (docs/theory.md §2): U(-1/√n, 1/√n) for every weight and bias,
#: i.e. nu² = 1/3 and sigma² = n_in/(3n) = 1/3 at n_in = n; rho² = 2/(3n) is negligible (set to 0).
TORCH_DEFAULT = {"mu": 0.0, "rho": 0.0, "sigma": math.sqrt(1 / 3), "nu": math.sqrt(1 / 3)}
REPORT_T = (100, 300, 1000)
REPORT_MAP_T = 300
CELL_TITLE = {
    "lstm": "LSTM (torch.nn.LSTM)",
    "gru": "GRU (torch.nn.GRU, reset after the matmul)",
    "minimalrnn": "minimalRNN [C18]",
    "vanilla": "vanilla tanh RNN (torch.nn.RNN)",
}
REPORT_INTRO = f"""\
isotune theory report: memory time ξ_C of wide random cells (untied mean-field theory, see
docs/theory.md). Inputs R = E[x²] = 1. ξ_C is in time steps; a task bridging T steps needs
T ≲ c·ξ_C.
PyTorch default: every weight and bias ~ U(-1/√n, 1/√n), i.e. nu² = 1/3, sigma² = n_in/(3n) = 1/3
  (n_in = n), mu = 0; the bias spread rho² = 2/(3n) (two bias vectors) is negligible (0.005 at
  n = 128) and set to 0.
Critical: memory-gate bias mu solved for ξ_C = T/c (independent inputs), c = {DEFAULT_C:g}: a
  memory as long as the bridge, the conservative end of the rule (the trainability maps
  measured c = {MEASURED_C["lstm"]:g} for the LSTM and {MEASURED_C["gru"]:g} for the GRU on padded
  digits with 500 training steps: meanfield/constants.py); sigma = 1, rho = 0, orthogonal
  recurrent weights, nu (all gates) the largest of 0.25, 0.5, 0.75, 1 whose T-step Jacobian is
  near-isometric: |T log m1| ≤ 1 (5 % slack) and T·spread ≤ 1 (dynamical isometry).
"""


@theory_app.command("report", short_help="Default vs critical init ξ_C, every cell.")
def report_cmd(
    out: Annotated[Path, typer.Option("--out", help="Folder for the LSTM map.")] = Path("out"),
) -> None:
    """ξ_C at PyTorch's default and at the critical initialization, per cell; writes an LSTM map."""
    independent, shared = Inputs(1.0, "independent"), Inputs(1.0, "shared")
    typer.echo(REPORT_INTRO)
    markers: list[Marker] = []
    for cell in CELLS:
        gate = MEMORY_GATE[cell]
        mem = f"mu_{gate}" if gate else "mu"
        cfg = Config.from_flat(cell, TORCH_DEFAULT)
        xi = [_fmt(float(fixed_point(cfg, s).xi_c), 4) for s in (independent, shared)]
        rows = [["PyTorch default", "0", _fmt(TORCH_DEFAULT["nu"], 4), *xi, "-", "-"]]
        for T in REPORT_T if gate else ():
            r = critical_init(cell, T, independent, c=DEFAULT_C)
            nu = r.params[f"nu_{gate}"]
            xi_shared = float(fixed_point(r.config, shared).xi_c)
            rows.append(
                [
                    f"critical, T = {T}" + ("" if r.converged else " (NOT converged)"),
                    *(_fmt(v, 4) for v in (r.mu, nu, r.xi_c, xi_shared)),
                    *(_fmt(float(v), 3) for v in (r.isometry.log_m1, r.isometry.spread)),
                ]
            )
            if cell == "lstm" and T == REPORT_MAP_T:
                markers.append(Marker(r.mu, nu, f"critical init, T = {T}"))
        memory = f"{gate} ({GATE_MEANING[cell][gate]})" if gate else "none"
        typer.echo(f"{CELL_TITLE[cell]}, memory gate: {memory}")
        header = ["initialization", mem, "nu", "ξ_C indep.", "ξ_C shared", "T log m1", "T·spread"]
        typer.echo(_table(rows, header))
        if not gate:
            typer.echo("critical: not reachable, ξ bounded (no memory gate; inputs reset h)")
        typer.echo("")
    typer.echo(
        "LSTM caveat (docs/theory.md §6): with tied weights and a saturated forget gate the real\n"
        "memory is longer than the untied ξ_C above, which is then a lower bound.\n"
    )
    grid = xi_grid(
        "lstm",
        ("mu_f", np.linspace(0.0, 10.0, 48)),
        ("nu", np.linspace(0.05, 1.5, 40)),
        {"rho": 0.0},
        independent,
        "orthogonal",
    )
    png, data = out / "lstm_xi_map.png", out / "lstm_xi_map.json"
    _write_map(grid, T=REPORT_MAP_T, c=DEFAULT_C, out=png, json_out=data, markers=markers)
    typer.echo(f"LSTM ξ_C map (mu_f × nu, T = {REPORT_MAP_T}): {png}")
