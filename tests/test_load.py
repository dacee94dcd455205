"""The load check of ``benchmarks/load.py``, kept short: 16 simulated workers with no time between
requests against two server processes on the session's PostgreSQL for 12 s, split between two
studies prefilled with 20 and 200 trials, with workers dying and failing (their leases reaped every
0.5 s, not the default 5 s, so the wait for the last ones is short). Alone it completes about 200
trials; its share of a machine the other tests keep busy can be a fifth of that, so it asks for
30. Dying and failing are drawn from seeded generators: at 0.15 each, two of the 16 workers die on
their first trial and two fail theirs, so every run has both, however few trials it gets. The
script itself checks for 5xx, double hand-outs, trials left RUNNING and unrecovered leases (its
long version, 256 workers with 15-second trials for two minutes, is in
``benchmarks/results/load.md``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.cli import run_script

pytestmark = pytest.mark.slow


def test_short_load_on_two_server_processes(pg_server, tmp_path: Path) -> None:
    url = pg_server.url_for(pg_server.create_database())
    log = tmp_path / "load.log"
    rc = run_script(
        ["benchmarks/load.py", "--database-url", url, "--clients", "16", "--processes", "2",
         "--seconds", "12", "--trial-seconds", "0",
         "--prefill", "20,200", "--lease", "3", "--reap-interval", "0.5",
         "--abandon", "0.15", "--fail", "0.15",
         "--out", str(tmp_path)],
        log, timeout=300,
    )  # fmt: skip
    assert rc == 0, log.read_text()[-3000:]
    report = json.loads((tmp_path / "load.json").read_text())
    assert report["ok"], report
    assert all(report["checks"].values())
    assert report["abandoned"] > 0 and report["retried"] > 0 and report["completed"] > 30
    assert set(report["status"]) == {"200"}
    # both studies got claims, the prefilled trials are not counted as the load's own
    by_size = report["claim_by_prefill"]
    assert set(by_size) == {"20", "200"} and all(v["n"] > 10 for v in by_size.values())
    assert report["states"].get("COMPLETE", 0) == report["completed"]
    cpu = report["cpu_ms_per_lifecycle"]
    assert cpu["server"] > 0 and cpu["postgresql"] > 0 and cpu["clients"] > 0
