"""What workers call: claim a trial, renew its lease, report, complete or fail it."""

from __future__ import annotations

from fastapi import APIRouter
from optuna.trial import TrialState

from contract.wire import (
    ClaimRequest,
    ClaimResponse,
    CompleteRequest,
    FailRequest,
    HeartbeatRequest,
    HeartbeatResponse,
    ReportRequest,
    ReportResponse,
    TrialOutcome,
)
from service.api.deps import ServiceDep, StudyName, TrialId, Worker

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", dependencies=[Worker])


@router.post("/studies/{name}/claim")
def claim(name: StudyName, body: ClaimRequest, service: ServiceDep) -> ClaimResponse:
    """A trial for the worker: its own active one, a re-enqueued one, or a new proposal;
    ``wait`` when the budget is out but trials still run, ``done`` when the study is over."""
    return service.leases.claim(name, body.worker_id, body.capabilities)


@router.post("/trials/{trial_id}/heartbeat")
def heartbeat(trial_id: TrialId, body: HeartbeatRequest, service: ServiceDep) -> HeartbeatResponse:
    """Renew the worker's lease on the trial (409 if it is no longer the worker's)."""
    return service.leases.heartbeat(trial_id, body.worker_id)


@router.post("/trials/{trial_id}/report")
def report(trial_id: TrialId, body: ReportRequest, service: ServiceDep) -> ReportResponse:
    """Intermediate values; the answer says whether the pruner stops the trial."""
    points = [(p.step, p.value) for p in body.values]
    return service.leases.report(trial_id, body.worker_id, points)


@router.post("/trials/{trial_id}/complete")
def complete(trial_id: TrialId, body: CompleteRequest, service: ServiceDep) -> TrialOutcome:
    """Complete the trial with its value, or mark it pruned; a repeat answers the same."""
    state = TrialState.PRUNED if body.pruned else TrialState.COMPLETE
    return service.leases.finish(trial_id, body.worker_id, state, body.value)


@router.post("/trials/{trial_id}/fail")
def fail(trial_id: TrialId, body: FailRequest, service: ServiceDep) -> TrialOutcome:
    """Fail the trial with a reason; ``retry`` queues its parameters again (within retries)."""
    return service.leases.finish(
        trial_id, body.worker_id, TrialState.FAIL, reason=body.reason, retry=body.retry
    )
