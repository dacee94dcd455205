"""The states of a study and of a lease, as the database stores them (their string values)."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["LeaseState", "StudyState"]


class StudyState(StrEnum):
    """``active`` hands out trials; ``archived`` answers claims ``done``; ``importing`` is a
    study whose exported trials are still being stored (claims answer ``done`` meanwhile)."""

    ACTIVE = "active"
    ARCHIVED = "archived"
    IMPORTING = "importing"
    #: shown, never stored: isotune's record of a study whose Optuna study is gone (deleted or
    #: renamed, e.g. in optuna-dashboard); claims are refused (409) and DELETE removes it
    ORPHANED = "orphaned"


class LeaseState(StrEnum):
    """``active``: its worker holds the trial. ``finished``: completed, pruned or failed through
    the API. ``released``: failed with a retry requested (its parameters queued again).
    ``expired``: its worker went silent and the reaper failed the trial."""

    ACTIVE = "active"
    FINISHED = "finished"
    RELEASED = "released"
    EXPIRED = "expired"
