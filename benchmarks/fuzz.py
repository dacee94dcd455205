"""Fuzz the REST API with schemathesis and count the server errors.

A real ``isotune serve`` (no tokens, loopback) holds a study with a few claimed trials, so that
some generated requests reach real rows. Schemathesis reads the server's OpenAPI schema and runs
its coverage, fuzzing and stateful phases (valid and invalid requests, NUL bytes allowed) with the
check ``not_a_server_error``. The server's own request counter (``/metrics``) says how many
requests arrived and with which status; the run fails if any was a 5xx.

Usage: python benchmarks/fuzz.py [--backends sqlite,postgresql] [--max-examples 200]
       [--database-url URL]   (one backend; default: a SQLite file and a throwaway PostgreSQL)
Writes benchmarks/results/fuzz.{md,json}; exits 1 on a server error. About 2 minutes per backend.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from reporting import recorded_args  # noqa: E402

from cli.procs import start_server, stop, wait_healthy  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
COUNT = re.compile(r"^isotune_request_seconds_count\{(?P<labels>[^}]*)\} (?P<n>[\d.e+]+)$", re.M)
STUDY = {
    "name": "fuzz",
    "cell": "lstm",
    "task": {"name": "copy", "T": 20},
    "space": {
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "mu_f": {"type": "float", "low": 0.0, "high": 8.0},
        "optimizer": {"type": "categorical", "choices": ["adam", "rmsprop"]},
    },
    "budget": 50,
}


def requests_by_status(base: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in COUNT.finditer(httpx.get(base + "/metrics", timeout=30).text):
        status = re.search(r'status="(\d+)"', m["labels"])[1]
        out[status] = out.get(status, 0) + int(float(m["n"]))
    return out


def fuzz(url: str, max_examples: int, seed: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="isotune-fuzz-"))
    server, base = start_server(url, work / "server.log")
    t0 = time.monotonic()
    try:
        wait_healthy(base, server)
        httpx.post(base + "/api/v1/studies", json=STUDY, timeout=60).raise_for_status()
        for i in range(5):
            body = {"worker_id": f"w{i}"}
            httpx.post(base + "/api/v1/studies/fuzz/claim", json=body, timeout=60)
        before = requests_by_status(base)
        st_log = work / "schemathesis.log"
        with st_log.open("w") as f:
            rc = subprocess.run(
                [sys.executable, "-m", "schemathesis.cli", "run", base + "/openapi.json",
                 "--checks", "not_a_server_error", "--max-examples", str(max_examples),
                 "--seed", str(seed), "--no-color", "--generation-allow-x00", "true",
                 "--generation-database", "none"],
                cwd=work, stdout=f, stderr=subprocess.STDOUT, timeout=600, check=False,
            ).returncode  # fmt: skip
        after = requests_by_status(base)
        server_alive = server.poll() is None
    finally:
        stop(server, timeout=30)
    text = st_log.read_text()
    shutil.rmtree(work, ignore_errors=True)  # the run's database and logs
    generated = re.search(r"(\d+) generated", text)
    sent = {s: n - before.get(s, 0) for s, n in sorted(after.items()) if n - before.get(s, 0)}
    errors = sum(n for s, n in sent.items() if s.startswith("5"))
    return {
        "generated": int(generated[1]) if generated else 0,
        "requests": sum(sent.values()),
        "by_status": sent,
        "server_errors": errors,
        "schemathesis_exit": rc,
        "server_alive": server_alive,
        "seconds": time.monotonic() - t0,
        "tail": text[-3000:] if rc != 0 or errors else "",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--database-url", help="fuzz this database only")
    ap.add_argument("--max-examples", type=int, default=200, help="per operation and phase")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    results = {}
    with contextlib.ExitStack() as stack:
        if args.database_url:
            targets = {args.database_url.split(":", 1)[0].split("+", 1)[0]: args.database_url}
        else:
            targets = {}
            for backend in args.backends.split(","):
                if backend == "sqlite":
                    folder = tempfile.mkdtemp(prefix="isotune-fz-")
                    stack.callback(shutil.rmtree, folder, ignore_errors=True)  # the database
                    targets[backend] = f"sqlite:///{folder}/f.db"
                else:
                    from tests.support.pg import postgres_cluster

                    cluster = stack.enter_context(postgres_cluster())
                    targets[backend] = cluster.url_for(cluster.create_database())
        for backend, url in targets.items():
            results[backend] = fuzz(url, args.max_examples, args.seed)
    report = {
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "args": recorded_args(args),
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fuzz.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Fuzzing the REST API",
        "",
        f"Written by `python benchmarks/fuzz.py` on {report['machine']}, {report['date']}: "
        f"schemathesis (coverage, fuzzing, stateful phases; NUL bytes allowed; "
        f"--max-examples {args.max_examples}, seed {args.seed}) against a real server; requests "
        "counted by the server itself.",
        "",
        "| backend | test cases | requests received | by status | server errors |",
        "|---|---|---|---|---|",
    ]
    for backend, r in results.items():
        lines.append(f"| {backend} | {r['generated']} | {r['requests']} | {r['by_status']} | "
                     f"{r['server_errors']} |")  # fmt: skip
    (args.out / "fuzz.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    bad = [b for b, r in results.items()
           if r["server_errors"] or r["schemathesis_exit"] or not r["server_alive"]]  # fmt: skip
    for b in bad:
        print(f"\n{b}: schemathesis exit {results[b]['schemathesis_exit']}\n{results[b]['tail']}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
