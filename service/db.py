"""The database under isotune: where it is, and engines that behave well under concurrency.

One URL (``ISOTUNE_DATABASE_URL``) names the database that holds both Optuna's tables and isotune's
own (``service/models.py``). Two backends are supported:

- **SQLite** (``sqlite:///path``), the embedded default for one server process. Every connection
  runs in WAL mode with a busy timeout and ``foreign_keys=ON``, and SQLAlchemy, not the ``sqlite3``
  module, emits ``BEGIN IMMEDIATE`` at the start of each transaction: a transaction that reads and
  then writes cannot meet another writer half-way (SQLite answers that case with an immediate
  "database is locked", without waiting on the busy timeout: optuna#820, #4994). Writers queue on
  the busy timeout instead.
- **PostgreSQL** (``postgresql+psycopg://``; ``postgresql://`` and ``postgres://`` are rewritten to
  the psycopg 3 driver), for production and several server processes. Each engine has a bounded
  pool (so N processes hold at most N × (pool_size + max_overflow) connections: optuna#1347),
  recycled, and not pinged before use (see :func:`make_engine`).

:func:`optuna_storage` builds Optuna's :class:`~optuna.storages.RDBStorage` on the same URL with
the same settings. Configuration enters here once, as a URL; nothing reads the environment except
:func:`database_url`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from contract.errors import IsotuneError

if TYPE_CHECKING:
    import optuna

__all__ = [
    "DEFAULT_FILE",
    "ENV_VAR",
    "DatabaseError",
    "SQLiteBegin",
    "database_url",
    "engine_kwargs",
    "is_postgresql",
    "is_sqlite",
    "make_engine",
    "normalize_url",
    "optuna_storage",
    "ping",
    "redact",
    "session_factory",
]

ENV_VAR = "ISOTUNE_DATABASE_URL"
DEFAULT_FILE = "isotune.db"
FIELD = "database_url"

SQLITE_BUSY_TIMEOUT_S = 30.0
PG_POOL_SIZE = 5
PG_MAX_OVERFLOW = 5
PG_POOL_TIMEOUT_S = 30.0
PG_POOL_RECYCLE_S = 1800
PG_CONNECT_TIMEOUT_S = 10

SQLiteBegin = Literal["immediate", "deferred"]

_PG_DRIVERS = {"postgresql", "postgres", "postgresql+psycopg"}
_SQLITE_DRIVERS = {"sqlite", "sqlite+pysqlite"}


class DatabaseError(IsotuneError, ValueError):
    """The database URL is unusable: unsupported scheme, malformed, or the database unreachable.

    Attributes:
        field: the setting at fault, ``"database_url"`` (CLI ``--database-url``, environment
            ``ISOTUNE_DATABASE_URL``).
        value: the URL, with its password masked.
        reason: what is wrong, in words.
    """


def redact(url: str | URL) -> str:
    """The URL as a string with its password replaced by ``***`` (for messages and logs)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return str(url)


def database_url(explicit: str | None = None) -> str:
    """The database URL: ``explicit`` if given, else ``$ISOTUNE_DATABASE_URL`` if set and not
    empty, else the SQLite file ``isotune.db`` in the current directory (as an absolute path, so
    the server, Optuna and Alembic agree on the file even if the directory changes later).

    The result is normalized (:func:`normalize_url`); an unsupported URL raises
    :class:`DatabaseError`.
    """
    if explicit is not None:
        return normalize_url(explicit)
    from_env = os.environ.get(ENV_VAR, "").strip()
    if from_env:
        return normalize_url(from_env)
    return f"sqlite:///{Path.cwd() / DEFAULT_FILE}"


def existing_database(explicit: str | None = None) -> str:
    """:func:`database_url` for a command that reads a database the server made. An SQLite file
    that does not exist (connecting would create an empty one), or a database without isotune's
    tables, is a :class:`DatabaseError` naming it."""
    url = database_url(explicit)
    if is_sqlite(url):
        path = make_url(url).database
        if path and path != ":memory:" and not Path(path).exists():
            raise DatabaseError(
                FIELD,
                redact(url),
                "no such database file; pass the server's --database-url (or set "
                f"{ENV_VAR}); `isotune db upgrade` creates a new one",
            )
    from service.migrate import current

    if current(url).isotune is None:
        raise DatabaseError(
            FIELD,
            redact(url),
            "holds no isotune tables; pass the server's --database-url, or run "
            "`isotune db upgrade` to make this one",
        )
    return url


def normalize_url(url: str | URL) -> str:
    """Check that ``url`` names a supported backend and spell it with isotune's driver.

    ``postgresql://`` and ``postgres://`` become ``postgresql+psycopg://``; ``sqlite://`` stays.
    Anything else (MySQL, psycopg2, asyncpg, a malformed string) raises :class:`DatabaseError`.
    """
    if isinstance(url, str) and not url.strip():
        raise DatabaseError(FIELD, url, "empty; expected sqlite:///PATH or postgresql://…")
    try:
        parsed = make_url(url)
    except ArgumentError as e:
        raise DatabaseError(
            FIELD, redact(url), "not a database URL; expected sqlite:///PATH or postgresql://…"
        ) from e
    driver = parsed.drivername
    if driver in _PG_DRIVERS:
        parsed = parsed.set(drivername="postgresql+psycopg")
        if not parsed.database:
            raise DatabaseError(FIELD, redact(parsed), "no database name after the host")
    elif driver in _SQLITE_DRIVERS:
        parsed = parsed.set(drivername="sqlite")
    else:
        raise DatabaseError(
            FIELD,
            redact(parsed),
            f"unsupported scheme {driver!r}; isotune supports sqlite:///PATH and "
            "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB",
        )
    return parsed.render_as_string(hide_password=False)


def is_sqlite(url: str | URL) -> bool:
    """Whether ``url`` names an SQLite database."""
    return make_url(url).get_backend_name() == "sqlite"


def is_postgresql(url: str | URL) -> bool:
    """Whether ``url`` names a PostgreSQL database."""
    return make_url(url).get_backend_name() == "postgresql"


def engine_kwargs(
    url: str,
    *,
    pool_size: int = PG_POOL_SIZE,
    max_overflow: int = PG_MAX_OVERFLOW,
    busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S,
) -> dict[str, Any]:
    """Keyword arguments for :func:`sqlalchemy.create_engine` on ``url`` (normalized).

    These are what can travel as data (Optuna's ``engine_kwargs``); the SQLite connection
    settings that need event hooks are added by :func:`_install_sqlite_hooks`.
    """
    if is_sqlite(url):
        return {"connect_args": {"timeout": busy_timeout_s, "check_same_thread": False}}
    return {
        "pool_size": pool_size,
        "max_overflow": max_overflow,
        "pool_timeout": PG_POOL_TIMEOUT_S,
        "pool_recycle": PG_POOL_RECYCLE_S,
        "pool_pre_ping": False,  # see make_engine
        "connect_args": {"connect_timeout": PG_CONNECT_TIMEOUT_S, "application_name": "isotune"},
    }


def make_engine(
    url: str | None = None,
    *,
    pool_size: int = PG_POOL_SIZE,
    max_overflow: int = PG_MAX_OVERFLOW,
    busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S,
    sqlite_begin: SQLiteBegin = "immediate",
    **kwargs: Any,
) -> Engine:
    """An engine on ``url`` (default :func:`database_url`) with isotune's connection settings.

    SQLite: WAL, ``busy_timeout`` = ``busy_timeout_s``, ``foreign_keys=ON``,
    ``check_same_thread=False``, and transactions opened with ``BEGIN IMMEDIATE`` (``sqlite_begin=
    "deferred"`` for a plain ``BEGIN``, e.g. a read-only dashboard). PostgreSQL: a pool of
    ``pool_size`` connections plus ``max_overflow``, recycled after 30 min, and not pinged before
    each use (a ping is a round trip per checkout, a tenth of the server's CPU per trial): after
    a database restart, the first statement on a dead connection fails (one 5xx, which the client
    retries) and SQLAlchemy discards every connection of the pool made before it.

    The engine connects lazily; call :func:`ping` to fail early on an unreachable database.
    Extra ``kwargs`` go to :func:`sqlalchemy.create_engine` (e.g. ``echo=True``).
    """
    url = database_url(url)
    options = engine_kwargs(
        url, pool_size=pool_size, max_overflow=max_overflow, busy_timeout_s=busy_timeout_s
    )
    options.update(kwargs)
    engine = sa.create_engine(url, **options)
    if is_sqlite(url):
        _install_sqlite_hooks(engine, busy_timeout_s=busy_timeout_s, begin=sqlite_begin)
    return engine


def ping(engine: Engine) -> None:
    """Open one connection and run ``SELECT 1``; an unreachable database raises
    :class:`DatabaseError` naming the URL (password masked) and the driver's reason."""
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except SQLAlchemyError as e:
        raise DatabaseError(FIELD, redact(engine.url), f"cannot connect: {_reason(e)}") from e


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to ``engine``; objects stay usable after commit (``expire_on_commit=False``),
    so a route can return what it just wrote without another round trip."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def optuna_storage(
    url: str | None = None,
    *,
    pool_size: int = PG_POOL_SIZE,
    max_overflow: int = PG_MAX_OVERFLOW,
    busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S,
    sqlite_begin: SQLiteBegin = "immediate",
    **storage_kwargs: Any,
) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage on ``url`` with the same connection settings as :func:`make_engine`.

    ``storage_kwargs`` go to :class:`optuna.storages.RDBStorage` (e.g.
    ``skip_compatibility_check``, ``skip_table_creation``). RDBStorage connects at once: an
    unreachable database raises :class:`DatabaseError`. Optuna's schema check stays on, so a
    database that needs ``isotune db upgrade`` fails here with Optuna's message.
    """
    import optuna

    url = database_url(url)
    options = engine_kwargs(
        url, pool_size=pool_size, max_overflow=max_overflow, busy_timeout_s=busy_timeout_s
    )
    try:
        storage = optuna.storages.RDBStorage(url, engine_kwargs=options, **storage_kwargs)
    except SQLAlchemyError as e:
        raise DatabaseError(FIELD, redact(url), f"cannot connect: {_reason(e)}") from e
    except optuna.exceptions.StorageInternalError as e:
        cause = e.__cause__ if isinstance(e.__cause__, SQLAlchemyError) else e
        raise DatabaseError(FIELD, redact(url), f"cannot connect: {_reason(cause)}") from e
    if is_sqlite(url):
        # RDBStorage builds its engine itself: hook the connection settings in afterwards and drop
        # the connections it opened before the hooks existed.
        _install_sqlite_hooks(storage.engine, busy_timeout_s=busy_timeout_s, begin=sqlite_begin)
        storage.remove_session()
        storage.engine.dispose()
    return storage


def _install_sqlite_hooks(engine: Engine, *, busy_timeout_s: float, begin: SQLiteBegin) -> None:
    """Per-connection pragmas, and SQLAlchemy (not ``sqlite3``) in charge of ``BEGIN``.

    See SQLAlchemy's "Serializable isolation / Savepoints / Transactional DDL" for SQLite: with
    ``isolation_level = None`` the ``sqlite3`` module stops emitting its own deferred ``BEGIN``,
    and the ``begin`` hook emits ours.
    """
    if begin not in ("immediate", "deferred"):
        raise ValueError(f"sqlite_begin={begin!r}: expected 'immediate' or 'deferred'")
    begin_sql = "BEGIN IMMEDIATE" if begin == "immediate" else "BEGIN"
    busy_ms = int(busy_timeout_s * 1000)

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")  # safe with WAL: no corruption
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    def on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql(begin_sql)

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "begin", on_begin)


def _reason(error: BaseException) -> str:
    """The driver's one-line message inside a SQLAlchemy error."""
    orig = getattr(error, "orig", None)
    text = str(orig if orig is not None else error).strip()
    return text.splitlines()[0] if text else type(error).__name__
