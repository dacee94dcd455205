"""Migrations are code with tests (STYLE.md habit 7), on SQLite and PostgreSQL: upgrade from
empty, idempotent upgrade, downgrade that leaves Optuna alone, a single head, and the ORM models
equal to the migrated schema (service/migrate.py, migrations/)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import optuna
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from optuna.storages._rdb.models import BaseModel as OptunaBase

from service import migrate
from service.db import DatabaseError, make_engine, optuna_storage
from service.models import Base, Token
from tests.support.pg import PostgresCluster

ISOTUNE_TABLES = {
    "isotune_tokens",
    "isotune_studies",
    "isotune_workers",
    "isotune_leases",
    "isotune_pool",
}
OPTUNA_TABLES = set(OptunaBase.metadata.tables) | {"alembic_version"}


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _schema_diff(url: str, metadata: sa.MetaData) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "include_name": migrate.include_name,
                    "compare_type": True,
                    "version_table": migrate.VERSION_TABLE,
                },
            )
            return compare_metadata(context, metadata)
    finally:
        engine.dispose()


def _add_optuna_trial(url: str) -> None:
    storage = optuna_storage(url)
    try:
        study = optuna.create_study(storage=storage, study_name="kept")
        study.add_trial(optuna.trial.create_trial(value=1.5, params={}, distributions={}))
    finally:
        storage.remove_session()
        storage.engine.dispose()


def _optuna_trial_values(url: str) -> list[float | None]:
    storage = optuna_storage(url)
    try:
        study = optuna.load_study(storage=storage, study_name="kept")
        return [t.value for t in study.trials]
    finally:
        storage.remove_session()
        storage.engine.dispose()


def test_single_linear_history_with_one_head() -> None:
    assert migrate.heads() == ["0003"]
    script = ScriptDirectory.from_config(migrate.alembic_config())
    revisions = list(script.walk_revisions())
    assert [r.down_revision for r in revisions][-1] is None  # one base
    assert all(not isinstance(r.down_revision, tuple | list) for r in revisions)  # no merges


def test_upgrade_from_empty_creates_both_schemas(db_url: str) -> None:
    assert _tables(db_url) == set()
    assert migrate.current(db_url) == migrate.SchemaVersions(optuna=None, isotune=None)

    result = migrate.upgrade(db_url)

    assert result.before == migrate.SchemaVersions(optuna=None, isotune=None)
    assert result.after == migrate.SchemaVersions(optuna=migrate.optuna_head(), isotune="0003")
    assert result.changed and result.after.at_head
    assert _tables(db_url) == ISOTUNE_TABLES | OPTUNA_TABLES | {migrate.VERSION_TABLE}
    _add_optuna_trial(db_url)  # Optuna accepts the schema (its compatibility check is on)
    assert _optuna_trial_values(db_url) == [1.5]


def test_upgrade_is_idempotent_and_keeps_data(db_url: str) -> None:
    first = migrate.upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.insert(Token).values(
                    name="t", role="admin", token_hash="h" * 64, created_at=datetime.now(UTC)
                )
            )
        second = migrate.upgrade(db_url)
        with engine.connect() as conn:
            assert conn.scalar(sa.select(sa.func.count()).select_from(Token)) == 1
    finally:
        engine.dispose()
    assert not second.changed
    assert second.after == first.after == migrate.current(db_url)


def test_downgrade_to_base_drops_ours_and_keeps_optuna(db_url: str) -> None:
    migrate.upgrade(db_url)
    _add_optuna_trial(db_url)

    after = migrate.downgrade(db_url)

    assert after == migrate.SchemaVersions(optuna=migrate.optuna_head(), isotune=None)
    tables = _tables(db_url)
    assert not tables & ISOTUNE_TABLES
    assert tables >= OPTUNA_TABLES
    assert _optuna_trial_values(db_url) == [1.5]

    again = migrate.upgrade(db_url)  # and back up
    assert again.after.at_head and _tables(db_url) >= ISOTUNE_TABLES


def test_models_match_migrated_schema(db_url: str) -> None:
    migrate.upgrade(db_url)
    assert _schema_diff(db_url, Base.metadata) == []


def test_schema_comparison_sees_drift(db_url: str) -> None:
    """The comparison above is not vacuous: a column the migration lacks is reported (and the
    Optuna tables in the same database are not)."""
    migrate.upgrade(db_url)
    drifted = sa.MetaData()
    for table in Base.metadata.sorted_tables:
        table.to_metadata(drifted)
    sa.Table(
        "isotune_workers",
        drifted,
        sa.Column("extra", sa.Integer(), nullable=True),
        extend_existing=True,
    )
    diff = _schema_diff(db_url, drifted)
    assert [(op[0], op[2], op[3].name) for op in diff] == [
        ("add_column", "isotune_workers", "extra")
    ]


def test_migrated_db_url_fixture_is_at_head(migrated_db_url: str) -> None:
    assert migrate.current(migrated_db_url).at_head
    assert _tables(migrated_db_url) >= ISOTUNE_TABLES | OPTUNA_TABLES


@pytest.mark.postgresql
def test_concurrent_upgrades_on_postgresql(pg_server: PostgresCluster) -> None:
    """Several processes may run ``upgrade`` at start-up: the advisory lock serializes them."""
    name = pg_server.create_database()
    url = pg_server.url_for(name)
    errors: list[BaseException] = []
    results: list[migrate.UpgradeResult] = []

    def run() -> None:
        try:
            results.append(migrate.upgrade(url))
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    pg_server.drop_database(name)
    assert errors == []
    assert len(results) == 3 and sum(r.changed for r in results) == 1
    assert all(r.after.at_head for r in results)


def test_upgrade_of_unreachable_database_names_database_url() -> None:
    with pytest.raises(DatabaseError) as err:
        migrate.upgrade("postgresql://isotune:s3cret@127.0.0.1:1/isotune")
    assert err.value.field == "database_url"
    assert "s3cret" not in str(err.value)
    assert "cannot connect" in err.value.reason
