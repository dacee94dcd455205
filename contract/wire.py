"""The shapes that travel between the service and its workers (Pydantic models).

The server declares them as its routes' bodies and response models (so ``/openapi.json``
describes them); the worker reads its assignments with :class:`TrialAssignment`. Request bodies
refuse unknown fields and NUL characters (PostgreSQL text cannot hold U+0000), naming the field.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "ClaimRequest",
    "ClaimResponse",
    "CompleteRequest",
    "FailRequest",
    "HeartbeatRequest",
    "HeartbeatResponse",
    "ReportPoint",
    "ReportRequest",
    "ReportResponse",
    "Strict",
    "TrialAssignment",
    "TrialOutcome",
    "WorkerRef",
    "finite",
]


def _nul_at(data: object) -> str | None:
    """Where a string (or a key) holds a NUL character, as a dotted path; None if nowhere.
    Iterative: a deeply nested body cannot exhaust the stack."""
    todo: list[tuple[str, object]] = [("", data)]
    while todo:
        path, value = todo.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return path or "value"
        elif isinstance(value, dict):
            for k, v in value.items():
                sub = f"{path}.{k}" if path else str(k)
                if isinstance(k, str) and "\x00" in k:
                    return sub
                todo.append((sub, v))
        elif isinstance(value, list | tuple):
            todo.extend((f"{path}[{i}]", v) for i, v in enumerate(value))
    return None


class Strict(BaseModel):
    """A request body: unknown fields refused, no NUL character anywhere."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        # PostgreSQL text cannot hold U+0000: refuse it here, on every backend, naming the field
        where = _nul_at(data)
        if where is not None:
            raise ValueError(f"{where}: text must not contain NUL characters (U+0000)")
        return data


def finite(name: str, v: float | None) -> float | None:
    if v is not None and not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    return v


class ClaimRequest(Strict):
    worker_id: Annotated[str, Field(min_length=1, max_length=200)]
    capabilities: dict[str, Any] = Field(default_factory=dict)


class TrialAssignment(BaseModel):
    """A trial handed to a worker: what to train (the study's cell, task and training options,
    then the trial's parameters), its attempt, its lease, and the theory's numbers for it."""

    study: str
    trial_id: int
    number: int
    params: dict[str, Any]
    task: dict[str, Any]
    cell: str
    training: dict[str, Any]
    direction: str
    attempt: int
    lease_expires: str
    lease_seconds: float
    theory: dict[str, Any] | None = None


class ClaimResponse(BaseModel):
    """``assigned`` with a trial; ``wait`` (the budget is out but trials still run) or ``done``."""

    status: Literal["assigned", "wait", "done"]
    trial: TrialAssignment | None = None


class WorkerRef(Strict):
    worker_id: Annotated[str, Field(min_length=1, max_length=200)]


class HeartbeatRequest(WorkerRef):
    pass


class ReportPoint(Strict):
    step: Annotated[int, Field(ge=0, le=2**31 - 1)]
    value: float

    @field_validator("value")
    @classmethod
    def _value(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError(f"value must be finite, got {v}")
        return v


class ReportRequest(WorkerRef):
    values: Annotated[list[ReportPoint], Field(min_length=1, max_length=1000)]


class HeartbeatResponse(BaseModel):
    """A renewed lease: when it now expires (ISO 8601, UTC)."""

    lease_expires: str


class ReportResponse(BaseModel):
    """Whether the pruner stops the trial, and the trial's state as recorded."""

    prune: bool
    state: str


class TrialOutcome(BaseModel):
    """What a completion or failure recorded (a repeated call answers the same)."""

    trial_id: int
    number: int
    state: str
    value: float | None = None


class CompleteRequest(WorkerRef):
    value: float | None = None
    pruned: bool = False

    @model_validator(mode="after")
    def _check(self) -> CompleteRequest:
        if not self.pruned:
            if self.value is None:
                raise ValueError("value is required unless pruned")
            if not math.isfinite(self.value):
                raise ValueError(f"value must be finite, got {self.value}")
        return self


class FailRequest(WorkerRef):
    reason: Annotated[str, Field(max_length=2000)] = ""
    retry: bool = False
