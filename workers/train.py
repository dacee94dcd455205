"""The training loop a worker runs: one task, one model, one initialization, one seed.

:func:`train` takes a :class:`TrainConfig`, builds the task (:mod:`workers.tasks`) and the model
(:mod:`workers.models`), trains it and returns a :class:`TrainResult`: the learning curve, the final
test metrics and the resolved configuration (the initialization's hyperparameters and their
mean-field memory time ξ_C included), all JSON-ready.

Every ``eval_every`` steps it evaluates on a fixed test set and calls ``callback(report)``; a
callback returning ``False`` stops the run (a pruned trial). Runs are reproducible: the model's
weights, the training batches and the test set come from generators seeded by ``seed``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from numbers import Integral
from typing import Any

import torch
from torch import nn

from contract.training import INT_OPTIONS, OPTIMIZERS, TrainError, check_option
from meanfield import Config, Inputs, MeanFieldError, memory_time_scale
from meanfield.critical import DEFAULT_C
from workers.models import build_model
from workers.tasks import make_task

__all__ = ["OPTIMIZERS", "TrainConfig", "TrainError", "TrainResult", "pick_device", "train"]

#: Offset of the test set's seed from the run's seed (the test set never overlaps training batches
#: for generated tasks, and is the dataset's held-out split for real ones).
TEST_SEED_OFFSET = 1_000_003


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run.

    ``init`` is ``"default"`` (PyTorch's own initialization), ``"critical"`` (the mean-field recipe
    for the task's bridge T, docs/theory.md §5) or a mapping of initialization hyperparameters in
    the engine's flat names (``{"mu_f": 4.0, "nu": 1.0}``).
    """

    task: str = "copy"
    T: int = 100
    cell: str = "lstm"
    hidden: int = 128
    init: str | Mapping[str, float] = "critical"
    weights: str = "orthogonal"
    c: float = DEFAULT_C
    optimizer: str = "adam"
    lr: float = 1e-3
    batch_size: int = 64
    steps: int = 500
    clip: float | None = 1.0
    eval_every: int = 50
    eval_size: int = 512
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    task_options: Mapping[str, Any] = field(default_factory=dict)

    def validate(self) -> TrainConfig:
        """Check every setting (the rules of :mod:`contract.training`, which the server also
        applies to a study's ``training``) and the device; raises :class:`TrainError`."""
        if isinstance(self.T, bool) or not isinstance(self.T, Integral) or self.T < 1:
            raise TrainError("T", self.T, "must be a positive integer")
        for name in (*INT_OPTIONS, "lr", "clip", "optimizer", "init", "weights", "c"):
            check_option(name, getattr(self, name))
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise TrainError("device", self.device, "choose auto, cpu, cuda or cuda:N")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise TrainError("device", self.device, "CUDA is not available on this machine")
        if self.threads is not None:
            bad = isinstance(self.threads, bool) or not isinstance(self.threads, Integral)
            if bad or self.threads < 1:
                raise TrainError("threads", self.threads, "must be a positive integer")
        return self

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["init"] = self.init if isinstance(self.init, str) else dict(self.init)
        d["task_options"] = dict(self.task_options)
        return d


@dataclass
class TrainResult:
    """Outcome of a run. ``curve`` rows: step, train loss (mean since the previous report), test
    loss, test accuracy, seconds elapsed. ``init_params`` are the initialization's resolved
    hyperparameters (None for PyTorch's default) and ``xi_c`` their mean-field memory time for the
    task's input statistics."""

    config: dict[str, Any]
    task: dict[str, Any]
    device: str
    init_params: dict[str, float] | None
    xi_c: float | None
    curve: list[dict[str, float]]
    final: dict[str, float]
    stopped: str  # "completed", "callback" (pruned) or "diverged"
    seconds: float
    steps_per_second: float

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if out["xi_c"] is not None and math.isinf(out["xi_c"]):
            out["xi_c"] = "inf"
        return out


def pick_device(requested: str = "auto") -> torch.device:
    """CUDA when present (``auto``), else CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def _optimizer(name: str, params: Any, lr: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=0.9)


def _loss(kind: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if kind == "ce":
        return nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
    return nn.functional.mse_loss(out, y)


#: Flush denormal floats to zero while training (where the CPU can). An untrainable run's
#: vanishing signals fill the backward pass with them, which slows CPU arithmetic several-fold;
#: values below ~1e-38 change no result (``benchmarks/train_speed.py`` measures both).
FLUSH_DENORMAL = True


def train(
    cfg: TrainConfig,
    callback: Callable[[dict[str, float]], bool | None] | None = None,
    *,
    progress: bool = False,
) -> TrainResult:
    """Train one model; see the module docstring. ``progress`` shows a progress bar on stderr."""
    cfg.validate()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    torch.set_flush_denormal(FLUSH_DENORMAL)
    device = pick_device(cfg.device)
    task = make_task(cfg.task, cfg.T, seed=cfg.seed, **dict(cfg.task_options))
    spec = task.spec
    inputs = Inputs(R=spec.R, regime=spec.regime, R_ab=spec.R_ab)
    model, init_cfg = build_model(
        cfg.cell,
        spec.input_size,
        cfg.hidden,
        spec.n_outputs,
        output_steps=spec.output_steps,
        init=cfg.init,
        T=spec.T,
        inputs=inputs,
        weights=cfg.weights,
        seed=cfg.seed,
        c=cfg.c,
    )
    init_params, xi_c = _describe_init(init_cfg, inputs)
    model.to(device)
    opt = _optimizer(cfg.optimizer, model.parameters(), cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    test_gen = torch.Generator().manual_seed(cfg.seed + TEST_SEED_OFFSET)
    x_test, y_test = task.sample(cfg.eval_size, test_gen, split="test")
    x_test, y_test = x_test.to(device), y_test.to(device)

    def evaluate() -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            out = model(x_test)
            loss = float(_loss(spec.loss, out, y_test))
            acc = float(task.accuracy(out, y_test))
        model.train()
        return loss, acc

    curve: list[dict[str, float]] = []
    stopped = "completed"
    start = time.perf_counter()
    running, count = 0.0, 0
    bar = _progress(cfg.steps, enabled=progress)
    try:
        for step in range(1, cfg.steps + 1):
            x, y = task.sample(cfg.batch_size, gen, split="train")
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = _loss(spec.loss, model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            opt.step()
            value = float(loss.detach())
            running, count = running + value, count + 1
            bar(step)
            if not math.isfinite(value):
                stopped = "diverged"
            if step % cfg.eval_every == 0 or step == cfg.steps or stopped == "diverged":
                test_loss, test_acc = evaluate()
                row = {
                    "step": step,
                    "train_loss": running / count,
                    "test_loss": test_loss,
                    "test_accuracy": test_acc,
                    "seconds": time.perf_counter() - start,
                }
                curve.append(row)
                running, count = 0.0, 0
                if stopped == "diverged":
                    break
                if callback is not None and callback(dict(row)) is False:
                    stopped = "callback"
                    break
    finally:
        bar(None)
    seconds = time.perf_counter() - start
    last = curve[-1]
    final = {
        "test_loss": last["test_loss"],
        "test_accuracy": last["test_accuracy"],
        "best_test_accuracy": max(r["test_accuracy"] for r in curve),
        "chance_accuracy": float(task.chance),
        "steps": last["step"],
    }
    return TrainResult(
        config=cfg.to_dict(),
        task=_spec_dict(spec),
        device=str(device),
        init_params=init_params,
        xi_c=xi_c,
        curve=curve,
        final=final,
        stopped=stopped,
        seconds=seconds,
        steps_per_second=last["step"] / seconds if seconds > 0 else float("nan"),
    )


def _describe_init(
    cfg: Config | None, inputs: Inputs
) -> tuple[dict[str, float] | None, float | None]:
    if cfg is None:
        return None, None
    params = {k: float(v) for k, v in cfg.to_flat_dict().items()}
    try:
        xi, _ = memory_time_scale(cfg, inputs)
    except MeanFieldError:  # pragma: no cover - the config was validated when it was built
        return params, None
    return params, float(xi)


def _spec_dict(spec: Any) -> dict[str, Any]:
    d = asdict(spec)
    d["options"] = dict(d.get("options") or {})
    return d


def _progress(total: int, *, enabled: bool) -> Callable[[int | None], None]:
    """A progress bar on stderr (rich), or a no-op. Call with a step; with None to close."""
    if not enabled:
        return lambda step: None
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    prog = Progress(
        TextColumn("training"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TimeRemainingColumn(),
        transient=True,
        console=Console(stderr=True),
    )
    prog.start()
    tid = prog.add_task("train", total=total)

    def update(step: int | None) -> None:
        if step is None:
            prog.stop()
        else:
            prog.update(tid, completed=step)

    return update
