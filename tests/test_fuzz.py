"""Schemathesis against a real server's OpenAPI schema (``benchmarks/fuzz.py``) on SQLite and
PostgreSQL: coverage, fuzzing and stateful phases with NUL bytes allowed; over 1,000 requests
must reach the server (its own counter says so) and not one may be answered with a 5xx."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.cli import run_script

pytestmark = pytest.mark.slow


def test_schemathesis_finds_no_server_error(migrated_db_url: str, tmp_path: Path) -> None:
    log = tmp_path / "fuzz.log"
    args = ["benchmarks/fuzz.py", "--database-url", migrated_db_url, "--max-examples", "80"]
    rc = run_script([*args, "--out", str(tmp_path)], log, timeout=900)
    assert rc == 0, log.read_text()[-4000:]
    [result] = json.loads((tmp_path / "fuzz.json").read_text())["results"].values()
    assert result["server_errors"] == 0 and result["server_alive"]
    assert result["requests"] >= 1000 and result["generated"] >= 1000, result
    assert {"200", "404", "422"} <= set(result["by_status"]), result["by_status"]
