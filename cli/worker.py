"""``isotune worker``: pull trials from a server, train them, report (:mod:`workers.agent`)."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.options import ServerOpt, TokenOpt

__all__ = ["worker_cmd"]


def worker_cmd(
    study: Annotated[
        list[str],
        typer.Option(
            "--study",
            envvar="ISOTUNE_STUDY",
            help="Study to work on (repeat for several, in turn; ISOTUNE_STUDY: space-separated).",
        ),
    ],
    server: ServerOpt = "http://127.0.0.1:8000",
    token: TokenOpt = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    max_trials: Annotated[
        int | None, typer.Option("--max-trials", help="Stop after this many trials.")
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads", help="CPU threads for torch (1 when several workers share CPUs)."
        ),
    ] = None,
    worker_id: Annotated[
        str, typer.Option("--worker-id", help="Stable id (a restarted worker gets its trial back).")
    ] = "",
    retry_seconds: Annotated[
        float, typer.Option("--retry-seconds", help="How long to retry an unreachable server.")
    ] = 600.0,
) -> None:
    """Claim trials, train them, report; until the studies are done. SIGTERM gives the current
    trial back for a retry and exits."""
    from workers.agent import WorkerOptions, run_worker

    opts = WorkerOptions(
        server=server,
        studies=study,
        token=token,
        worker_id=worker_id,
        device=device,
        threads=threads,
        max_trials=max_trials,
        retry_seconds=retry_seconds,
    )
    run_worker(opts, log=lambda line: typer.echo(line))
