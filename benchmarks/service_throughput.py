"""Trial lifecycles per second through the REST API against raw Optuna on the same storage.

A lifecycle is claim (ask) + 3 intermediate reports + complete (tell). For SQLite and PostgreSQL
(a throwaway cluster, see tests/pg.py), in one run:

1. raw Optuna ``ask`` / ``report`` / ``tell`` on an RDBStorage, one client;
2. the same through a real ``isotune serve`` process (uvicorn) and the Python client, one client
   (target: REST ≤ 2× raw per lifecycle);
3. 8 concurrent clients through REST (target on PostgreSQL: ≥ 50 lifecycles/s);
4. claim latency with 100 and with 10,000 trials already in the study (target: ≤ 2×).

Random sampling throughout, so that the numbers measure the service, not a sampler's cost.
Usage: python benchmarks/service_throughput.py [--n 60] [--backends sqlite,postgresql]
Writes benchmarks/results/service_throughput.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import optuna

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.client import Client  # noqa: E402
from service.db import optuna_storage  # noqa: E402
from service.migrate import upgrade  # noqa: E402
from tests.pg import postgres_cluster  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SPACE = {"x": {"type": "float", "low": 0.0, "high": 1.0}}


def spec(name: str, budget: int) -> dict:
    return {
        "name": name,
        "cell": "lstm",
        "task": {"name": "copy", "T": 10},
        "space": SPACE,
        "sampler": "random",
        "pruner": "none",
        "budget": budget,
        "lease_seconds": 600,
    }


@contextmanager
def serve(url: str):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "serve", "--port", str(port), "--database-url", url,
         "--no-auth"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.2)
        yield base
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def raw_lifecycles(url: str, n: int) -> list[float]:
    storage = optuna_storage(url)
    study = optuna.create_study(
        study_name="raw", storage=storage, sampler=optuna.samplers.RandomSampler(seed=0)
    )
    dist = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        trial = study.ask(dist)
        for step in range(3):
            trial.report(0.1 * step, step)
        study.tell(trial, 0.5)
        times.append(time.perf_counter() - t0)
    return times


def rest_lifecycle(c: Client, study: str, worker: str) -> float:
    t0 = time.perf_counter()
    t = c.claim(study, worker)["trial"]
    for step in range(3):
        c.report(t["trial_id"], worker, [(step, 0.1 * step)])
    c.complete(t["trial_id"], worker, 0.5)
    return time.perf_counter() - t0


def measure(url: str, n: int) -> dict:
    upgrade(url)
    raw = raw_lifecycles(url, n)
    out: dict = {"raw_ms": 1e3 * statistics.median(raw)}
    with serve(url) as base:
        with Client(base) as c:
            c.create_study(spec("one", n + 5))
            rest = [rest_lifecycle(c, "one", "w") for _ in range(n)]
        out["rest_ms"] = 1e3 * statistics.median(rest)
        out["ratio"] = out["rest_ms"] / out["raw_ms"]
        # 8 concurrent clients
        per = max(4, n // 4)
        with Client(base) as c:
            c.create_study(spec("eight", 8 * per + 5))
        done = []

        def work(i: int) -> None:
            with Client(base) as c:
                for k in range(per):
                    rest_lifecycle(c, "eight", f"w{i}-{k}")
                    done.append(1)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out["concurrent8_per_s"] = len(done) / (time.perf_counter() - t0)
        # claim latency against the study's size
        storage = optuna_storage(url)
        for size in (100, 10_000):
            name = f"size{size}"
            with Client(base) as c:
                c.create_study(spec(name, size + 200))
            study = optuna.load_study(study_name=name, storage=storage)
            dist = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
            for _ in range(size):  # finished trials, written directly
                trial = study.ask(dist)
                study.tell(trial, 0.5)
            lat = []
            with Client(base) as c:
                for k in range(30):
                    t0 = time.perf_counter()
                    t = c.claim(name, f"probe{k}")["trial"]
                    lat.append(time.perf_counter() - t0)
                    c.complete(t["trial_id"], f"probe{k}", 0.5)
            out[f"claim_ms_{size}"] = 1e3 * statistics.median(lat)
        out["claim_ratio"] = out["claim_ms_10000"] / out["claim_ms_100"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=60, help="lifecycles per single-client measurement")
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results = {}
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        for backend in args.backends.split(","):
            if backend == "sqlite":
                url = f"sqlite:///{tmp / 'bench.db'}"
            else:
                cluster = stack.enter_context(postgres_cluster())
                url = cluster.url_for(cluster.create_database())
            results[backend] = measure(url, args.n)
            print(
                backend,
                json.dumps({k: round(v, 3) for k, v in results[backend].items()}),
                flush=True,
            )
    report = {"machine": f"{platform.machine()} CPU, {os.cpu_count()} cores", "n": args.n,
              "results": results}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "service_throughput.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Service throughput",
        "",
        f"Written by `python benchmarks/service_throughput.py` on {report['machine']}. A",
        "lifecycle is claim + 3 reports + complete; medians over "
        f"{args.n} lifecycles; random sampler.",
        "",
        "| backend | raw Optuna (ms) | REST, 1 client (ms) | ratio (≤ 2) | 8 clients "
        "(lifecycles/s) | claim at 100 trials (ms) | at 10,000 (ms) | ratio (≤ 2) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for b, r in results.items():
        lines.append(
            f"| {b} | {r['raw_ms']:.1f} | {r['rest_ms']:.1f} | {r['ratio']:.2f} | "
            f"{r['concurrent8_per_s']:.1f} | {r['claim_ms_100']:.1f} | {r['claim_ms_10000']:.1f} "
            f"| {r['claim_ratio']:.2f} |"
        )
    lines += ["", "Target for 8 clients: ≥ 50 lifecycles/s on PostgreSQL."]
    (args.out / "service_throughput.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / 'service_throughput.md'}")


if __name__ == "__main__":
    main()
