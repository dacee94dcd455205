"""Sample efficiency of the theory prior against ordinary search, through the real service.

One server (SQLite) and ``--workers`` worker processes run every arm × seed as its own study, each
with the same trial budget, on a long-memory task where PyTorch's default initialization fails (an
LSTM classifying digits followed by T steps of noise). Arms:

- ``a``: PyTorch's default initialization, TPE over the learning rate only;
- ``b``: TPE over the full initialization space (forget-gate bias, weight scale) and the learning
  rate, prior off;
- ``c``: random search over the same space;
- ``d``: TPE with the prior ``restrict``;
- ``e``: TPE with the prior ``soft``;
- ``f``: the critical initialization (ξ_C = T), TPE over the learning rate only;
- ``k``: the chrono initialization (Tallec & Ollivier 2018: forget-gate bias log U[1, T − 1],
  input gate its negative), TPE over the learning rate only: what many LSTM users do by hand;
- ``g``, ``h``: ``restrict`` and ``soft`` calibrated on the study's own outcomes (the service's
  default; ``d`` and ``e`` keep c fixed, ``calibrate: false``);
- ``i``, ``j``: ``restrict`` and ``soft`` calibrated, starting from the outcomes of the same seed's
  ``g`` / ``h`` study (``prior.calibrate_from``, empirical Bayes): a user's second study of the
  task with the same c, in the store where the first ran; they run once the others have finished;
- ``n``: ``restrict`` calibrated from a short study of the same seed (arm ``g``'s study at
  ``--source-T``, ``--source-steps``, ``--source-trials``): a user who first runs the cheap short
  task and then the long one from its outcomes; the model then has the fixed point's cell moment
  s* to go on besides ξ_C (``service.calibration``). The short study's cost is reported beside it;
- ``r``, ``s``: references for a misspecified c: ``restrict`` and ``soft`` with the measured c
  (fixed), whatever ``--c-scale`` says, run in the same run as the misspecified arms.

``--c-scale`` multiplies the prior's constant c in arms d, e, g and h (robustness: 0.1 and 10
misspecify it tenfold; the report then gives each arm's trials to target over its reference's);
``--mu-f LO HI`` sets the forget-gate bias range (the report gives the share of the space the
criterion accepts; the advantage of ``restrict`` grows as that share shrinks). A restricted study
whose space holds no feasible point is refused by the service, and the report says so.
``--space full`` searches what a practitioner who tunes the initialization searches: per-gate bias
means (LSTM mu_i, mu_f, mu_g, mu_o; GRU mu_r, mu_z, mu_n), nu, sigma and rho with the learning
rate; ``--task copy`` (one symbol) instead of padded digits, ``--cell gru``, ``--pruner hyperband``
(Optuna's, over training steps) instead of the threshold at chance.
Reported per arm: the training steps run until the target (pruned trials count what they ran),
the fraction of trials that train (final accuracy ≥ ``--trained``), the best
accuracy against the number of trials (median and quartiles over seeds, PNG), and the median
number of trials to reach ``--target``.

Usage: python benchmarks/hpo_efficiency.py [--seeds 5] [--trials 20] [--T 100] [--steps 500]
Writes benchmarks/results/hpo_efficiency{suffix}.{md,json,png}. About 20 minutes on a 2-core CPU
with the defaults (longer with larger T); run it in the background.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reporting import recorded_args  # noqa: E402

from cli.procs import start_server, stop, wait_healthy  # noqa: E402
from contract.client import ApiError, Client  # noqa: E402
from contract.tasks import task_spec  # noqa: E402
from meanfield import MEMORY_GATE  # noqa: E402
from meanfield.constants import MEASURED_C  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
ARMS = {
    "a": "default init, TPE over lr",
    "b": "TPE over init + lr, prior off",
    "c": "random over init + lr",
    "d": "TPE, prior restrict",
    "e": "TPE, prior soft",
    "f": "critical init, TPE over lr",
    "g": "TPE, prior restrict, calibrated",
    "h": "TPE, prior soft, calibrated",
    "k": "chrono init, TPE over lr",
    "m": "TPE, prior restrict, cell state E[c²] ≤ 30",
    "i": "TPE, prior restrict, calibrated from the seed's g study",
    "j": "TPE, prior soft, calibrated from the seed's h study",
    "n": "TPE, prior restrict, calibrated from a short-T study",
    "r": "TPE, prior restrict, measured c (reference)",
    "s": "TPE, prior soft, measured c (reference)",
}
#: Arms whose study starts from the outcomes of another arm's study of the same seed
#: (``prior.calibrate_from``): a user's second study of the task, in the store where the first
#: ran, with the same (misspecified) c. They run after the first phase has finished.
SECOND = {"i": "g", "j": "h"}
#: Arms whose study starts from a study of the same seed at a shorter T (``--source-T``), which
#: runs first with the named arm's prior.
SOURCED = {"n": "g"}
#: The reference arm of each arm under a misspecified c (same mode, the measured c).
REFERENCE = {"d": "r", "e": "s", "g": "r", "h": "s", "i": "r", "j": "s"}
LR = {"type": "float", "low": 1e-4, "high": 3e-2, "log": True}
#: Arm m's bound on the LSTM cell state's second moment at the fixed point (prior.max_cell_moment)
CELL_BOUND = 30.0
NU = {"type": "float", "low": 0.25, "high": 2.0}


#: The tasks and their options (the task's bridge statistics come from its spec).
TASK_OPTIONS = {"padded_digits": {"padding": "noise"}, "copy": {"n_symbols": 1}}
#: ``--space full``: what a practitioner who tunes the initialization searches: per-gate bias
#: means, the recurrent and input weight scales and the bias spread (with the learning rate).
FULL_MEANS = {
    "lstm": {"mu_i": (-3.0, 3.0), "mu_f": (-3.0, 6.0), "mu_g": (-1.0, 1.0), "mu_o": (-3.0, 3.0)},
    "gru": {"mu_r": (-3.0, 3.0), "mu_z": (-3.0, 6.0), "mu_n": (-1.0, 1.0)},
}
FULL_SCALES = {"nu": (0.25, 2.0), "sigma": (0.25, 2.0), "rho": (0.0, 1.0)}
#: What reports written before these options existed ran with.
DEFAULTS = {"task": "padded_digits", "cell": "lstm", "space": "small", "pruner": "threshold"}


def parse_range(item: str, ranges: dict) -> tuple[str, float, float]:
    """``NAME=LO,HI`` for one of the full space's initialization hyperparameters."""
    name, _, bounds = item.partition("=")
    try:
        lo, hi = (float(x) for x in bounds.split(","))
    except ValueError:
        raise SystemExit(f"--range {item}: expected NAME=LO,HI, e.g. mu_i=-6,3") from None
    if name not in ranges or not lo < hi:
        raise SystemExit(f"--range {item}: NAME one of {', '.join(ranges)}, LO < HI")
    return name, lo, hi


def init_space(args: argparse.Namespace) -> dict:
    if args.space == "full":
        ranges = {**FULL_MEANS[args.cell], **FULL_SCALES}
        for item in getattr(args, "range", None) or []:  # --range NAME=LO,HI
            name, lo, hi = parse_range(item, ranges)
            ranges[name] = (lo, hi)
        return {k: {"type": "float", "low": lo, "high": hi} for k, (lo, hi) in ranges.items()}
    lo, hi = args.mu_f
    gate = f"mu_{MEMORY_GATE[args.cell]}"
    return {gate: {"type": "float", "low": lo, "high": hi}, "nu": NU}


def task_of(args: argparse.Namespace):
    return task_spec(args.task, args.T, **TASK_OPTIONS[args.task])


def feasible_share(args: argparse.Namespace, n: int = 4000) -> float:
    """Share of the (uniform) initialization space the criterion T ≤ c·ξ_C accepts, for the
    task's bridge statistics."""
    import numpy as np

    from meanfield import Config, Inputs
    from meanfield.theory import memory_check

    rng = np.random.default_rng(0)
    flat = {k: rng.uniform(v["low"], v["high"], n) for k, v in init_space(args).items()}
    spec = task_of(args)
    inputs = Inputs(R=spec.R, regime=spec.regime, R_ab=spec.R_ab)
    c = MEASURED_C[args.cell] * args.c_scale
    return float(np.mean(memory_check(Config.from_flat(args.cell, flat), args.T, c, inputs).ok))


def pruning(args: argparse.Namespace) -> dict:
    """``threshold``: stop a trial still near chance at half its steps (the lower bound: 0.2,
    or a tenth of the way from chance to 1 where that is higher); ``hyperband``: Optuna's
    Hyperband over training steps."""
    if args.pruner == "hyperband":
        every = max(1, args.steps // 10)
        options = {"min_resource": every, "max_resource": args.steps, "reduction_factor": 3}
        return {"pruner": "hyperband", "pruner_options": options}
    chance = task_of(args).chance
    lower = round(max(0.2, chance + 0.1 * (1.0 - chance)), 4)
    return {
        "pruner": "threshold",
        "pruner_options": {"lower": lower, "n_warmup_steps": args.steps // 2},
    }


def source_name(seed: int, args: argparse.Namespace) -> str:
    return f"src-s{seed}{args.suffix}"


def source_args(args: argparse.Namespace) -> argparse.Namespace:
    """The settings of the short studies the sourced arms start from."""
    return argparse.Namespace(
        **{**vars(args), "T": args.source_T, "steps": args.source_steps,
           "trials": args.source_trials}
    )  # fmt: skip


def arm_spec(arm: str, seed: int, args: argparse.Namespace) -> dict:
    training = {"hidden": 64, "batch_size": 32, "steps": args.steps, "eval_every": args.steps // 10}
    spec = {
        "name": f"{arm}-s{seed}{args.suffix}",
        "cell": args.cell,
        "task": {"name": args.task, "T": args.T, "options": TASK_OPTIONS[args.task]},
        "space": {**init_space(args), "lr": LR},
        "sampler": "tpe",
        **pruning(args),
        "budget": args.trials,
        "seed": seed,
        "lease_seconds": 300,
        "training": training,
    }
    if arm in ("a", "f", "k"):
        spec["space"] = {"lr": LR}
        init = {"a": "default", "f": "critical", "k": "chrono"}[arm]
        spec["training"] = {**training, "init": init}
    if arm == "c":
        spec["sampler"] = "random"
    c = MEASURED_C[args.cell] * args.c_scale
    measured = MEASURED_C[args.cell]
    priors = {
        # the fixed-c prior (calibrate: false) and the calibrated one (the service's default)
        "d": {"mode": "restrict", "c": c, "calibrate": False},
        "e": {"mode": "soft", "c": c, "calibrate": False},
        "g": {"mode": "restrict", "c": c, "calibrate": True},
        "h": {"mode": "soft", "c": c, "calibrate": True},
        "r": {"mode": "restrict", "c": measured, "calibrate": False},
        "s": {"mode": "soft", "c": measured, "calibrate": False},
        # restrict with tanh(c) kept out of saturation: the bound read off the trials of the
        # first T = 300 full-space run (benchmarks/README.md, "practitioner's space")
        "m": {"mode": "restrict", "c": c, "calibrate": False, "max_cell_moment": CELL_BOUND},
    }
    if arm in SECOND:
        source = f"{SECOND[arm]}-s{seed}{args.suffix}"
        priors[arm] = {**priors[SECOND[arm]], "calibrate_from": [source]}
    if arm in SOURCED:
        priors[arm] = {**priors[SOURCED[arm]], "calibrate_from": [source_name(seed, args)]}
    # every other arm searches without the prior, said outright: a spec that names no prior gets
    # restrict when its space holds the memory-gate bias
    spec["prior"] = priors.get(arm, {"mode": "off"})
    return spec


def summarize(trials: list[dict], args: argparse.Namespace) -> dict:
    """One study's run: the best accuracy reached so far after each trial (a pruned trial counts
    with what it reached, its last report; a failed one with nothing: NaN before any value), the
    share of trials that trained (completed with accuracy ≥ ``args.trained``; a pruned trial did
    not), and the 1-based trial numbers of the first that trained and of the first whose best so
    far reached ``args.target`` (inf: never)."""
    trials = sorted(trials, key=lambda t: t["number"])
    reached = [
        t["value"] if t["state"] in ("COMPLETE", "PRUNED") and t["value"] is not None else None
        for t in trials
    ]
    trained = [
        t["state"] == "COMPLETE" and t["value"] is not None and t["value"] >= args.trained
        for t in trials
    ]
    best, running = [], math.nan
    for v in reached:
        if v is not None:
            running = v if math.isnan(running) else max(running, v)
        best.append(running)
    # the training steps each trial ran: its last report's step (a completed trial reports at
    # its last step; a pruned one stopped at its last report)
    ran = [max((int(k) for k in t.get("intermediate_values") or {}), default=0) for t in trials]
    spent = [sum(ran[: i + 1]) for i in range(len(ran))]
    reach = first_at(best, args.target)
    seconds = sum(_duration(t) for t in trials)
    # every trial as it ran, to read why an arm did what it did
    rows = [
        {"params": t.get("params"), "state": t["state"], "value": t["value"], "steps": n,
         "xi_c": (t.get("user_attrs") or {}).get("xi_c"),
         "cell_moment": (t.get("user_attrs") or {}).get("cell_moment")}
        for t, n in zip(trials, ran, strict=True)
    ]  # fmt: skip
    return {
        "trials": rows,
        "seconds": seconds,
        "trained": sum(trained) / max(1, len(trials)),
        "best": best[-1] if best else math.nan,
        "best_curve": best,
        "trials_to_target": reach,
        "first_trained": next((i + 1 for i, ok in enumerate(trained) if ok), math.inf),
        "steps_curve": spent,
        "steps_to_target": spent[reach - 1] if math.isfinite(reach) else math.inf,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--T", type=int, default=100)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--arms", default="abcdef")
    ap.add_argument("--c-scale", type=float, default=1.0)
    ap.add_argument("--mu-f", type=float, nargs=2, default=(-3.0, 6.0), metavar=("LO", "HI"),
                    help="the memory-gate bias range of the small space")  # fmt: skip
    ap.add_argument("--task", choices=sorted(TASK_OPTIONS), default=DEFAULTS["task"])
    ap.add_argument("--cell", choices=sorted(FULL_MEANS), default=DEFAULTS["cell"])
    ap.add_argument("--space", choices=("small", "full"), default=DEFAULTS["space"],
                    help="small: memory-gate bias and nu; full: per-gate bias means, nu, sigma, "
                    "rho")  # fmt: skip
    ap.add_argument("--pruner", choices=("threshold", "hyperband"), default=DEFAULTS["pruner"])
    ap.add_argument("--range", action="append", metavar="NAME=LO,HI",
                    help="--space full: another range for one initialization hyperparameter "
                    "(e.g. mu_i=-6,3: down to chrono's input bias at T = 300)")  # fmt: skip
    ap.add_argument("--source-T", type=int, default=100, help="arm n: the short study's T")
    ap.add_argument("--source-steps", type=int, default=500)
    ap.add_argument("--source-trials", type=int, default=20)
    ap.add_argument("--trained", type=float, default=0.55)
    ap.add_argument("--target", type=float, default=0.7)
    ap.add_argument("--suffix", default="")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--render", type=Path, help="only rewrite the report of this JSON")
    ap.add_argument("--add", type=Path, action="append", default=[],
                    help="with --render: take these runs' arms into it (same settings and seeds; "
                    "an arm in both is replaced)")  # fmt: skip
    args = ap.parse_args()
    if args.render:
        render(args.render, args.add)
        return
    init_space(args)  # a bad --range ends here, before any process starts
    for arm in args.arms:
        if arm not in ARMS:
            ap.error(f"--arms: unknown arm {arm!r}; choose from {''.join(ARMS)}")
        if arm in SECOND and SECOND[arm] not in args.arms:
            ap.error(f"--arms: arm {arm} starts from arm {SECOND[arm]}'s studies; add it")

    import subprocess
    import tempfile

    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="isotune-hpo-"))
    url = f"sqlite:///{work / 'hpo.db'}"
    server, base = start_server(url, work / "server.log")
    cmd = [sys.executable, "-m", "cli.main"]
    procs: list[subprocess.Popen] = []
    names: dict[tuple[str, int], str] = {}
    refused: dict[str, str] = {}
    try:
        wait_healthy(base, server)
        sourced = sorted({SOURCED[a] for a in args.arms if a in SOURCED})
        phases = [
            [f"src-{a}" for a in sourced],
            [a for a in args.arms if a not in SECOND],
            [a for a in args.arms if a in SECOND],
        ]
        for phase, arms in enumerate(phases):
            mine: list[str] = []
            with Client(base, retry_seconds=10) as c:
                for arm in arms:
                    if arm in refused:  # its short study was refused
                        continue
                    for seed in range(args.seeds):
                        if arm.startswith("src-"):  # a short study the sourced arms start from
                            spec = arm_spec(arm[4:], seed, source_args(args))
                            spec["name"] = source_name(seed, args)
                        else:
                            spec = arm_spec(arm, seed, args)
                        try:
                            c.create_study(spec)
                        except ApiError as e:  # restrict refuses a space with no feasible point
                            if e.status != 422:
                                raise
                            if arm.startswith("src-"):  # say so under the arms it serves
                                for mine_arm, src in SOURCED.items():
                                    if src == arm[4:] and mine_arm in args.arms:
                                        refused[mine_arm] = f"its short study: {e}"
                            else:
                                refused[arm] = str(e)
                            break
                        names[(arm, seed)] = spec["name"]
                        mine += ["--study", spec["name"]]
            for i in range(args.workers if mine else 0):
                procs.append(subprocess.Popen(
                    [*cmd, "worker", "--server", base, "--threads", "1", "--device", "cpu",
                     "--worker-id", f"hpo-{phase}-{i}", "--retry-seconds", "60", *mine],
                    cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                    stdout=(work / f"worker{phase}-{i}.log").open("w"), stderr=subprocess.STDOUT,
                ))  # fmt: skip
            for p in procs:
                p.wait()
        per_arm: dict[str, list[dict]] = {arm: [] for arm in args.arms if arm not in refused}
        with Client(base, retry_seconds=10) as c:
            for (arm, seed), name in names.items():
                if arm not in per_arm:
                    continue  # a short study, reported with the arm it was the source of
                got = c.trials(name, limit=1000)["trials"]
                run = summarize(got, args)
                run["calibration"] = final_calibration(c, name, got)
                if arm in SOURCED:  # what the short study it started from cost
                    src = summarize(c.trials(source_name(seed, args), limit=1000)["trials"],
                                    source_args(args))  # fmt: skip
                    run["source"] = {
                        "T": args.source_T, "steps": (src["steps_curve"] or [0])[-1],
                        "seconds": src["seconds"], "trained": src["trained"],
                    }  # fmt: skip
                per_arm[arm].append(run)
    except BaseException:
        print(f"the server's and workers' logs are kept in {work}", file=sys.stderr)
        raise
    finally:
        for p in [*procs, server]:
            stop(p)
    shutil.rmtree(work, ignore_errors=True)  # the database and logs of a run that finished
    report = {
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "seconds": time.monotonic() - t0,
        "args": recorded_args(args),
        "feasible_share": feasible_share(args),
        "arms": {arm: {"label": ARMS[arm], "runs": runs} for arm, runs in per_arm.items()},
        "refused": refused,
    }
    write(report, args)


def _duration(trial: dict) -> float:
    """Wall seconds a finished trial ran on its worker (one thread), 0 if not finished."""
    from datetime import datetime

    start, end = trial.get("datetime_start"), trial.get("datetime_complete")
    if not (start and end):
        return 0.0
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def final_calibration(client: Client, name: str, got: list[dict]) -> dict | None:
    """The study's calibrated criterion once the server's background pass has fitted it to every
    finished trial (it refits every few seconds; waits up to 30 s). None: the c is fixed."""
    finished = sum(t["state"] in ("COMPLETE", "PRUNED") for t in got)
    deadline = time.monotonic() + 30
    while True:
        study = client.study(name)
        cal, prior = study.get("calibration"), study["spec"].get("prior") or {}
        if cal is None and (not prior.get("calibrate") or prior.get("mode", "off") == "off"):
            return None
        if (cal and cal["outcomes"] >= finished) or time.monotonic() > deadline:
            return cal
        time.sleep(0.5)


def first_at(curve: list[float], level: float) -> float:
    """1-based index of the first trial whose best-so-far reaches ``level`` (inf: never; NaN,
    no value yet, never reaches it)."""
    return next((i + 1 for i, b in enumerate(curve) if b is not None and b >= level), math.inf)


def trials(n: float) -> str:
    return "never" if math.isinf(n) else f"{n:g}"


def reference_ratio(runs: list[dict], reference: list[dict]) -> float:
    """Median trials to target of ``runs`` over that of their reference arm (inf: the arm never
    reaches it; NaN: neither does)."""
    a = statistics.median(r["trials_to_target"] for r in runs)
    b = statistics.median(r["trials_to_target"] for r in reference)
    if math.isinf(a) and math.isinf(b):
        return math.nan
    return a / b


def reference_lines(report: dict) -> list[str]:
    """Under a misspecified c: each arm's median trials to target over its reference's (same
    mode, measured c, same run), against the 1.5× bound calibrated arms are held to."""
    arms = report["arms"]
    pairs = [(a, r) for a, r in REFERENCE.items() if a in arms and r in arms]
    if not pairs:
        return []
    out = [
        "",
        "Trials to target (median over seeds) over the reference arm's (same mode, the measured "
        "c, run in the same run); a calibrated arm should stay within 1.5×:",
        "",
        "| arm | reference | ratio |",
        "|---|---|---|",
    ]
    for arm, ref in pairs:
        ratio = reference_ratio(arms[arm]["runs"], arms[ref]["runs"])
        text = "neither reaches it" if math.isnan(ratio) else f"{ratio:.2f}"
        out.append(f"| {arm}: {ARMS[arm]} | {ref} | {text} |")
    return out


#: Theory arms held to the issue's targets against TPE over the full space (b) and chrono (k).
THEORY_ARMS = "deghmn"


def steps_lines(report: dict) -> list[str]:
    """Training steps to the target per seed for every arm, the CPU time each arm cost, and each
    theory arm's median steps against those of TPE without the prior (b) and of chrono + TPE(lr)
    (k): the ratio is theirs over the theory arm's (> 1: the theory arm needs fewer)."""
    arms = report["arms"]
    if not all("steps_to_target" in r for data in arms.values() for r in data["runs"]):
        return []
    out = [
        "",
        "Training steps to the target per seed (pruned trials count the steps they ran; never: "
        "not within the budget), and the CPU time each arm's trials ran (one thread each, summed "
        "over seeds):",
        "",
        "| arm | steps to target, per seed | median | CPU hours |",
        "|---|---|---|---|",
    ]
    for arm, data in arms.items():
        per_seed = [r["steps_to_target"] for r in data["runs"]]
        hours = sum(r.get("seconds", 0.0) for r in data["runs"]) / 3600
        out.append(f"| {arm} | {', '.join(trials(s) for s in per_seed)} | "
                   f"{trials(statistics.median(per_seed))} | {hours:.2f} |")  # fmt: skip
    pairs = [(t, base) for t in THEORY_ARMS if t in arms for base in "bk" if base in arms]
    if pairs:
        out += [
            "",
            "Median training steps to the target of the baseline over the theory arm's (the "
            "targets: ≥ 5× against b, ≥ 2× against k; a baseline that never reaches it within the "
            "budget gives a lower bound, its total steps):",
            "",
            "| theory arm | baseline | baseline's median | theory arm's median | ratio |",
            "|---|---|---|---|---|",
        ]
    rows = [
        (t, base, [r["steps_to_target"] for r in arms[t]["runs"]], ARMS[t]) for t, base in pairs
    ]
    for t, base in pairs:  # a sourced arm once more with its short study's steps added (a
        runs = arms[t]["runs"]  # step costs about T: each short step weighs T_short/T)
        if all("source" in r for r in runs):
            T = report["args"]["T"]
            costs = [
                r["steps_to_target"] + round(r["source"]["steps"] * r["source"]["T"] / T)
                for r in runs
            ]
            label = f"{ARMS[t]}, with its short study's steps, each weighted T_short/T"
            rows.append((t, base, costs, label))
    for theory, base, per_seed, label in rows:
        mine = statistics.median(per_seed)
        theirs = statistics.median(r["steps_to_target"] for r in arms[base]["runs"])
        if math.isinf(mine):
            ratio = "theory arm never reaches it"
        elif math.isinf(theirs):
            spent = statistics.median(r["steps_curve"][-1] for r in arms[base]["runs"])
            ratio = f"> {spent / mine:.2f}"
        else:
            ratio = f"{theirs / mine:.2f}"
        out.append(f"| {theory}: {label} | {base}: {ARMS[base]} | {trials(theirs)} | "
                   f"{trials(mine)} | {ratio} |")  # fmt: skip
    return out


def calibration_lines(report: dict) -> list[str]:
    """The calibrated arms' c at the end of each study (the c handed out from), the outcomes it
    rests on and the studies its prior came from."""
    rows = []
    for arm, data in report["arms"].items():
        cals = [r["calibration"] for r in data["runs"] if r.get("calibration")]
        if not cals:
            continue
        cs = ", ".join(f"{cal['c']:.3g}" for cal in cals)
        outcomes = ", ".join(str(cal["outcomes"]) for cal in cals)
        sources = sorted({s for cal in cals for s in cal.get("sources") or []})
        from_ = ", ".join(sources) if sources else "its own outcomes only"
        rows.append(f"| {arm} | {cals[0]['c0']:.3g} | {cs} | {outcomes} | {from_} |")
    if not rows:
        return []
    return [
        "",
        "Calibrated arms at the end of each study (per seed): the c the study hands out from, the "
        "study's own outcomes it rests on, and the studies its prior came from:",
        "",
        "| arm | c given | c at the end | outcomes | prior from (one study per seed) |",
        "|---|---|---|---|---|",
        *rows,
    ]


#: Settings that may differ between runs whose arms are merged into one report.
#: (the short study's settings concern the sourced arms only, and each of their runs records them)
MERGE_FREE = {"arms", "suffix", "out", "render", "add", "source_T", "source_steps", "source_trials"}


def render(path: Path, add: Sequence[Path] = ()) -> None:
    """Write a report's Markdown and PNG again from its JSON (after a change to the layout),
    taking in the arms of the runs ``add`` (run with the same settings: an arm rerun after a fix
    replaces the one in the report; each merged run is recorded with its date and minutes)."""
    report = json.loads(path.read_text())
    for other_path in add:
        other = json.loads(other_path.read_text())
        mine, theirs = (
            {k: v for k, v in r["args"].items() if k not in MERGE_FREE} for r in (report, other)
        )
        if mine != theirs:
            diff = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
            raise SystemExit(f"--add {other_path}: run with other settings ({', '.join(diff)})")
        report["arms"].update(other["arms"])
        report.setdefault("merged", []).append(
            {"from": other_path.name, "arms": list(other["arms"]), "date": other["date"],
             "seconds": other["seconds"]}
        )  # fmt: skip
    args = argparse.Namespace(**{**DEFAULTS, **report["args"]})
    args.out = path.parent
    args.mu_f = tuple(getattr(args, "mu_f", (-3.0, 6.0)))
    report.setdefault("feasible_share", feasible_share(args))
    for data in report["arms"].values():
        for run in data["runs"]:
            run["trials_to_target"] = first_at(run["best_curve"], args.target)
    write(report, args)


def write(report: dict, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    stem = f"hpo_efficiency{args.suffix}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    fig, (ax, ax_steps) = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
    space = ", ".join(
        f"{k} ∈ [{v['low']:g}, {v['high']:g}]" for k, v in {**init_space(args), "lr": LR}.items()
    )
    task = {"padded_digits": "padded digits with", "copy": "the copy task (one symbol) with"}
    lines = [
        f"# Sample efficiency{' (' + args.suffix.strip('_-') + ')' if args.suffix else ''}",
        "",
        f"Written by `python benchmarks/hpo_efficiency.py` on {report['machine']}, "
        f"{report['date']}, in {report['seconds'] / 60:.0f} min: {args.cell.upper()} on "
        f"{task[args.task]} T = {args.T} bridge steps, {args.trials} trials per study, "
        f"{args.seeds} seeds per arm, {args.steps} training steps, pruner {args.pruner}, c scaled "
        f"by {args.c_scale:g}. Trained: final accuracy ≥ {args.trained}; target: best accuracy "
        f"≥ {args.target}. Space: {space} (lr log); the criterion T ≤ c·ξ_C accepts "
        f"{report['feasible_share']:.0%} of the initialization space (uniform sample).",
        *(
            f"Arms {', '.join(m['arms'])} come from a second run with the same settings and "
            f"seeds ({m['date']}, {m['seconds'] / 60:.0f} min, `{m['from']}`)."
            for m in report.get("merged", [])
        ),
        "",
        "| arm | trials that train (mean) | best accuracy (median) | trials to the first that "
        "trains (median) | trials to target (median) | training steps to target (median) |",
        "|---|---|---|---|---|---|",
    ]
    for arm, data in report["arms"].items():
        runs = data["runs"]
        curves = np.array([r["best_curve"] for r in runs if r["best_curve"]], dtype=float)
        if len(curves):
            x = np.arange(1, curves.shape[1] + 1)
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a column of failures only
                q1, med, q3 = np.nanpercentile(curves, [25, 50, 75], axis=0)
            ax.plot(x, med, label=f"{arm}: {data['label']}")
            ax.fill_between(x, q1, q3, alpha=0.2)
        for i, r in enumerate(runs):  # best accuracy against the training steps spent, per seed
            if r.get("steps_curve"):
                ax_steps.step(r["steps_curve"], r["best_curve"], where="post", lw=0.8,
                              color=f"C{list(report['arms']).index(arm)}",
                              label=f"{arm}: {data['label']}" if i == 0 else None)  # fmt: skip
        reach = statistics.median(r["trials_to_target"] for r in runs)
        # reports written before first_trained was recorded: the best curve's crossing
        first = statistics.median(
            r.get("first_trained", first_at(r["best_curve"], args.trained)) for r in runs
        )
        spent = [r["steps_to_target"] for r in runs if "steps_to_target" in r]
        steps_text = trials(statistics.median(spent)) if spent else "–"
        lines.append(
            f"| {arm}: {data['label']} | {statistics.fmean(r['trained'] for r in runs):.2f} | "
            f"{statistics.median(r['best'] for r in runs):.3f} | {trials(first)} | "
            f"{trials(reach)} | {steps_text} |"
        )
    for arm, why in report.get("refused", {}).items():
        lines.append(f"| {arm}: {ARMS[arm]} | refused at creation: {why} | – | – | – | – |")
    lines += steps_lines(report) + reference_lines(report) + calibration_lines(report)
    chance = task_of(args).chance
    for a in (ax, ax_steps):
        a.axhline(args.target, color="grey", ls=":", lw=1)
        a.axhline(chance, color="black", ls="--", lw=0.8, label=f"chance ({chance:g})")
        a.set_ylabel("best test accuracy so far")
    ax.set_xlabel("trials (median and quartiles over seeds)")
    ax_steps.set_xlabel("training steps run, pruned trials included (each seed)")
    ax.legend(fontsize=7)
    fig.savefig(args.out / f"{stem}.png", dpi=110)
    lines += ["", f"![best accuracy against trials and training steps]({stem}.png)"]
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / (stem + '.md')}")


if __name__ == "__main__":
    main()
