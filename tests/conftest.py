"""Shared fixtures: the databases the storage tests run on, SQLite and PostgreSQL alike.

- ``pg_server`` (session): a throwaway PostgreSQL cluster (tests/pg.py), started on first use.
  Without PostgreSQL binaries its tests are skipped, unless ``ISOTUNE_REQUIRE_POSTGRES=1`` (set by
  ``.ci/run``), where they fail.
- ``db_url``: an empty database, once per backend (``[sqlite]``: a file in ``tmp_path``;
  ``[postgresql]``: a fresh database on the session cluster, dropped afterwards).
- ``client``: the API without auth over ``db_url``, in-process (``fastapi.testclient``).
- ``migrated_db_url``: the same, with Optuna's and isotune's schemas at head (cloned from a template
  migrated once per session, so a test pays milliseconds, not an upgrade).

The PostgreSQL parameters carry the ``postgresql`` marker: ``pytest -m "not postgresql"`` runs
SQLite only.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pg import PostgresCluster, PostgresUnavailable, find_bindir, postgres_cluster

REQUIRE_POSTGRES = "ISOTUNE_REQUIRE_POSTGRES"
NO_BINARIES = "no server binaries (initdb, postgres); install postgresql"
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "postgresql: runs on the throwaway PostgreSQL cluster (tests/pg.py)"
    )


def postgres_required() -> bool:
    return os.environ.get(REQUIRE_POSTGRES, "").strip() == "1"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresCluster]:
    """A private PostgreSQL cluster for the whole session, stopped by its pid at the end."""
    with contextlib.ExitStack() as stack:
        try:
            bindir = find_bindir()
            if bindir is None:
                raise PostgresUnavailable(NO_BINARIES)
            cluster = stack.enter_context(postgres_cluster(bindir))
            problem = None
        except PostgresUnavailable as e:
            problem = str(e)
        if problem is not None:  # outside the except: no chained traceback in the report
            if postgres_required():
                message = f"{REQUIRE_POSTGRES}=1, but PostgreSQL is unavailable: {problem}"
                pytest.fail(message, pytrace=False)
            pytest.skip(f"PostgreSQL unavailable ({problem}); {REQUIRE_POSTGRES}=1 makes this fail")
        yield cluster


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'isotune.db'}"
        return
    cluster: PostgresCluster = request.getfixturevalue("pg_server")
    name = cluster.create_database()
    yield cluster.url_for(name)
    cluster.drop_database(name)


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from service import migrate

    path = tmp_path_factory.mktemp("template") / "isotune.db"
    migrate.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def _pg_template(pg_server: PostgresCluster) -> str:
    from service import migrate

    name = pg_server.create_database()
    migrate.upgrade(pg_server.url_for(name))  # disposes its engines: the template is left idle
    return name


@pytest.fixture(params=BACKENDS)
def migrated_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with Optuna's and isotune's schemas at head, on each backend."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("_sqlite_template")
        path = tmp_path / "isotune.db"
        src, dst = sqlite3.connect(template), sqlite3.connect(path)
        try:
            src.backup(dst)
        finally:
            src.close()
            dst.close()
        yield f"sqlite:///{path}"
        return
    cluster: PostgresCluster = request.getfixturevalue("pg_server")
    name = cluster.create_database(template=request.getfixturevalue("_pg_template"))
    yield cluster.url_for(name)
    cluster.drop_database(name)


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    from service.api import create_app

    with TestClient(create_app(db_url, auth=False)) as c:
        yield c
