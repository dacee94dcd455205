"""Mutation testing of the modules whose every mutant a test must kill (``make mutate``; not CI).

mutmut changes one expression at a time in a copy of the code and runs the tests that reach the
changed function; a mutant the tests do not notice *survives*. The run goes in phases, each a
module group with the fast tests that check it (``PHASES``): the lease logic (``service/leases.py``
with the lease and service tests), the prior and its feasibility check (``service/prior.py`` with
the prior tests), and the mean-field cell maps (``meanfield/cells/``, one phase a cell, with the
theory, property and Jacobian tests). Each phase runs mutmut in its own copy of the checkout
(``.mutation/PHASE/``, with a ``[tool.mutmut]`` section written for it), so a phase can be run
again alone; the report merges the phases.

The theory-against-simulation tests read their finite-width simulations from a disk cache
(``tests/support/simcache.py``, folder ``.simcache/``): the simulations do not depend on the
mutated modules, and a phase takes minutes instead of hours.

Each surviving mutant is judged by hand in ``benchmarks/mutation_triage.json`` (mutant name →
"equivalent: why", "left: why", or "killed: by which later test"); the report lists every
survivor with its diff and its judgement, and counts the ones nobody judged. ``--minutes``
bounds a phase: mutants it did not reach are counted as not checked.

Usage:
    python benchmarks/mutation.py run [--phases leases,prior,lstm] [--max-children 2]
                                      [--minutes 60] [--again]
    python benchmarks/mutation.py report          # the report of the recorded phases
Writes benchmarks/results/mutation.{md,json}.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TRIAGE = ROOT / "benchmarks" / "mutation_triage.json"
WORK = ROOT / ".mutation"
MUTMUT = [sys.executable, "-m", "mutmut"]
THEORY_TESTS = ["tests/test_theory_vs_sim.py", "tests/test_properties.py", "tests/test_jacobian.py"]
#: phase → (the files mutated, the tests run against them)
PHASES: dict[str, tuple[list[str], list[str]]] = {
    "leases": (["service/leases.py"], ["tests/test_leases.py", "tests/test_service.py"]),
    "prior": (["service/prior.py"], ["tests/test_prior.py"]),
    "lstm": (["meanfield/cells/base.py", "meanfield/cells/lstm.py"], THEORY_TESTS),
    "gru": (["meanfield/cells/gru.py"], THEORY_TESTS),
    "minimalrnn": (["meanfield/cells/simple.py"], THEORY_TESTS),
}


def toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def prepare(phase: str) -> Path:
    """A fresh copy of the checkout (tracked and new files, as they are now) with the phase's
    ``[tool.mutmut]`` section."""
    files, tests = PHASES[phase]
    work = WORK / phase
    if work.exists():
        shutil.rmtree(work)
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, work / rel)
    section = "\n".join(
        [
            "",
            "[tool.mutmut]",
            'source_paths = ["meanfield", "service"]',
            f"only_mutate = {toml_list(files)}",
            "also_copy = "
            + toml_list(["migrations", "contract", "cli", "workers", "docs", "benchmarks"]),
            'pytest_add_cli_args = ["-p", "no:cacheprovider", "-x", "-q"]',
            f"pytest_add_cli_args_test_selection = {toml_list(tests)}",
            "",
        ]
    )
    with open(work / "pyproject.toml", "a") as f:
        f.write(section)
    return work


def run(phase: str, max_children: int, minutes: float | None, again: bool = False) -> float:
    """``mutmut run`` of one phase with the simulation cache; returns its wall time in seconds
    (stopped after ``minutes``, if given). ``again``: in the phase's existing copy, with the
    tests as they are now, only the mutants that survived or were not reached."""
    names: list[str] = []
    if again:
        work = WORK / phase
        names = [n for n, st in statuses(work).items() if st in ("survived", "not checked")]
        shutil.rmtree(work / "tests")
        skip = shutil.ignore_patterns("__pycache__")
        shutil.copytree(ROOT / "tests", work / "tests", ignore=skip)
    else:
        work = prepare(phase)
    env = {**os.environ, "ISOTUNE_SIM_CACHE": str(ROOT / ".simcache"), "OMP_NUM_THREADS": "1"}
    t0, started = time.monotonic(), time.time()
    with open(work / "mutmut.log", "a" if again else "w") as log:
        p = subprocess.Popen(
            [*MUTMUT, "run", "--max-children", str(max_children), *names],
            cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            p.wait(timeout=None if minutes is None else minutes * 60)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    stop_left_clusters(started)
    return time.monotonic() - t0


def stop_left_clusters(since: float) -> list[int]:
    """Stop the PostgreSQL clusters that tests started during the phase and could not stop: a
    mutant's test process killed by mutmut's time limit (or the phase stopped by ``--minutes``)
    runs no fixture teardown. Each is stopped by its postmaster's pid (``postmaster.pid``) and its
    folder removed; returns the pids."""
    stopped = []
    folders = {Path("/dev/shm"), Path(tempfile.gettempdir())}  # where tests/support/pg.py puts them
    for root in (r for folder in folders for r in folder.glob("isotune-pg-*")):
        pidfile = root / "data" / "postmaster.pid"
        try:
            if root.stat().st_mtime < since:
                continue
            pid = int(pidfile.read_text().split()[0]) if pidfile.exists() else None
        except (OSError, ValueError):
            continue
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)  # fast shutdown
                for _ in range(100):
                    os.kill(pid, 0)
                    time.sleep(0.1)
            stopped.append(pid)
        shutil.rmtree(root, ignore_errors=True)
    return stopped


def statuses(work: Path) -> dict[str, str]:
    """Every mutant's status from mutmut's records in ``work/mutants/``."""
    from mutmut.stats import status_by_exit_code

    out: dict[str, str] = {}
    for meta in sorted((work / "mutants").rglob("*.py.meta")):
        data = json.loads(meta.read_text())
        for name, code in data["exit_code_by_key"].items():
            out[name] = status_by_exit_code[code]
    return out


def diff(work: Path, name: str) -> str:
    """The changed lines of one mutant (``mutmut show``)."""
    shown = subprocess.run(
        [*MUTMUT, "show", name], cwd=work, capture_output=True, text=True, check=False
    ).stdout
    lines = [
        line
        for line in shown.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    return " / ".join(line[0] + " " + line[1:].strip() for line in lines)


def module_of(name: str) -> str:
    """``service.leases`` of ``service.leases.xǁLeasesǁclaim__mutmut_3`` (a method) or of
    ``service.leases.x_helper__mutmut_1`` (a function)."""
    match = re.match(r"^(.*?)\.x(?:\u01c1|_)", name)
    return match.group(1) if match else name.rsplit(".", 1)[0]


def record(phase: str, seconds: float) -> dict:
    """One phase's outcome: counts per module and status, and every survivor with its diff
    (``seconds``: the phase's mutmut time, its runs added up)."""
    work = WORK / phase
    status = statuses(work)
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for name, st in status.items():
        counts[module_of(name)][st] += 1
    return {
        "files": PHASES[phase][0],
        "tests": PHASES[phase][1],
        "date": time.strftime("%Y-%m-%d"),
        "seconds": round(seconds),
        "counts": {m: dict(c) for m, c in sorted(counts.items())},
        "survivors": [
            {"mutant": n, "diff": diff(work, n)} for n, st in status.items() if st == "survived"
        ],
    }


def report(phases: dict[str, dict]) -> None:
    """benchmarks/results/mutation.{json,md} from the recorded phases and the triage file."""
    triage: dict[str, str] = json.loads(TRIAGE.read_text()) if TRIAGE.exists() else {}
    data = {"machine": f"{platform.machine()} CPU, {os.cpu_count()} cores", "phases": phases}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "mutation.json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    kinds = ["killed", "survived", "no tests", "timeout", "suspicious", "not checked"]
    lines = [
        "# Mutation testing",
        "",
        f"Written by `python benchmarks/mutation.py` (mutmut) on {data['machine']}. A *survivor* "
        "is a mutant the tests did not notice; each is judged in "
        "`benchmarks/mutation_triage.json` (*equivalent*: no test can tell it from the code; "
        "*left*: a real difference, not tested, with the reason). Phases (files mutated, tests "
        "run) are `PHASES` in `benchmarks/mutation.py`.",
        "",
        "| phase | module | date | minutes | " + " | ".join(kinds) + " |",
        "|---|---|---|---|" + "---|" * len(kinds),
    ]
    rows = []
    for phase, rec in phases.items():
        for module, c in rec["counts"].items():
            lines.append(
                f"| {phase} | {module} | {rec['date']} | {rec['seconds'] / 60:.0f} | "
                + " | ".join(str(c.get(k, 0)) for k in kinds)
                + " |"
            )
        rows += [
            {**r, "phase": phase, "judged": triage.get(r["mutant"], "")} for r in rec["survivors"]
        ]
    equivalent = [r for r in rows if r["judged"].startswith("equivalent")]
    left = [r for r in rows if r["judged"].startswith("left")]
    later = [r for r in rows if r["judged"].startswith("killed")]
    unjudged = [r for r in rows if not r["judged"]]
    lines += [
        "",
        f"{len(rows)} survivors: {len(equivalent)} judged equivalent, {len(left)} judged and left "
        f"(reason given), {len(later)} killed by a test written after the phase's last run "
        f"(checked by applying the mutant by hand), {len(unjudged)} not judged yet.",
        "",
        "| phase | mutant | change | judgement |",
        "|---|---|---|---|",
    ]
    for r in rows:
        change = r["diff"].replace("|", "\\|")
        name = r["mutant"].split(".", 1)[1] if "." in r["mutant"] else r["mutant"]
        lines.append(f"| {r['phase']} | `{name}` | `{change}` | {r['judged'] or 'not judged'} |")
    (RESULTS / "mutation.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS / 'mutation.md'}: {len(rows)} survivors, {len(unjudged)} not judged")


def recorded() -> dict[str, dict]:
    path = RESULTS / "mutation.json"
    return json.loads(path.read_text()).get("phases", {}) if path.exists() else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["run", "report"])
    ap.add_argument("--phases", default=",".join(PHASES), help=f"of {', '.join(PHASES)}")
    ap.add_argument("--max-children", type=int, default=2)
    ap.add_argument("--minutes", type=float, help="stop each phase after this long")
    ap.add_argument(
        "--again",
        action="store_true",
        help="rerun a phase's survivors and unreached mutants with the tests as they are now",
    )
    args = ap.parse_args()
    phases = recorded()
    if args.what == "run":
        for phase in args.phases.split(","):
            if phase not in PHASES:
                sys.exit(f"error: phases={phase!r}: not one of {', '.join(PHASES)}")
        for phase in args.phases.split(","):
            seconds = run(phase, args.max_children, args.minutes, args.again)
            phases = recorded()  # as written now: phases may run side by side
            if args.again and phase in phases:
                seconds += phases[phase]["seconds"]
            phases[phase] = record(phase, seconds)
            report(phases)
    report(phases)


if __name__ == "__main__":
    main()
