"""isotune's own tables (SQLAlchemy 2), beside Optuna's schema in the same database.

Optuna's tables are Optuna's (created and upgraded by Optuna); these hold what Optuna does not: the
study specification as submitted, API tokens, the workers and the leases that tie a RUNNING trial to
the worker that claimed it. Their schema is versioned by the Alembic migrations in ``migrations/``
(version table ``isotune_alembic_version``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["Base", "Lease", "PoolEntry", "StudyRecord", "Token", "WorkerRecord"]

ROLES = ("admin", "worker", "reader")


class Base(DeclarativeBase):
    pass


class Token(Base):
    """A bearer token: only its SHA-256 is stored."""

    __tablename__ = "isotune_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class StudyRecord(Base):
    """A study as created through the API: its specification and its Optuna study."""

    __tablename__ = "isotune_studies"

    name: Mapped[str] = mapped_column(String(512), primary_key=True)
    optuna_study_id: Mapped[int] = mapped_column(Integer, unique=True)
    spec: Mapped[dict] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default="active")  # active | archived
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    #: Re-enqueued parameter sets not yet claimed again (0: claims skip Optuna's WAITING scan).
    waiting: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class WorkerRecord(Base):
    """A worker that has claimed at least once."""

    __tablename__ = "isotune_workers"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    capabilities: Mapped[dict] = mapped_column(JSON, default=dict)
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Lease(Base):
    """The claim of one Optuna trial by one worker, valid until ``expires_at``.

    ``state``: ``active`` (the worker holds it), ``finished`` (completed, failed or pruned through
    the API), ``expired`` (the reaper failed the trial and re-enqueued its parameters) or
    ``released`` (the worker gave it back, e.g. on SIGTERM). ``attempt`` counts tries of the same
    parameters (1 for the first).
    """

    __tablename__ = "isotune_leases"
    __table_args__ = (
        UniqueConstraint("study_name", "trial_number", name="uq_isotune_leases_study_trial"),
        Index("ix_isotune_leases_state_expires", "state", "expires_at"),
        Index("ix_isotune_leases_worker", "worker_id", "state"),
    )

    trial_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    study_name: Mapped[str] = mapped_column(
        String(512), ForeignKey("isotune_studies.name", ondelete="CASCADE")
    )
    trial_number: Mapped[int] = mapped_column(Integer)
    worker_id: Mapped[str] = mapped_column(String(200))
    claimed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    state: Mapped[str] = mapped_column(String(16), default="active")


class PoolEntry(Base):
    """A trial sampled ahead of its claim (``service.pool``): a WAITING Optuna trial whose
    parameters are set, with what its claim hands out. A claim takes one (``SKIP LOCKED`` on
    PostgreSQL) and deletes its row in the transaction that writes its lease."""

    __tablename__ = "isotune_pool"
    __table_args__ = (Index("ix_isotune_pool_study", "study_name", "trial_id"),)

    trial_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    study_name: Mapped[str] = mapped_column(
        String(512), ForeignKey("isotune_studies.name", ondelete="CASCADE")
    )
    trial_number: Mapped[int] = mapped_column(Integer)
    params: Mapped[dict] = mapped_column(JSON)
    #: the trial's mean-field numbers (``THEORY_ATTR``), None where the theory has none
    theory: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
