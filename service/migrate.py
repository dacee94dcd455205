"""Schema migrations: Optuna's tables by Optuna, isotune's by the Alembic scripts in
``migrations/``.

``isotune db upgrade`` is :func:`upgrade`: it creates or upgrades Optuna's schema (Optuna's own
Alembic history, version table ``alembic_version``) and then applies isotune's migrations (version
table ``isotune_alembic_version``), both idempotent. On PostgreSQL the whole upgrade holds an
advisory lock, so several processes may run it at start-up at once. :func:`downgrade` moves
isotune's tables only; Optuna's schema is Optuna's and is never downgraded here.

Alembic is configured in code (:func:`alembic_config`), there is no ``alembic.ini``; to write a new
revision by hand::

    from alembic import command
    command.revision(alembic_config(url), "add x", autogenerate=True)
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from service.db import database_url, engine_kwargs, is_postgresql, make_engine, ping

__all__ = [
    "TABLE_PREFIX",
    "VERSION_TABLE",
    "SchemaVersions",
    "UpgradeResult",
    "alembic_config",
    "current",
    "downgrade",
    "heads",
    "include_name",
    "optuna_head",
    "script_location",
    "upgrade",
]

VERSION_TABLE = "isotune_alembic_version"
TABLE_PREFIX = "isotune_"
# pg_advisory_lock key: the same in every process (a signed 32-bit CRC, within bigint range).
_LOCK_KEY = zlib.crc32(b"isotune.migrate") - 2**31


@dataclass(frozen=True)
class SchemaVersions:
    """The schema revisions a database is at; ``None`` where that schema does not exist yet."""

    optuna: str | None
    isotune: str | None

    @property
    def at_head(self) -> bool:
        """Whether both schemas are at the newest revision this code knows."""
        return self.optuna == optuna_head() and self.isotune in heads()


@dataclass(frozen=True)
class UpgradeResult:
    """What :func:`upgrade` found and left."""

    before: SchemaVersions
    after: SchemaVersions

    @property
    def changed(self) -> bool:
        return self.before != self.after


def script_location() -> Path:
    """The ``migrations`` folder (beside the ``service`` package, in the source tree and when
    installed)."""
    path = Path(__file__).resolve().parents[1] / "migrations"
    if not (path / "env.py").is_file():
        raise RuntimeError(f"isotune's migrations are missing: no env.py in {path}")
    return path


def alembic_config(url: str | None = None) -> Config:
    """An Alembic configuration for isotune's tables, built in code (no ``alembic.ini``).

    ``url`` (normalized by :func:`service.db.database_url`) is stored as ``sqlalchemy.url`` for
    ``env.py`` to use when no connection is handed over in ``config.attributes["connection"]``.
    """
    config = Config()
    config.set_main_option("script_location", _escape(str(script_location())))
    config.set_main_option("path_separator", "os")
    if url is not None:
        config.set_main_option("sqlalchemy.url", _escape(database_url(url)))
    return config


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Alembic's ``include_name`` hook: isotune's tables only (Optuna's and the version tables
    share the database but are not ours to compare or migrate)."""
    if type_ == "table":
        return name is not None and name.startswith(TABLE_PREFIX) and name != VERSION_TABLE
    return True


def heads() -> list[str]:
    """The head revisions of isotune's migrations (exactly one in a healthy history)."""
    return list(ScriptDirectory.from_config(alembic_config()).get_heads())


def optuna_head() -> str:
    """The newest revision of Optuna's schema known to the installed Optuna."""
    from service.optuna_compat import migrations_dir

    config = Config()
    config.set_main_option("script_location", _escape(str(migrations_dir())))
    config.set_main_option("path_separator", "os")
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def current(url: str | None = None) -> SchemaVersions:
    """The revisions of Optuna's and isotune's schemas in the database at ``url``."""
    engine = make_engine(url, sqlite_begin="deferred")
    try:
        ping(engine)
        with engine.connect() as conn:
            return _versions(conn)
    finally:
        engine.dispose()


def upgrade(url: str | None = None, revision: str = "head") -> UpgradeResult:
    """Bring Optuna's schema to its head and isotune's to ``revision`` (default ``"head"``).

    Idempotent: on an up-to-date database it changes nothing. An unreachable database raises
    :class:`service.db.DatabaseError`.
    """
    url = database_url(url)
    engine = make_engine(url)
    try:
        ping(engine)
        with _migration_lock(engine):
            with engine.connect() as conn:
                before = _versions(conn)
            _upgrade_optuna(url)
            with engine.begin() as conn:
                config = alembic_config(url)
                config.attributes["connection"] = conn
                command.upgrade(config, revision)
            with engine.connect() as conn:
                after = _versions(conn)
    finally:
        engine.dispose()
    return UpgradeResult(before=before, after=after)


def downgrade(url: str | None = None, revision: str = "base") -> SchemaVersions:
    """Move isotune's schema down to ``revision`` (default ``"base"``: drop isotune's tables).
    Optuna's tables and data are left as they are. Returns the versions afterwards."""
    url = database_url(url)
    engine = make_engine(url)
    try:
        ping(engine)
        with _migration_lock(engine):
            with engine.begin() as conn:
                config = alembic_config(url)
                config.attributes["connection"] = conn
                command.downgrade(config, revision)
            with engine.connect() as conn:
                return _versions(conn)
    finally:
        engine.dispose()


def _upgrade_optuna(url: str) -> None:
    """Create Optuna's tables (RDBStorage does, stamped at head) or upgrade them."""
    import optuna

    storage = optuna.storages.RDBStorage(
        url, engine_kwargs=engine_kwargs(url), skip_compatibility_check=True
    )
    try:
        if storage.get_current_version() != storage.get_head_version():
            storage.upgrade()
    finally:
        storage.remove_session()
        storage.engine.dispose()


def _versions(conn: sa.Connection) -> SchemaVersions:
    optuna_rev = MigrationContext.configure(conn).get_current_revision()
    ours = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    return SchemaVersions(optuna=optuna_rev, isotune=ours.get_current_revision())


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """On PostgreSQL, a session advisory lock held on its own connection for the duration, so
    concurrent upgrades run one after the other. SQLite needs none: its writers already queue
    (``BEGIN IMMEDIATE``), and it serves one server process."""
    if not is_postgresql(engine.url):
        yield
        return
    with engine.connect() as lock:
        lock.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK_KEY})
        lock.commit()
        try:
            yield
        finally:
            lock.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
            lock.commit()


def _escape(value: str) -> str:
    """Alembic's configparser treats ``%`` as interpolation."""
    return value.replace("%", "%%")
