"""Share of a trial's wall time that a worker spends in REST calls to the service.

One server and one real worker process run ``--trials`` trials of a study whose training takes
about a minute on this machine (LSTM, hidden 128, batch 128, padded digits with T = 100 noise steps,
a report every ``--eval-every`` steps). For every trial the worker logs the time its training thread
spent inside REST calls (claim, reports, outcome; retries included) against the trial's wall time,
from the claim to the recorded outcome. Heartbeats run in a thread beside the training and do not
hold it up; they are not counted.

Usage: python benchmarks/rest_share.py [--trials 3] [--steps 700] [--database-url URL]
Writes benchmarks/results/rest_share.{md,json}. About 4 minutes on a 2-core CPU; run it on a quiet
machine (the training and the server share the cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reporting import recorded_args  # noqa: E402

from cli.procs import start_server, stop, wait_healthy  # noqa: E402
from contract.client import Client  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
LINE = re.compile(
    r"-> (?:COMPLETE|PRUNED)\S* .*REST (?P<rest>[\d.]+) s in (?P<calls>\d+) calls, "
    r"(?P<share>[\d.]+)% of (?P<wall>[\d.]+) s"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--steps", type=int, default=700)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--database-url", help="default: a fresh SQLite file")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="isotune-rest-"))
    url = args.database_url or f"sqlite:///{work / 'rest.db'}"
    backend = url.split(":", 1)[0].split("+", 1)[0]
    server, base = start_server(url, work / "server.log")
    cmd = [sys.executable, "-m", "cli.main"]
    worker = None
    name = f"rest-share-{int(time.time())}"
    t0 = time.monotonic()
    try:
        wait_healthy(base, server)
        with Client(base) as c:
            c.create_study({
                "name": name,
                "cell": "lstm",
                "task": {"name": "padded_digits", "T": 100, "options": {"padding": "noise"}},
                "space": {"mu_f": {"type": "float", "low": 3.0, "high": 5.0},
                          "lr": {"type": "float", "low": 2e-3, "high": 5e-3, "log": True}},
                "budget": args.trials,
                "seed": 0,
                "training": {"hidden": 128, "batch_size": 128, "steps": args.steps,
                             "eval_every": args.eval_every},
            })  # fmt: skip
        worker_log = work / "worker.log"
        with worker_log.open("w") as out:
            worker = subprocess.Popen(
                [*cmd, "worker", "--server", base, "--study", name, "--device", "cpu",
                 "--worker-id", "rest-share", "--max-trials", str(args.trials)],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
            rc = worker.wait(timeout=60 * 60)
        text = worker_log.read_text()
        if rc != 0:
            raise SystemExit(f"worker exited {rc}:\n{text[-3000:]}")
    finally:
        for p in (worker, server):
            if p is not None:
                stop(p)
    shutil.rmtree(work, ignore_errors=True)  # the run's database and logs
    trials = [{k: float(v) for k, v in m.groupdict().items()} for m in LINE.finditer(text)]
    if len(trials) != args.trials:
        raise SystemExit(f"expected {args.trials} trial lines in the worker log:\n{text[-3000:]}")
    report = {
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "backend": backend,
        "seconds": time.monotonic() - t0,
        "args": recorded_args(args),
        "trials": trials,
        "median_share_percent": statistics.median(t["share"] for t in trials),
        "median_wall_s": statistics.median(t["wall"] for t in trials),
        "median_rest_s": statistics.median(t["rest"] for t in trials),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rest_share.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# REST share of a trial's wall time",
        "",
        f"Written by `python benchmarks/rest_share.py` on {report['machine']}, {report['date']}: "
        f"one server ({backend}) and one worker process, LSTM hidden 128, batch 128, padded digits "
        f"T = 100, {args.steps} steps, a report every {args.eval_every} steps.",
        "",
        "| trial | wall (claim to outcome) | in REST calls | calls | share |",
        "|---|---|---|---|---|",
    ]
    for i, t in enumerate(trials):
        lines.append(
            f"| {i} | {t['wall']:.1f} s | {t['rest']:.3f} s | {t['calls']:.0f} | "
            f"{t['share']:.2f}% |"
        )
    lines += [
        "",
        f"Median share: **{report['median_share_percent']:.2f}%** of a "
        f"{report['median_wall_s']:.0f} s trial (target ≤ 1% for a 1-minute trial).",
    ]
    (args.out / "rest_share.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
