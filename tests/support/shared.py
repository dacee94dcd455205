"""Results computed once per test run, whichever xdist worker asks first.

Some fixtures of data are read by several tests (a simulation, a chain of Jacobians): an
in-process cache computes one once per worker, and xdist spreads those tests over the workers.
``once(key, compute)`` stores the result in the run's shared folder (set by ``tests/conftest.py``
to the root of pytest's temporary folders for this run, which its workers share) and hands the
stored result to every later caller; a process that finds another computing the same key waits
for it (a lock per key). Without a folder (outside pytest), it just computes.
"""

from __future__ import annotations

import fcntl
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

__all__ = ["FOLDER", "folder", "once"]

T = TypeVar("T")

#: The run's shared folder, once ``tests/conftest.py`` has set it.
FOLDER: list[Path] = []


def folder() -> Path | None:
    return FOLDER[0] if FOLDER else None


def once(key: str, compute: Callable[[], T], where: Path | None = None) -> T:
    """``compute()``, done once per ``key`` in the folder ``where`` (default: the run's)."""
    where = where or folder()
    if where is None:
        return compute()
    path = where / f"{key}.pkl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.with_suffix(".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if path.exists():
            return pickle.loads(path.read_bytes())
        result = compute()
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(pickle.dumps(result))
        tmp.replace(path)
    return result
