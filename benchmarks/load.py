"""Load: many simulated workers against several server processes on one PostgreSQL.

``--clients`` simulated workers (threads spread over ``--processes`` client processes) run trial
lifecycles without training, as fast as the service answers, for ``--seconds``: claim, three
reports, then complete (or, with probability ``--fail``, fail asking for a retry). With probability
``--abandon`` a worker dies holding its trial: it sends nothing more and comes back under a new id,
so the trial's lease must expire and the reaper must fail it and queue its parameters again.
Requests are plain HTTP without client retries: every 5xx is counted. The study searches the
learning rate and the forget-gate bias of an LSTM on the copy task (T = 20) with the prior a user
gets by default (``restrict``, calibrated on the study's outcomes; ``--prior`` picks another mode,
``--prior off`` leaves out the theory's work in claims and the server's background refits).

After the load stops the script waits for the last leases to expire and the reaper to pass, then
reads every trial back and checks:

- no request answered 5xx (or failed at the transport);
- no trial was handed out twice (every claim's trial id is new);
- no trial is left RUNNING;
- every abandoned trial is FAILED with an expired lease, and every failure that asked for a retry
  (abandoned or reported) queued exactly one new attempt.

Usage: python benchmarks/load.py [--clients 64] [--server-processes 2] [--seconds 120]
       [--prior restrict|soft|off] [--suffix _off]
       [--database-url postgresql+psycopg://...]   (default: a throwaway cluster,
       tests/support/pg.py)
Writes benchmarks/results/load{suffix}.{md,json}; exits 1 if a check fails. About 3 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import platform
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from reporting import recorded_args  # noqa: E402

from cli.procs import start_server, stop, wait_healthy  # noqa: E402
from service.settings import REAP_INTERVAL  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
V1 = "/api/v1"
#: Retries of a failed trial in the load study (a re-queue per failure within them).
RETRIES = 10
ROUTES = ("claim", "report", "complete", "fail")


def simulate(base: str, study: str, tag: str, threads: int, args: dict, out: mp.Queue) -> None:
    """One client process: ``threads`` simulated workers; puts its records on ``out``."""
    end = time.monotonic() + args["seconds"]
    lock = threading.Lock()
    rec: dict = {
        "lat": {r: [] for r in ROUTES}, "status": Counter(), "assigned": [], "abandoned": [],
        "retried": 0, "completed": 0, "lost": 0, "errors": [],
    }  # fmt: skip

    def call(h: httpx.Client, route: str, path: str, body: dict) -> dict | None:
        t0 = time.perf_counter()
        try:
            r = h.post(V1 + path, json=body)
        except httpx.TransportError as e:
            with lock:
                rec["status"]["transport"] += 1
                rec["errors"].append(f"{route}: {type(e).__name__}: {e}")
            return None
        dt = time.perf_counter() - t0
        with lock:
            rec["lat"][route].append(dt)
            rec["status"][str(r.status_code)] += 1
            if r.status_code >= 500:
                rec["errors"].append(f"{route}: {r.status_code} {r.text[:300]}")
        return r.json() if r.status_code < 300 else None

    def worker(i: int) -> None:
        rng = random.Random(f"{tag}-{i}")
        generation = 0
        with httpx.Client(base_url=base, timeout=60) as h:
            while time.monotonic() < end:
                wid = f"{tag}-{i}-{generation}"
                got = call(h, "claim", f"/studies/{study}/claim", {"worker_id": wid})
                if got is None or got["status"] != "assigned":
                    time.sleep(0.1)
                    continue
                tid = got["trial"]["trial_id"]
                with lock:
                    rec["assigned"].append(tid)
                if rng.random() < args["abandon"]:  # dies holding the trial
                    with lock:
                        rec["abandoned"].append(tid)
                    generation += 1
                    continue
                alive = True
                for step in (1, 2, 3):
                    body = {"worker_id": wid, "values": [{"step": step, "value": rng.random()}]}
                    r = call(h, "report", f"/trials/{tid}/report", body)
                    if r is None or r["state"] != "RUNNING":
                        alive = False
                        break
                if not alive:
                    with lock:
                        rec["lost"] += 1
                    continue
                if rng.random() < args["fail"]:
                    body = {"worker_id": wid, "reason": "simulated failure", "retry": True}
                    if call(h, "fail", f"/trials/{tid}/fail", body) is not None:
                        with lock:
                            rec["retried"] += 1
                    continue
                body = {"worker_id": wid, "value": rng.random()}
                if call(h, "complete", f"/trials/{tid}/complete", body) is not None:
                    with lock:
                        rec["completed"] += 1

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    rec["status"] = dict(rec["status"])
    out.put(rec)


def requeue_check(trials: list[dict], retries: int) -> list[str]:
    """What is wrong with the re-queues, lease by lease (empty: nothing): each FAIL attempt a of a
    parameter set must be followed by exactly one attempt a + 1 of the same parameters while
    a ≤ ``retries`` (none after), and every attempt a > 1 must follow a FAIL attempt a − 1."""
    attempts: dict[str, dict[int, list[dict]]] = {}
    for t in trials:
        key = json.dumps(t["params"], sort_keys=True)
        a = int(t["user_attrs"].get("isotune_attempt", 1))
        attempts.setdefault(key, {}).setdefault(a, []).append(t)
    problems = []
    for key, by_attempt in attempts.items():
        for a, ts in by_attempt.items():
            if len(ts) > 1:
                problems.append(f"{key}: attempt {a} ran {len(ts)} times")
            following = len(by_attempt.get(a + 1, []))
            failed = any(t["state"] == "FAIL" for t in ts)
            expected = 1 if failed and a <= retries else 0
            if following != expected:
                problems.append(f"{key}: attempt {a} ({ts[0]['state']}) has {following} next")
            if a > 1 and not any(t["state"] == "FAIL" for t in by_attempt.get(a - 1, [])):
                problems.append(f"{key}: attempt {a} follows no failed attempt {a - 1}")
    return problems


def all_trials(base: str, study: str) -> list[dict]:
    trials: list[dict] = []
    with httpx.Client(base_url=base, timeout=60) as h:
        while True:
            page = h.get(f"{V1}/studies/{study}/trials", params={"offset": len(trials),
                                                                 "limit": 1000})  # fmt: skip
            page.raise_for_status()
            got = page.json()["trials"]
            trials += got
            if len(got) < 1000:
                return trials


def run(args: argparse.Namespace, url: str) -> dict:
    work = Path(tempfile.mkdtemp(prefix="isotune-load-"))
    tuned = [] if args.reap_interval is None else ["--reap-interval", str(args.reap_interval)]
    server, base = start_server(
        url, work / "server.log", "--workers", str(args.server_processes), *tuned
    )
    study = f"load-{int(time.time())}"
    procs: list[mp.Process] = []
    try:
        wait_healthy(base, server)
        spec = {
            "name": study, "cell": "lstm", "task": {"name": "copy", "T": 20},
            "space": {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
                      "mu_f": {"type": "float", "low": 0.0, "high": 6.0}},
            "sampler": "random", "pruner": "none", "budget": 100_000, "retries": RETRIES,
            "lease_seconds": args.lease, "seed": 0,
        }  # fmt: skip
        if args.prior:
            spec["prior"] = {"mode": args.prior}
        httpx.post(base + V1 + "/studies", json=spec, timeout=60).raise_for_status()
        ctx = mp.get_context("spawn")
        q: mp.Queue = ctx.Queue()
        share = [args.clients // args.processes + (i < args.clients % args.processes)
                 for i in range(args.processes)]  # fmt: skip
        knobs = {"seconds": args.seconds, "abandon": args.abandon, "fail": args.fail}
        t0 = time.monotonic()
        for i, n in enumerate(share):
            p = ctx.Process(target=simulate, args=(base, study, f"p{i}", n, knobs, q))
            p.start()
            procs.append(p)
        records = [q.get(timeout=args.seconds + 120) for _ in procs]
        wall = time.monotonic() - t0
        for p in procs:
            p.join(timeout=60)
        # the last abandoned leases expire, then the reaper (every REAP_INTERVAL s) fails them
        settle = args.lease + 2 * (args.reap_interval or REAP_INTERVAL) + 2
        time.sleep(settle)
        trials = all_trials(base, study)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        stop(server, timeout=30)
    lat = {r: sorted(x for rec in records for x in rec["lat"][r]) for r in ROUTES}
    status = Counter()
    for rec in records:
        status.update(rec["status"])
    assigned = [t for rec in records for t in rec["assigned"]]
    abandoned = {t for rec in records for t in rec["abandoned"]}
    by_id = {t["trial_id"]: t for t in trials}
    states = Counter(t["state"] for t in trials)
    requeued = sum(int(t["user_attrs"].get("isotune_attempt", 1)) > 1 for t in trials)
    retried = sum(rec["retried"] for rec in records)
    lost = sum(rec["lost"] for rec in records)
    not_reaped = [t for t in abandoned if by_id[t]["state"] != "FAIL"
                  or "lease" not in by_id[t]["user_attrs"].get("isotune_fail", "")]  # fmt: skip
    bad = sum(v for k, v in status.items() if k == "transport" or k.startswith("5"))
    requeue_problems = requeue_check(trials, RETRIES)
    checks = {
        "no 5xx or transport error": bad == 0,
        "no trial handed out twice": len(assigned) == len(set(assigned)),
        "no trial left RUNNING": states.get("RUNNING", 0) == 0,
        "every abandoned trial reaped (FAIL, lease expired)": not not_reaped,
        # lease by lease: every failed attempt (abandoned and reaped, failed with a retry, or
        # reaped while its slow worker still reported) has exactly one next attempt of the same
        # parameters within the retry budget, and no attempt comes from nowhere
        "one new attempt per failed lease, lease by lease": not requeue_problems,
        # the same in total, against what the workers did
        "as many new attempts as failures asking for a retry": requeued
        == len(abandoned) + retried + lost,
    }

    def ms(xs: list[float], q: float) -> float | None:
        return 1000 * xs[min(len(xs) - 1, int(q * len(xs)))] if xs else None

    return {
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "args": recorded_args(args),
        "wall_s": wall,
        "settle_s": settle,
        "requests": sum(len(v) for v in lat.values()),
        "requests_per_s": sum(len(v) for v in lat.values()) / wall,
        "completed": sum(rec["completed"] for rec in records),
        "lifecycles_per_s": sum(rec["completed"] for rec in records) / wall,
        "latency_ms": {
            r: {"n": len(lat[r]), "p50": ms(lat[r], 0.5), "p99": ms(lat[r], 0.99)} for r in ROUTES
        },
        "status": dict(status),
        "claims": len(assigned),
        "abandoned": len(abandoned),
        "retried": retried,
        "lost": lost,
        "requeued": requeued,
        "states": dict(states),
        "not_reaped": not_reaped[:20],
        "errors": [e for rec in records for e in rec["errors"]][:20],
        "checks": checks,
        "requeue_problems": requeue_problems[:10],
        "ok": all(checks.values()),
    }


def write(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    a = report["args"]
    stem = "load" + (a.get("suffix") or "")
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Load: simulated workers against several server processes",
        "",
        f"Written by `python benchmarks/load.py` on {report['machine']}, {report['date']}: "
        f"{a['clients']} simulated workers in {a['processes']} client processes, "
        f"{a['server_processes']} server processes on one PostgreSQL, {a['seconds']} s of load, "
        f"lease {a['lease']} s; a worker dies holding its trial with probability {a['abandon']}, "
        f"reports a failure (retry) with probability {a['fail']}. The study: lr and mu_f, LSTM, "
        f"copy (T = 20), prior {a.get('prior') or 'by default (restrict, calibrated)'}. Clients, "
        "server and database share the machine.",
        "",
        "| route | requests | p50 | p99 |",
        "|---|---|---|---|",
    ]
    for r, v in report["latency_ms"].items():
        if v["n"]:
            lines.append(f"| {r} | {v['n']} | {v['p50']:.1f} ms | {v['p99']:.1f} ms |")
    lines += [
        "",
        f"- {report['requests_per_s']:.0f} requests/s; {report['lifecycles_per_s']:.1f} completed "
        f"lifecycles/s ({report['completed']} in {report['wall_s']:.0f} s).",
        f"- {report['claims']} trials handed out, {report['abandoned']} abandoned by dying "
        f"workers, {report['retried']} failed with a retry, {report['lost']} reaped while their "
        f"worker was slow, {report['requeued']} new attempts "
        f"queued; final states {report['states']}.",
        f"- Responses by status: {report['status']}.",
        "",
        "| check | result |",
        "|---|---|",
        *(f"| {k} | {'pass' if v else '**FAIL**'} |" for k, v in report["checks"].items()),
    ]
    if report["errors"]:
        lines += ["", "First errors:", "", *(f"- `{e}`" for e in report["errors"])]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--processes", type=int, default=4, help="client processes")
    ap.add_argument("--server-processes", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--lease", type=float, default=10)
    ap.add_argument("--abandon", type=float, default=0.02)
    ap.add_argument("--fail", type=float, default=0.05)
    ap.add_argument("--reap-interval", type=float, help="the server's (default: its own, 5 s)")
    ap.add_argument("--database-url", help="PostgreSQL; default: a throwaway cluster")
    ap.add_argument(
        "--prior", choices=["restrict", "soft", "off"], help="the study's (default: its default)"
    )
    ap.add_argument("--suffix", default="", help="written to load{suffix}.md and .json")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    with contextlib.ExitStack() as stack:
        url = args.database_url
        if url is None:
            from tests.support.pg import postgres_cluster

            cluster = stack.enter_context(postgres_cluster())
            url = cluster.url_for(cluster.create_database())
        report = run(args, url)
    write(report, args.out)
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
