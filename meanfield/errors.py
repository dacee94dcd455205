"""The one error type of :mod:`meanfield`.

Every error names the offending field and its value, so that the CLI and the service can turn it
into a message a user can act on (CLI exit code 2, HTTP 422). It derives from isotune's one error
base, :class:`contract.errors.IsotuneError`: the only module outside :mod:`meanfield` that the
engine imports, and one that imports nothing but the standard library.
"""

from __future__ import annotations

from contract.errors import IsotuneError

__all__ = ["MeanFieldError"]


class MeanFieldError(IsotuneError, ValueError):
    """Invalid input to the mean-field engine.

    Attributes:
        field: the name of the offending argument (e.g. ``"nu_f"``, ``"cell"``).
        value: the value that was rejected.
        reason: what is wrong with it.
    """
