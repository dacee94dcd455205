"""The two installs stay apart: the server (``.[service]``) never imports torch, a worker
(``.[worker]``) never imports the server's web and database stack."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # fresh interpreters importing either side
ROOT = Path(__file__).resolve().parents[1]
SERVER_SIDE = "import cli.main, service.api, service.core, service.prior, cli.demo, cli.worker"
WORKER_SIDE = "import cli.main, workers.agent, workers.train, contract.client"


def imports_without(blocked: list[str], code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter where importing any of ``blocked`` fails."""
    prelude = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in blocked)
    return subprocess.run(
        [sys.executable, "-c", prelude + code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("blocked", "code"),
    [
        (["torch", "sklearn", "mnist1d"], SERVER_SIDE),
        (["fastapi", "starlette", "uvicorn", "optuna", "sqlalchemy", "alembic", "psycopg"],
         WORKER_SIDE),
    ],
)  # fmt: skip
def test_server_and_worker_import_apart(blocked: list[str], code: str) -> None:
    r = imports_without(blocked, code)
    assert r.returncode == 0, r.stderr[-2000:]


def test_the_check_would_catch_an_import() -> None:
    r = imports_without(["torch"], "import workers.train")
    assert r.returncode != 0 and "torch" in r.stderr
