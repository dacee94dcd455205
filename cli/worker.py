"""``isotune worker``: pull trials from a server, train them, report (:mod:`workers.agent`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from cli.options import OptionError, ServerOpt, TokenOpt

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
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            envvar="ISOTUNE_TOKEN_FILE",
            help="Read the bearer token from this file (readable by its owner only).",
        ),
    ] = None,
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
        str,
        typer.Option(
            "--worker-id",
            envvar="ISOTUNE_WORKER_ID",
            help="Stable id (a restarted worker gets its trial back).",
        ),
    ] = "",
    retry_seconds: Annotated[
        float, typer.Option("--retry-seconds", help="How long to retry an unreachable server.")
    ] = 600.0,
) -> None:
    """Claim trials, train them, report; until the studies are done. SIGTERM (or SIGUSR1, which
    SLURM sends before a time limit with --signal) gives the current trial back for a retry and
    exits."""
    from workers.agent import WorkerOptions, run_worker

    if token_file is not None:
        token = read_token_file(token_file)

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


def read_token_file(path: Path) -> str:
    """The token in ``path``: refused when the file is missing, empty, or readable by others
    than its owner (as ssh refuses a private key), with one line that says which."""
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except OSError as e:
        raise OptionError("token_file", str(path), e.strerror or str(e)) from None
    if os.name == "posix" and mode & 0o077:
        raise OptionError(
            "token_file", str(path), f"readable by others (mode {mode & 0o777:o}): chmod 600 it"
        )
    if not text:
        raise OptionError("token_file", str(path), "empty")
    return text
