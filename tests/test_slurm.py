"""``isotune launch slurm`` on a real one-node SLURM cluster (tests/support/slurm.py): an array of
two workers against a real server completes its study, and a ``scancel`` of one array task in the
middle of its trial loses nothing (the trial is given back and run again by the other worker).
Also: the committed example script is the launcher's own output, and mistakes end in one line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cli.launch import sbatch_script
from contract.client import Client
from tests.support import ROOT, specs
from tests.support.cli import isotune
from tests.support.servers import serve, wait_for
from tests.support.slurm import slurm_cluster

#: What deploy/slurm/isotune-worker.sbatch was written from (no path of this machine in it).
EXAMPLE = {
    "study": "lstm-copy-300",
    "workers": 4,
    "server": "https://isotune.example.org",
    "token_file": Path("/home/alice/.isotune/worker-token"),
    "gpus_per_worker": 1,
    "cpus_per_worker": 4,
    "partition": "gpu",
    "time_limit": "1-00:00:00",
    "logs": Path("/home/alice/isotune-slurm"),
    "command": ["isotune"],
}


def test_the_committed_example_is_the_launchers_output() -> None:
    committed = (ROOT / "deploy" / "slurm" / "isotune-worker.sbatch").read_text()
    assert committed == sbatch_script(**EXAMPLE)  # type: ignore[arg-type]


def test_a_cpu_array_asks_for_no_gpu_and_runs_the_worker_on_cpu() -> None:
    script = sbatch_script(**{**EXAMPLE, "gpus_per_worker": 0})  # type: ignore[arg-type]
    assert "--gres" not in script and "--device cpu" in script
    assert "#SBATCH --array=0-3" in script and script.splitlines()[-1].startswith("exec ")


def _token(url: str, role: str, path: Path) -> Path:
    made = isotune("token", "create", "--role", role, "--name", f"t-{role}", "--database-url", url)
    assert made.returncode == 0, made.stderr
    path.write_text(made.stdout.strip() + "\n")
    path.chmod(0o600)
    return path


def test_launch_mistakes_end_in_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    open_token = tmp_path / "open"
    open_token.write_text("x")
    open_token.chmod(0o644)
    with serve(url, auth=True) as server:
        token = _token(url, "worker", tmp_path / "token")
        base = ["launch", "slurm", "--server", server.base, "--logs", str(tmp_path / "logs")]
        one = [*base, "--study", "s", "--workers", "1", "--token-file", str(token)]
        cases = {
            "no study": (
                [*base, "--study", "nope", "--workers", "2", "--token-file", str(token)],
                "study",
            ),
            "zero workers": (
                [*base, "--study", "s", "--workers", "0", "--token-file", str(token)],
                "workers=0",
            ),
            "token readable by others": (
                [*base, "--study", "s", "--workers", "1", "--token-file", str(open_token)],
                "token_file=",
            ),
            "bad time": (
                [*one, "--time", "two hours"],
                "time=",
            ),
        }
        for what, (args, field) in cases.items():
            done = isotune(*args)
            lines = done.stderr.strip().splitlines()
            assert done.returncode == 2, (what, done.stderr)
            assert len(lines) == 1 and lines[0].startswith("error: ") and field in lines[0], (
                what,
                done.stderr,
            )
    assert not list((tmp_path / "logs").glob("*.sbatch"))  # nothing written for a refused launch


@pytest.mark.slow
def test_an_array_completes_its_study_and_a_scancel_mid_trial_loses_nothing(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    budget = 4
    with slurm_cluster(tmp_path / "slurm") as cluster, serve(url, auth=True) as server:
        admin = _token(url, "admin", tmp_path / "admin").read_text().strip()
        token = _token(url, "worker", tmp_path / "token")
        spec = specs.faults("slurm", budget=budget, lease_seconds=10, steps=1200, eval_every=40)
        with Client(server.base, token=admin, retry_seconds=10) as c:
            c.create_study(spec)
            logs = tmp_path / "logs"
            launched = isotune(
                "launch", "slurm", "--study", "slurm", "--workers", "2", "--gpus-per-worker", "0",
                "--cpus-per-worker", "1", "--server", server.base, "--token-file", str(token),
                "--logs", str(logs), env={**cluster.env, "OMP_NUM_THREADS": "1"},
            )  # fmt: skip
            assert launched.returncode == 0, launched.stderr + cluster.log()
            job = launched.stdout.strip()
            assert job.isdigit(), launched.stdout

            def mid_trial() -> dict | None:
                for t in c.trials("slurm")["trials"]:
                    if (
                        t["state"] == "RUNNING"
                        and t["user_attrs"].get("isotune_worker") == f"slurm-{job}-1"
                        and t["intermediate_values"]
                    ):
                        return t
                return None

            doomed = wait_for(mid_trial, 240, "task 1 in the middle of a trial")
            cluster.run("scancel", f"{job}_1")
            wait_for(lambda: f"{job}_1" not in cluster.tasks(job), 60, "task 1 to end")
            wait_for(lambda: not cluster.tasks(job), 400, "the array to finish the study")
            trials = c.trials("slurm", limit=1000)["trials"]
            after = c.claim("slurm", "late-worker")
    outputs = {p.name: p.read_text() for p in logs.glob("*.out")}
    assert len(outputs) == 2, outputs
    cancelled = next(text for name, text in outputs.items() if name.endswith("_1.out"))
    assert "given back for a retry" in cancelled, cancelled[-2000:]
    given_back = next(t for t in trials if t["number"] == doomed["number"])
    assert given_back["state"] == "FAIL", given_back
    assert given_back["user_attrs"]["isotune_fail"] == "worker stopped (signal)"
    # the same parameters ran again, to the end, by the task that was not cancelled
    later = [t for t in trials if t["number"] > doomed["number"]]
    again = [t for t in later if t["params"] == doomed["params"]]
    assert [t["state"] for t in again] == ["COMPLETE"], again
    assert again[0]["user_attrs"]["isotune_worker"] == f"slurm-{job}-0"
    # the budget completed; nothing left running or waiting; the study says it is done
    assert sum(t["state"] == "COMPLETE" for t in trials) == budget, json.dumps(trials)[:3000]
    assert not [t for t in trials if t["state"] in ("RUNNING", "WAITING")]
    assert after["status"] == "done", after  # a worker arriving now is told to go home
    assert os.path.exists(logs / "slurm.sbatch")
