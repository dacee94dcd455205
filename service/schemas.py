"""Request and response bodies of the REST API (Pydantic), validated before anything is stored.

A search space is data: each parameter is a float, int or categorical distribution. Every
validation error names the field (FastAPI reports it in ``detail[].loc``) and never reaches the
database.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from contract.wire import Strict, finite
from meanfield.errors import MeanFieldError
from meanfield.params import MEMORY_GATE, is_init
from service.states import StudyState

__all__ = [
    "EXPORT_FORMAT",
    "NAME_PATTERN",
    "PRUNERS",
    "SAMPLERS",
    "BestTrial",
    "Distribution",
    "ExportedTrial",
    "PriorSpec",
    "StudyCreate",
    "StudyExport",
    "StudyInfo",
    "TaskRef",
    "TrialInfo",
    "TrialPage",
]

SAMPLERS = ("tpe", "random", "gp", "cmaes", "qmc")
PRUNERS = ("median", "hyperband", "successive_halving", "threshold", "none")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"


class Distribution(Strict):
    """One parameter of the search space."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[str | int | float | bool] | None = None

    @model_validator(mode="after")
    def _check(self) -> Distribution:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical needs a non-empty 'choices' list")
            if self.low is not None or self.high is not None:
                raise ValueError("categorical takes 'choices', not 'low'/'high'")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"{self.type} needs 'low' and 'high'")
        finite("low", self.low)
        finite("high", self.high)
        finite("step", self.step)
        if not self.low < self.high:
            raise ValueError(f"empty or inverted range: low={self.low} >= high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0, got low={self.low}")
        if self.log and self.step is not None:
            raise ValueError("'step' and 'log' cannot be combined")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"step must be > 0, got {self.step}")
        if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("int bounds must be whole numbers")
        if self.type == "int" and self.step is not None and self.step != int(self.step):
            raise ValueError(f"int step must be a whole number, got {self.step}")
        if max(abs(self.low), abs(self.high)) > 1e15:
            raise ValueError("bounds must lie within ±1e15")
        return self


class TaskRef(Strict):
    """The task the workers train on (see ``contract.tasks``)."""

    name: str
    T: Annotated[int, Field(ge=1, le=1_000_000)]
    options: dict[str, Any] = Field(default_factory=dict)


class PriorSpec(Strict):
    """The mean-field prior of a study (see ``service.prior``)."""

    #: unset: :func:`default_mode` (restrict when the space has the memory-gate bias)
    mode: Literal["restrict", "soft", "off"] | None = None
    #: trainability constant of T ≤ c·ξ_C; default: the value the trainability map measured
    c: Annotated[float, Field(gt=0, le=1e6)] | None = None
    #: bounds [lo, hi] on T·log m₁, the log gradient-norm growth over the bridge (restrict only)
    gradient_bounds: tuple[float, float] | None = None
    #: bound on the LSTM cell state's second moment E[c²] at the fixed point, where tanh(c)
    #: saturates (restrict only; docs/theory.md §5.2)
    max_cell_moment: Annotated[float, Field(gt=0, le=1e12)] | None = None
    #: β of the soft prior's weight π(x)^(β/n)
    confidence: Annotated[float, Field(ge=0, le=1e6)] = 10.0
    #: width of the logistic π in log(c·ξ_C/T)
    width: Annotated[float, Field(gt=0, le=100)] = 0.5
    #: what restrict does with a proposal still infeasible after the redraws: ``repair`` raises
    #: its memory-gate bias to the smallest feasible value, ``timescale`` draws a memory time in
    #: the feasible band (log-uniform) and solves for the bias
    strategy: Literal["repair", "timescale"] = "timescale"
    #: proposals of the base sampler the soft prior chooses among
    candidates: Annotated[int, Field(ge=1, le=256)] = 8
    #: learn c from the study's outcomes (``service.calibration``); false: the fixed c
    calibrate: bool = True
    #: restrict hands out points whose probability of training is at least this
    p_min: Annotated[float, Field(gt=0, lt=1)] = 0.5
    #: the value from which a completed trial counts as trained (default: halfway from the
    #: task's chance level to perfect on the study's metric)
    trained: float | None = None
    #: where the calibration starts: ``none`` (the rule), ``same_task`` (every other study of
    #: the store with this cell and task), or a list of study names; their outcomes fit the
    #: model this study's own outcomes then update
    calibrate_from: (
        Literal["none", "same_task"] | list[Annotated[str, Field(pattern=NAME_PATTERN)]]
    ) = "none"

    @field_validator("gradient_bounds")
    @classmethod
    def _bounds(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None:
            lo, hi = v
            finite("gradient_bounds", lo)
            finite("gradient_bounds", hi)
            if not lo < hi:
                raise ValueError(f"empty or inverted range: lo={lo} >= hi={hi}")
        return v


def default_mode(cell: str, space: Mapping[str, object]) -> Literal["restrict", "soft", "off"]:
    """The prior a study gets when its spec names none: ``restrict`` when the space searches the
    cell's memory-gate bias (``mu_f`` for the LSTM: the restriction moves it), ``soft`` when it
    searches other initialization hyperparameters only, ``off`` when it searches none (nothing
    for the theory to say) or the cell has no memory gate."""
    gate = MEMORY_GATE.get(cell)
    if gate is None:
        return "off"
    if f"mu_{gate}" in space:
        return "restrict"

    def init(name: str) -> bool:
        try:
            return is_init(name)
        except MeanFieldError:  # "mu_": refused by name when the space is checked
            return False

    return "soft" if any(init(name) for name in space) else "off"


class StudyCreate(Strict):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    cell: Literal["lstm", "gru", "minimalrnn", "vanilla"]
    task: TaskRef
    space: dict[str, Distribution]
    direction: Literal["maximize", "minimize"] = "maximize"
    sampler: Literal["tpe", "random", "gp", "cmaes", "qmc"] = "tpe"
    pruner: Literal["median", "hyperband", "successive_halving", "threshold", "none"] = "median"
    #: keyword arguments of the Optuna pruner, e.g. ``{"lower": 0.2, "n_warmup_steps": 200}`` for
    #: ``threshold`` (which needs ``lower`` or ``upper``)
    pruner_options: dict[str, float | int | None] = Field(default_factory=dict)

    @field_validator("pruner_options")
    @classmethod
    def _options(cls, v: dict[str, float | int | None]) -> dict[str, float | int | None]:
        for key, value in v.items():
            finite(f"pruner_options.{key}", value)
        return v

    budget: Annotated[int, Field(ge=1, le=100_000)] = 20
    retries: Annotated[int, Field(ge=0, le=10)] = 2
    lease_seconds: Annotated[float, Field(gt=0, le=86_400)] = 120.0
    seed: int | None = None
    training: dict[str, Any] = Field(default_factory=dict)
    prior: PriorSpec = Field(default_factory=PriorSpec)
    #: trials sampled ahead of their claims (``service.pool``): a number, or ``auto`` (one for
    #: every 8 trials running, none below 8, at most 64); 0 samples every trial in its claim
    pool: Annotated[int, Field(ge=0, le=1024)] | Literal["auto"] = "auto"

    @field_validator("pool", mode="before")
    @classmethod
    def _pool(cls, v: Any) -> Any:
        """One message for both forms (pydantic would give one per member of the union)."""
        if v == "auto" or (type(v) is int and 0 <= v <= 1024):
            return v
        raise ValueError(f"an integer from 0 to 1024, or 'auto'; got {v!r}")

    @model_validator(mode="after")
    def _prior_mode(self) -> StudyCreate:
        if self.prior.mode is None:
            self.prior.mode = default_mode(self.cell, self.space)
        return self

    @field_validator("space")
    @classmethod
    def _space(cls, v: dict[str, Distribution]) -> dict[str, Distribution]:
        if not v:
            raise ValueError("the search space needs at least one parameter")
        for key in v:
            if not key or len(key) > 128:
                raise ValueError(f"parameter name {key!r} must have 1 to 128 characters")
        return v


#: The format tag of a study export (``GET /studies/{name}/export``).
EXPORT_FORMAT = "isotune-study/1"


class ExportedTrial(Strict):
    """One trial as exported: enough to rebuild it as an Optuna trial."""

    number: Annotated[int, Field(ge=0)]
    state: Literal["COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING"]
    value: float | None = None
    params: dict[str, Any]
    #: Optuna's JSON form of each parameter's distribution (``distribution_to_json``).
    distributions: dict[str, str]
    intermediate_values: dict[str, float] = Field(default_factory=dict)
    user_attrs: dict[str, Any] = Field(default_factory=dict)
    datetime_start: str | None = None
    datetime_complete: str | None = None

    @field_validator("value")
    @classmethod
    def _value(cls, v: float | None) -> float | None:
        return finite("value", v)

    @field_validator("intermediate_values")
    @classmethod
    def _steps(cls, v: dict[str, float]) -> dict[str, float]:
        for step, value in v.items():
            if not step.isdigit() or int(step) > 2**31 - 1:
                raise ValueError(f"step {step!r} must be a whole number in 0..2**31-1")
            finite(f"intermediate value at step {step}", value)
        return v

    @field_validator("params", "user_attrs")
    @classmethod
    def _finite_json(cls, v: dict[str, Any]) -> dict[str, Any]:
        todo: list[object] = [v]
        while todo:
            x = todo.pop()
            if isinstance(x, float) and not math.isfinite(x):
                raise ValueError(f"must hold finite numbers only, got {x}")
            if isinstance(x, dict):
                todo.extend(x.values())
            elif isinstance(x, list):
                todo.extend(x)
        return v


class StudyExport(Strict):
    """A whole study: its specification and every trial (``isotune study export``)."""

    format: Literal["isotune-study/1"]
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    state: Literal["active", "archived"] = "active"
    exported_at: str | None = None
    spec: dict[str, Any]
    trials: Annotated[list[ExportedTrial], Field(max_length=1_000_000)]


class BestTrial(BaseModel):
    """The best completed trial of a study in its direction."""

    number: int
    trial_id: int
    value: float
    params: dict[str, Any]
    #: the trial's theory numbers (``isotune_theory``: ξ_C, the margin, the initialization…);
    #: None where the study's cell or task has no theory
    theory: dict[str, Any] | None = None


class CalibrationInfo(BaseModel):
    """A study's calibrated criterion (``service.calibration``)."""

    #: the c the prior started from, and the c it hands out from now (P(trained) ≥ p_min)
    c0: float
    c: float
    #: the fitted edge (P = 1/2) and its 68 % interval (None where the posterior has no edge)
    edge: float | None
    low: float | None
    high: float | None
    p_min: float
    #: the study's own outcomes, how many trained, and the value from which a trial trained
    outcomes: int
    trained: int
    threshold: float
    #: the other studies whose outcomes made the prior (``calibrate_from``), and their count
    sources: list[str]
    source_outcomes: int
    #: a restrict study calibrated from other studies gates by its model: the probability of
    #: training it asks of each point, its cell moment s* included (p_min, or lower where under
    #: 2 % of the space reaches p_min); None where it hands out by c
    gate_p: float | None = None


class StudyInfo(BaseModel):
    """A study as the API shows it: its specification, its state and its trials' counts."""

    name: str
    state: StudyState
    spec: dict[str, Any]
    #: trials by Optuna state (every state present, 0 when none)
    counts: dict[str, int]
    n_trials: int
    best: BestTrial | None = None
    #: the calibrated criterion as this server process last fitted it; None before it has, or
    #: with the prior off or ``calibrate: false``
    calibration: CalibrationInfo | None = None


class TrialInfo(BaseModel):
    """One trial: its state, value, parameters (a WAITING trial: those it is queued with),
    attributes (``isotune_theory``, ``isotune_worker``, ``isotune_fail``…) and intermediate
    values by step."""

    trial_id: int
    number: int
    state: str
    value: float | None = None
    params: dict[str, Any]
    user_attrs: dict[str, Any]
    intermediate_values: dict[str, float]
    datetime_start: str | None = None
    datetime_complete: str | None = None


class TrialPage(BaseModel):
    """A page of a study's trials, ``offset`` to ``offset + len(trials)`` of ``total``."""

    total: int
    offset: int
    trials: list[TrialInfo]
