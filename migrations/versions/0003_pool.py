"""The pool of trials sampled ahead of their claims (``isotune_pool``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07

A background refill samples a study's next trials outside the claim (as WAITING Optuna trials with
their parameters set); a claim takes one of them in the transaction that writes its lease.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "isotune_pool",
        sa.Column("trial_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("study_name", sa.String(length=512), nullable=False),
        sa.Column("trial_number", sa.Integer(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("theory", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["study_name"], ["isotune_studies.name"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("trial_id"),
    )
    op.create_index("ix_isotune_pool_study", "isotune_pool", ["study_name", "trial_id"])


def downgrade() -> None:
    op.drop_index("ix_isotune_pool_study", table_name="isotune_pool")
    op.drop_table("isotune_pool")
