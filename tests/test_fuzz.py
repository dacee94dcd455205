"""Schemathesis against a real server's OpenAPI schema: coverage, fuzzing and stateful phases
(≥ 1,000 generated requests, valid and invalid), and not one answer may be a server error. The
server's own request counter confirms how many requests arrived and that none was a 5xx."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
from test_faults import serving
from test_service import SPEC

from cli.procs import free_port

ROOT = Path(__file__).resolve().parents[1]
COUNT = re.compile(r"^isotune_request_seconds_count\{(?P<labels>[^}]*)\} (?P<n>[\d.e+]+)$", re.M)


def requests_by_status(base: str) -> dict[str, int]:
    text = httpx.get(base + "/metrics", timeout=30).text
    out: dict[str, int] = {}
    for m in COUNT.finditer(text):
        status = re.search(r'status="(\d+)"', m["labels"])[1]
        out[status] = out.get(status, 0) + int(float(m["n"]))
    return out


def test_schemathesis_finds_no_server_error(db_url: str, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with serving(db_url, port, tmp_path / "server.log"):
        # a study with trials, so that some generated requests reach real rows
        httpx.post(base + "/api/v1/studies", json={**SPEC, "budget": 50}, timeout=30)
        for i in range(5):
            httpx.post(base + "/api/v1/studies/s1/claim", json={"worker_id": f"w{i}"}, timeout=30)
        before = requests_by_status(base)
        log = tmp_path / "schemathesis.log"
        with log.open("w") as f:
            rc = subprocess.run(
                [sys.executable, "-m", "schemathesis.cli", "run", base + "/openapi.json",
                 "--checks", "not_a_server_error", "--max-examples", "200", "--seed", "1",
                 "--no-color", "--generation-allow-x00", "true"],
                cwd=tmp_path, stdout=f, stderr=subprocess.STDOUT, timeout=600, check=False,
            ).returncode  # fmt: skip
        after = requests_by_status(base)
    text = log.read_text()
    assert rc == 0, text[-4000:]
    generated = int(re.search(r"(\d+) generated", text)[1])
    assert generated >= 1000, text[-2000:]
    sent = {s: after.get(s, 0) - before.get(s, 0) for s in after}
    assert sum(sent.values()) >= 1000, sent
    assert not {s: n for s, n in sent.items() if s.startswith("5") and n}, sent
