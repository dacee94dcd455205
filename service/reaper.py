"""The reaper: no trial stays RUNNING after its worker died, or after a claim was cut short.

One pass (:meth:`Reaper.reap_all`, every ``Settings.reap_interval`` seconds in the server, and
at each claim that takes its study's lock, for that study) fails the trials of expired leases
and re-enqueues their parameters within the retry budget (``Leases.reap_expired``), and fails
every RUNNING trial of an active study that no lease covers and that is older than a lease (a
claim cut off between Optuna's ask and its lease, e.g. by a database restart). A study whose
Optuna study is gone (deleted in optuna-dashboard) is skipped, said once per process. The lease
statements are in :mod:`service.leases`.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import optuna
from optuna.trial import TrialState

from service.errors import Conflict
from service.leases import Leases
from service.optuna_compat import trial_id
from service.store import orphaned

__all__ = ["Reaper"]

log = logging.getLogger("isotune.service")


class Reaper:
    """Reaper passes over the studies of one :class:`~service.leases.Leases`."""

    def __init__(self, leases: Leases) -> None:
        self.leases, self.store, self.cache = leases, leases.store, leases.cache
        self._orphans: set[str] = set()

    def reap_all(self) -> int:
        """One pass over every study; returns how many trials it failed."""
        names, active = self.leases.reap_candidates()
        ids = dict(active)
        total = 0
        for name in names:
            try:
                with self.store.study_lock(name):
                    total += self.leases.reap_expired(name)
            except Conflict as e:  # an orphaned study: said once, not every pass
                self._quietly(name, e)
            except Exception:  # one study's trouble must not stop the others' reaping
                if name in ids and self._gone(ids[name]):  # deleted while this pass reaped it
                    self.cache.drop(name)
                    self._quietly(name, orphaned(name))
                else:
                    log.exception("reaping expired leases of study %r failed", name)
        for name, optuna_id in active:
            try:
                total += self.reap_unleased(name, optuna_id)
            except Conflict as e:
                self._quietly(name, e)
            except Exception:
                if self._gone(optuna_id):  # deleted while this pass looked at it
                    self.cache.drop(name)
                    self._quietly(name, orphaned(name))
                else:
                    log.exception("reaping unleased trials of study %r failed", name)
        return total

    def reap_unleased(self, name: str, optuna_id: int) -> int:
        """Fail the RUNNING trials of a study that no lease covers, once older than a lease."""
        info = self.cache.get(name, optuna_id)
        # Optuna stamps datetime_start in naive local time
        cutoff = datetime.now() - timedelta(seconds=info.spec.lease_seconds)
        try:
            running = self.store.rdb.get_all_trials(
                optuna_id, deepcopy=False, states=(TrialState.RUNNING,)
            )
        except KeyError:  # its Optuna study was deleted (in optuna-dashboard)
            self.cache.drop(name)
            raise orphaned(name) from None
        old = [trial_id(t) for t in running if t.datetime_start and t.datetime_start < cutoff]
        if not old:
            return 0
        failed = 0
        with self.store.study_lock(name):  # no claim is between its ask and its lease meanwhile
            leased = self.leases.leased_among(old)
            for tid in old:
                if tid in leased:
                    continue
                try:
                    self.store.storage.set_trial_user_attr(
                        tid, "isotune_fail", "claimed but never handed out"
                    )
                    self.store.storage.set_trial_state_values(tid, TrialState.FAIL)
                    failed += 1
                except optuna.exceptions.UpdateFinishedTrialError:
                    pass
        return failed

    def _gone(self, optuna_id: int) -> bool:
        try:
            self.store.rdb.get_study_name_from_id(optuna_id)
        except KeyError:
            return True
        except Exception:  # the database itself in trouble: not an orphan
            return False
        return False

    def _quietly(self, name: str, e: Conflict) -> None:
        """Log an orphaned study once per process (the reaper passes every few seconds)."""
        if name not in self._orphans:
            self._orphans.add(name)
            log.warning("study %r is skipped by the reaper: %s", name, e.reason)
