"""The one error base of isotune: an error that names the field, the value and the reason.

Every package's errors derive from :class:`IsotuneError` (the engine's ``MeanFieldError``, the
tasks' ``TaskError``, the training options' ``TrainError``, the service's ``Invalid``,
``Conflict``, ``NotFound``, ``PriorError``, ``DatabaseError``, the CLI's ``OptionError``), so
that the two edges that report errors (HTTP status codes in ``service.app``, exit codes in
``cli.main``) handle one type. Subclasses also derive from the builtin that fits (``ValueError``,
``LookupError``, ``RuntimeError``), so existing ``except ValueError`` clauses keep working.

This module imports nothing but the standard library: the engine (:mod:`meanfield`, numpy and
scipy only) derives from it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

__all__ = ["IsotuneError"]


class IsotuneError(Exception):
    """Bad input or a refused request, naming what was wrong.

    Attributes:
        field: the offending argument or field (``"nu_f"``, ``"task.T"``, ``"trials[3]"``).
        value: the value that was rejected.
        reason: what is wrong with it, in words a user can act on.
    """

    field: str
    value: Any
    reason: str

    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field, self.value, self.reason = field, value, reason
        super().__init__(self.message())

    def message(self) -> str:
        """``field=value: reason`` (the value as its repr; a path as its text)."""
        shown = os.fspath(self.value) if isinstance(self.value, os.PathLike) else self.value
        return f"{self.field}={shown!r}: {self.reason}"

    def lines(self, show: Callable[[Any], str] = repr) -> list[str]:
        """The error as ``field=value: reason`` lines, the value rendered by ``show`` (the CLI
        prints each as ``error: <line>``)."""
        return [f"{self.field}={show(self.value)}: {self.reason}"]

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across processes
        return (type(self), (self.field, self.value, self.reason))
