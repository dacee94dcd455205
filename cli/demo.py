"""``isotune demo``: the whole service on this machine, end to end.

Starts a server on an SQLite file, creates two studies of the same search on a long-memory task
(an LSTM classifying handwritten digits followed by ``T`` steps of noise, where PyTorch's default
initialization fails): one restricted by the mean-field prior, one with the prior off (the
control). Two worker processes pull trials from both in turn, train them and report; a trial still
at chance accuracy halfway through is pruned. At the end it prints the two studies side by side
and how to open them in optuna-dashboard. Every process it starts is stopped by its process id.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.procs import free_port, stop, wait_healthy

__all__ = ["demo_cmd", "demo_spec", "summarize"]

#: Final test accuracy that counts as "trained": halfway from chance (0.1) to 1, as in the
#: trainability map.
TRAINED = 0.55


def demo_spec(name: str, mode: str, T: int, trials: int, steps: int, seed: int) -> dict[str, Any]:
    return {
        "name": name,
        "cell": "lstm",
        "task": {"name": "padded_digits", "T": T, "options": {"padding": "noise"}},
        "space": {
            "mu_f": {"type": "float", "low": -3.0, "high": 6.0},
            "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
        },
        "sampler": "tpe",
        # stop a trial still at chance (10 %) halfway through: what cannot train is not trained
        "pruner": "threshold",
        "pruner_options": {"lower": 0.2, "n_warmup_steps": steps // 2},
        "budget": trials,
        "seed": seed,
        "lease_seconds": 120,
        "training": {"hidden": 64, "batch_size": 32, "steps": steps, "eval_every": steps // 10},
        "prior": {"mode": mode},
    }


def summarize(study: dict[str, Any], trials: list[dict[str, Any]]) -> dict[str, Any]:
    """The demo's table column of one study."""
    done = [t for t in trials if t["state"] == "COMPLETE"]
    trained = [t for t in done if (t["value"] or 0.0) >= TRAINED]
    predicted = [
        t
        for t in trials
        if (t["user_attrs"].get("isotune_theory") or {}).get("predicted_trainable")
    ]
    return {
        "trials": len(trials),
        "trained": len(trained),
        "complete, not trained": len(done) - len(trained),
        "pruned": study["counts"]["PRUNED"],
        "failed": study["counts"]["FAIL"],
        "predicted trainable": len(predicted),
        "best accuracy": max((t["value"] for t in done), default=None),
    }


def demo_cmd(
    out: Annotated[Path, typer.Option("--out", help="Directory of the demo's database.")] = Path(
        "out/demo"
    ),
    T: Annotated[int, typer.Option("--T", help="Noise steps after each digit.")] = 100,
    trials: Annotated[int, typer.Option("--trials", help="Trials per study.")] = 16,
    steps: Annotated[int, typer.Option("--steps", help="Training steps per trial.")] = 500,
    workers: Annotated[int, typer.Option("--workers", help="Worker processes.")] = 2,
    seed: Annotated[int, typer.Option("--seed", help="Seed of both studies' samplers.")] = 0,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds before the workers are stopped.")
    ] = 1200.0,
) -> None:
    """Run a theory-restricted study and a control study end to end on this machine."""
    from contract.client import Client

    out.mkdir(parents=True, exist_ok=True)
    db = (out / "isotune-demo.db").resolve()
    for old in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        old.unlink(missing_ok=True)  # the previous demo's own database
    url = f"sqlite:///{db}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    cmd = [sys.executable, "-m", "cli.main"]
    log = (out / "server.log").open("w")
    server = subprocess.Popen(
        [*cmd, "serve", "--port", str(port), "--database-url", url, "--no-auth"],
        stdout=log,
        stderr=log,
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        wait_healthy(base, server)
        names = {"restrict": "demo-restricted", "off": "demo-control"}
        with Client(base, retry_seconds=10) as c:
            for mode, name in names.items():
                c.create_study(demo_spec(name, mode, T, trials, steps, seed))
        typer.echo(
            f"server {base} on {url}; studies {', '.join(names.values())} ({trials} trials each, "
            f"LSTM, padded digits with T = {T} noise steps); {workers} workers:"
        )
        for i in range(workers):
            args = ["worker", "--server", base, "--threads", "1", "--device", "cpu"]
            args += ["--worker-id", f"demo-worker-{i}", "--retry-seconds", "30"]
            for name in names.values():
                args += ["--study", name]
            procs.append(
                subprocess.Popen([*cmd, *args], env={**os.environ, "OMP_NUM_THREADS": "1"})
            )
        deadline = time.monotonic() + timeout
        for p in procs:
            try:
                p.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                typer.echo(f"timeout: stopping worker {p.pid}", err=True)
        with Client(base, retry_seconds=10) as c:
            columns = {}
            for mode, name in names.items():
                listing = c.trials(name, limit=1000)["trials"]
                columns[mode] = summarize(c.study(name), listing)
        typer.echo("")
        typer.echo(_table(columns))
        typer.echo("")
        typer.echo(
            f"{time.monotonic() - t0:.0f} s in all. The studies stay in {db}; to browse them:"
        )
        typer.echo(
            f"  .venv/bin/optuna-dashboard sqlite:///{db}   # then open http://127.0.0.1:8080"
        )
    finally:
        for p in [*procs, server]:
            try:
                stop(p)
            except OSError as e:  # already gone: carry on stopping the others
                typer.echo(f"stopping process {p.pid}: {e}", err=True)
        log.close()


def _table(columns: dict[str, dict[str, Any]]) -> str:
    rows = [["", "restricted (prior on)", "control (prior off)"]]
    for key in columns["restrict"]:
        cells = []
        for mode in ("restrict", "off"):
            v = columns[mode][key]
            cells.append("–" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v))
        rows.append([key, *cells])
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    )
