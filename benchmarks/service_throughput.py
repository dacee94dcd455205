"""Trial lifecycles per second through the REST API against raw Optuna on the same storage.

A lifecycle is claim (ask) + 3 intermediate reports + complete (tell). For SQLite and PostgreSQL
(a throwaway cluster, see tests/support/pg.py), in one run:

1. raw Optuna ``ask`` / ``report`` / ``tell`` on an RDBStorage, one client;
2. the same through a real ``isotune serve`` process (uvicorn) and the Python client, one client
   (target: REST ≤ 1× raw per lifecycle), with the study's default pool of trials sampled ahead
   and with a pool of :data:`POOL`; raw and REST lifecycles alternate. Three studies: a
   plain space (the learning rate only: no prior, no theory work), and the space users search
   with the prior, forget-gate bias × recurrent scale × learning rate on padded digits at
   T = 100, with the prior ``restrict`` and ``soft`` (the theory check of every claim, the
   resampling of restrict, the candidate weighting of soft). Raw Optuna asks for the same
   parameters with no prior: the difference is the product's own cost;
3. 8 concurrent clients through REST (target on PostgreSQL: ≥ 50 lifecycles/s), with one server
   process and, on PostgreSQL, with ``--workers 4``, each the median of 3 runs; beside it raw
   Optuna from 8 threads, and the CPU seconds each process group spent per lifecycle (server,
   PostgreSQL, clients);
4. claim latency with 100 and with 10,000 finished trials already in the study (target: ≤ 2×).
   The studies are filled through the service's own import (``POST /studies/import``), which
   writes a lease row per trial as real claims do, so every claim counts a lease table as large
   as in use.

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

from procstat import cpu_seconds, postgres_pids  # noqa: E402

from cli.procs import free_port, stop, wait_healthy  # noqa: E402
from contract.client import Client  # noqa: E402
from service.db import optuna_storage  # noqa: E402
from service.migrate import upgrade  # noqa: E402
from tests.support.pg import postgres_cluster  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
LR = {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}
SPACE = {"lr": LR}
#: The space searched with the prior (that of benchmarks/hpo_efficiency.py) and its task.
INIT_SPACE = {
    "mu_f": {"type": "float", "low": -3.0, "high": 6.0},
    "nu": {"type": "float", "low": 0.25, "high": 2.0},
    "lr": LR,
}
INIT_TASK = {"name": "padded_digits", "T": 100, "options": {"padding": "noise"}}
#: The single-client studies: name -> (space, task, prior).
STUDIES = {
    "plain": (SPACE, {"name": "copy", "T": 10}, None),
    "restrict": (INIT_SPACE, INIT_TASK, {"mode": "restrict"}),
    "soft": (INIT_SPACE, INIT_TASK, {"mode": "soft"}),
}
LABELS = {
    "plain": "plain (lr only, no prior)",
    "restrict": "mu_f, nu, lr; prior restrict",
    "soft": "mu_f, nu, lr; prior soft",
}
#: Runs of each 8-client measurement (the report quotes their median).
REPEATS = 3
#: The pool of trials sampled ahead in the "pool" rows (the default, ``auto``, is one pooled trial
#: per 8 running: none for one client, one for 8).
POOL = 4
#: Server processes of the second 8-client measurement on PostgreSQL (``--workers``).
SERVER_PROCESSES = 4


def spec(name: str, budget: int, kind: str = "plain", pool: int | str = "auto") -> dict:
    space, task, prior = STUDIES[kind]
    out = {
        "name": name,
        "cell": "lstm",
        "task": task,
        "space": space,
        "sampler": "random",
        "pruner": "none",
        "budget": budget,
        "lease_seconds": 600,
        "prior": prior or {"mode": "off"},
        "pool": pool,
    }
    return out


def distributions(kind: str) -> dict[str, optuna.distributions.BaseDistribution]:
    """Optuna's distributions of a study's space (what raw Optuna asks for)."""
    out: dict[str, optuna.distributions.BaseDistribution] = {}
    for name, d in STUDIES[kind][0].items():
        out[name] = optuna.distributions.FloatDistribution(
            d["low"], d["high"], log=d.get("log", False)
        )
    return out


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


def raw_lifecycle(study: optuna.Study, dist: dict) -> float:
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


def concurrent(
    base: str, study: str, clients: int, per: int, server_pid: int, pool: int | str = "auto"
) -> dict:
    """``clients`` threads, each running ``per`` lifecycles; throughput and CPU per lifecycle."""
    with Client(base) as c:
        c.create_study(spec(study, clients * per + 5, pool=pool))
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


def repeated(base: str, study: str, per: int, server_pid: int, pool: int | str = "auto") -> dict:
    """:func:`concurrent` with 8 clients, :data:`REPEATS` times: medians, and every run."""
    runs = [concurrent(base, f"{study}{k}", 8, per, server_pid, pool) for k in range(REPEATS)]
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


def filled_export(name: str, size: int) -> dict:
    """An export of ``size`` finished trials of the plain study (what ``study export`` writes)."""
    dist = optuna.distributions.distribution_to_json(distributions("plain")["lr"])
    start = "2026-01-01T00:00:00+00:00"
    trial = {"state": "COMPLETE", "value": 0.5, "params": {"lr": 0.01},
             "distributions": {"lr": dist}, "intermediate_values": {"0": 0.1, "1": 0.2, "2": 0.3},
             "datetime_start": start, "datetime_complete": start}  # fmt: skip
    return {
        "format": "isotune-study/1",
        "name": name,
        "spec": spec(name, size + 200),
        "trials": [{**trial, "number": k} for k in range(size)],
    }


def measure(url: str, n: int, postgresql: bool) -> dict:
    upgrade(url)
    out: dict = {}
    per = max(4, n // 4)
    out["raw8_per_s"] = raw_concurrent(url, 8, per)
    with serve(url) as (base, pid):
        # raw and REST lifecycles alternate, so that both meet the same machine conditions
        out["spaces"] = {}
        for kind in STUDIES:
            dist = distributions(kind)
            raw_study = optuna.create_study(
                study_name=f"raw-{kind}",
                storage=optuna_storage(url),
                sampler=optuna.samplers.RandomSampler(0),
            )
            raw, rest, pooled = [], [], []
            with Client(base) as c:
                c.create_study(spec(kind, n + 5, kind))
                c.create_study(spec(f"{kind}-pool", n + 5 + POOL, kind, pool=POOL))
                for _ in range(n):
                    raw.append(raw_lifecycle(raw_study, dist))
                    rest.append(rest_lifecycle(c, kind, "w"))
                    pooled.append(rest_lifecycle(c, f"{kind}-pool", "w"))
            res = {"raw_ms": 1e3 * statistics.median(raw)}
            for key, xs in (("rest", rest), ("pool", pooled)):
                res[f"{key}_ms"] = 1e3 * statistics.median(xs)
                res[f"{key}_p90_ms"] = 1e3 * statistics.quantiles(xs, n=10)[-1]
                res[f"{key}_ratio"] = res[f"{key}_ms"] / res["raw_ms"]
            out["spaces"][kind] = res
        out["concurrent8"] = repeated(base, "eight", per, pid)
        out["concurrent8_pool"] = repeated(base, "eightp", per, pid, pool=POOL)
        # claim latency against the study's size, the study filled through the service's import
        for size in (100, 10_000):
            name = f"size{size}"
            t0 = time.perf_counter()
            with Client(base, timeout=600) as c:
                c.import_study(filled_export(name, size))
            out[f"import_s_{size}"] = time.perf_counter() - t0
            lat = []
            with Client(base) as c:
                for k in range(30):
                    t0 = time.perf_counter()
                    t = c.claim(name, f"probe{k}")["trial"]
                    lat.append(time.perf_counter() - t0)
                    c.complete(t["trial_id"], f"probe{k}", 0.5)
            out[f"claim_ms_{size}"] = 1e3 * statistics.median(lat)
        out["claim_ratio"] = out["claim_ms_10000"] / out["claim_ms_100"]
        out["lease_rows_10000"] = lease_rows(url, "size10000")
    if postgresql:  # several server processes share one PostgreSQL
        with serve(url, workers=SERVER_PROCESSES) as (base, pid):
            out["concurrent8_workers"] = repeated(base, "eightw", per, pid)
    return out


def lease_rows(url: str, study: str) -> int:
    """Lease rows of ``study`` in the store (the claim counts them)."""
    from sqlalchemy import func, select

    from service.db import make_engine
    from service.models import Lease

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            q = select(func.count()).select_from(Lease).where(Lease.study_name == study)
            return int(conn.execute(q).scalar_one())
    finally:
        engine.dispose()


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
        "REST figures with the study's default pool (`auto`: none for one client) and with a "
        f"pool of {POOL} trials sampled ahead (`pool: {POOL}`); raw and REST lifecycles alternate.",
        "",
        "| backend | study | raw Optuna (ms) | REST, default (ms) | ratio | "
        f"REST, pool {POOL} (ms) | p90 (ms) | ratio (≤ 1) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for b, r in results.items():
        for kind, x in r["spaces"].items():
            lines.append(
                f"| {b} | {LABELS[kind]} | {x['raw_ms']:.1f} | {x['rest_ms']:.1f} | "
                f"{x['rest_ratio']:.2f} | {x['pool_ms']:.1f} | {x['pool_p90_ms']:.1f} | "
                f"{x['pool_ratio']:.2f} |"
            )
    lines += [
        "",
        "Claim latency (median of 30 claims) in a study already holding 100 and 10,000 finished "
        "trials, each filled through the service's import (one lease row per trial, as real "
        "claims leave them):",
        "",
        "| backend | claim at 100 trials (ms) | at 10,000 (ms) | ratio (≤ 2) | lease rows | "
        "import of 10,000 (s) |",
        "|---|---|---|---|---|---|",
    ]
    for b, r in results.items():
        lines.append(
            f"| {b} | {r['claim_ms_100']:.1f} | {r['claim_ms_10000']:.1f} | "
            f"{r['claim_ratio']:.2f} | {r['lease_rows_10000']} | {r['import_s_10000']:.1f} |"
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
        runs = [
            ("REST, 1 server process", r["concurrent8"]),
            (f"REST, 1 server process, pool {POOL}", r["concurrent8_pool"]),
        ]
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
