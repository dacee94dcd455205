"""``isotune trainability-map``: train a grid of initializations × bridge lengths, fit the
trainability constant c of the rule T ≤ c·ξ_C, and write a report (JSON, PNG, markdown).

With ``--headline-T`` it also trains PyTorch's default and the critical initialization at each of
those T on the same task: the papers' headline (default fails beyond some T, critical keeps
training), as a table in the same report.
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from cli.theory import parse_sets
from cli.train import parse_options

__all__ = ["parse_list", "parse_values", "trainmap_cmd"]


def parse_values(spec: str, field: str) -> list[float]:
    """``"0:8:9"`` (start:stop:count, inclusive) or ``"0,2,4"``."""
    from workers.train import TrainError

    try:
        if ":" in spec:
            start, stop, count = spec.split(":")
            n = int(count)
            if n < 1:
                raise ValueError
            return [float(v) for v in np.linspace(float(start), float(stop), n)]
        return [float(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        raise TrainError(field, spec, "expected START:STOP:COUNT or a comma list") from None


def parse_list(spec: str, field: str) -> list[int]:
    from workers.train import TrainError

    try:
        out = [int(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        raise TrainError(field, spec, "expected a comma list of integers, e.g. 10,30,100") from None
    if not out or min(out) < 1:
        raise TrainError(field, spec, "expected positive integers")
    return out


def trainmap_cmd(
    task: Annotated[
        str, typer.Option("--task", help="Task (see isotune train).")
    ] = "padded_digits",
    cell: Annotated[str, typer.Option("--cell", help="lstm, gru, minimalrnn or vanilla.")] = "lstm",
    param: Annotated[
        str,
        typer.Option("--param", help="Hyperparameter on the x axis (default: memory gate bias)."),
    ] = "",
    values: Annotated[
        str, typer.Option("--values", help="Its values: START:STOP:COUNT or a comma list.")
    ] = "0:8:9",
    Ts: Annotated[str, typer.Option("--T", help="Bridge lengths, comma list.")] = "10,30,100",
    seeds: Annotated[int, typer.Option("--seeds", help="Seeds per grid cell.")] = 2,
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="NAME=VALUE",
            help="Other init hyperparameters (default: sigma=1, nu=1, mu=0, rho=0).",
        ),
    ] = None,
    weights: Annotated[
        str, typer.Option("--weights", help="gaussian or orthogonal.")
    ] = "orthogonal",
    hidden: Annotated[int, typer.Option("--hidden", help="Hidden units.")] = 64,
    steps: Annotated[int, typer.Option("--steps", help="Training steps per run.")] = 300,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Batch size.")] = 32,
    lr: Annotated[float, typer.Option("--lr", help="Learning rate (Adam).")] = 3e-3,
    eval_every: Annotated[int, typer.Option("--eval-every", help="Steps between tests.")] = 100,
    option: Annotated[
        list[str] | None, typer.Option("--option", metavar="KEY=VALUE", help="Task option.")
    ] = None,
    headline_T: Annotated[
        str, typer.Option("--headline-T", help="T values for default vs critical (empty: skip).")
    ] = "",
    workers: Annotated[int, typer.Option("--workers", help="Parallel processes (0: CPUs).")] = 0,
    out: Annotated[Path, typer.Option("--out", help="Report folder.")] = Path("out/trainmap"),
    name: Annotated[str, typer.Option("--name", help="Report file stem.")] = "",
    replot_json: Annotated[
        Path | None,
        typer.Option("--replot", help="Refit and redraw an existing report JSON; no training."),
    ] = None,
) -> None:
    """Trainability map: accuracy over an init hyperparameter × T, with the fitted boundary."""
    if replot_json is not None:
        replot(replot_json)
        return
    from workers.train import TrainConfig
    from workers.trainmap import fit_boundary, memory_gate_param, run_map, summarize

    param = param or memory_gate_param(cell)
    vals = parse_values(values, "values")
    t_list = parse_list(Ts, "T")
    base_params = {"mu": 0.0, "rho": 0.0, "sigma": 1.0, "nu": 1.0, **parse_sets(sets)}
    base = TrainConfig(
        task=task,
        T=t_list[0],
        cell=cell,
        hidden=hidden,
        init=base_params,
        weights=weights,
        optimizer="adam",
        lr=lr,
        batch_size=batch_size,
        steps=steps,
        eval_every=eval_every,
        eval_size=512,
        device="cpu",
        threads=1,
        task_options=parse_options(option),
    ).validate()
    started = time.time()

    def show(run: Any, done: int, total: int) -> None:
        typer.echo(
            f"[{done}/{total}] {param}={run.value:.3g} T={run.T} seed={run.seed}: "
            f"accuracy {run.accuracy:.3f} (ξ_C {run.xi_c:.3g}) in {run.seconds:.0f} s",
            err=True,
        )

    runs = run_map(
        base,
        base_params,
        param,
        vals,
        t_list,
        range(seeds),
        workers=workers or None,
        on_result=show,
    )
    boundary = fit_boundary(runs)
    headline = []
    if headline_T:
        from workers.trainmap import headline_runs

        headline = headline_runs(
            base, parse_list(headline_T, "headline-T"), range(seeds), workers=workers or None
        )
    report = {
        "task": task,
        "cell": cell,
        "param": param,
        "values": vals,
        "T": t_list,
        "seeds": seeds,
        "base_params": base_params,
        "train": base.to_dict(),
        "machine": f"{platform.machine()}, {_cpu()}",
        "minutes": (time.time() - started) / 60,
        "runs": [asdict(r) for r in runs],
        "grid": summarize(runs),
        "boundary": asdict(boundary),
        "headline": headline,
    }
    out.mkdir(parents=True, exist_ok=True)
    stem = name or f"trainability_{cell}_{task}"
    _finish(report, out, stem)


def _finish(report: dict[str, Any], out: Path, stem: str) -> None:
    """Write the report's JSON, PNG and markdown and print the fit."""
    b = report["boundary"]
    (out / f"{stem}.json").write_text(json.dumps(_jsonable(report), indent=1) + "\n")
    _plot(report, out / f"{stem}.png")
    (out / f"{stem}.md").write_text(_markdown(report, f"{stem}.png"))
    lo, hi = b["c_range"]
    p_lo, p_hi = b["plateau"]
    typer.echo(
        f"c = {b['c']:.3g} (best separation for c in {lo:.3g}–{hi:.3g}, within 2 points for "
        f"{p_lo:.3g}–{p_hi:.3g}); {100 * b['accuracy']:.1f}% of {b['n_runs']} runs on the "
        "predicted side"
    )
    typer.echo(f"wrote {out / stem}.{{json,png,md}}")


def replot(path: Path) -> None:
    """Refit and rewrite a report from its JSON (no training)."""
    from workers.trainmap import MapRun, fit_boundary

    report = json.loads(path.read_text())
    runs = [
        MapRun(**{k: (math.inf if v == "inf" else v) for k, v in r.items()}) for r in report["runs"]
    ]
    report["boundary"] = asdict(fit_boundary(runs))
    _finish(report, path.parent, path.stem)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not np.isfinite(x):
        return None if np.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from contract.tasks import task_spec
    from meanfield import Config, Inputs
    from workers.trainmap import xi_of

    g = report["grid"]
    vals, Ts, acc = np.array(g["values"]), np.array(g["Ts"]), np.array(g["accuracy"])
    fig, ax = plt.subplots(figsize=(7.5, 5))
    im = ax.pcolormesh(
        np.arange(len(vals) + 1) - 0.5,
        np.arange(len(Ts) + 1) - 0.5,
        acc,
        cmap="viridis",
        vmin=0,
        vmax=1,
        shading="flat",
    )
    ax.set_xticks(range(len(vals)), [f"{v:.3g}" for v in vals])
    ax.set_yticks(range(len(Ts)), [str(t) for t in Ts])
    ax.set_xlabel(f"{report['param']} (initialization)")
    ax.set_ylabel("T (bridge length, steps)")
    fig.colorbar(im, ax=ax, label="test accuracy (mean over seeds)")
    # predicted boundary T = c·ξ_C(value), on a fine grid of values, mapped to the T-index axis
    spec = task_spec(report["task"], int(Ts[0]), **report["train"]["task_options"])
    base = Config.from_flat(
        report["cell"], report["base_params"], weights=report["train"]["weights"]
    )
    fine = np.linspace(vals.min(), vals.max(), 200)
    xi = xi_of(base, report["param"], fine, Inputs(R=spec.R, regime=spec.regime, R_ab=spec.R_ab))
    xpos = np.interp(fine, vals, np.arange(len(vals)))
    b = report["boundary"]
    for c, style, label in (
        (b["c"], "-", f"T = c·ξ_C, fitted c = {b['c']:.3g}"),
        (1.0, ":", "T = ξ_C (c = 1)"),
    ):
        ypos = _log_position(c * xi, Ts)
        ax.plot(xpos, ypos, style, color="red", lw=2, label=label)
    ax.set_ylim(-0.5, len(Ts) - 0.5)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"{report['cell']} on {report['task']}: trainable where T ≤ c·ξ_C")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _log_position(T: np.ndarray, Ts: np.ndarray) -> np.ndarray:
    """Position of T on an axis whose cell i is centred on Ts[i], linear in log T (extrapolated
    half a cell beyond the ends; NaN farther out, so that the curve stops at the map's edge)."""
    lt, lT = np.log(np.maximum(T, 1e-12)), np.log(Ts.astype(float))
    idx = np.arange(len(Ts), dtype=float)
    if len(Ts) == 1:
        return np.where(np.abs(lt - lT[0]) < 1, 0.0, np.nan)
    pos = np.interp(lt, lT, idx)
    below, above = lt < lT[0], lt > lT[-1]
    pos = np.where(below, (lt - lT[0]) / (lT[1] - lT[0]), pos)
    pos = np.where(above, len(Ts) - 1 + (lt - lT[-1]) / (lT[-1] - lT[-2]), pos)
    return np.where((pos >= -0.5) & (pos <= len(Ts) - 0.5), pos, np.nan)


def _markdown(r: dict[str, Any], png: str) -> str:
    b = r["boundary"]
    g = r["grid"]
    head = "| T \\ " + r["param"] + " | " + " | ".join(f"{v:.3g}" for v in g["values"]) + " |"
    sep = "|---" * (len(g["values"]) + 1) + "|"
    xi_row = {}
    for run in r["runs"]:
        xi_row[run["value"]] = run["xi_c"]
    rows = [head, sep, "| ξ_C | " + " | ".join(f"{xi_row[v]:.3g}" for v in g["values"]) + " |"]
    for T, accs in zip(g["Ts"], g["accuracy"], strict=True):
        rows.append(f"| {T} | " + " | ".join(f"{a:.2f}" for a in accs) + " |")
    profile = ", ".join(f"{c:.3g}: {100 * a:.0f}%" for c, a in b["profile"])
    band = (
        f"An upper edge ξ_C ≤ {b['c_high']:.3g}·T raises it to {100 * b['band_accuracy']:.1f}%."
        if b["c_high"]
        else "An upper edge (too long a memory) does not improve the separation."
    )
    text = f"""# Trainability map: {r["cell"]} on {r["task"]}

Written by `isotune trainability-map` on {r["machine"]} in {r["minutes"]:.0f} minutes.
{len(r["runs"])} runs: {r["param"]} ∈ {{{", ".join(f"{v:.3g}" for v in r["values"])}}} ×
T ∈ {{{", ".join(map(str, r["T"]))}}} × {r["seeds"]} seeds; other hyperparameters
{", ".join(f"{k}={v:g}" for k, v in r["base_params"].items())}, {r["train"]["weights"]} recurrent
weights; hidden {r["train"]["hidden"]}, Adam lr {r["train"]["lr"]:g}, batch
{r["train"]["batch_size"]}, {r["train"]["steps"]} steps; task options {r["train"]["task_options"]}.
A run counts as trained when its final test accuracy is at least halfway from chance to 1.

**Fitted constant: c = {b["c"]:.3g}**: the rule T ≤ c·ξ_C puts **{100 * b["accuracy"]:.1f}%**
of the {b["n_runs"]} runs on their predicted side, and every c in {b["c_range"][0]:.3g}–
{b["c_range"][1]:.3g} does as well (the grid cannot tell them apart). Uncertainty: 68% bootstrap
interval over runs {b["c_interval"][0]:.3g}–{b["c_interval"][1]:.3g}; the separation stays within
2 points of its best for c in {b["plateau"][0]:.3g}–{b["plateau"][1]:.3g}. {band}

Separation against c: {profile}.

![trainability map]({png})

Mean test accuracy over seeds (ξ_C: the initialization's mean-field memory time):

{chr(10).join(rows)}
"""
    if r["headline"]:
        hl = ["| T | default accuracy | critical accuracy | critical ξ_C |", "|---|---|---|---|"]
        for row in r["headline"]:
            hl.append(
                f"| {row['T']} | {row['default']:.3f} | {row['critical']:.3f} | "
                f"{row['critical_xi_c']:.3g} |"
            )
        text += f"""
## Default against critical initialization

PyTorch's default initialization against the critical one (memory-gate bias solved for
ξ_C = T, c = 1), same task and training, mean test accuracy over {r["seeds"]} seeds:

{chr(10).join(hl)}
"""
    return text
