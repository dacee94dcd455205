"""Load: many simulated workers against several server processes on one PostgreSQL.

``--clients`` simulated workers (threads spread over ``--processes`` client processes) run trial
lifecycles without training for ``--seconds``: claim, three reports, then complete (or, with
probability ``--fail``, fail asking for a retry). A trial lasts ``--trial-seconds`` (each drawn
uniformly from 0.5 to 1.5 times it; the reports and the completion are spread evenly over it;
0: as fast as the service answers). 256 workers with 15-second trials claim as often as 1,000 GPU
workers with 1-minute trials (about 17 claims per second). With probability ``--abandon`` a
worker dies holding its trial: it sends nothing more and comes back under a new id, so the
trial's lease must expire and the reaper must fail it and queue its parameters again. Requests
are plain HTTP without client retries: every 5xx is counted.

The workers are split evenly between studies prefilled (``--prefill``) with 100 and with 10,000
finished trials through the service's import, so that the claim latency shows whether it grows
with the study's history. Each study searches the learning rate and the forget-gate bias of an
LSTM on the copy task (T = 20) with the prior a user gets by default (``restrict``, calibrated on
the study's outcomes; ``--prior`` picks another mode, ``--prior off`` leaves out the theory's
work in claims and the server's background refits) and its default pool of trials sampled ahead.
The CPU time of the server processes, of PostgreSQL and of the client processes during the load is
split per completed lifecycle.

After the load stops the script waits for the last leases to expire and the reaper to pass, then
reads every trial back and checks:

- no request answered 5xx (or failed at the transport);
- no trial was handed out twice (every claim's trial id is new);
- no trial is left RUNNING;
- every abandoned trial is FAILED with an expired lease, and every failure that asked for a retry
  (abandoned or reported) queued exactly one new attempt;

and states the targets: claim p99 ≤ 1 s, and claim p50 at 10,000 trials ≤ 2× that at 100.

Usage: python benchmarks/load.py [--clients 256] [--trial-seconds 15] [--prefill 100,10000]
       [--server-processes 2] [--seconds 120] [--prior restrict|soft|off] [--suffix _off]
       [--database-url postgresql+psycopg://...]   (default: a throwaway cluster,
       tests/support/pg.py)
Writes benchmarks/results/load{suffix}.{md,json}; exits 1 if a check fails. About 8 minutes
(most of it the import of 10,000 trials).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import platform
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from procstat import cpu_seconds, postgres_pids  # noqa: E402
from reporting import recorded_args  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from cli.procs import start_server, stop, wait_healthy  # noqa: E402
from service.settings import REAP_INTERVAL  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
V1 = "/api/v1"
#: Retries of a failed trial in the load study (a re-queue per failure within them).
RETRIES = 10
ROUTES = ("claim", "report", "complete", "fail")


def simulate(
    base: str, studies: list[str], tag: str, threads: int, args: dict, out: mp.Queue
) -> None:
    """One client process: ``threads`` simulated workers, worker i on ``studies[i % len]``; puts
    its records on ``out``."""
    cpu0 = time.process_time()
    # the window opens when this process is ready, not when it was spawned: on a loaded machine
    # starting a process (imports included) can take seconds of a short window
    end = time.monotonic() + args["seconds"]
    lock = threading.Lock()
    rec: dict = {
        "lat": {r: [] for r in ROUTES}, "claim_by_study": {s: [] for s in studies},
        "status": Counter(), "assigned": [], "abandoned": [], "retried": 0, "completed": 0,
        "completed_at": [], "lost": 0, "errors": [],
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
        study = studies[i % len(studies)]
        generation = 0
        # the workers start over the first trial's length, as a cluster's jobs do, not at once
        time.sleep(rng.uniform(0, args["trial_seconds"]))
        with httpx.Client(base_url=base, timeout=60) as h:
            while time.monotonic() < end:
                wid = f"{tag}-{i}-{generation}"
                t0 = time.perf_counter()
                got = call(h, "claim", f"/studies/{study}/claim", {"worker_id": wid})
                if got is None or got["status"] != "assigned":
                    time.sleep(0.1)
                    continue
                with lock:
                    rec["claim_by_study"][study].append(
                        (time.time() - args["epoch"], time.perf_counter() - t0)
                    )
                tid = got["trial"]["trial_id"]
                with lock:
                    rec["assigned"].append(tid)
                if rng.random() < args["abandon"]:  # dies holding the trial
                    with lock:
                        rec["abandoned"].append(tid)
                    generation += 1
                    continue
                pause = args["trial_seconds"] * rng.uniform(0.5, 1.5) / 4
                alive = True
                for step in (1, 2, 3):
                    time.sleep(pause)
                    body = {"worker_id": wid, "values": [{"step": step, "value": rng.random()}]}
                    r = call(h, "report", f"/trials/{tid}/report", body)
                    if r is None or r["state"] != "RUNNING":
                        alive = False
                        break
                if not alive:  # the trial is no longer this worker's: it starts afresh
                    with lock:
                        rec["lost"] += 1
                    generation += 1
                    continue
                time.sleep(pause)
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
                        rec["completed_at"].append(time.time() - args["epoch"])

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    rec["status"] = dict(rec["status"])
    rec["cpu_s"] = time.process_time() - cpu0
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


def load_spec(name: str, args: argparse.Namespace) -> dict:
    spec = {
        "name": name, "cell": "lstm", "task": {"name": "copy", "T": 20},
        "space": {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
                  "mu_f": {"type": "float", "low": 0.0, "high": 6.0}},
        "sampler": "random", "pruner": "none", "budget": 100_000, "retries": RETRIES,
        "lease_seconds": args.lease, "seed": 0,
    }  # fmt: skip
    if args.prior:
        spec["prior"] = {"mode": args.prior}
    return spec


def prefilled(spec: dict, size: int) -> dict:
    """An export of ``size`` finished trials of the study ``spec`` (what ``study export`` writes):
    what the import writes is what claims leave, a trial and a finished lease per trial."""
    import optuna

    space = spec["space"]
    dists = {
        k: optuna.distributions.distribution_to_json(
            optuna.distributions.FloatDistribution(d["low"], d["high"], log=d.get("log", False))
        )
        for k, d in space.items()
    }
    rng = random.Random(size)
    start = "2026-01-01T00:00:00+00:00"
    trials = [
        {
            "number": k,
            "state": "COMPLETE",
            "value": rng.random(),
            "distributions": dists,
            "params": {"lr": 10 ** rng.uniform(-4, -1), "mu_f": rng.uniform(0, 6)},
            "intermediate_values": {"1": 0.1, "2": 0.2, "3": 0.3},
            "datetime_start": start,
            "datetime_complete": start,
        }
        for k in range(size)
    ]
    return {"format": "isotune-study/1", "name": spec["name"], "spec": spec, "trials": trials}


def run(args: argparse.Namespace, url: str, pg_pids: set[int]) -> dict:
    work = Path(tempfile.mkdtemp(prefix="isotune-load-"))
    tuned = [] if args.reap_interval is None else ["--reap-interval", str(args.reap_interval)]
    server, base = start_server(
        url, work / "server.log", "--workers", str(args.server_processes), *tuned
    )
    stamp = int(time.time())
    sizes = args.prefill or [0]
    studies = [f"load-{stamp}-{size}" for size in sizes]
    procs: list[mp.Process] = []
    imports = {}
    try:
        wait_healthy(base, server)
        for name, size in zip(studies, sizes, strict=True):
            spec = load_spec(name, args)
            t0 = time.monotonic()
            if size:
                r = httpx.post(base + V1 + "/studies/import", json=prefilled(spec, size),
                               timeout=1800)  # fmt: skip
            else:
                r = httpx.post(base + V1 + "/studies", json=spec, timeout=60)
            r.raise_for_status()
            imports[name] = time.monotonic() - t0
        ctx = mp.get_context("spawn")
        q: mp.Queue = ctx.Queue()
        share = [args.clients // args.processes + (i < args.clients % args.processes)
                 for i in range(args.processes)]  # fmt: skip
        knobs = {"seconds": args.seconds, "abandon": args.abandon, "fail": args.fail,
                 "trial_seconds": args.trial_seconds, "epoch": time.time()}  # fmt: skip
        cpu0 = cpu_seconds({server.pid}), cpu_seconds(pg_pids)
        t0 = time.monotonic()
        for i, n in enumerate(share):
            # worker j of process i serves studies[(offset + j) % len]: an even split overall
            offset = sum(share[:i])
            mine = [studies[(offset + j) % len(studies)] for j in range(len(studies))]
            p = ctx.Process(target=simulate, args=(base, mine, f"p{i}", n, knobs, q))
            p.start()
            procs.append(p)
        records = [q.get(timeout=args.seconds + 3 * args.trial_seconds + 120) for _ in procs]
        wall = time.monotonic() - t0
        cpu1 = cpu_seconds({server.pid}), cpu_seconds(pg_pids)
        for p in procs:
            p.join(timeout=60)
        # the last abandoned leases expire, then the reaper (every REAP_INTERVAL s) fails them
        settle = args.lease + 2 * (args.reap_interval or REAP_INTERVAL) + 2
        time.sleep(settle)
        trials = {name: all_trials(base, name) for name in studies}
        # the prior's calibration at the end (what restrict hands out from: its c)
        calibration = {
            name: httpx.get(f"{base}{V1}/studies/{name}", timeout=60).json().get("calibration")
            for name in studies
        }
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        stop(server, timeout=30)
    shutil.rmtree(work, ignore_errors=True)  # the run's database files and logs
    report = summary(args, records, trials, wall, settle, imports, sizes, cpu0, cpu1)
    pairs = zip(studies, sizes, strict=True)
    report["calibration"] = {str(n): calibration[name] for name, n in pairs}
    return report


def summary(
    args: argparse.Namespace, records: list[dict], trials_by_study: dict[str, list[dict]],
    wall: float, settle: float, imports: dict, sizes: list[int], cpu0: tuple, cpu1: tuple,
) -> dict:  # fmt: skip
    """The report's figures and checks from the client processes' records and the trials read
    back."""
    lat = {r: sorted(x for rec in records for x in rec["lat"][r]) for r in ROUTES}
    status = Counter()
    for rec in records:
        status.update(rec["status"])
    assigned = [t for rec in records for t in rec["assigned"]]
    abandoned = {t for rec in records for t in rec["abandoned"]}
    trials = [t for ts in trials_by_study.values() for t in ts]
    handed = set(assigned)
    by_id = {t["trial_id"]: t for t in trials}
    # the load's own trials (the prefilled ones are COMPLETE and were never handed out)
    states = Counter(
        t["state"] for t in trials if t["trial_id"] in handed or t["state"] != "COMPLETE"
    )
    requeued = sum(int(t["user_attrs"].get("isotune_attempt", 1)) > 1 for t in trials)
    retried = sum(rec["retried"] for rec in records)
    lost = sum(rec["lost"] for rec in records)
    not_reaped = [t for t in abandoned if by_id[t]["state"] != "FAIL"
                  or "lease" not in by_id[t]["user_attrs"].get("isotune_fail", "")]  # fmt: skip
    bad = sum(v for k, v in status.items() if k == "transport" or k.startswith("5"))
    requeue_problems = [x for ts in trials_by_study.values() for x in requeue_check(ts, RETRIES)]
    checks = {
        "no 5xx or transport error": bad == 0,
        "no trial handed out twice": len(assigned) == len(handed),
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

    # the steady state: after the first trials had time to end (the workers start over the first
    # trial's length, and each server process builds a study's prior at its first claim)
    warm = min(1.5 * args.trial_seconds, args.seconds / 2)
    claims_by_size = {}
    for name, size in zip(trials_by_study, sizes, strict=True):
        pairs = [x for rec in records for x in rec["claim_by_study"][name]]
        xs = sorted(dt for _, dt in pairs)
        later = sorted(dt for t, dt in pairs if t >= warm)
        claims_by_size[str(size)] = {
            "n": len(xs), "p50": ms(xs, 0.5), "p99": ms(xs, 0.99), "import_s": imports[name],
            "steady_n": len(later), "steady_p50": ms(later, 0.5), "steady_p99": ms(later, 0.99),
        }  # fmt: skip
    steady_claims = sorted(
        dt for rec in records for pairs in rec["claim_by_study"].values() for t, dt in pairs
        if t >= warm
    )  # fmt: skip
    completed = sum(rec["completed"] for rec in records)
    # the steady rate: completions after the warm-up, up to the end
    steady = sum(warm <= x <= args.seconds for rec in records for x in rec["completed_at"])
    per = max(completed, 1)
    cpu_ms = {
        "server": 1e3 * (cpu1[0] - cpu0[0]) / per,
        "postgresql": 1e3 * (cpu1[1] - cpu0[1]) / per,
        "clients": 1e3 * sum(rec["cpu_s"] for rec in records) / per,
    }
    p99, steady_p99 = ms(lat["claim"], 0.99), ms(steady_claims, 0.99)
    targets = {
        "claim p99 ≤ 1 s, whole run": p99 is not None and p99 <= 1000,
        f"claim p99 ≤ 1 s, after the first {warm:g} s": steady_p99 is not None
        and steady_p99 <= 1000,
    }
    if len(sizes) > 1:
        lo, hi = claims_by_size[str(min(sizes))], claims_by_size[str(max(sizes))]
        ratio = hi["p50"] / lo["p50"] if lo["p50"] and hi["p50"] else None
        targets[f"claim p50 at {max(sizes):,} trials ≤ 2× at {min(sizes):,}"] = (
            ratio is not None and ratio <= 2
        )
    return {
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "args": recorded_args(args),
        "wall_s": wall,
        "settle_s": settle,
        "requests": sum(len(v) for v in lat.values()),
        "requests_per_s": sum(len(v) for v in lat.values()) / wall,
        "completed": completed,
        "lifecycles_per_s": completed / wall,
        "steady_lifecycles_per_s": steady / max(args.seconds - warm, 1e-9),
        "latency_ms": {
            r: {"n": len(lat[r]), "p50": ms(lat[r], 0.5), "p99": ms(lat[r], 0.99)} for r in ROUTES
        },
        "claim_by_prefill": claims_by_size,
        "warm_s": warm,
        "claim_steady_ms": {
            "n": len(steady_claims),
            "p50": ms(steady_claims, 0.5),
            "p99": steady_p99,
        },
        "cpu_ms_per_lifecycle": cpu_ms,
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
        "targets": targets,
        "requeue_problems": requeue_problems[:10],
        "ok": all(checks.values()),
    }


def write(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    a = report["args"]
    stem = "load" + (a.get("suffix") or "")
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    ts = a["trial_seconds"]
    pace = (
        f"trials of {ts:g} s on average (0.5–1.5×, reports spread over the trial)"
        if ts
        else "no time between requests (each worker as fast as the service answers)"
    )
    if ts:
        pace += (
            f"; {a['clients']} workers with {ts:g}-second trials claim as often as "
            f"{a['clients'] * 60 / ts:,.0f} GPU workers with 1-minute trials"
        )
    prefill = ", ".join(f"{k:,}" for k in (a["prefill"] or [])) or "none"
    lines = [
        "# Load: simulated workers against several server processes",
        "",
        f"Written by `python benchmarks/load.py` on {report['machine']}, {report['date']}: "
        f"{a['clients']} simulated workers in {a['processes']} client processes, "
        f"{a['server_processes']} server processes on one PostgreSQL, {a['seconds']:g} s of load, "
        f"{pace}. Lease {a['lease']:g} s; a worker dies holding its trial with probability "
        f"{a['abandon']}, reports a failure (retry) with probability {a['fail']}. The workers are "
        f"split evenly between studies prefilled with {prefill} finished trials (by import); each "
        f"searches lr and mu_f, LSTM, copy (T = 20), prior "
        f"{a.get('prior') or 'by default (restrict, calibrated)'}, pool of trials sampled ahead "
        "by default (`auto`). Clients, server and database share the machine.",
        "",
        "| route | requests | p50 | p99 |",
        "|---|---|---|---|",
    ]
    for r, v in report["latency_ms"].items():
        if v["n"]:
            lines.append(f"| {r} | {v['n']} | {v['p50']:.1f} ms | {v['p99']:.1f} ms |")
    if len(report["claim_by_prefill"]) > 1:
        lines += [
            "",
            f"Claims by study; *steady*: claims made after the first {report['warm_s']:g} s (the "
            "workers start over the first trial's length, and each server process builds a "
            "study's prior at its first claim):",
            "",
            "| study prefilled with | claims | p50 | p99 | steady p50 | steady p99 | import (s) |",
            "|---|---|---|---|---|---|---|",
        ]
        for size, v in report["claim_by_prefill"].items():
            if v["n"]:
                lines.append(
                    f"| {int(size):,} trials | {v['n']} | {v['p50']:.1f} ms | {v['p99']:.1f} ms "
                    f"| {v['steady_p50']:.1f} ms | {v['steady_p99']:.1f} ms | "
                    f"{v['import_s']:.1f} |"
                )
    cpu = report["cpu_ms_per_lifecycle"]
    lines += [
        "",
        f"- {report['requests_per_s']:.0f} requests/s; {report['lifecycles_per_s']:.1f} completed "
        f"lifecycles/s over the whole run ({report['completed']} in {report['wall_s']:.0f} s, "
        f"the first and last trials included), {report['steady_lifecycles_per_s']:.1f}/s once "
        "the first trials had ended.",
        f"- CPU per completed lifecycle: server processes {cpu['server']:.1f} ms, PostgreSQL "
        f"{cpu['postgresql']:.1f} ms, client processes {cpu['clients']:.1f} ms.",
        f"- {report['claims']} trials handed out, {report['abandoned']} abandoned by dying "
        f"workers, {report['retried']} failed with a retry, {report['lost']} given up by their "
        f"worker (a report refused or unanswered), {report['requeued']} new attempts "
        f"queued; final states of the load's trials {report['states']}.",
        f"- Responses by status: {report['status']}.",
        *calibration_lines(report.get("calibration") or {}),
        "",
        "| check | result |",
        "|---|---|",
        *(f"| {k} | {'pass' if v else '**FAIL**'} |" for k, v in report["checks"].items()),
        "",
        "| target | result |",
        "|---|---|",
        *(f"| {k} | {'met' if v else '**missed**'} |" for k, v in report["targets"].items()),
    ]
    if report["errors"]:
        lines += ["", "First errors:", "", *(f"- `{e}`" for e in report["errors"])]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def calibration_lines(cal: dict) -> list[str]:
    """Where each study's calibrated prior ended (its c bounds what ``restrict`` hands out)."""
    out = []
    for size, c in cal.items():
        if c and c.get("c") is not None and c.get("c0") is not None:
            out.append(
                f"- Prior of the study prefilled with {int(size):,}: c = {c['c']:.3g} at the end "
                f"(the rule's {c['c0']:.3g}), fitted on {c['outcomes']} outcomes, "
                f"{c['trained']} trained."
            )
    return out


def sizes(text: str) -> list[int]:
    """``--prefill``: comma-separated trial counts; 0 or empty: one empty study."""
    out = [int(x) for x in text.split(",") if x.strip()]
    if any(n < 0 for n in out):
        raise argparse.ArgumentTypeError(f"--prefill {text!r}: counts must be ≥ 0")
    return [n for n in out if n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=256)
    ap.add_argument("--processes", type=int, default=4, help="client processes")
    ap.add_argument("--server-processes", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument(
        "--trial-seconds", type=float, default=15, help="a trial's mean length (0: none)"
    )
    ap.add_argument(
        "--prefill", type=sizes, default=[100, 10_000], help="finished trials per study"
    )
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
            pg = {cluster.pid}
        else:
            pg = postgres_pids(make_url(url).port or 5432)
        report = run(args, url, pg)
    write(report, args.out)
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
