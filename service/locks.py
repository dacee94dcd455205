"""One server process per SQLite database: SQLite has a single writer, and the claim lock of
:mod:`service.store` is in-process there. PostgreSQL serves several processes (advisory locks)."""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import IO

from sqlalchemy.engine import make_url

from service.db import DatabaseError, redact

__all__ = ["sqlite_server_lock"]


def sqlite_server_lock(url: str) -> IO[str] | None:
    """Hold an exclusive lock on ``<database>.server-lock`` until the returned file is closed;
    refuse if another server holds it. None for in-memory databases."""
    path = make_url(url).database
    if not path or path == ":memory:":
        return None
    lock_path = Path(path).with_name(Path(path).name + ".server-lock")
    handle = lock_path.open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise DatabaseError(
            "database_url",
            redact(url),
            "another isotune server is using this SQLite database; SQLite allows one server "
            "process (use PostgreSQL for several)",
        ) from None
    return handle
