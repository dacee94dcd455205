"""A throwaway PostgreSQL cluster for the tests: ``initdb`` in a temporary folder, one ``postgres``
process on a free port of 127.0.0.1, stopped by its pid and deleted afterwards.

The system's own cluster (if any) is never used or started. When the tests run as root, the server
runs as the ``postgres`` OS user (PostgreSQL refuses root): the temporary folder is handed to that
user and the processes switch to it before ``exec``, so the pid we hold is the postmaster's own.

One cluster serves a whole pytest run: under pytest-xdist the controller starts it (in the
background, while the workers collect) and stops it at the end; each worker attaches to it through
the description the controller writes (:func:`attach`). Each test gets a fresh database
(``CREATE DATABASE isotune_<worker>_<n> OWNER isotune``, optionally cloned from a template built
once per cluster, see :meth:`PostgresCluster.template`), dropped at the end of the test.

Where are the binaries: ``$ISOTUNE_PG_BINDIR``, else the newest ``/usr/lib/postgresql/*/bin``
(Debian, Ubuntu), else ``/usr/pgsql-*/bin`` (RHEL), else ``initdb`` on ``$PATH``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from tests.support.ports import free_port

__all__ = [
    "PostgresCluster",
    "PostgresUnavailable",
    "attach",
    "find_bindir",
    "postgres_cluster",
    "start_cluster",
]

ROLE = "isotune"
DATABASE = "isotune"
OS_USER = "postgres"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
#: The file :func:`start_cluster` writes into the cluster's folder once it accepts connections.
DESCRIPTION = "cluster.json"
#: Written instead when it could not start: the reason.
FAILURE = "cluster.failed"
#: The advisory lock under which one process builds a template the others wait for.
TEMPLATE_LOCK = 727_001


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here, or no way to run them (root without a postgres user)."""


def find_bindir() -> Path | None:
    """The folder holding ``initdb`` and ``postgres``, or ``None`` if there is none."""
    candidates: list[Path] = []
    if explicit := os.environ.get("ISOTUNE_PG_BINDIR"):
        candidates.append(Path(explicit))
    for pattern in ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin"):
        found = sorted(Path("/").glob(pattern.lstrip("/")), key=_version_key, reverse=True)
        candidates.extend(found)
    if on_path := shutil.which("initdb"):
        candidates.append(Path(on_path).resolve().parent)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "postgres").is_file():
            return bindir
    return None


def _version_key(path: Path) -> tuple[int, ...]:
    """``/usr/lib/postgresql/15/bin`` → (15,), so 16 sorts above 9.6."""
    version = path.parent.name.removeprefix("pgsql-")
    return tuple(int(p) for p in version.split(".") if p.isdigit())


@dataclass
class PostgresCluster:
    """A running throwaway cluster. ``url`` is the ``isotune`` database as role ``isotune``.

    ``process`` is the postmaster when this process started it (and will stop it); ``None`` for a
    cluster attached to (:func:`attach`), which only its owner stops. ``prefix`` starts the names
    of the databases this process creates, so that processes sharing the cluster never collide.
    """

    bindir: Path
    root: Path
    port: int
    password: str
    process: subprocess.Popen[bytes] | None = None
    as_user: pwd.struct_passwd | None = None
    prefix: str = DATABASE
    _admin: psycopg.Connection | None = field(default=None, repr=False)
    _counter: Iterator[int] = field(default_factory=itertools.count, repr=False)

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("this process did not start the cluster")
        return self.process.pid

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    @property
    def url(self) -> str:
        return self.url_for(DATABASE)

    def url_for(self, database: str) -> str:
        """SQLAlchemy URL of ``database`` as role ``isotune`` over TCP."""
        return f"postgresql+psycopg://{ROLE}:{self.password}@127.0.0.1:{self.port}/{database}"

    def admin(self) -> psycopg.Connection:
        """A superuser connection (autocommit) over the cluster's unix socket."""
        if self._admin is None or self._admin.closed:
            self._admin = psycopg.connect(
                host=str(self.socket_dir),
                port=self.port,
                user=OS_USER,
                dbname="postgres",
                autocommit=True,
                connect_timeout=5,
            )
        return self._admin

    def close(self) -> None:
        """Close this process's superuser connection (the cluster keeps running)."""
        if self._admin is not None:
            self._admin.close()
            self._admin = None

    def create_database(self, template: str | None = None) -> str:
        """A new empty database ``<prefix>_<n>`` owned by ``isotune`` (a clone of ``template`` if
        given; the template must have no open connections). Returns its name."""
        name = f"{self.prefix}_{next(self._counter)}"
        query = sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(name), sql.Identifier(ROLE)
        )
        if template is not None:
            query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        self.admin().execute(query)
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name``, closing whatever connections are still open on it."""
        self.admin().execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    def template(self, name: str, build: Callable[[str], None]) -> str:
        """The database ``name``, built once per cluster by ``build(url)`` (e.g. migrated to the
        newest schema) for :meth:`create_database` to clone. Processes sharing the cluster build
        it once between them: under an advisory lock, into a scratch name renamed when done (so a
        build that died half-way is never cloned). ``build`` must close its connections."""
        admin = self.admin()
        admin.execute("SELECT pg_advisory_lock(%s)", (TEMPLATE_LOCK,))
        try:
            exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if exists.fetchone() is None:
                scratch = f"{name}_building"
                self.drop_database(scratch)
                admin.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(scratch), sql.Identifier(ROLE)
                    )
                )
                build(self.url_for(scratch))
                admin.execute(
                    sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                        sql.Identifier(scratch), sql.Identifier(name)
                    )
                )
        finally:
            admin.execute("SELECT pg_advisory_unlock(%s)", (TEMPLATE_LOCK,))
        return name

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop the postmaster (every connection drops), stay down ``down_seconds``, start it
        again on the same port and data."""
        self.stop()
        time.sleep(down_seconds)
        self.process = _spawn(self.bindir, self.root, self.port, self.as_user)
        if not _wait_ready(self):
            raise RuntimeError(f"PostgreSQL did not come back:\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the postmaster by its pid: SIGINT (fast shutdown), then SIGKILL if it lingers.
        A cluster this process only attached to is left running (its owner stops it)."""
        self.close()
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT_S)

    def destroy(self) -> None:
        """Stop the cluster (if this process owns it) and delete its folder."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def describe(self) -> None:
        """Write the description other processes :func:`attach` with (atomically)."""
        text = json.dumps(
            {"bindir": str(self.bindir), "port": self.port, "password": self.password}
        )
        tmp = self.root / f"{DESCRIPTION}.tmp"
        tmp.write_text(text)
        tmp.rename(self.root / DESCRIPTION)


def _memory_dir() -> str | None:
    """``/dev/shm`` when it is a writable memory file system with room (1 GiB) to spare: there a
    ``CREATE DATABASE`` takes 20 ms instead of half a second of disk writes."""
    shm = "/dev/shm"
    try:
        stat = os.statvfs(shm)
    except OSError:
        return None
    roomy = stat.f_bavail * stat.f_frsize >= 1 << 30
    return shm if roomy and os.access(shm, os.W_OK | os.X_OK) else None


def new_root() -> Path:
    """A fresh folder for a cluster (given to the ``postgres`` user when running as root), in
    memory where the machine has it to spare."""
    as_user = _os_user()
    root = Path(tempfile.mkdtemp(prefix="isotune-pg-", dir=_memory_dir()))
    (root / "sock").mkdir()
    if as_user is not None:
        for path in (root, root / "sock"):
            os.chown(path, as_user.pw_uid, as_user.pw_gid)
    return root


def start_cluster(bindir: Path | None = None, root: Path | None = None) -> PostgresCluster:
    """Start a throwaway cluster in ``root`` (default: a new folder); the caller stops it with
    :meth:`PostgresCluster.destroy`. Once it accepts connections its description is written into
    ``root`` (:func:`attach`); if it cannot start, the reason is (``cluster.failed``).

    Raises :class:`PostgresUnavailable` when there are no binaries (or no ``postgres`` user while
    running as root), :class:`RuntimeError` when the server does not come up within 30 s.
    """
    root = root or new_root()
    cluster: PostgresCluster | None = None
    try:
        bindir = bindir or find_bindir()
        if bindir is None:
            raise PostgresUnavailable("no PostgreSQL server binaries (initdb, postgres) found")
        as_user = _os_user()
        _initdb(bindir, root, as_user)
        cluster = _start(bindir, root, as_user)
        _bootstrap(cluster)
        cluster.describe()
        return cluster
    except BaseException as e:
        (root / FAILURE).write_text(f"{type(e).__name__}: {e}")
        if cluster is not None:
            cluster.stop()
        raise


@contextlib.contextmanager
def postgres_cluster(bindir: Path | None = None) -> Iterator[PostgresCluster]:
    """Start a throwaway cluster, yield it, stop it by its pid and delete its folder."""
    root = new_root()
    try:
        cluster = start_cluster(bindir, root)
        try:
            yield cluster
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def attach(root: Path, prefix: str, timeout: float = 2 * START_TIMEOUT_S) -> PostgresCluster:
    """The cluster another process is starting (or started) in ``root``: wait for its description
    and connect. Raises :class:`PostgresUnavailable` with the starter's reason if it found no
    way to run PostgreSQL, :class:`RuntimeError` if the server did not come up."""
    deadline = time.monotonic() + timeout
    description, failure = root / DESCRIPTION, root / FAILURE
    while not description.exists():
        if failure.exists():
            reason = failure.read_text()
            if reason.startswith(PostgresUnavailable.__name__):  # no binaries: skip, or fail in CI
                raise PostgresUnavailable(reason.split(": ", 1)[-1])
            raise RuntimeError(f"the shared PostgreSQL cluster did not start: {reason}")
        if time.monotonic() > deadline:
            raise PostgresUnavailable(f"no cluster came up in {root} within {timeout:g} s")
        time.sleep(0.02)
    info = json.loads(description.read_text())
    cluster = PostgresCluster(
        bindir=Path(info["bindir"]),
        root=root,
        port=info["port"],
        password=info["password"],
        as_user=_os_user(),
        prefix=prefix,
    )
    cluster.admin().execute("SELECT 1")
    return cluster


def _os_user() -> pwd.struct_passwd | None:
    """The account to run PostgreSQL as: ``postgres`` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(OS_USER)
    except KeyError as e:
        raise PostgresUnavailable(
            f"running as root and there is no {OS_USER!r} OS user to run PostgreSQL as"
        ) from e


def _run_kwargs(root: Path, as_user: pwd.struct_passwd | None) -> dict:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(root)}
    kwargs: dict = {"cwd": root, "env": env}
    if as_user is not None:
        kwargs |= {"user": as_user.pw_uid, "group": as_user.pw_gid, "extra_groups": []}
    return kwargs


def _initdb(bindir: Path, root: Path, as_user: pwd.struct_passwd | None) -> None:
    cmd = [
        str(bindir / "initdb"),
        "--pgdata",
        str(root / "data"),
        "--username",
        OS_USER,
        "--auth-local=trust",
        "--auth-host=scram-sha-256",
        "--encoding=UTF8",
        "--locale=C",
        "--no-sync",
    ]
    result = subprocess.run(cmd, capture_output=True, check=False, **_run_kwargs(root, as_user))
    if result.returncode != 0:
        raise RuntimeError(
            f"initdb failed ({result.returncode}): {result.stderr.decode(errors='replace')}"
        )


def _spawn(
    bindir: Path, root: Path, port: int, as_user: pwd.struct_passwd | None
) -> subprocess.Popen[bytes]:
    cmd = [
        str(bindir / "postgres"),
        "-D",
        str(root / "data"),
        "-p",
        str(port),
        "-k",
        str(root / "sock"),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        "fsync=off",
        "-c",
        "synchronous_commit=off",
        "-c",
        "full_page_writes=off",
        "-c",
        "max_connections=300",
        "-c",
        "shared_buffers=64MB",
    ]
    log = open(root / "postgres.log", "ab")  # the child inherits the descriptor
    try:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in pytest reaches us, not the server
            **_run_kwargs(root, as_user),
        )
    finally:
        log.close()


def _start(bindir: Path, root: Path, as_user: pwd.struct_passwd | None) -> PostgresCluster:
    """Start ``postgres`` on a free port; retry on another port if the first was taken."""
    last_error = ""
    for _ in range(3):
        port = free_port()
        cluster = PostgresCluster(
            bindir=bindir,
            root=root,
            port=port,
            password=secrets.token_hex(16),
            process=_spawn(bindir, root, port, as_user),
            as_user=as_user,
        )
        if _wait_ready(cluster):
            return cluster
        cluster.stop()
        last_error = cluster.log_tail()
        if "already in use" not in last_error:
            break
    raise RuntimeError(f"PostgreSQL did not start within {START_TIMEOUT_S:g} s:\n{last_error}")


def _wait_ready(cluster: PostgresCluster) -> bool:
    """Poll until the server accepts a connection (True) or exits or times out (False)."""
    assert cluster.process is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if cluster.process.poll() is not None:
            return False
        try:
            cluster.admin().execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            time.sleep(0.02)
    return False


def _bootstrap(cluster: PostgresCluster) -> None:
    admin = cluster.admin()
    admin.execute(
        sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
            sql.Identifier(ROLE), sql.Literal(cluster.password)
        )
    )
    admin.execute(
        sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(DATABASE), sql.Identifier(ROLE)
        )
    )
