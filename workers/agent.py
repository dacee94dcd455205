"""The worker loop: pull a trial over REST, train it, report, complete or fail; repeat.

A worker claims from one or more studies in turn (``study`` list), and for each trial handed out:

1. builds a :class:`~workers.train.TrainConfig` from the assignment: the study's ``training``
   settings, then the trial's parameters: initialization hyperparameters (flat names of
   :class:`meanfield.Config`: ``mu_f``, ``nu``…) become the model's initialization, the others
   (``lr``, ``hidden``, ``batch_size``…) override training settings of the same name;
2. trains, reporting the test metric at every evaluation (test accuracy for a maximized study, test
   loss for a minimized one) and stopping when the server says prune;
3. completes the trial with the final metric, or marks it pruned, or fails it with the reason
   (a diverged loss, an error);
4. meanwhile a thread renews the lease (heartbeat) every third of its length.

SIGTERM, SIGINT or SIGUSR1: the current evaluation's report goes out, the trial is given back for
a retry, and the worker exits. While the server is unreachable the client backs off and retries
(up to ``retry_seconds``). One progress line per trial goes to stdout.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from contract.client import ApiError, Client, Unreachable
from contract.tasks import TaskError
from contract.training import TrainError, resolve_settings
from contract.wire import TrialAssignment
from meanfield.params import is_init
from workers.train import TrainConfig, train

__all__ = ["WorkerOptions", "run_worker", "train_config"]


@dataclass
class WorkerOptions:
    server: str
    studies: list[str]
    token: str | None = None
    worker_id: str = ""
    device: str = "auto"
    threads: int | None = None
    max_trials: int | None = None
    poll_seconds: float = 2.0
    retry_seconds: float = 600.0

    def __post_init__(self) -> None:
        if not self.worker_id:
            self.worker_id = f"{socket.gethostname()}-{os.getpid()}"
        if not self.studies:
            raise TrainError("study", self.studies, "name at least one study to work on")
        if self.max_trials is not None and self.max_trials < 1:
            raise TrainError("max_trials", self.max_trials, "must be at least 1")


def train_config(
    assignment: dict[str, Any] | TrialAssignment,
    *,
    device: str = "auto",
    threads: int | None = None,
) -> TrainConfig:
    """The training run an assignment (the claim's ``trial``) stands for: the study's
    ``training`` options, then the trial's parameters (``contract.training.resolve_settings``)."""
    a = TrialAssignment.model_validate(assignment)
    settings = resolve_settings(a.training, a.params, a.number, is_init)
    return TrainConfig(
        task=str(a.task["name"]),
        T=int(a.task["T"]),
        task_options=dict(a.task.get("options") or {}),
        cell=a.cell,
        device=device,
        threads=threads,
        **settings,
    ).validate()


class _Stop:
    """Set by SIGTERM, SIGINT or SIGUSR1 (SLURM's warning before a time limit, ``--signal``);
    the training callback and the claim loop look at it."""

    def __init__(self) -> None:
        self.event = threading.Event()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        wanted = [signal.SIGTERM, signal.SIGINT]
        if hasattr(signal, "SIGUSR1"):  # not on Windows
            wanted.append(signal.SIGUSR1)
        previous = {s: signal.getsignal(s) for s in wanted}

        def handler(signum: int, _frame: object) -> None:
            self.event.set()

        for s in previous:
            signal.signal(s, handler)
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def run_worker(opts: WorkerOptions, log: Callable[[str], None] = print) -> dict[str, int]:
    """Work until every study is done, ``max_trials`` trials ran, or a signal; returns counts of
    the trials' outcomes."""
    check_device(opts.device)  # before any claim: a node without CUDA must not burn a budget
    stop = _Stop()
    counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0, "released": 0}
    pending = list(opts.studies)
    client = Client(
        opts.server,
        opts.token,
        retry_seconds=opts.retry_seconds,
        stop=stop.event,
        on_retry=lambda line: log(f"worker {opts.worker_id}: {line}"),
    )
    with stop.installed(), client as c:
        c.first_contact()  # a wrong URL fails here, in seconds
        log(f"worker {opts.worker_id}: studies {', '.join(pending)} on {c.server}")
        turn, streak = 0, 0
        while pending and not stop.event.is_set():
            if opts.max_trials is not None and sum(counts.values()) >= opts.max_trials:
                break
            waiting = 0
            for _ in range(len(pending)):
                study = pending[turn % len(pending)]
                turn += 1
                mark = (time.perf_counter(), c.seconds, c.calls)
                try:
                    got = c.claim(study, opts.worker_id, {"device": opts.device})
                except Unreachable:
                    if stop.event.is_set():  # Ctrl-C while the server was away
                        break
                    raise
                if got["status"] == "done":
                    pending.remove(study)
                    log(f"worker {opts.worker_id}: study {study} is done")
                    break
                if got["status"] == "wait":
                    waiting += 1
                    continue
                outcome = _run_trial(c, opts, got["trial"], stop, log, mark)
                streak = streak + 1 if outcome == ENVIRONMENT else 0
                counts["released" if outcome == ENVIRONMENT else outcome] += 1
                if streak >= ENVIRONMENT_LIMIT:
                    raise TrainError(
                        "device",
                        opts.device,
                        f"{streak} trials in a row failed for a reason of this machine (given "
                        "back for other workers); stopping. See the lines above",
                    )
                break
            else:
                if waiting:  # every study has its budget out while trials still run
                    stop.event.wait(opts.poll_seconds)
    log(f"worker {opts.worker_id}: stopped; {counts}")
    return counts


#: The outcome of a trial given back for a reason of this machine (device, memory, data files).
ENVIRONMENT = "environment"
#: Trials in a row given back for such a reason before the worker stops.
ENVIRONMENT_LIMIT = 3


def check_device(device: str) -> None:
    """Refuse a device this machine does not have (:class:`TrainError` naming it)."""
    import torch

    if not device.startswith("cuda"):
        return
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        raise TrainError(
            "device", device, f"CUDA is not available here (torch {torch.__version__}, {build}); "
            "use --device cpu, or install a CUDA build of torch (README, GPU workers)",
        )  # fmt: skip
    index = device.partition(":")[2]
    if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
        count = torch.cuda.device_count()
        raise TrainError("device", device, f"this machine has {count} CUDA device(s)")


def _environment(e: BaseException) -> bool:
    """Whether a trial failed for a reason of this machine rather than of its settings: out of
    memory, a device error, or the task's data files missing here."""
    import torch

    if isinstance(e, torch.cuda.OutOfMemoryError | MemoryError | OSError):
        return True
    if isinstance(e, TaskError) and e.field == "data_dir":
        return True
    if isinstance(e, TaskError) and e.field == "factory" and "cannot import" in e.reason:
        return True  # a python task's module is not installed on this machine
    text = str(e)
    return isinstance(e, RuntimeError) and ("CUDA error" in text or "out of memory" in text)


class _Lost(Exception):
    """The trial is no longer this worker's (reaped, finished elsewhere, or its study deleted)."""


def _run_trial(
    c: Client,
    opts: WorkerOptions,
    a: dict[str, Any],
    stop: _Stop,
    log: Callable[[str], None],
    mark: tuple[float, float, int],
) -> str:
    """Train one claimed trial. ``mark`` = (clock, client seconds, client calls) before its claim:
    the outcome's log line says how much of the trial's wall time the training thread spent in
    REST calls (claim, reports, outcome; heartbeats run beside the training and are not counted)."""
    trial_id, wid = a["trial_id"], opts.worker_id

    def rest() -> str:
        wall = time.perf_counter() - mark[0]
        spent, calls = c.seconds - mark[1], c.calls - mark[2]
        return f"; REST {spent:.3f} s in {calls} calls, {100 * spent / wall:.2f}% of {wall:.1f} s"

    head = f"{a['study']} trial {a['number']} (attempt {a['attempt']}) {_short(a['params'])}"
    if stop.event.is_set():  # the signal came during the claim: give the trial straight back
        _give_back(c, trial_id, wid, log, head)
        return "released"
    maximize = a["direction"] == "maximize"
    lost = threading.Event()  # the lease went to someone else: stop, report nothing more
    done = threading.Event()
    beat = threading.Thread(
        target=_heartbeat, args=(opts, trial_id, a["lease_seconds"], done, lost), daemon=True
    )
    pruned = False

    def callback(row: dict[str, float]) -> bool:
        nonlocal pruned
        if lost.is_set():
            return False
        value = row["test_accuracy"] if maximize else row["test_loss"]
        if math.isfinite(value):
            got = _call(lambda: c.report(trial_id, wid, [(int(row["step"]), float(value))]))
            if got["state"] != "RUNNING":  # failed by the reaper, or finished elsewhere
                lost.set()
                return False
            if got["prune"]:
                pruned = True
                return False
        return not stop.event.is_set()

    t0 = time.perf_counter()
    beat.start()
    try:
        try:
            cfg = train_config(a, device=opts.device, threads=opts.threads)
            result = train(cfg, callback)
        except _Lost as e:
            log(f"{head} -> no longer ours ({e})")
            return "FAIL"
        except (ApiError, Unreachable) as e:  # the server, not the training
            _give_back(c, trial_id, wid, log, head, f"server trouble: {e}"[:2000])
            return "released"
        except (TrainError, ValueError, RuntimeError, OSError, MemoryError) as e:
            if _environment(e):  # out of memory, a device error, data files missing here
                why = f"this machine: {type(e).__name__}: {e}"[:2000]
                _give_back(c, trial_id, wid, log, head, why)
                return ENVIRONMENT
            reason = f"{type(e).__name__}: {e}"[:2000]  # bad settings, ...
            _finish(c, log, lambda: c.fail(trial_id, wid, reason))
            log(f"{head} -> FAIL ({reason})")
            return "FAIL"
        seconds = time.perf_counter() - t0
        if lost.is_set():
            log(f"{head} -> lease lost after {seconds:.0f} s")
            return "FAIL"
        if stop.event.is_set() and not pruned and result.stopped == "callback":
            _give_back(c, trial_id, wid, log, head)
            return "released"
        final = result.final
        metric = final["test_accuracy"] if maximize else final["test_loss"]
        tail = f"{final['steps']} steps, {seconds:.1f} s"
        if result.stopped == "diverged":
            why = f"diverged: the loss was not finite by step {final['steps']}"
            _finish(c, log, lambda: c.fail(trial_id, wid, why))
            log(f"{head} -> FAIL (diverged; {tail})")
            return "FAIL"
        if pruned:
            _finish(c, log, lambda: c.complete(trial_id, wid, None, pruned=True))
            log(f"{head} -> PRUNED at {metric:.3f} ({tail}{rest()})")
            return "PRUNED"
        if not math.isfinite(metric):
            _finish(c, log, lambda: c.fail(trial_id, wid, f"final metric is {metric}"))
            log(f"{head} -> FAIL (metric {metric})")
            return "FAIL"
        _finish(c, log, lambda: c.complete(trial_id, wid, float(metric)))
        log(f"{head} -> COMPLETE {metric:.3f} ({tail}{rest()})")
        return "COMPLETE"
    finally:
        done.set()
        beat.join(timeout=30)


def _call(request: Callable[[], Any]) -> Any:
    """A request about the worker's trial: 404/409 mean the trial is no longer ours."""
    try:
        return request()
    except ApiError as e:
        if e.status in (404, 409):
            raise _Lost(f"HTTP {e.status}: {e.detail}") from None
        raise


def _finish(c: Client, log: Callable[[str], None], request: Callable[[], Any]) -> None:
    """Complete or fail; an answer that does not come (after the client's retries) is logged:
    the lease then expires and the trial is retried elsewhere."""
    try:
        request()
    except (ApiError, Unreachable) as e:
        log(f"could not record the outcome ({e}); the lease will expire and the trial retried")


def _give_back(
    c: Client,
    trial_id: int,
    wid: str,
    log: Callable[[str], None],
    head: str,
    why: str = "worker stopped (signal)",
) -> None:
    _finish(c, log, lambda: c.fail(trial_id, wid, why, retry=True))
    log(f"{head} -> given back for a retry ({why})")


def _heartbeat(
    opts: WorkerOptions, trial_id: int, lease: float, done: threading.Event, lost: threading.Event
) -> None:
    with Client(opts.server, opts.token, retry_seconds=max(1.0, lease / 3)) as c:
        while not done.wait(max(0.5, lease / 3)):
            try:
                c.heartbeat(trial_id, opts.worker_id)
            except ApiError as e:
                if e.status in (404, 409):  # expired and handed on, or the study deleted
                    lost.set()
                    return
            except Exception:  # the server unreachable: the next beat tries again
                continue


def _short(params: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    return " ".join(f"{k}={fmt(v)}" for k, v in params.items())
