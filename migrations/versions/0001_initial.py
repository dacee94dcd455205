"""isotune's tables: tokens, studies, workers, leases.

Revision ID: 0001
Revises:
Create Date: 2025-11-26

Constraint names follow the convention ``uq_<table>_<column>``, ``fk_<table>_<column>_<referred>``
and ``pk_<table>``, written out here so that they are the same on SQLite and PostgreSQL (and a
later batch migration on SQLite can name what it alters).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "isotune_tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_isotune_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_isotune_tokens_token_hash"),
    )
    op.create_table(
        "isotune_studies",
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("optuna_study_id", sa.Integer(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_isotune_studies"),
        sa.UniqueConstraint("optuna_study_id", name="uq_isotune_studies_optuna_study_id"),
    )
    op.create_table(
        "isotune_workers",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("capabilities", sa.JSON(), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_isotune_workers"),
    )
    op.create_table(
        "isotune_leases",
        sa.Column("trial_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("study_name", sa.String(length=512), nullable=False),
        sa.Column("trial_number", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.String(length=200), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("trial_id", name="pk_isotune_leases"),
        sa.ForeignKeyConstraint(
            ["study_name"],
            ["isotune_studies.name"],
            name="fk_isotune_leases_study_name_isotune_studies",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("study_name", "trial_number", name="uq_isotune_leases_study_trial"),
    )
    op.create_index(
        "ix_isotune_leases_state_expires", "isotune_leases", ["state", "expires_at"], unique=False
    )
    op.create_index(
        "ix_isotune_leases_worker", "isotune_leases", ["worker_id", "state"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_isotune_leases_worker", table_name="isotune_leases")
    op.drop_index("ix_isotune_leases_state_expires", table_name="isotune_leases")
    op.drop_table("isotune_leases")
    op.drop_table("isotune_workers")
    op.drop_table("isotune_studies")
    op.drop_table("isotune_tokens")
