"""``isotune task``: the tasks a study can train on, and the input statistics of one's own
(``python`` tasks: README, "Your own task")."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cli.options import OptionError

__all__ = ["task_app"]

task_app = typer.Typer(
    name="task", help="Tasks: list them, measure your own.", no_args_is_help=True
)


@task_app.command("list")
def task_list() -> None:
    """The tasks and their options with defaults (None: required)."""
    from contract.tasks import TASKS

    for info in TASKS.values():
        typer.echo(f"{info.name}: {info.description}")
        for key, default in info.defaults.items():
            typer.echo(f"    {key} = {default!r}")


@task_app.command("measure")
def task_measure(
    factory: Annotated[str, typer.Option("--factory", help="Your task's 'module:function'.")],
    T: Annotated[int, typer.Option("--T", help="Bridge length (steps).")],
    prefix: Annotated[
        int, typer.Option("--prefix", help="Steps before the bridge (the information).")
    ] = 0,
    args: Annotated[
        str, typer.Option("--args", help="Keyword arguments of the factory, as JSON.")
    ] = "{}",
    n_outputs: Annotated[
        int | None,
        typer.Option("--n-outputs", help="Classes (default: the largest label seen + 1)."),
    ] = None,
) -> None:
    """Sample batches of your task, measure its shape and the input statistics of its bridge
    (steps [prefix, prefix + T)), and print the ``task`` block of a study spec (JSON, also
    valid YAML). The server builds the prior from these numbers; the worker checks the shape of
    every batch against them."""
    from contract.tasks import TaskError, task_spec
    from workers.tasks import load_factory, measure_inputs

    try:
        kwargs = json.loads(args)
    except ValueError as e:
        raise OptionError("args", args, f"not JSON ({e})") from None
    if not isinstance(kwargs, dict):
        raise OptionError("args", args, "must be a JSON object of keyword arguments")
    make = load_factory(factory)
    try:
        user = make(T=T, seed=0, **kwargs)
    except Exception as e:
        raise TaskError("factory", factory, f"raised {e!r}") from None
    got = measure_inputs(user, T, prefix)
    options = {
        "factory": factory,
        "args": kwargs,
        "input_size": got["input_size"],
        "n_outputs": n_outputs or got["n_outputs"],
        "loss": got["loss"],
        "output_steps": got["output_steps"],
        "prefix": prefix,
        "suffix": got["seq_len"] - prefix - T,
        "R": round(got["R"], 4),
        "regime": got["regime"],
        "R_ab": round(got["R_ab"], 4),
    }
    if options["suffix"] < 0:
        raise OptionError("T", T, f"the sequences have {got['seq_len']} steps < prefix + T")
    task_spec("python", T, **options)  # the server's own check of what is printed
    typer.echo(json.dumps({"name": "python", "T": T, "options": options}))
