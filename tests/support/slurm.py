"""A real one-node SLURM cluster for the tests, in a temporary folder: munged with a generated key
and its own socket, slurmctld and slurmd on free ports (``proctrack/linuxproc``,
``select/cons_tres``, no accounting), each started in the foreground and stopped by its process id.
Debian's ``slurm-wlm`` and ``munge`` provide the binaries (``.ci/slurm`` installs them); the
daemons run as the user running the tests (root in CI, as SLURM's own daemons do).

Without the binaries the tests that need the cluster skip, unless ``ISOTUNE_REQUIRE_SLURM=1``
(``make test`` sets it when ``.ci/slurm`` found or installed them), when they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.ports import free_port
from tests.support.servers import stop

__all__ = ["Slurm", "slurm_cluster"]

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")


def _find(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/sbin") / name) if p.exists()), None
    )


@dataclass
class Slurm:
    folder: Path
    env: dict[str, str]  # SLURM_CONF for the client commands

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A SLURM client command (sbatch, squeue, scancel, sinfo) against this cluster."""
        return subprocess.run(
            [_find(args[0]) or args[0], *args[1:]],
            capture_output=True, text=True, env={**os.environ, **self.env}, check=check,
            timeout=60,
        )  # fmt: skip

    def tasks(self, job: str) -> dict[str, str]:
        """The job's array tasks still known to the controller: ``JOB_TASK`` → state."""
        out = self.run("squeue", "-h", "-r", "-j", job, "-o", "%i %T", check=False).stdout
        return dict(line.split() for line in out.splitlines() if line.strip())

    def log(self) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.folder / name
            if path.exists():
                parts.append(f"--- {name}\n" + path.read_text()[-3000:])
        return "\n".join(parts)


def _conf(folder: Path, host: str, cpus: int) -> str:
    ports = free_port(), free_port()
    return "\n".join(
        [
            "ClusterName=isotunetest",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={ports[0]}",
            f"SlurmdPort={ports[1]}",
            f"SlurmUser={os.getenv('USER') or 'root'}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={folder / 'munge.sock'}",
            f"StateSaveLocation={folder / 'state'}",
            f"SlurmdSpoolDir={folder / 'spool'}",
            f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
            f"SlurmdPidFile={folder / 'slurmd.pid'}",
            f"SlurmctldLogFile={folder / 'slurmctld.log'}",
            f"SlurmdLogFile={folder / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "MpiDefault=none",
            "SwitchType=switch/none",
            "ReturnToService=2",
            "SchedulerType=sched/backfill",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "KillWait=20",
            f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=2000 State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


@contextlib.contextmanager
def slurm_cluster(folder: Path, cpus: int = 2) -> Iterator[Slurm]:
    """munged, slurmctld and slurmd in ``folder``, the node idle when yielded; every daemon
    stopped by its pid at the end."""
    missing = [b for b in BINARIES if _find(b) is None]
    if missing:
        message = f"SLURM not installed (missing {', '.join(missing)}; .ci/slurm installs it)"
        if os.environ.get("ISOTUNE_REQUIRE_SLURM") == "1":
            pytest.fail(message)
        pytest.skip(message)
    folder.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "spool"):
        (folder / sub).mkdir(exist_ok=True)
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    host = socket.gethostname().split(".")[0]
    conf = folder / "slurm.conf"
    conf.write_text(_conf(folder, host, cpus))
    env = {"SLURM_CONF": str(conf)}
    procs: list[subprocess.Popen] = []
    logs = []
    try:
        for name, args in (
            ("munged", ["-F", "--force", f"--key-file={key}", f"--socket={folder / 'munge.sock'}",
                        f"--pid-file={folder / 'munged.pid'}", f"--seed-file={folder / 'seed'}",
                        f"--log-file={folder / 'munged.log'}"]),
            ("slurmctld", ["-D", "-f", str(conf)]),
            ("slurmd", ["-D", "-f", str(conf)]),
        ):  # fmt: skip
            out = open(folder / f"{name}.out", "w")
            logs.append(out)
            command = [_find(name) or name, *args]
            procs.append(
                subprocess.Popen(
                    command,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **env},
                    start_new_session=True,
                )
            )
            if name == "munged":
                _wait(lambda: (folder / "munge.sock").exists(), 15, "munged's socket", procs)
        cluster = Slurm(folder, env)

        def idle() -> bool:
            out = cluster.run("sinfo", "-h", "-o", "%t", check=False).stdout.split()
            return out == ["idle"]

        _wait(idle, 60, "the SLURM node to be idle", procs, cluster)
        yield cluster
    finally:
        for p in reversed(procs):
            stop(p, timeout=20)
        for f in logs:
            f.close()


def _wait(ok, timeout: float, what: str, procs: list, cluster: Slurm | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ok():
            return
        dead = [p.args[0] for p in procs if p.poll() is not None]
        if dead:
            break
        time.sleep(0.2)
    detail = cluster.log() if cluster else ""
    raise RuntimeError(f"waiting for {what}: not after {timeout} s {detail}")
