"""What the command line's commands share: option types, and the error of an unusable option.

Servers' databases come from ``--database-url`` or ``ISOTUNE_DATABASE_URL`` (default:
``sqlite:///isotune.db``); clients find the server in ``--server`` / ``ISOTUNE_SERVER`` and their
token in ``--token`` / ``ISOTUNE_TOKEN``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from contract.errors import IsotuneError

__all__ = [
    "LOOPBACK",
    "DbOpt",
    "HostOpt",
    "OptionError",
    "PortOpt",
    "ServerOpt",
    "TokenOpt",
]

LOOPBACK = ("127.0.0.1", "localhost", "::1")

HostOpt = Annotated[str, typer.Option("--host", help="Interface to bind.")]
PortOpt = Annotated[int, typer.Option("--port", help="TCP port.")]
DbOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="SQLAlchemy URL (default: $ISOTUNE_DATABASE_URL or sqlite:///isotune.db).",
    ),
]
ServerOpt = Annotated[
    str, typer.Option("--server", envvar="ISOTUNE_SERVER", help="Server base URL.")
]
TokenOpt = Annotated[
    str | None, typer.Option("--token", envvar="ISOTUNE_TOKEN", help="Bearer token.")
]


class OptionError(IsotuneError, ValueError):
    """A command-line option with an unusable value (``error: <field>=<value>: <reason>``)."""
