"""End to end: a real ``isotune serve`` and real ``isotune worker`` processes training real models,
on SQLite and on PostgreSQL. Every process is stopped by its process id."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import numpy as np
from test_server import ROOT, server

from meanfield import Config, Inputs, memory_check
from service.client import Client
from service.prior import MEASURED_C

TRAINING = {"hidden": 16, "batch_size": 16, "steps": 200, "eval_every": 20, "eval_size": 64}


def study(name: str, **changes: object) -> dict:
    return {
        "name": name,
        "cell": "lstm",
        "task": {"name": "padded_digits", "T": 20, "options": {"padding": "noise"}},
        "space": {
            "mu_f": {"type": "float", "low": -3.0, "high": 6.0},
            "lr": {"type": "float", "low": 3e-3, "high": 1e-2, "log": True},
        },
        "sampler": "tpe",
        "pruner": "none",
        "budget": 4,
        "seed": 0,
        "lease_seconds": 3,
        "retries": 2,
        "training": TRAINING,
        "prior": {"mode": "restrict"},
        **changes,
    }


@contextlib.contextmanager
def worker(
    base: str, worker_id: str, *studies: str, retry: float = 20
) -> Iterator[subprocess.Popen[str]]:
    """An ``isotune worker`` process; its output goes to a file, returned in ``proc.log``.
    ``retry``: how long it retries an unreachable or failing server."""
    args = [sys.executable, "-m", "cli.main", "worker", "--server", base, "--worker-id", worker_id,
            "--threads", "1", "--device", "cpu", "--retry-seconds", str(retry)]  # fmt: skip
    for s in studies:
        args += ["--study", s]
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
    proc.log = log  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def output(proc: subprocess.Popen[str]) -> str:
    proc.log.seek(0)  # type: ignore[attr-defined]
    return proc.log.read()  # type: ignore[attr-defined]


def running_of(c: Client, name: str, worker_id: str) -> list[dict]:
    return [
        t
        for t in c.trials(name)["trials"]
        if t["state"] == "RUNNING" and t["user_attrs"].get("isotune_worker") == worker_id
    ]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_two_workers_run_restricted_and_pruned_studies_and_survive_a_kill(db_url: str) -> None:
    with server(db_url) as base, Client(base, retry_seconds=10) as c:
        c.create_study(study("restricted", training={**TRAINING, "steps": 600}))
        # every trial of this one is pruned at its first report after 40 steps
        c.create_study(
            study("pruned", budget=2, pruner="threshold", prior={"mode": "off"},
                  pruner_options={"lower": 2.0, "n_warmup_steps": 40})
        )  # fmt: skip
        with (
            worker(base, "doomed", "restricted") as doomed,
            worker(base, "survivor", "restricted", "pruned") as survivor,
        ):
            wait_for(lambda: running_of(c, "restricted", "doomed"), 120, "a trial of 'doomed'")
            [held] = running_of(c, "restricted", "doomed")
            os.kill(doomed.pid, signal.SIGKILL)  # mid-trial: no report, no fail, no heartbeat
            doomed.wait(timeout=10)
            assert survivor.wait(timeout=300) == 0, output(survivor)
            log = output(survivor)
        trials = c.trials("restricted")["trials"]
        pruned = c.trials("pruned")["trials"]

    assert "study restricted is done" in log and "study pruned is done" in log
    # the killed worker's trial failed on its lease and its parameters ran again, to completion
    failed = next(t for t in trials if t["trial_id"] == held["trial_id"])
    assert failed["state"] == "FAIL" and failed["user_attrs"]["isotune_fail"] == "lease expired"
    retry = [
        t for t in trials if t["params"] == held["params"] and t["trial_id"] != failed["trial_id"]
    ]
    assert len(retry) == 1 and retry[0]["state"] == "COMPLETE"
    assert retry[0]["user_attrs"]["isotune_attempt"] == 2
    assert retry[0]["user_attrs"]["isotune_worker"] == "survivor"
    assert sum(t["state"] == "COMPLETE" for t in trials) == 4
    assert not [t for t in trials + pruned if t["state"] in ("RUNNING", "WAITING")]
    # every restricted trial satisfies the criterion, checked by the engine itself
    points = [t["params"] for t in trials]
    cfg = Config.from_flat(
        "lstm", {"mu_f": np.array([p["mu_f"] for p in points])}, weights="orthogonal"
    )
    check = memory_check(cfg, 20, MEASURED_C["lstm"], Inputs(R=1.0, regime="independent"))
    assert check.ok.all()
    assert all(t["user_attrs"]["isotune_theory"]["predicted_trainable"] for t in trials)
    # pruned trials are recorded PRUNED, with their last report as value
    assert [t["state"] for t in pruned] == ["PRUNED", "PRUNED"]
    assert all(t["intermediate_values"] for t in pruned)


def test_sigterm_gives_the_trial_back_and_exits(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'e2e.db'}"
    with server(url) as base, Client(base, retry_seconds=10) as c:
        c.create_study(study("long", budget=1, training={**TRAINING, "steps": 5000}))
        with worker(base, "w", "long") as w:
            wait_for(lambda: running_of(c, "long", "w"), 120, "the worker's trial")
            wait_for(lambda: c.trials("long")["trials"][0]["intermediate_values"], 60, "a report")
            os.kill(w.pid, signal.SIGTERM)
            assert w.wait(timeout=60) == 0, output(w)
            log = output(w)
        trials = c.trials("long")["trials"]
    assert "given back for a retry" in log
    first = trials[0]
    assert (
        first["state"] == "FAIL"
        and first["user_attrs"]["isotune_fail"] == "worker stopped (signal)"
    )
    assert len(trials) == 2 and trials[1]["state"] == "WAITING"  # the same point, queued again
    assert trials[1]["params"] == first["params"]
