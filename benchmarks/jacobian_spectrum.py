"""Singular values of the T-step state-to-state Jacobian against the theory, and finite width.

docs/theory.md §4 predicts, from the untied mean-field fixed point, two moments of λ, the
eigenvalues of PPᵀ with P = J_T ⋯ J_1 the product of one-step Jacobians: the mean E[λ] = m₁^T and
the spread Var(λ)/E[λ]² (:func:`meanfield.jacobian.isometry` with the per-unit moments). This
script measures both on the recurrent cores the workers train (``workers.models``), near
criticality (ξ_C ≈ 50):

- *untied*: the weights are drawn afresh (:func:`workers.models.initialize`) at every step, the
  theory's own assumption;
- *tied*: one draw reused at every step, the real network.

Each one-step Jacobian is taken by autograd (``torch.func.jacrev``) through an explicit step written
from the module's own parameters; the script first checks that this step reproduces the module's
forward pass. For the LSTM the state is the cell state c, with h_{t-1} = o_{t-1} ⊙ tanh(c_{t-1})
(the Jacobian the engine reports, ``meanfield/cells/lstm.py``). Before P starts, the network runs
5·ξ_C + 20 steps so that it sits at its fixed point. Inputs are N(0, R = 1), fresh at every step.

Finite width (docs/theory.md §6): for widths n = 32 … 512 the measured mean and spread are compared
with the theory at T = 1, 2, 4, …, 256, against T/√n. A prediction is said to *hold* at T when the
seed-averaged mean is within 10 % of m₁^T and the spread within 25 % of the theory's or 0.025 of it
(a spread that small is isometric either way, and n eigenvalues cannot resolve it).

Usage: python benchmarks/jacobian_spectrum.py [--quick]
Writes benchmarks/results/jacobian_spectrum.{md,json} and jacobian_spectrum_{hist,width}.png.
About 15 minutes on a 2-core CPU; ``--quick`` is a small smoke run.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from meanfield import Config, Inputs, fixed_point  # noqa: E402
from meanfield.jacobian import isometry  # noqa: E402
from workers.models import MinimalRNN, initialize  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
N_IN = 32
MEAN_TOL, SPREAD_TOL, SPREAD_FLOOR = 0.10, 0.25, 0.025


@dataclass(frozen=True)
class Case:
    cell: str
    values: dict[str, float]

    def config(self) -> Config:
        return Config.from_flat(self.cell, self.values)


#: Near criticality, Gaussian weights (the "C" configurations of theory_vs_simulation.py).
CASES = (
    Case("lstm", {"mu_f": 4.9, "nu": 0.5, "sigma": 0.8}),
    Case("gru", {"mu_z": 5.1}),
    Case("minimalrnn", {"mu_u": 4.8}),
)

Step = Callable[[dict, torch.Tensor, tuple], tuple]


def core_of(cell: str, n: int) -> torch.nn.Module:
    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "minimalrnn": MinimalRNN}[cell]
    return module(N_IN, n).double()


def lstm_step(p: dict, x: torch.Tensor, state: tuple) -> tuple:
    """State (c, o): h_{t-1} = o ⊙ tanh(c); PyTorch's gate order i, f, g, o."""
    c, o = state
    h = o * torch.tanh(c)
    z = p["weight_ih_l0"] @ x + p["bias_ih_l0"] + p["weight_hh_l0"] @ h + p["bias_hh_l0"]
    i, f, g, o_next = z.chunk(4)
    return torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g), torch.sigmoid(o_next)


def gru_step(p: dict, x: torch.Tensor, state: tuple) -> tuple:
    """PyTorch's GRU (r, z, n), the reset applied after the recurrent matmul."""
    (h,) = state
    gi = p["weight_ih_l0"] @ x + p["bias_ih_l0"]
    gh = p["weight_hh_l0"] @ h + p["bias_hh_l0"]
    r_i, z_i, n_i = gi.chunk(3)
    r_h, z_h, n_h = gh.chunk(3)
    r, z = torch.sigmoid(r_i + r_h), torch.sigmoid(z_i + z_h)
    return ((1 - z) * torch.tanh(n_i + r * n_h) + z * h,)


def minimalrnn_step(p: dict, x: torch.Tensor, state: tuple) -> tuple:
    (h,) = state
    e = torch.tanh(p["weight_xe"] @ x + p["bias_e"])
    u = torch.sigmoid(p["weight_hu"] @ h + p["weight_eu"] @ e + p["bias_u"])
    return (u * h + (1 - u) * e,)


STEPS: dict[str, Step] = {"lstm": lstm_step, "gru": gru_step, "minimalrnn": minimalrnn_step}


def zero_state(cell: str, n: int) -> tuple[torch.Tensor, ...]:
    return tuple(torch.zeros(n, dtype=torch.float64) for _ in range(2 if cell == "lstm" else 1))


def params(core: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in core.named_parameters()}


def check_step(case: Case, n: int = 64, steps: int = 20) -> float:
    """Largest |difference| between the explicit step and the module's forward pass."""
    core = core_of(case.cell, n)
    initialize(core, case.config(), torch.Generator().manual_seed(0))
    x = torch.randn(steps, 1, N_IN, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = core(x)[0][:, 0]
        p = params(core)
        state = zero_state(case.cell, n)  # the module's h_0 = c_0 = 0
        mine = []
        for xt in x[:, 0].unbind(0):
            state = STEPS[case.cell](p, xt, state)
            mine.append(state[1] * torch.tanh(state[0]) if case.cell == "lstm" else state[0])
    return float((torch.stack(mine) - out).abs().max())


def theory(case: Case, checkpoints: list[int]) -> dict[str, list[float]]:
    fp = fixed_point(case.config(), Inputs(R=1.0))
    m1, m2 = float(fp.m1), float(fp.m2)
    iso = [isometry(np.array(m1), np.array(m2), T, fp.unit_moments) for T in checkpoints]
    return {
        "xi_c": float(fp.xi_c),
        "m1": m1,
        "m2": m2,
        "log_mean": [float(i.log_m1) for i in iso],
        "spread": [float(i.spread) for i in iso],
    }


def run(
    case: Case, n: int, seed: int, tied: bool, checkpoints: list[int], burn: int, keep: set[int]
) -> dict:
    """log E[λ] and Var(λ)/E[λ]² of one realization at every checkpoint; λ itself at ``keep``."""
    gen = torch.Generator().manual_seed(10_000 * seed + n + (0 if tied else 1))
    core, cfg, step = core_of(case.cell, n), case.config(), STEPS[case.cell]
    initialize(core, cfg, gen)
    p = params(core)
    state = zero_state(case.cell, n)
    T_max = max(checkpoints)

    def advance(state: tuple) -> tuple[tuple, dict]:
        nonlocal p
        if not tied:
            initialize(core, cfg, gen)
            p = params(core)
        x = torch.randn(N_IN, dtype=torch.float64, generator=gen)
        return state, {"p": p, "x": x}

    with torch.no_grad():
        for _ in range(burn):
            state, a = advance(state)
            state = step(a["p"], a["x"], state)
    P = torch.eye(n, dtype=torch.float64)
    log_scale = 0.0
    out: dict = {"log_mean": [], "spread": [], "lam": {}}
    for t in range(1, T_max + 1):
        state, a = advance(state)
        rest = state[1:]

        def first(s0: torch.Tensor, a: dict = a, rest: tuple = rest) -> torch.Tensor:
            return step(a["p"], a["x"], (s0, *rest))[0]

        J = torch.func.jacrev(first)(state[0])
        with torch.no_grad():
            state = step(a["p"], a["x"], state)
            P = J @ P
            norm = float(torch.linalg.matrix_norm(P)) / math.sqrt(n)
            P /= norm
            log_scale += math.log(norm)
        if t in checkpoints:
            lam = torch.linalg.svdvals(P).numpy() ** 2
            mean = float(lam.mean())
            out["log_mean"].append(math.log(mean) + 2 * log_scale)
            out["spread"].append(float(lam.var() / mean**2))
            if t in keep:
                out["lam"][t] = (lam / mean).tolist()
    return out


def summarize(runs: list[dict], th: dict, checkpoints: list[int]) -> dict:
    """Seed averages: E[λ] as the mean over seeds of each realization's mean (relative to m₁^T),
    the spread as the mean over seeds."""
    log_means = np.array([r["log_mean"] for r in runs])
    spreads = np.array([r["spread"] for r in runs])
    mean_ratio = np.exp(log_means - np.array(th["log_mean"])).mean(axis=0)
    spread_ratio = spreads.mean(axis=0) / np.array(th["spread"])
    th_spread = np.array(th["spread"])
    spread_ok = np.abs(spreads.mean(axis=0) - th_spread) <= np.maximum(
        SPREAD_TOL * th_spread, SPREAD_FLOOR
    )
    holds = (np.abs(mean_ratio - 1) <= MEAN_TOL) & spread_ok
    broken = [T for T, ok in zip(checkpoints, holds, strict=True) if not ok]
    return {
        "mean_ratio": mean_ratio.tolist(),
        "spread_ratio": spread_ratio.tolist(),
        "spread": spreads.mean(axis=0).tolist(),
        "first_broken_T": broken[0] if broken else None,
    }


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
            check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(2)
    t0 = time.monotonic()
    # width: seeds
    if args.quick:
        widths, T_max = {16: 2, 32: 1}, 16
    else:
        widths, T_max = {32: 8, 64: 8, 128: 6, 256: 4, 512: 2}, 256
    checkpoints = [2**k for k in range(int(math.log2(T_max)) + 1)]
    n_hist = max(widths)
    keep = {16, 64} if not args.quick else {4, 16}
    report: dict = {
        "machine": f"{platform.machine()}, {platform.python_version()}, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
        "commit": commit(),
        "checkpoints": checkpoints,
        "widths": widths,
        "cases": {},
    }
    for case in CASES:
        th = theory(case, checkpoints)
        burn = int(5 * th["xi_c"]) + 20
        entry: dict = {"values": case.values, "theory": th, "step_check": check_step(case)}
        for mode in ("untied", "tied"):
            per_n = {}
            for n, n_seeds in widths.items():
                kept = keep if n == n_hist else set()
                runs = [
                    run(case, n, s, mode == "tied", checkpoints, burn, kept) for s in range(n_seeds)
                ]
                per_n[n] = summarize(runs, th, checkpoints)
                if n == n_hist:
                    per_n[n]["lam"] = {T: runs[0]["lam"][T] for T in sorted(keep)}
                print(f"{case.cell} {mode} n={n}: {time.monotonic() - t0:.0f} s", flush=True)
            entry[mode] = per_n
        report["cases"][case.cell] = entry
    report["seconds"] = time.monotonic() - t0
    write(report, args.out, n_hist, sorted(keep))


def write(report: dict, out: Path, n_hist: int, keep: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    slim = json.loads(json.dumps(report))
    for entry in slim["cases"].values():
        for mode in ("untied", "tied"):
            entry[mode][str(n_hist)].pop("lam", None)
    (out / "jacobian_spectrum.json").write_text(json.dumps(slim, indent=1) + "\n")
    cps = report["checkpoints"]

    fig, axes = plt.subplots(len(report["cases"]), len(keep), figsize=(4 * len(keep), 8.5),
                             layout="constrained", squeeze=False)  # fmt: skip
    for row, (cell, entry) in zip(axes, report["cases"].items(), strict=True):
        th = entry["theory"]
        for ax, T in zip(row, keep, strict=True):
            k = cps.index(T)
            for mode, colour in (("untied", "tab:blue"), ("tied", "tab:orange")):
                res = entry[mode][n_hist]
                lam = np.array(res["lam"][T]) * res["mean_ratio"][k]
                ax.hist(np.log10(np.maximum(lam, 1e-300)), bins=60, alpha=0.5, color=colour,
                        density=True, label=f"{mode}: spread {res['spread'][k]:.3g}")  # fmt: skip
            ax.axvline(0.0, color="k", lw=1, label=f"theory E[λ]; spread {th['spread'][k]:.3g}")
            ax.set_title(f"{cell}, T = {T}, n = {n_hist}", fontsize=9)
            ax.set_xlabel("log10 λ / m₁^T")
            ax.legend(fontsize=7)
    fig.savefig(out / "jacobian_spectrum_hist.png", dpi=100)

    fig, axes = plt.subplots(len(report["cases"]), 2, figsize=(9, 8.5), layout="constrained",
                             squeeze=False)  # fmt: skip
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(report["widths"])))
    for row, (cell, entry) in zip(axes, report["cases"].items(), strict=True):
        for colour, n in zip(colours, report["widths"], strict=True):
            x = np.array(cps) / math.sqrt(int(n))
            for mode, ls in (("untied", "-"), ("tied", "--")):
                res = entry[mode][n]
                row[0].plot(x, res["mean_ratio"], ls, color=colour, label=f"n={n} {mode}")
                row[1].plot(x, res["spread_ratio"], ls, color=colour)
        for ax, what, tol in ((row[0], "E[λ] / m₁^T", MEAN_TOL), (row[1], "spread / theory",
                                                                  SPREAD_TOL)):  # fmt: skip
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.axhspan(1 - tol, 1 + tol, color="grey", alpha=0.2)
            ax.set_xlabel("T / √n")
            ax.set_ylabel(f"{cell}: {what}")
        row[0].legend(fontsize=6, ncol=2)
    fig.savefig(out / "jacobian_spectrum_width.png", dpi=100)

    lines = [
        "# Jacobian spectrum: theory against the trained modules, untied and tied",
        "",
        f"Written by `python benchmarks/jacobian_spectrum.py` on {report['date']} "
        f"({report['machine']}, commit {report['commit']}, {report['seconds'] / 60:.0f} min). "
        "docs/theory.md §4, §6, §7.2. λ: eigenvalues of PPᵀ, P the T-step product of the "
        "state-to-state "
        "Jacobians (LSTM: the cell state). Theory: E[λ] = m₁^T and the spread Var(λ)/E[λ]² of "
        "independently drawn gated Jacobians. Measured: autograd Jacobians of the workers' modules "
        "after a burn-in of 5·ξ_C + 20 steps; the mean over seeds of each realization's mean and "
        "spread. Seeds per width: "
        + ", ".join(f"n = {n}: {s}" for n, s in report["widths"].items())
        + ".",
        "",
        f"A prediction holds at T when E[λ] is within {MEAN_TOL:.0%} of m₁^T and the spread "
        f"within {SPREAD_TOL:.0%} of the theory's or {SPREAD_FLOOR} of it, whichever is larger.",
        "",
        "## Where the prediction first fails (T, and T/√n)",
        "",
        "| cell | config | ξ_C | m₁ | mode | "
        + " | ".join(f"n = {n}" for n in report["widths"])
        + " |",
        "|---|---|---|---|---|" + "---|" * len(report["widths"]),
    ]
    for cell, entry in report["cases"].items():
        th = entry["theory"]
        cfg = ", ".join(f"{k}={v:g}" for k, v in entry["values"].items())
        for mode in ("untied", "tied"):
            cells = []
            for n in report["widths"]:
                T = entry[mode][n]["first_broken_T"]
                root = math.sqrt(int(n))
                cells.append(f"holds to {cps[-1]}" if T is None else f"{T} ({T / root:.2g})")
            lines.append(
                f"| {cell} | {cfg} | {th['xi_c']:.1f} | {th['m1']:.4f} | {mode} | "
                + " | ".join(cells) + " |"
            )  # fmt: skip
    lines += ["", "## Measured against theory at the largest width", ""]
    for cell, entry in report["cases"].items():
        th = entry["theory"]
        lines += [
            f"### {cell} (n = {n_hist}; explicit step vs module forward: max |Δ| = "
            f"{entry['step_check']:.1e})",
            "",
            "| T | T log m₁ | E[λ]/m₁^T untied | tied | spread theory | untied | tied |",
            "|---|---|---|---|---|---|---|",
        ]
        for k, T in enumerate(cps):
            u, t = entry["untied"][n_hist], entry["tied"][n_hist]
            lines.append(
                f"| {T} | {th['log_mean'][k]:.3g} | {u['mean_ratio'][k]:.3g} | "
                f"{t['mean_ratio'][k]:.3g} | {th['spread'][k]:.3g} | {u['spread'][k]:.3g} | "
                f"{t['spread'][k]:.3g} |"
            )
        lines.append("")
    lines += [
        "![histograms](jacobian_spectrum_hist.png)",
        "",
        "![finite width](jacobian_spectrum_width.png)",
    ]
    (out / "jacobian_spectrum.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'jacobian_spectrum.md'}")


if __name__ == "__main__":
    main()
