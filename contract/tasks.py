"""What the theory needs to know about a long-memory task, computed without torch.

The mean-field prior (``docs/theory.md`` §2.2, "Inputs") sees a task only through a few numbers:
the bridge length ``T`` (steps between the information and the moment it must be recalled), the
input second moment ``R`` during the bridge (mean over input coordinates of E[x²]) and whether two
different examples see independent or identical inputs there (``regime``). This module computes
them from a task name, ``T`` and the task's options in plain Python, so that the study service
can import it without torch; :mod:`workers.tasks` builds the actual data from the same
:class:`TaskSpec`.

Tasks (see :mod:`workers.tasks` for the exact constructions):

- ``copy``: remember ``n_symbols`` symbols over ``T`` blank steps (Hochreiter & Schmidhuber 1997;
  Arjovsky et al. 2016). Blank padding is the same one-hot for everyone: regime ``shared``,
  R = 1/input_size.
- ``adding``: sum the two marked values of a sequence whose markers sit in its first ~10 %
  (Hochreiter & Schmidhuber 1997; Le et al. 2015). Bridge values are fresh U(0, 1) draws:
  regime ``independent``, R = E[u²]/2 = 1/6 (the marker channel is 0 there).
- ``padded_digits``, ``mnist1d``, ``padded_mnist``, ``seq_cifar10``: classify an image / 1-D signal
  fed step by step (``mode="rows"`` or ``"pixels"``; MNIST-1D: 40 steps of 1 input) and followed
  by ``T`` padding steps, zeros (regime ``shared``, R = 0) or N(0, noise_std²) noise (regime
  ``independent``, R = noise_std²). ``padded_mnist`` and ``seq_cifar10`` require ``data_dir``
  (a path on the worker; only :func:`workers.tasks.make_task` looks at it).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from numbers import Integral, Real
from types import MappingProxyType
from typing import Any

from contract.errors import IsotuneError

__all__ = [
    "ADDING_TOLERANCE",
    "TASKS",
    "TaskError",
    "TaskInfo",
    "TaskSpec",
    "adding_window",
    "resolve_options",
    "task_spec",
]

#: An ``adding`` prediction counts as correct when |prediction − target| < ADDING_TOLERANCE.
ADDING_TOLERANCE = 0.04


class TaskError(IsotuneError, ValueError):
    """Invalid task name, bridge length or option.

    Attributes:
        field: the offending argument (``"name"``, ``"T"``, an option name such as ``"data_dir"``).
        value: the value that was rejected.
        reason: what is wrong with it.
    """


@dataclass(frozen=True)
class TaskSpec:
    """The shape of a task and the input statistics of its bridge (docs/theory.md, "Inputs").

    Attributes:
        name: task name, a key of :data:`TASKS`.
        input_size: number of input channels per time step.
        n_outputs: number of classes (``loss="ce"``) or 1 (``loss="mse"``).
        loss: ``"ce"`` (cross-entropy on logits) or ``"mse"``.
        output_steps: how many final time steps the model's output is read at.
        T: bridge length: steps between the information and the moment it must be recalled.
        seq_len: total sequence length.
        R: mean over input coordinates of E[x²] during the bridge.
        regime: ``"independent"`` if two examples see independent inputs during the bridge,
            ``"shared"`` if they see identical inputs.
        options: every option of the task, defaults filled in.
        R_ab: mean over input coordinates of E[x^a x^b] for two different examples a, b during
            the bridge: the cross-moment the two-example theory uses. Defaults to R for ``shared``
            and 0 for ``independent``; the ``adding`` task is the exception (its bridge values are
            independent but not centred: R_ab = E[u]²/2 = 1/8).
    """

    name: str
    input_size: int
    n_outputs: int
    loss: str
    output_steps: int
    T: int
    seq_len: int
    R: float
    regime: str
    options: dict[str, Any] = field(hash=False)
    R_ab: float | None = None

    def __post_init__(self) -> None:
        if self.R_ab is None:
            object.__setattr__(self, "R_ab", self.R if self.regime == "shared" else 0.0)

    @property
    def chance(self) -> float:
        """Accuracy of guessing: 1/n_outputs for classification; for ``adding``, always answering
        the mean 1 (the sum of two U(0, 1) has a triangular law: P(|y − 1| < a) = 2a − a²); a
        python task's own ``chance`` option when it gives one."""
        if self.options.get("chance") is not None:
            return float(self.options["chance"])
        if self.loss == "ce":
            return 1.0 / self.n_outputs
        a = ADDING_TOLERANCE
        return 2 * a - a * a

    @property
    def baseline_loss(self) -> float:
        """Loss of the best input-blind predictor: log(n_outputs) for uniform logits, Var(y) = 1/6
        for ``adding`` (the 0.167 baseline of Le et al. 2015)."""
        if self.loss == "ce":
            return math.log(self.n_outputs)
        return 1.0 / 6.0


@dataclass(frozen=True)
class TaskInfo:
    """A registered task: its description and its options with their defaults.

    An option whose default is ``None`` is required.
    """

    name: str
    description: str
    defaults: Mapping[str, Any]

    def __post_init__(self) -> None:
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))


# --- option validators: each returns the normalized value or raises TaskError ---------------------


def _positive_int(minimum: int) -> Callable[[str, Any], int]:
    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
            raise TaskError(key, value, f"must be an integer >= {minimum}")
        return int(value)

    return check


def _positive_float(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not (0 < value < math.inf):
        raise TaskError(key, value, "must be a finite number > 0")
    return float(value)


def _choice(*allowed: str) -> Callable[[str, Any], str]:
    def check(key: str, value: Any) -> str:
        if value not in allowed:
            raise TaskError(key, value, f"must be one of {', '.join(map(repr, allowed))}")
        return value

    return check


def _directory(key: str, value: Any) -> str:
    if value is None:
        raise TaskError(key, value, "required option: the directory holding the dataset files")
    if not isinstance(value, str | os.PathLike) or not os.fspath(value):
        raise TaskError(key, value, "must be a directory path")
    return os.fspath(value)


_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def _factory(key: str, value: Any) -> str:
    if value is None:
        raise TaskError(key, value, "required option: the factory as 'module:function'")
    if not isinstance(value, str) or not _FACTORY.match(value):
        raise TaskError(key, value, "must be 'module:function' (e.g. mytasks:make)")
    return value


def _args(key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise TaskError(key, value, "must be a mapping of keyword arguments for the factory")
    return dict(value)


def _required(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    def required(key: str, value: Any) -> Any:
        if value is None:
            raise TaskError(key, value, "required option of a python task (isotune task measure)")
        return check(key, value)

    return required


def _optional(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    return lambda key, value: None if value is None else check(key, value)


def _moment(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not (0 <= value < math.inf):
        raise TaskError(key, value, "must be a finite number >= 0")
    return float(value)


def _probability(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not (0 <= value <= 1):
        raise TaskError(key, value, "must be a number in [0, 1]")
    return float(value)


_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "n_symbols": _positive_int(1),
    "alphabet": _positive_int(2),
    "mode": _choice("rows", "pixels"),
    "padding": _choice("zeros", "noise"),
    "noise_std": _positive_float,
    "num_samples": _positive_int(100),
    "data_dir": _directory,
    # a python task (docs: README "Your own task")
    "factory": _factory,
    "args": _args,
    "input_size": _required(_positive_int(1)),
    "n_outputs": _required(_positive_int(1)),
    "loss": _choice("ce", "mse"),
    "output_steps": _positive_int(1),
    "prefix": _positive_int(0),
    "suffix": _positive_int(0),
    "R": _required(_moment),
    "regime": _required(_choice("independent", "shared")),
    "R_ab": _optional(_moment),
    "chance": _optional(_probability),
}

_PADDED = {"padding": "zeros", "noise_std": 1.0}

TASKS: Mapping[str, TaskInfo] = MappingProxyType(
    {
        info.name: info
        for info in (
            TaskInfo(
                "copy",
                "remember n_symbols symbols over T blank steps",
                {"n_symbols": 5, "alphabet": 8},
            ),
            TaskInfo("adding", "sum of two marked U(0,1) values, T steps back", {}),
            TaskInfo(
                "padded_digits",
                "sklearn 8x8 digits, then T padding steps",
                {"mode": "rows", **_PADDED},
            ),
            TaskInfo(
                "mnist1d",
                "MNIST-1D (40 steps, generated locally), then T padding steps",
                {"num_samples": 4000, **_PADDED},
            ),
            TaskInfo(
                "padded_mnist",
                "MNIST 28x28 (IDX files), then T padding steps",
                {"data_dir": None, "mode": "rows", **_PADDED},
            ),
            TaskInfo(
                "seq_cifar10",
                "CIFAR-10 (python pickles), then T padding steps",
                {"data_dir": None, "mode": "rows", **_PADDED},
            ),
            TaskInfo(
                "python",
                "your own task: a factory 'module:function' the worker imports, with its shape "
                "and the input statistics of its bridge (isotune task measure finds them)",
                {
                    "factory": None,
                    "args": {},
                    "input_size": None,
                    "n_outputs": None,
                    "loss": "ce",
                    "output_steps": 1,
                    "prefix": 0,
                    "suffix": 0,
                    "R": None,
                    "regime": None,
                    "R_ab": None,
                    "chance": None,
                },
            ),
        )
    }
)

# Steps and inputs per step of the dataset tasks' own sequence, by mode.
_DATA_SHAPES: dict[str, dict[str, tuple[int, int]]] = {
    "padded_digits": {"rows": (8, 8), "pixels": (64, 1)},
    "mnist1d": {"rows": (40, 1)},
    "padded_mnist": {"rows": (28, 28), "pixels": (784, 1)},
    "seq_cifar10": {"rows": (32, 96), "pixels": (1024, 3)},
}


def adding_window(T: int) -> int:
    """Marker window W = max(2, ⌊T/9⌋): both markers lie in steps [0, W), at most 10 % of the
    sequence (W/(W + T) ≤ 1/10 once T ≥ 18), and seq_len = W + T."""
    return max(2, T // 9)


def resolve_options(name: str, **options: Any) -> dict[str, Any]:
    """Validate ``options`` for task ``name`` and fill in the defaults."""
    info = TASKS.get(name) if isinstance(name, str) else None
    if info is None:
        raise TaskError("name", name, f"unknown task; known: {', '.join(TASKS)}")
    resolved = dict(info.defaults)
    for key, value in options.items():
        if key not in resolved:
            known = ", ".join(resolved) or "none"
            raise TaskError(key, value, f"unknown option for task {name!r}; known: {known}")
        resolved[key] = value
    return {key: _CHECKS[key](key, value) for key, value in resolved.items()}


def task_spec(name: str, T: int, **options: Any) -> TaskSpec:
    """The :class:`TaskSpec` of task ``name`` with bridge length ``T`` (torch-free).

    Raises:
        TaskError: unknown task, ``T`` not a positive integer, unknown option or bad option value.
    """
    opts = resolve_options(name, **options)
    if isinstance(T, bool) or not isinstance(T, Integral) or T < 1:
        raise TaskError("T", T, "must be a positive integer")
    T = int(T)
    if name == "copy":
        n, input_size = opts["n_symbols"], opts["alphabet"] + 2
        return TaskSpec(
            name,
            input_size,
            opts["alphabet"],
            "ce",
            output_steps=n,
            T=T,
            seq_len=2 * n + T,
            R=1.0 / input_size,
            regime="shared",
            options=opts,
        )
    if name == "python":
        return TaskSpec(
            name,
            opts["input_size"],
            opts["n_outputs"],
            opts["loss"],
            output_steps=opts["output_steps"],
            T=T,
            seq_len=opts["prefix"] + T + opts["suffix"],
            R=opts["R"],
            regime=opts["regime"],
            options=opts,
            R_ab=opts["R_ab"],
        )
    if name == "adding":
        return TaskSpec(
            name,
            2,
            1,
            "mse",
            output_steps=1,
            T=T,
            seq_len=adding_window(T) + T,
            R=1.0 / 6.0,
            regime="independent",
            options=opts,
            R_ab=1.0 / 8.0,
        )
    steps, input_size = _DATA_SHAPES[name][opts.get("mode", "rows")]
    noise = opts["padding"] == "noise"
    return TaskSpec(
        name,
        input_size,
        10,
        "ce",
        output_steps=1,
        T=T,
        seq_len=steps + T,
        R=opts["noise_std"] ** 2 if noise else 0.0,
        regime="independent" if noise else "shared",
        options=opts,
    )
