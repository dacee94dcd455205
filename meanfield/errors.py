"""The one error type of :mod:`meanfield`.

Every error names the offending field and its value, so that the CLI and, later, the service can
turn it into a message a user can act on (CLI exit code 2, HTTP 422).
"""

from __future__ import annotations

from typing import Any

__all__ = ["MeanFieldError"]


class MeanFieldError(ValueError):
    """Invalid input to the mean-field engine.

    Attributes:
        field: the name of the offending argument (e.g. ``"nu_f"``, ``"cell"``).
        value: the value that was rejected.
    """

    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field}={value!r}: {reason}")
