"""The service over one database, independent of HTTP: its parts, put together once.

- :mod:`service.store`: isotune's tables, Optuna's storage, the study locks;
- :mod:`service.cache`: what a process keeps of each study (its prior built lazily);
- :mod:`service.studies`: studies and their trials (create, list, archive, delete, export, import);
- :mod:`service.leases`: claims, leases, heartbeats, reports, completions (every lease statement);
- :mod:`service.reaper`: the reaper's passes (expired leases, trials no lease covers);
- :mod:`service.search`: samplers, pruners and the study's mean-field prior.

``service.api`` builds one :class:`Service` per app and maps its errors to HTTP codes.
"""

from __future__ import annotations

import optuna
from sqlalchemy.orm import Session, sessionmaker

from service.cache import StudyCache
from service.leases import Leases
from service.reaper import Reaper
from service.store import Store
from service.studies import Studies

__all__ = ["Service"]

optuna.logging.set_verbosity(optuna.logging.WARNING)


class Service:
    """One database's studies, leases and reaper, sharing a store and a cache."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.cache = StudyCache(store)
        self.leases = Leases(store, self.cache)
        self.studies = Studies(store, self.cache, self.leases)
        self.reaper = Reaper(self.leases)

    def background_pass(self) -> int:
        """What the server does every few seconds, outside any request: a reaper pass, then
        the calibrated studies refitted. Returns how many trials the reaper failed."""
        failed = self.reaper.reap_all()
        self.studies.recalibrate()
        return failed

    @property
    def sessions(self) -> sessionmaker[Session]:
        return self.store.sessions

    @property
    def storage(self) -> optuna.storages.BaseStorage:
        return self.store.storage
