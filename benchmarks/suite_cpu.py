"""Where the test suite's CPU time goes: per test, per file, in the tests' own processes and in
the processes they start.

The suite is CPU-bound on a 2-core machine (its wall time is about its CPU time over the cores),
so shortening it means finding the CPU seconds. This script runs pytest as ``make test`` does
(``-n 4 --dist load --maxschedchunk 1``, PostgreSQL and SLURM required) with itself loaded as a
plugin: around each test it reads ``getrusage`` of the pytest process (``self``: the test's own
work) and of its waited-for children (``children``: servers, workers, scripts it started and
stopped). Processes a test kills without waiting for are not counted; nor is collection,
which ``collection_s`` estimates from one ``--collect-only`` run. The report's baseline is the
whole run's CPU time (``os.wait4`` on pytest): what the per-test sums leave unexplained.

Usage: python benchmarks/suite_cpu.py [--workers 4] [--top 30] [-- PYTEST-ARGS...]
Writes benchmarks/results/suite_cpu.{md,json}. About as long as ``make test``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ROWS = "ISOTUNE_SUITE_CPU_ROWS"  # the folder the plugin writes each process's rows to

_rows: list[tuple[str, float, float, float]] = []


def _cpu() -> tuple[float, float]:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


# -- the plugin (loaded into every pytest process with -p suite_cpu) ------------------------------


try:  # the hooks need pytest; the script's own run does not
    import pytest as _pytest

    @_pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):
        """Wraps each test: its own CPU, its waited-for children's CPU, its wall time."""
        own, kids = _cpu()
        t0 = time.monotonic()
        yield
        own2, kids2 = _cpu()
        _rows.append((item.nodeid, own2 - own, kids2 - kids, time.monotonic() - t0))

    def pytest_sessionfinish(session) -> None:
        folder = os.environ.get(ROWS)
        if folder and _rows:
            worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
            (Path(folder) / f"{worker}.json").write_text(json.dumps(_rows))

except ImportError:  # pragma: no cover
    pass


# -- the benchmark ------------------------------------------------------------------------------


def run_suite(workers: int, extra: list[str]) -> dict:
    rows_dir = Path(tempfile.mkdtemp(prefix="isotune-suite-cpu-"))
    env = {
        **os.environ,
        ROWS: str(rows_dir),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "benchmarks"), os.environ.get("PYTHONPATH", "")]),
        "ISOTUNE_REQUIRE_POSTGRES": os.environ.get("ISOTUNE_REQUIRE_POSTGRES", "1"),
        "ISOTUNE_REQUIRE_SLURM": os.environ.get("ISOTUNE_REQUIRE_SLURM", "1"),
    }
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "suite_cpu", "-p", "no:cacheprovider"]
    if workers:
        cmd += ["-n", str(workers), "--dist", "load", "--maxschedchunk", "1"]
    t0 = time.monotonic()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen([*cmd, *extra], cwd=ROOT, env=env, stdout=log, text=True)
        # wait4, not wait: its usage counts pytest and every process it (and they) waited for
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - t0
        log.seek(0)
        out = log.read()
    rows = []
    for f in rows_dir.glob("*.json"):
        rows += json.loads(f.read_text())
        f.unlink()
    rows_dir.rmdir()
    total = usage.ru_utime + usage.ru_stime
    lines = out.strip().splitlines()
    return {"wall": wall, "cpu": total, "rows": rows, "rc": proc.returncode,
            "summary": lines[-1] if lines else "",
            "failed": [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))]}  # fmt: skip


def collection_cpu(extra: list[str]) -> float:
    """The CPU seconds one process takes to collect what the run collects."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
    subprocess.run([*cmd, *extra], cwd=ROOT, capture_output=True, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=4, help="pytest-xdist workers (0: none)")
    ap.add_argument("--top", type=int, default=30, help="tests listed")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")
    args = ap.parse_args()
    collect = collection_cpu(args.pytest_args)
    run = run_suite(args.workers, args.pytest_args)
    rows = run["rows"]
    own = sum(r[1] for r in rows)
    kids = sum(r[2] for r in rows)
    per_file: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0, 0.0])
    for nodeid, a, b, _ in rows:
        entry = per_file[nodeid.split("::")[0]]
        entry[0] += 1
        entry[1] += a
        entry[2] += b
    top = sorted(rows, key=lambda r: -(r[1] + r[2]))[: args.top]
    cores = os.cpu_count() or 1
    report = {
        "machine": f"{platform.machine()} CPU, {cores} cores",
        "date": time.strftime("%Y-%m-%d"),
        "workers": args.workers,
        "pytest": run["summary"],
        "returncode": run["rc"],
        "failed": run["failed"],
        "wall_s": run["wall"],
        "cpu_s": run["cpu"],
        "tests_own_s": own,
        "tests_children_s": kids,
        "collection_s_per_process": collect,
        "unexplained_s": run["cpu"] - own - kids,
        "per_file": {k: {"tests": v[0], "own_s": v[1], "children_s": v[2]}
                     for k, v in sorted(per_file.items(), key=lambda kv: -(kv[1][1] + kv[1][2]))},
        "top": [{"test": r[0], "own_s": r[1], "children_s": r[2], "wall_s": r[3]} for r in top],
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "suite_cpu.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Where the test suite's CPU time goes",
        "",
        f"Written by `python benchmarks/suite_cpu.py` on {report['machine']}, {report['date']}: "
        f"pytest with {args.workers} xdist workers ({run['summary']}).",
        "",
        f"- Wall time {run['wall']:.0f} s; CPU time of pytest and everything it started "
        f"{run['cpu']:.0f} s ({run['cpu'] / max(run['wall'], 1e-9):.2f} cores busy of {cores}).",
        f"- In the tests' own processes {own:.0f} s; in the processes they started and waited for "
        f"{kids:.0f} s; the rest, {report['unexplained_s']:.0f} s, is collection (about "
        f"{collect:.1f} s per process), PostgreSQL, and processes killed without a wait.",
        "",
        "| file | tests | own CPU s | children's CPU s | total |",
        "|---|---|---|---|---|",
    ]
    for name, v in report["per_file"].items():
        total = v["own_s"] + v["children_s"]
        lines.append(f"| {name} | {v['tests']} | {v['own_s']:.1f} | {v['children_s']:.1f} | "
                     f"{total:.1f} |")  # fmt: skip
    lines += ["", f"The {args.top} dearest tests:", "",
              "| test | own CPU s | children's CPU s | wall s |", "|---|---|---|---|"]  # fmt: skip
    for r in report["top"]:
        lines.append(f"| {r['test']} | {r['own_s']:.1f} | {r['children_s']:.1f} | "
                     f"{r['wall_s']:.1f} |")  # fmt: skip
    (args.out / "suite_cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:8] + run["failed"]))
    sys.exit(0 if run["rc"] == 0 else 1)


if __name__ == "__main__":
    main()
