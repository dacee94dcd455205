"""A screenshot of optuna-dashboard's trial list for an isotune study, in headless Chromium.

A real ``isotune serve`` (SQLite, no tokens, loopback) holds a study of the README's kind (an LSTM
on padded digits with T = 100 noise steps, mu_f and lr searched, the prior off so that both
predicted and unpredicted trials appear); ten trials are claimed through the API and completed or
pruned with made-up values (this looks at the dashboard, not at training). ``isotune dashboard``
serves the same database and Chromium (``--headless --screenshot``) renders the study's trial
list, where the theory's key numbers are user attributes of their own (``xi_c``, ``margin``,
``predicted_trainable``, ``T_log_m1``: one line each, and the list's filter and the table's
columns can use them) beside the full ``isotune_theory`` record, whose line runs off the page.
(optuna-dashboard 0.21's trial-table page renders blank in headless Chromium 150 for any study,
a plain Optuna study included, so the list is what is shot.) Every process is stopped by its id.

Usage: python benchmarks/dashboard_trials.py [--out docs/dashboard_trials.png]
       [--chromium chromium]
Needs Chromium (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from cli.procs import free_port, start_server, stop, wait_healthy  # noqa: E402
from contract.client import Client  # noqa: E402

STUDY = {
    "name": "dashboard-demo",
    "cell": "lstm",
    "task": {"name": "padded_digits", "T": 100, "options": {"padding": "noise"}},
    "space": {
        "mu_f": {"type": "float", "low": -3.0, "high": 6.0},
        "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
    },
    "sampler": "random",
    "prior": {"mode": "off"},
    "budget": 10,
    "seed": 4,
}


def fill(base: str) -> None:
    """Ten trials: the predicted-trainable ones complete (most train), the others are pruned."""
    rng = random.Random(0)
    with Client(base) as c:
        c.create_study(STUDY)
        for i in range(STUDY["budget"]):
            trial = c.claim(STUDY["name"], f"worker-{i % 2}")["trial"]
            tid, ok = trial["trial_id"], trial["theory"]["predicted_trainable"]
            c.report(tid, f"worker-{i % 2}", [(250, rng.uniform(0.3, 0.7) if ok else 0.1)])
            if ok:
                c.complete(tid, f"worker-{i % 2}", rng.uniform(0.55, 0.9))
            else:
                c.complete(tid, f"worker-{i % 2}", None, pruned=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard_trials.png")
    ap.add_argument("--chromium", default="chromium")
    args = ap.parse_args()
    browser = shutil.which(args.chromium)
    if browser is None:
        sys.exit(f"error: chromium={args.chromium}: not found (apt-get install chromium)")
    work = Path(tempfile.mkdtemp(prefix="isotune-dashboard-"))
    url = f"sqlite:///{work / 'dash.db'}"
    server, base = start_server(url, work / "server.log")
    dashboard = None
    try:
        wait_healthy(base, server)
        fill(base)
        port = free_port()
        with (work / "dashboard.log").open("w") as log:
            dashboard = subprocess.Popen(
                [sys.executable, "-m", "cli.main", "dashboard", "--port", str(port), "--no-auth",
                 "--database-url", url, "--artifact-dir", str(work / "artifacts")],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        page = f"http://127.0.0.1:{port}/dashboard"
        for _ in range(100):  # bounded: 20 s
            try:
                if httpx.get(page + "/api/studies", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--window-size=1500,760", "--virtual-time-budget=20000",
             f"--screenshot={args.out.resolve()}", f"{page}/studies/1/trials"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        print(f"wrote {args.out} ({args.out.stat().st_size} bytes) from {page}")
    finally:
        if dashboard is not None:
            stop(dashboard, timeout=10)
        stop(server, timeout=30)
    shutil.rmtree(work, ignore_errors=True)  # the run's database and logs


if __name__ == "__main__":
    main()
