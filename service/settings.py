"""The server's settings: built once, at the edge (``isotune serve``, a test), and passed down.

Every server process of ``isotune serve --workers N`` receives the same :class:`Settings`
object (pickled into each process), never a hand-off through environment variables.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["REAP_INTERVAL", "Settings"]

#: Seconds between two passes of the background reaper.
REAP_INTERVAL = 5.0


@dataclass(frozen=True)
class Settings:
    """What one server app needs to know.

    Attributes:
        database_url: the database (SQLite file or PostgreSQL), already resolved.
        auth: check bearer tokens (False: local development, every request accepted).
        migrate: bring the database to the newest schema when the app is built.
        reap_interval: seconds between two passes of the background reaper.
        token_ttl: seconds a token's role is remembered (a revoked token may work that long).
        max_body_bytes: largest request body accepted (413 beyond).
        max_import_bytes: largest study import (the import carries every trial).
    """

    database_url: str
    auth: bool = True
    migrate: bool = True
    reap_interval: float = REAP_INTERVAL
    token_ttl: float = 5.0
    max_body_bytes: int = 1_000_000
    max_import_bytes: int = 256_000_000
