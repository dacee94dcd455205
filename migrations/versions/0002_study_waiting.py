"""Count the re-enqueued parameter sets a study holds (``isotune_studies.waiting``).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

A claim reads this count with the study's state: while it is zero, the claim need not ask Optuna
for WAITING trials, which reads every unfinished trial of the study.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("isotune_studies") as batch:
        batch.add_column(sa.Column("waiting", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("isotune_studies") as batch:
        batch.drop_column("waiting")
