"""Alembic environment for isotune's tables, driven by ``service.migrate`` (no ``alembic.ini``).

``service.migrate`` hands over an open connection in ``config.attributes["connection"]``; without
one (``alembic`` run by hand with ``-x url=…`` or ``sqlalchemy.url`` set), an engine is built from
the URL with ``service.db``'s settings. Only isotune's tables are compared or migrated: Optuna's,
in the same database, are filtered out, and the version table is ``isotune_alembic_version``.
"""

from __future__ import annotations

from alembic import context

from service.db import is_sqlite, make_engine
from service.migrate import VERSION_TABLE, include_name
from service.models import Base

config = context.config


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        include_name=include_name,
        compare_type=True,
        **kwargs,
    )


def run_offline() -> None:
    url = config.get_main_option("sqlalchemy.url")
    _configure(url=url, literal_binds=True, render_as_batch=is_sqlite(url))
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            _configure(connection=conn, render_as_batch=conn.dialect.name == "sqlite")
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
