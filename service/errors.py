"""The service's errors; ``service.api.app`` maps each to its HTTP status (and nowhere else).

All derive from :class:`contract.errors.IsotuneError`, so each names the field and the value.
"""

from __future__ import annotations

from contract.errors import IsotuneError

__all__ = ["Conflict", "Invalid", "NotFound"]


class NotFound(IsotuneError, LookupError):
    """An unknown study or trial (HTTP 404); names what was looked up."""

    def __init__(self, field: str, value: object, reason: str = "not found") -> None:
        super().__init__(field, value, reason)


class Invalid(IsotuneError, ValueError):
    """A study specification that passes the schema but not the theory or the task (HTTP 422)."""


class Conflict(IsotuneError, RuntimeError):
    """A request that contradicts the recorded state (HTTP 409), e.g. a foreign lease."""
