"""The tests' shared harness (one copy of each helper; no test file imports another):

- :mod:`tests.support.ports`: loopback ports, a separate block per pytest-xdist worker;
- :mod:`tests.support.pg`: the throwaway PostgreSQL cluster and its per-test databases;
- :mod:`tests.support.servers`: ``isotune serve`` / ``worker`` processes, stopped by pid, and
  :func:`~tests.support.servers.wait_for` (a condition with a deadline, not a fixed sleep);
- :mod:`tests.support.cli`: the command line in a subprocess;
- :mod:`tests.support.specs`: study specifications;
- :mod:`tests.support.api`: REST calls on an in-process app and the Prometheus text;
- :mod:`tests.support.shared`: results computed once per run and read by tests on any worker;
- :mod:`tests.support.simcache`: finite-width simulations stored on disk (per run, or for mutation
  testing across runs);
- :mod:`tests.support.slurm`: a one-node SLURM cluster of the test's own.

The fixtures built on them (``pg_server``, ``db_url``, ``migrated_db_url``, ``client``) are in
``tests/conftest.py``.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
