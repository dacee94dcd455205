"""``isotune launch slurm``: workers as a SLURM job array, one worker per array task.

The command writes an sbatch script (:func:`sbatch_script`; ``deploy/slurm/isotune-worker.sbatch``
is one it wrote) and submits it with ``sbatch``. Before submitting it checks what would otherwise
fail N times on the nodes: the token file is the user's own (mode 600), and the server answers
with that token and knows the study. Each array task runs ``isotune worker`` in place of its batch
shell (``exec``), so the signals SLURM sends reach the worker: ``scancel`` and preemption send
SIGTERM, and ``--signal=B:USR1@SECONDS`` warns before the time limit with SIGUSR1; either way
the worker gives its trial back for a retry and exits. With ``--requeue`` (on by default) a
preempted task goes back into the queue and carries on under the same worker id.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from cli.options import OptionError, ServerOpt
from cli.worker import read_token_file

__all__ = ["launch_app", "sbatch_script"]

launch_app = typer.Typer(
    help="Start workers on a cluster's scheduler.", no_args_is_help=True, add_completion=False
)

#: SLURM's time formats: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS
TIME = re.compile(r"^(\d+|\d+:\d{2}|\d+:\d{2}:\d{2}|\d+-\d+|\d+-\d+:\d{2}|\d+-\d+:\d{2}:\d{2})$")
NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def worker_command() -> list[str]:
    """How a node starts this installation's ``isotune`` (the console script beside this
    interpreter, else ``python -m cli.main``): a shared file system is assumed, as usual."""
    script = Path(sys.executable).with_name("isotune")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "cli.main"]


def sbatch_script(
    *,
    study: str,
    workers: int,
    server: str,
    token_file: Path,
    gpus_per_worker: int = 1,
    cpus_per_worker: int = 4,
    partition: str | None = None,
    time_limit: str | None = None,
    warn_seconds: int = 120,
    requeue: bool = True,
    logs: Path = Path("isotune-slurm"),
    command: list[str] | None = None,
) -> str:
    """The sbatch script of a worker array (values already checked by the caller)."""
    device = "cuda" if gpus_per_worker > 0 else "cpu"
    lines = [
        "#!/bin/bash",
        f"# isotune workers for study {study}: one per array task. Written by `isotune launch",
        "# slurm`; submit again with `sbatch THIS_FILE`. scancel or preemption send SIGTERM,",
        "# and SIGUSR1 comes before the time limit: the worker gives its trial back and exits.",
        f"#SBATCH --job-name=isotune-{study}",
        f"#SBATCH --array=0-{workers - 1}",
        "#SBATCH --ntasks=1",
        f"#SBATCH --cpus-per-task={cpus_per_worker}",
    ]
    if gpus_per_worker > 0:
        lines.append(f"#SBATCH --gres=gpu:{gpus_per_worker}")
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    if time_limit:
        lines.append(f"#SBATCH --time={time_limit}")
    lines += [
        f"#SBATCH --output={logs}/%x-%A_%a.out",
        "#SBATCH --open-mode=append",
        f"#SBATCH --signal=B:USR1@{warn_seconds}",
        "#SBATCH --requeue" if requeue else "#SBATCH --no-requeue",
        "set -euo pipefail",
        f"export ISOTUNE_SERVER={shlex.quote(server)}",
        f"export ISOTUNE_STUDY={shlex.quote(study)}",
        f"export ISOTUNE_TOKEN_FILE={shlex.quote(str(token_file))}",
        "# the same id when the task is requeued: a worker that comes back gets its trial back",
        'export ISOTUNE_WORKER_ID="slurm-${SLURM_ARRAY_JOB_ID}-${SLURM_ARRAY_TASK_ID}"',
        'echo "isotune worker $ISOTUNE_WORKER_ID on $(hostname), study $ISOTUNE_STUDY"',
        "exec "
        + shlex.join([*(command or worker_command()), "worker", "--device", device])
        + f" --threads {cpus_per_worker}",
    ]
    return "\n".join(lines) + "\n"


def _check_server(server: str, token: str, study: str) -> None:
    """The server answers with this token and has the study (else the client's error: one line
    naming the server, the token's refusal or the study)."""
    from contract.client import Client

    with Client(server, token=token, retry_seconds=5) as client:
        client.study(study)


@launch_app.command("slurm")
def slurm_cmd(
    study: Annotated[str, typer.Option("--study", help="The study the workers work on.")],
    workers: Annotated[int, typer.Option("--workers", help="Array tasks (one worker each).")],
    token_file: Annotated[
        Path,
        typer.Option(
            "--token-file",
            envvar="ISOTUNE_TOKEN_FILE",
            help="A worker token, in a file only you can read (chmod 600), on a shared disk.",
        ),
    ],
    server: ServerOpt = "http://127.0.0.1:8000",
    gpus_per_worker: Annotated[
        int, typer.Option("--gpus-per-worker", help="GPUs a task asks for (0: a CPU worker).")
    ] = 1,
    cpus_per_worker: Annotated[
        int, typer.Option("--cpus-per-worker", help="CPU cores a task asks for.")
    ] = 4,
    partition: Annotated[str | None, typer.Option("--partition", help="SLURM partition.")] = None,
    time_limit: Annotated[
        str | None, typer.Option("--time", help="Time limit of a task (SLURM's format).")
    ] = None,
    warn_seconds: Annotated[
        int,
        typer.Option("--warn-seconds", help="SIGUSR1 this long before the time limit."),
    ] = 120,
    requeue: Annotated[
        bool, typer.Option("--requeue/--no-requeue", help="Requeue a preempted task.")
    ] = True,
    logs: Annotated[
        Path,
        typer.Option("--logs", help="Folder of the script and each task's output."),
    ] = Path("isotune-slurm"),
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Write and print the script; submit nothing.")
    ] = False,
    check: Annotated[
        bool,
        typer.Option("--check/--no-check", help="Ask the server for the study first."),
    ] = True,
) -> None:
    """Write an sbatch array of workers for a study and submit it; prints the job id."""
    if workers < 1:
        raise OptionError("workers", workers, "at least 1")
    if gpus_per_worker < 0:
        raise OptionError("gpus_per_worker", gpus_per_worker, "0 (CPU) or more")
    if cpus_per_worker < 1:
        raise OptionError("cpus_per_worker", cpus_per_worker, "at least 1")
    if not NAME.match(study):
        raise OptionError("study", study, "letters, digits, '_', '.' and '-' only")
    if partition is not None and not NAME.match(partition):
        raise OptionError("partition", partition, "not a partition name")
    if time_limit is not None and not TIME.match(time_limit):
        raise OptionError("time", time_limit, "minutes, HH:MM:SS or D-HH:MM:SS")
    if warn_seconds < 0:
        raise OptionError("warn_seconds", warn_seconds, "0 or more")
    token = read_token_file(token_file)
    if check and not dry_run:
        _check_server(server, token, study)
    logs = logs.resolve()
    script = sbatch_script(
        study=study,
        workers=workers,
        server=server,
        token_file=token_file.resolve(),
        gpus_per_worker=gpus_per_worker,
        cpus_per_worker=cpus_per_worker,
        partition=partition,
        time_limit=time_limit,
        warn_seconds=warn_seconds,
        requeue=requeue,
        logs=logs,
    )
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / f"{study}.sbatch"
    path.write_text(script)
    if dry_run:
        typer.echo(script, nl=False)
        typer.echo(f"# written to {path}; submit with: sbatch {path}", err=True)
        return
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise OptionError("sbatch", "sbatch", "not found: is this a SLURM login node?")
    done = subprocess.run(
        [sbatch, "--parsable", str(path)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        reason = " ".join(done.stderr.split()) or f"exit code {done.returncode}"
        raise OptionError("sbatch", str(path), reason)
    job = done.stdout.strip().split(";")[0]
    typer.echo(job)
    out = f"{logs}/isotune-{study}-{job}_N.out"
    typer.echo(f"# {workers} workers for {study}: squeue -j {job}; output in {out}", err=True)
