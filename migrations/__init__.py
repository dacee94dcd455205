"""Alembic migrations of isotune's own tables (``service/models.py``).

Run them with ``service.migrate`` (``isotune db upgrade``), which also brings Optuna's schema up to
date; there is no ``alembic.ini``. The version table is ``isotune_alembic_version``, so Optuna's
``alembic_version`` in the same database is never touched.
"""
