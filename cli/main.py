"""The ``isotune`` console script: a Typer app with the ``theory`` sub-app (:mod:`cli.theory`).

Exit codes are assigned here and only here: 0 on success; 2 for bad input, reported as one line on
stderr, ``error: <field>=<value>: <reason>``, without traceback. Bad input is an
:class:`~contract.errors.IsotuneError` (every package's errors derive from it: the engine's, the
tasks', the training options', the CLI's own) or a ``typer.BadParameter`` (a value Typer could
not convert, a missing option). Anything else is a bug
and keeps its traceback (unknown options and commands keep Typer's usual usage message, also exit
code 2).
"""

from __future__ import annotations

from typing import Any, NoReturn

import numpy as np
import typer
from typer.core import TyperGroup

from cli.demo import demo_cmd
from cli.launch import launch_app
from cli.server import dashboard_cmd, db_app, serve_cmd, token_app
from cli.study import study_app
from cli.task import task_app
from cli.theory import theory_app
from cli.train import train_cmd
from cli.trainmap import trainmap_cmd
from cli.worker import worker_cmd
from contract.errors import IsotuneError

__all__ = ["EXIT_BAD_INPUT", "app", "format_value"]

EXIT_BAD_INPUT = 2


def format_value(value: Any, limit: int = 60) -> str:
    """A short one-line rendering of a rejected value (arrays as their shape and range)."""
    if isinstance(value, np.ndarray) and value.ndim > 0:
        if value.size == 0 or value.dtype.kind not in "iuf":
            return f"array of shape {value.shape}"
        return f"array of shape {value.shape} in [{value.min():g}, {value.max():g}]"
    if isinstance(value, float | np.floating):
        return f"{float(value):g}"
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_BAD_INPUT)


class _IsotuneGroup(TyperGroup):
    """The top-level group: every subcommand runs inside :meth:`invoke`, so errors map here."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except IsotuneError as e:
            *first, last = e.lines(format_value)
            for line in first:
                typer.echo(f"error: {line}", err=True)
            _fail(last)
        except typer.BadParameter as e:
            _fail(" ".join(e.format_message().split()))


app = typer.Typer(
    name="isotune",
    cls=_IsotuneGroup,
    help="Hyperparameter search for gated RNNs with a mean-field time-scale prior.",
    no_args_is_help=True,
    rich_markup_mode=None,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(theory_app, name="theory")
app.command(
    "train", short_help="Train one gated RNN on a long-memory task.", no_args_is_help=False
)(train_cmd)
app.command(
    "trainability-map",
    short_help="Grid of init × T training runs; fits the constant c of T ≤ c·ξ_C.",
)(trainmap_cmd)
app.command("serve", short_help="Run the REST API server.")(serve_cmd)
app.command("dashboard", short_help="Run optuna-dashboard on the service's database.")(
    dashboard_cmd
)
app.command("demo", short_help="A restricted and a control study, end to end.")(demo_cmd)
app.command("worker", short_help="Pull trials from a server, train them, report.")(worker_cmd)
app.add_typer(study_app, name="study")
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")
app.add_typer(task_app, name="task")
app.add_typer(launch_app, name="launch")


@app.callback()
def _root() -> None:
    """Hyperparameter search for gated RNNs with a mean-field time-scale prior."""


if __name__ == "__main__":
    app(prog_name="isotune")
