"""Trial lifecycles per second through the REST API against raw Optuna on the same storage.

A lifecycle is claim (ask) + 3 intermediate reports + complete (tell). For SQLite and PostgreSQL
(a throwaway cluster, see tests/support/pg.py), in one run:

1. raw Optuna ``ask`` / ``report`` / ``tell`` on an RDBStorage, one client;
2. the same through a real ``isotune serve`` process (uvicorn) and the Python client, one client
   (target: REST ≤ 2× raw per lifecycle); raw and REST lifecycles alternate;
3. 8 concurrent clients through REST (target on PostgreSQL: ≥ 50 lifecycles/s), with one server
   process and, on PostgreSQL, with ``--workers 4``, each the median of 3 runs; beside it raw
   Optuna from 8 threads, and the CPU seconds each process group spent per lifecycle (server,
   PostgreSQL, clients);
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
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cli.procs import free_port, stop, wait_healthy  # noqa: E402
from contract.client import Client  # noqa: E402
from service.db import optuna_storage  # noqa: E402
from service.migrate import upgrade  # noqa: E402
from tests.support.pg import postgres_cluster  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SPACE = {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}}
#: Runs of each 8-client measurement (the report quotes their median).
REPEATS = 3
#: Server processes of the second 8-client measurement on PostgreSQL (``--workers``).
SERVER_PROCESSES = 4


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
def serve(url: str, workers: int = 1):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "serve", "--port", str(port), "--database-url", url,
         "--no-auth", "--workers", str(workers)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc)
        yield base, proc.pid
    finally:
        stop(proc, timeout=20)


def raw_lifecycle(study: optuna.Study) -> float:
    dist = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}
    t0 = time.perf_counter()
    trial = study.ask(dist)
    for step in range(3):
        trial.report(0.1 * step, step)
    study.tell(trial, 0.5)
    return time.perf_counter() - t0


def rest_lifecycle(c: Client, study: str, worker: str) -> float:
    t0 = time.perf_counter()
    t = c.claim(study, worker)["trial"]
    for step in range(3):
        c.report(t["trial_id"], worker, [(step, 0.1 * step)])
    c.complete(t["trial_id"], worker, 0.5)
    return time.perf_counter() - t0


def cpu_seconds(pids: set[int]) -> float:
    """User + system CPU of the processes ``pids`` and all their descendants (Linux /proc)."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    tree, grew = set(pids), True
    while grew:
        more = {pid for pid, (ppid, _) in stats.items() if ppid in tree} - tree
        tree |= more
        grew = bool(more)
    return sum(stats[p][1] for p in tree if p in stats) / os.sysconf("SC_CLK_TCK")


def postgres_pids() -> set[int]:
    """The postgres postmaster(s) started by this benchmark (their backends are children)."""
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"/postgres") and str(os.getpid()) != entry:
                out.add(int(entry))
    return out


def concurrent(base: str, study: str, clients: int, per: int, server_pid: int) -> dict:
    """``clients`` threads, each running ``per`` lifecycles; throughput and CPU per lifecycle."""
    with Client(base) as c:
        c.create_study(spec(study, clients * per + 5))
    done = []

    def work(i: int) -> None:
        with Client(base) as c:
            for k in range(per):
                rest_lifecycle(c, study, f"{study}-w{i}-{k}")
                done.append(1)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    pg = postgres_pids()
    cpu0 = cpu_seconds({server_pid}), cpu_seconds(pg), time.process_time()
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    cpu1 = cpu_seconds({server_pid}), cpu_seconds(pg), time.process_time()
    n = len(done)
    ms = [1e3 * (b - a) / n for a, b in zip(cpu0, cpu1, strict=True)]
    return {"per_s": n / wall, "cpu_ms": {"server": ms[0], "postgresql": ms[1], "clients": ms[2]}}


def repeated(base: str, study: str, per: int, server_pid: int) -> dict:
    """:func:`concurrent` with 8 clients, :data:`REPEATS` times: medians, and every run."""
    runs = [concurrent(base, f"{study}{k}", 8, per, server_pid) for k in range(REPEATS)]
    return {
        "per_s": statistics.median(r["per_s"] for r in runs),
        "cpu_ms": {
            key: statistics.median(r["cpu_ms"][key] for r in runs) for key in runs[0]["cpu_ms"]
        },
        "runs_per_s": [r["per_s"] for r in runs],
    }


def raw_concurrent(url: str, clients: int, per: int) -> float:
    """Raw Optuna ask/report/tell from ``clients`` threads of one process: lifecycles/s."""
    storage = optuna_storage(url)
    optuna.create_study(study_name="raw8", storage=storage)
    dist = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}
    done = []

    def work() -> None:
        study = optuna.load_study(
            study_name="raw8", storage=storage, sampler=optuna.samplers.RandomSampler()
        )
        for _ in range(per):
            trial = study.ask(dist)
            for step in range(3):
                trial.report(0.1 * step, step)
            study.tell(trial, 0.5)
            done.append(1)

    threads = [threading.Thread(target=work) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(done) / (time.perf_counter() - t0)


def measure(url: str, n: int, postgresql: bool) -> dict:
    upgrade(url)
    out: dict = {}
    per = max(4, n // 4)
    out["raw8_per_s"] = raw_concurrent(url, 8, per)
    with serve(url) as (base, pid):
        # raw and REST lifecycles alternate, so that both meet the same machine conditions
        raw_study = optuna.create_study(
            study_name="raw", storage=optuna_storage(url), sampler=optuna.samplers.RandomSampler(0)
        )
        raw, rest = [], []
        with Client(base) as c:
            c.create_study(spec("one", n + 5))
            for _ in range(n):
                raw.append(raw_lifecycle(raw_study))
                rest.append(rest_lifecycle(c, "one", "w"))
        out["raw_ms"] = 1e3 * statistics.median(raw)
        out["rest_ms"] = 1e3 * statistics.median(rest)
        out["ratio"] = out["rest_ms"] / out["raw_ms"]
        out["concurrent8"] = repeated(base, "eight", per, pid)
        # claim latency against the study's size
        storage = optuna_storage(url)
        dist = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}
        for size in (100, 10_000):
            name = f"size{size}"
            with Client(base) as c:
                c.create_study(spec(name, size + 200))
            study = optuna.load_study(study_name=name, storage=storage)
            study.add_trials(  # finished trials, written directly
                [
                    optuna.trial.create_trial(params={"lr": 0.01}, distributions=dist, value=0.5)
                    for _ in range(size)
                ]
            )
            lat = []
            with Client(base) as c:
                for k in range(30):
                    t0 = time.perf_counter()
                    t = c.claim(name, f"probe{k}")["trial"]
                    lat.append(time.perf_counter() - t0)
                    c.complete(t["trial_id"], f"probe{k}", 0.5)
            out[f"claim_ms_{size}"] = 1e3 * statistics.median(lat)
        out["claim_ratio"] = out["claim_ms_10000"] / out["claim_ms_100"]
    if postgresql:  # several server processes share one PostgreSQL
        with serve(url, workers=SERVER_PROCESSES) as (base, pid):
            out["concurrent8_workers"] = repeated(base, "eightw", per, pid)
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
            results[backend] = measure(url, args.n, backend == "postgresql")
            print(backend, json.dumps(results[backend]), flush=True)
    report = {"machine": f"{platform.machine()} CPU, {os.cpu_count()} cores", "n": args.n,
              "results": results}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "service_throughput.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Service throughput",
        "",
        f"Written by `python benchmarks/service_throughput.py` on {report['machine']}. A",
        "lifecycle is claim + 3 reports + complete; single-client figures are medians over "
        f"{args.n} lifecycles; random sampler. Server, PostgreSQL and clients share the machine.",
        "",
        "| backend | raw Optuna (ms) | REST, 1 client (ms) | ratio (≤ 2) | claim at 100 trials "
        "(ms) | at 10,000 (ms) | ratio (≤ 2) |",
        "|---|---|---|---|---|---|---|",
    ]
    for b, r in results.items():
        lines.append(
            f"| {b} | {r['raw_ms']:.1f} | {r['rest_ms']:.1f} | {r['ratio']:.2f} | "
            f"{r['claim_ms_100']:.1f} | {r['claim_ms_10000']:.1f} | {r['claim_ratio']:.2f} |"
        )
    lines += [
        "",
        "8 concurrent clients (threads of one process), lifecycles per second (median of "
        f"{REPEATS} runs; every run in the JSON), and the CPU time spent per lifecycle by each "
        "group of processes:",
        "",
        "| backend | setup | lifecycles/s | server CPU (ms) | PostgreSQL CPU (ms) | "
        "client CPU (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for b, r in results.items():
        lines.append(f"| {b} | raw Optuna, 8 threads | {r['raw8_per_s']:.1f} | | | |")
        runs = [("REST, 1 server process", r["concurrent8"])]
        if "concurrent8_workers" in r:
            runs.append((f"REST, `--workers {SERVER_PROCESSES}`", r["concurrent8_workers"]))
        for label, c in runs:
            cpu = c["cpu_ms"]
            pg = f"{cpu['postgresql']:.1f}" if b == "postgresql" else "–"
            lines.append(
                f"| {b} | {label} | {c['per_s']:.1f} | {cpu['server']:.1f} | {pg} | "
                f"{cpu['clients']:.1f} |"
            )
    lines += ["", "Target for 8 clients: ≥ 50 lifecycles/s on PostgreSQL."]
    (args.out / "service_throughput.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / 'service_throughput.md'}")


if __name__ == "__main__":
    main()
