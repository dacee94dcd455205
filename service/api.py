"""The REST API (FastAPI), under ``/api/v1``; its schema at ``/openapi.json``.

``create_app(database_url, auth=True)`` builds a stateless app over one database: everything it
knows is in the database, so several server processes can serve one PostgreSQL. Errors are JSON
with a ``detail`` naming the field: 404 unknown study/trial, 409 a request contradicting the
recorded state, 422 invalid input (FastAPI's validation), 401/403 missing or insufficient token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from optuna.trial import TrialState

from service.auth import ROLE_RANK, lookup_role
from service.core import Conflict, NotFound, Service
from service.db import is_sqlite, make_engine, optuna_storage, session_factory
from service.migrate import upgrade
from service.schemas import (
    ClaimRequest,
    ClaimResponse,
    CompleteRequest,
    FailRequest,
    HeartbeatRequest,
    ReportRequest,
    ReportResponse,
    StudyCreate,
)

__all__ = ["MAX_BODY_BYTES", "create_app"]

log = logging.getLogger("isotune.service")

#: Largest request body accepted (413 beyond).
MAX_BODY_BYTES = 1_000_000
#: Seconds between two passes of the background reaper.
REAP_INTERVAL = 5.0


def create_app(database_url: str, *, auth: bool = True, migrate: bool = True) -> FastAPI:
    """The API over ``database_url``. ``auth=False`` (local development) accepts every request."""
    if migrate:
        upgrade(database_url)
    engine = make_engine(database_url)
    sqlite = is_sqlite(database_url)
    lock_engine = None if sqlite else make_engine(database_url, pool_size=8, max_overflow=56)
    service = Service(
        session_factory(engine),
        optuna_storage(database_url),
        sqlite=sqlite,
        lock_engine=lock_engine,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def reaper() -> None:
            while True:
                await asyncio.sleep(REAP_INTERVAL)
                try:
                    await asyncio.to_thread(_reap_all, service)
                except Exception:  # keep reaping; the next claim reaps as well
                    log.exception("reaper pass failed")

        task = asyncio.create_task(reaper())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            engine.dispose()
            if lock_engine is not None:
                lock_engine.dispose()

    app = FastAPI(
        title="isotune",
        version="1",
        description="Hyperparameter search for gated RNNs with a mean-field time-scale prior.",
        lifespan=lifespan,
    )
    app.state.service = service

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Callable) -> Any:
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > MAX_BODY_BYTES:
            return JSONResponse(
                {"detail": f"body: {size} bytes exceeds the limit of {MAX_BODY_BYTES}"},
                status_code=413,
            )
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        # the offending input may be NaN or infinite, which JSON cannot carry: render it as text
        return JSONResponse({"detail": _finite_json(jsonable_encoder(e.errors()))}, status_code=422)

    @app.exception_handler(NotFound)
    async def not_found(_: Request, e: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(e), "field": e.field}, status_code=404)

    @app.exception_handler(Conflict)
    async def conflict(_: Request, e: Conflict) -> JSONResponse:
        return JSONResponse({"detail": str(e), "field": e.field}, status_code=409)

    def role(minimum: str) -> Callable[..., None]:
        def check(authorization: Annotated[str | None, Header()] = None) -> None:
            if not auth:
                return
            if not authorization or not authorization.startswith("Bearer "):
                raise HTTPException(
                    401, "authorization: a bearer token is required",
                    headers={"WWW-Authenticate": "Bearer"},
                )  # fmt: skip
            with service.sessions() as session:
                got = lookup_role(session, authorization.removeprefix("Bearer ").strip())
            if got is None:
                raise HTTPException(
                    401, "authorization: unknown or revoked token",
                    headers={"WWW-Authenticate": "Bearer"},
                )  # fmt: skip
            if ROLE_RANK[got] < ROLE_RANK[minimum]:
                raise HTTPException(403, f"authorization: role {got} may not do this ({minimum})")

        return check

    reader, worker, admin = Depends(role("reader")), Depends(role("worker")), Depends(role("admin"))
    v1 = "/api/v1"

    @app.get(v1 + "/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(v1 + "/studies", status_code=201, dependencies=[admin])
    def create_study(spec: StudyCreate) -> dict[str, Any]:
        return service.create_study(spec)

    @app.get(v1 + "/studies", dependencies=[reader])
    def list_studies() -> list[dict[str, Any]]:
        return service.list_studies()

    @app.get(v1 + "/studies/{name}", dependencies=[reader])
    def get_study(name: str) -> dict[str, Any]:
        return service.get_study(name)

    @app.post(v1 + "/studies/{name}/archive", dependencies=[admin])
    def archive_study(name: str) -> dict[str, Any]:
        return service.archive_study(name)

    @app.delete(v1 + "/studies/{name}", status_code=204, dependencies=[admin])
    def delete_study(name: str) -> None:
        service.delete_study(name)

    @app.get(v1 + "/studies/{name}/trials", dependencies=[reader])
    def list_trials(
        name: str,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        return service.list_trials(name, offset, limit)

    @app.get(v1 + "/trials/{trial_id}", dependencies=[reader])
    def get_trial(trial_id: int) -> dict[str, Any]:
        return service.get_trial(trial_id)

    @app.post(v1 + "/studies/{name}/claim", dependencies=[worker])
    def claim(name: str, body: ClaimRequest) -> ClaimResponse:
        return service.claim(name, body.worker_id, body.capabilities)

    @app.post(v1 + "/trials/{trial_id}/heartbeat", dependencies=[worker])
    def heartbeat(trial_id: int, body: HeartbeatRequest) -> dict[str, Any]:
        return service.heartbeat(trial_id, body.worker_id)

    @app.post(v1 + "/trials/{trial_id}/report", dependencies=[worker])
    def report(trial_id: int, body: ReportRequest) -> ReportResponse:
        points = [(p.step, p.value) for p in body.values]
        return ReportResponse(**service.report(trial_id, body.worker_id, points))

    @app.post(v1 + "/trials/{trial_id}/complete", dependencies=[worker])
    def complete(trial_id: int, body: CompleteRequest) -> dict[str, Any]:
        state = TrialState.PRUNED if body.pruned else TrialState.COMPLETE
        return service.finish(trial_id, body.worker_id, state, body.value)

    @app.post(v1 + "/trials/{trial_id}/fail", dependencies=[worker])
    def fail(trial_id: int, body: FailRequest) -> dict[str, Any]:
        return service.finish(
            trial_id, body.worker_id, TrialState.FAIL, reason=body.reason, retry=body.retry
        )

    return app


def _finite_json(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: _finite_json(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite_json(v) for v in x]
    return x


def _reap_all(service: Service) -> int:
    return service.reap_all()
