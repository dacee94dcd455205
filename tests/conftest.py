"""Shared fixtures: the databases the storage tests run on, SQLite and PostgreSQL alike (the
helpers themselves are the package ``tests/support``).

- ``pg_server`` (session): the run's throwaway PostgreSQL cluster (tests/support/pg.py). Under
  pytest-xdist the controller starts one in the background for every worker and stops it by its pid
  at the end; without xdist the session starts its own on first use. Without PostgreSQL binaries
  its tests are skipped, unless ``ISOTUNE_REQUIRE_POSTGRES=1`` (set by ``.ci/run``): they fail.
- ``db_url``: an empty database, once per backend (``[sqlite]``: a file in ``tmp_path``;
  ``[postgresql]``: a fresh database on the cluster, dropped afterwards).
- ``migrated_db_url``: the same with Optuna's and isotune's schemas at head, cloned from a template
  migrated once (``CREATE DATABASE ... TEMPLATE``; SQLite: a file copy), so a test pays
  milliseconds, not an upgrade.
- ``client``: the API without auth over ``migrated_db_url``, in-process (``fastapi.testclient``),
  built without the upgrade check at start (the database is at head).

The PostgreSQL parameters carry the ``postgresql`` marker: ``pytest -m "not postgresql"`` runs
SQLite only. Tests that start real processes carry ``slow`` (``make check`` leaves them out) and
are scheduled first, the longest ahead, so that no long test starts last.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.support import shared
from tests.support.pg import (
    PostgresCluster,
    PostgresUnavailable,
    attach,
    find_bindir,
    new_root,
    postgres_cluster,
    start_cluster,
)

if os.environ.get("PYTEST_XDIST_WORKER"):
    # the workers share the cores already: one thread each for BLAS and OpenMP (here and in the
    # processes the tests start), not a spinning pool per process competing for the same cores
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

REQUIRE_POSTGRES = "ISOTUNE_REQUIRE_POSTGRES"
NO_BINARIES = "no server binaries (initdb, postgres); install postgresql"
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)]
SHARED_PG = "isotune_pg"  # the key of the controller's cluster in each xdist worker's input
TEMPLATE = "isotune_template"

#: The longest tests (seconds on 2 idle cores; any test id starting with a key), started first and
#: one at a time between short ones so that no worker queues two of them; a scheduling hint only.
LONGEST = {
    "test_fuzz.py::": 50,
    "test_faults.py::test_server_killed_and_restarted_mid_study": 25,
    "test_faults.py::test_postgres_restarted_mid_study": 25,
    "test_faults.py::test_cut_connections_between_workers_and_server": 20,
    "test_e2e.py::test_two_workers_run_restricted_and_pruned_studies_and_survive_a_kill": 20,
    "test_spec_properties.py::": 20,
    "test_load.py::": 20,
    "test_train.py::test_cli_trainability_map_writes_report": 15,
    "test_benchmarks.py::test_rest_share": 15,
    "test_server.py::test_isotune_dashboard_serves_the_service_database": 15,
    "test_careless.py::test_cli_mistakes_end_in_one_line_and_exit_2": 15,
    "test_careless.py::test_a_worker_accepts_the_url_the_server_prints": 15,
    "test_careless.py::test_a_study_deleted_in_the_dashboard_leaves_the_others_usable": 10,
    "test_benchmarks.py::test_hpo_efficiency_reports_every_arm_and_a_refusal": 12,
    "test_benchmarks.py::test_hpo_efficiency_second_studies_start_from_the_first": 15,
    "test_benchmarks.py::test_trainability_c_trains_resumes_and_fits": 10,
    "test_benchmarks.py::test_hpo_efficiency_full_space_chrono_and_hyperband": 12,
    "test_benchmarks.py::test_theory_speed": 12,
    "test_benchmarks.py::test_jacobian_spectrum": 11,
    "test_e2e.py::test_sigterm_gives_the_trial_back_and_exits": 10,
    "test_server.py::test_two_servers_on_one_postgres_never_share_a_trial": 10,
    "test_train.py::test_cli_train_json_and_bad_input": 9,
    "test_server.py::test_server_processes_on_postgres": 8,
    "test_prior.py::test_restrict_never_hands_out_an_infeasible_point_in_1000_draws": 8,
    "test_prior.py::test_repair_and_resample_land_inside_the_region_from_any_start": 8,
    "test_data.py::test_sqlite_backup_and_cli_export_import": 7,
    "test_server.py::test_tokens_from_the_cli": 7,
    "test_server.py::test_real_server_lifecycle_and_cli": 6,
}


_thread_limits: object = None


def pytest_configure(config: pytest.Config) -> None:
    global _thread_limits
    config.addinivalue_line(
        "markers", "postgresql: runs on the throwaway PostgreSQL cluster (tests/support/pg.py)"
    )
    if os.environ.get("PYTEST_XDIST_WORKER"):  # for the libraries loaded before the variables
        from threadpoolctl import threadpool_limits

        _thread_limits = threadpool_limits(limits=1)


def _estimate(item: pytest.Item) -> float:
    name = item.nodeid.removeprefix("tests/")
    return next((v for k, v in LONGEST.items() if name.startswith(k)), 0.0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest tests first, longest ahead, each followed by a short one (xdist hands a worker
    its next test while it runs one: two long ones must not queue on one worker); then the rest
    in collection order. The same order in every worker, as xdist requires."""
    long = sorted((i for i in items if _estimate(i)), key=_estimate, reverse=True)
    short = [i for i in items if not _estimate(i)]
    order: list[pytest.Item] = []
    for i, item in enumerate(long):
        order.append(item)
        order.extend(short[i : i + 1])
    order.extend(short[len(long) :])
    items[:] = order


def postgres_required() -> bool:
    return os.environ.get(REQUIRE_POSTGRES, "").strip() == "1"


class SharedPostgres:
    """The xdist controller's cluster: started in the background at session start (the workers
    collect meanwhile), its folder handed to every worker, stopped by pid at the end."""

    def __init__(self) -> None:
        self.root: Path | None = None
        self.problem: str | None = None
        self.cluster: PostgresCluster | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        bindir = find_bindir()
        if bindir is None:
            self.problem = NO_BINARIES
            return
        try:
            self.root = new_root()
        except PostgresUnavailable as e:
            self.problem = str(e)
            return
        self.thread = threading.Thread(target=self._start, args=(bindir,), daemon=True)
        self.thread.start()

    def _start(self, bindir: Path) -> None:
        assert self.root is not None
        with contextlib.suppress(Exception):  # the reason is in root/cluster.failed
            self.cluster = start_cluster(bindir, self.root)

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node) -> None:
        node.workerinput[SHARED_PG] = {
            "root": None if self.root is None else str(self.root),
            "problem": self.problem,
        }

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self.thread is not None:
            self.thread.join(timeout=60)
        if self.cluster is not None:
            self.cluster.destroy()
        elif self.root is not None:
            import shutil

            shutil.rmtree(self.root, ignore_errors=True)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """In the xdist controller (plugin ``dsession``, which starts the workers in its own
    ``pytest_sessionstart``, after this one): start the shared cluster."""
    manager = session.config.pluginmanager
    if manager.has_plugin("dsession") and not manager.has_plugin(SHARED_PG):
        shared = SharedPostgres()
        manager.register(shared, SHARED_PG)
        shared.start()


@pytest.fixture(autouse=True, scope="session")
def _shared_folder(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The folder in which ``tests/support/shared.py`` keeps results computed once per run: under
    the root of pytest's temporary folders for this run, which its xdist workers share."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # .../pytest-N/popen-gwK: the run's root
    shared.FOLDER[:] = [root / "shared"]


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest) -> Iterator[PostgresCluster]:
    """The run's PostgreSQL cluster: the controller's under xdist, else one of this session's."""
    shared = getattr(request.config, "workerinput", {}).get(SHARED_PG)
    with contextlib.ExitStack() as stack:
        problem = None
        try:
            if shared is not None:
                if shared["problem"] or shared["root"] is None:
                    raise PostgresUnavailable(shared["problem"] or "no cluster")
                worker = os.environ.get("PYTEST_XDIST_WORKER", "gw")
                cluster = attach(Path(shared["root"]), prefix=f"isotune_{worker}")
                stack.callback(cluster.close)
            else:
                bindir = find_bindir()
                if bindir is None:
                    raise PostgresUnavailable(NO_BINARIES)
                cluster = stack.enter_context(postgres_cluster(bindir))
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


def _upgrade(url: str) -> None:
    from service import migrate

    migrate.upgrade(url)  # disposes its engines: the template is left idle


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "isotune.db"
    _upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def _pg_template(pg_server: PostgresCluster) -> str:
    return pg_server.template(TEMPLATE, _upgrade)  # once per cluster, whichever worker is first


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
def client(migrated_db_url: str) -> Iterator[TestClient]:
    from service.api import create_app

    # the database is at head already: the app's own upgrade check would only cost time
    with TestClient(create_app(migrated_db_url, auth=False, migrate=False)) as c:
        yield c


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    """Say how many tests were skipped for want of PostgreSQL (``ISOTUNE_SKIP_POSTGRES=1``, or
    a machine without it): a green run without them is not the full suite."""
    skipped = [
        r for r in terminalreporter.stats.get("skipped", [])
        if "PostgreSQL unavailable" in str(getattr(r, "longrepr", ""))
    ]  # fmt: skip
    if skipped:
        terminalreporter.write_line(
            f"{len(skipped)} PostgreSQL tests skipped: PostgreSQL is unavailable here; "
            f"`make test` requires it unless ISOTUNE_SKIP_POSTGRES=1",
            yellow=True,
        )
