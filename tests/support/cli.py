"""The command line in a subprocess, as a user runs it: ``python -m cli.main ARGS`` from the
checkout (:func:`isotune`), the installed console script (:func:`console_script`), and a script
of the checkout with all it starts (:func:`run_script`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT

__all__ = ["console_script", "isotune", "parse_command", "run_script"]


def console_script() -> list[str]:
    """The installed ``isotune`` entry point next to this interpreter (else ``-m cli.main``)."""
    script = Path(sys.executable).with_name("isotune")
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli.main"]


def isotune(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    python_flags: Sequence[str] = (),
    script: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``isotune ARGS`` to its end (output captured, exit status not checked). ``script``:
    through the installed console script; ``python_flags``: for the interpreter (``-X ...``).
    ``env`` is added to this process's environment, with the checkout on ``PYTHONPATH``."""
    command = console_script() if script else [sys.executable, *python_flags, "-m", "cli.main"]
    return subprocess.run(
        [*command, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def run_script(args: list[str], log: Path, timeout: float) -> int:
    """Run ``python ARGS`` in its own process group, output to ``log``; on timeout kill the whole
    group (the script's servers, workers and client processes with it) and fail."""
    with log.open("w") as f:
        proc = subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(f"{args[0]} ran over {timeout} s:\n{log.read_text()[-3000:]}")


def parse_command(args: list[str]) -> Any:
    """Parse ``isotune ARGS`` as the CLI would, without running anything: an unknown command or
    option, or a bad value, raises. Returns the command's context (``.params``). For the commands
    written in deployment files (compose, Kubernetes, SLURM)."""
    import typer

    from cli.main import app

    cmd = typer.main.get_command(app)
    ctx = cmd.make_context("isotune", [], resilient_parsing=True)
    words = list(args)
    while hasattr(cmd, "get_command"):  # a group: descend into the named command
        assert words and not words[0].startswith("-"), f"no command in {args}"
        sub = cmd.get_command(ctx, words[0])
        assert sub is not None, f"no such command: {words[0]}"
        cmd, name, words = sub, words[0], words[1:]
        ctx = cmd.make_context(name, [], parent=ctx, resilient_parsing=True)
    return cmd.make_context(ctx.info_name, words, parent=ctx.parent)
