"""Mutation testing of the modules whose every mutant a test must kill (``make mutate``; not CI).

The modules and the tests that cover them are set in ``pyproject.toml`` (``[tool.mutmut]``): the
mean-field cell maps (``meanfield/cells/``), the lease logic (``service/leases.py``) and the prior,
with its feasibility check (``service/prior.py``). mutmut changes one expression at a time in a
copy of the code (``mutants/``) and runs the tests that reach the changed function; a mutant the
tests do not notice *survives*.

The theory-against-simulation tests read their finite-width simulations from a disk cache
(``tests/support/simcache.py``, folder ``.simcache/``) during the run: the simulations do not
depend on the mutated modules, and the run takes tens of minutes instead of hours.

Each surviving mutant is judged by hand in ``benchmarks/mutation_triage.json`` (mutant name →
why it is equivalent, or why it is left); the report lists every survivor with its diff and its
judgement, and counts the ones nobody judged.

Usage:
    python benchmarks/mutation.py run [--max-children 2]   # mutmut run, then the report
    python benchmarks/mutation.py report                   # the report of the last run
Writes benchmarks/results/mutation.{md,json}.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TRIAGE = ROOT / "benchmarks" / "mutation_triage.json"
MUTMUT = [sys.executable, "-m", "mutmut"]


def run(max_children: int) -> float:
    """``mutmut run`` with the simulation cache; returns its wall time in seconds."""
    env = {**os.environ, "ISOTUNE_SIM_CACHE": str(ROOT / ".simcache"), "OMP_NUM_THREADS": "1"}
    t0 = time.monotonic()
    subprocess.run([*MUTMUT, "run", "--max-children", str(max_children)], cwd=ROOT, env=env)
    return time.monotonic() - t0


def statuses() -> dict[str, str]:
    """Every mutant's status from mutmut's records in ``mutants/``."""
    from mutmut.stats import status_by_exit_code

    out: dict[str, str] = {}
    for meta in sorted((ROOT / "mutants").rglob("*.py.meta")):
        data = json.loads(meta.read_text())
        for name, code in data["exit_code_by_key"].items():
            out[name] = status_by_exit_code[code]
    return out


def diff(name: str) -> str:
    """The changed lines of one mutant (``mutmut show``)."""
    shown = subprocess.run(
        [*MUTMUT, "show", name], cwd=ROOT, capture_output=True, text=True, check=False
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


def report(seconds: float | None) -> None:
    status = statuses()
    triage: dict[str, str] = json.loads(TRIAGE.read_text()) if TRIAGE.exists() else {}
    by_module: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for name, s in status.items():
        by_module[module_of(name)][s] += 1
    survivors = [n for n, s in status.items() if s == "survived"]
    rows = [{"mutant": n, "diff": diff(n), "judged": triage.get(n, "")} for n in survivors]
    unjudged = [r for r in rows if not r["judged"]]
    equivalent = [r for r in rows if r["judged"].startswith("equivalent")]
    data = {
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "seconds": seconds,
        "counts": {m: dict(c) for m, c in sorted(by_module.items())},
        "survivors": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "mutation.json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    kinds = sorted({s for c in by_module.values() for s in c})
    took = f" in {seconds / 60:.0f} min" if seconds else ""
    lines = [
        "# Mutation testing",
        "",
        f"Written by `python benchmarks/mutation.py run` (mutmut) on {data['machine']}, "
        f"{data['date']}{took}. Modules and tests: `[tool.mutmut]` in pyproject.toml. A "
        "*survivor* is a mutant the tests did not notice; each is judged in "
        "`benchmarks/mutation_triage.json`.",
        "",
        "| module | " + " | ".join(kinds) + " |",
        "|---|" + "---|" * len(kinds),
    ]
    for m, c in sorted(by_module.items()):
        lines.append(f"| {m} | " + " | ".join(str(c.get(k, 0)) for k in kinds) + " |")
    lines += [
        "",
        f"{len(survivors)} survivors: {len(equivalent)} judged equivalent, "
        f"{len(rows) - len(equivalent) - len(unjudged)} judged and left (reason given), "
        f"{len(unjudged)} not judged yet.",
        "",
        "| mutant | change | judgement |",
        "|---|---|---|",
    ]
    for r in rows:
        change = r["diff"].replace("|", "\\|")
        lines.append(f"| `{r['mutant']}` | `{change}` | {r['judged'] or 'not judged'} |")
    (RESULTS / "mutation.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS / 'mutation.md'}: {len(survivors)} survivors, {len(unjudged)} unjudged")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["run", "report"])
    ap.add_argument("--max-children", type=int, default=2)
    args = ap.parse_args()
    seconds = run(args.max_children) if args.what == "run" else None
    if seconds is None and (RESULTS / "mutation.json").exists():
        seconds = json.loads((RESULTS / "mutation.json").read_text()).get("seconds")
    report(seconds)


if __name__ == "__main__":
    main()
