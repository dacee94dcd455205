"""Which workers a server process has seen, and when it last wrote that down.

Every claim records its worker's capabilities and ``last_seen`` (``service.models.WorkerRecord``),
at most every :data:`WORKER_SEEN_S` seconds per worker and process unless its capabilities
changed: a busy worker does not cost a write per claim.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from service.models import WorkerRecord

__all__ = ["MAX_HELD", "WORKER_SEEN_S", "WorkerLog"]

#: Leases and workers remembered per server process (about 200 bytes each).
MAX_HELD = 100_000
#: How often a worker's ``last_seen`` is written at most.
WORKER_SEEN_S = 30.0
WORKER_SEEN = timedelta(seconds=WORKER_SEEN_S)


class WorkerLog:
    """Worker id → (capabilities, when written), for one process."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[dict[str, Any], datetime]] = {}

    def saw(
        self, session: Session, worker_id: str, capabilities: dict[str, Any], at: datetime
    ) -> None:
        """Record a worker's capabilities and when it was last seen, in ``session``'s
        transaction, unless this process wrote the same less than :data:`WORKER_SEEN_S` ago."""
        last = self._seen.get(worker_id)
        if last is not None and last[0] == capabilities and at - last[1] < WORKER_SEEN:
            return
        if len(self._seen) >= MAX_HELD:
            self._seen.clear()
        self._seen[worker_id] = (capabilities, at)
        seen = session.execute(
            update(WorkerRecord)
            .where(WorkerRecord.id == worker_id)
            .values(capabilities=capabilities, last_seen=at)
        )
        if not seen.rowcount:  # type: ignore[attr-defined]
            session.add(WorkerRecord(id=worker_id, capabilities=capabilities, last_seen=at))
