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
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from optuna.trial import TrialState
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.auth import ROLE_RANK, lookup_role
from service.core import Conflict, Invalid, NotFound, Service
from service.db import (
    ENV_VAR,
    DatabaseError,
    is_sqlite,
    make_engine,
    optuna_storage,
    ping,
    session_factory,
)
from service.metrics import Timing, render
from service.migrate import upgrade
from service.schemas import (
    NAME_PATTERN,
    ClaimRequest,
    ClaimResponse,
    CompleteRequest,
    FailRequest,
    HeartbeatRequest,
    ReportRequest,
    ReportResponse,
    StudyCreate,
    StudyExport,
    TrialOutcome,
)

__all__ = ["MAX_BODY_BYTES", "app_from_env", "create_app"]

log = logging.getLogger("isotune.service")

#: A trial id in a path (Optuna's ids are 32-bit integers on PostgreSQL).
TrialId = Annotated[int, Path(ge=0, le=2**31 - 1)]
#: A study name in a path: the names studies can have (a 422 naming it otherwise, never a lookup).
StudyName = Annotated[str, Path(pattern=NAME_PATTERN)]
#: Largest request body accepted (413 beyond).
MAX_BODY_BYTES = 1_000_000
#: Larger bodies allowed on some paths: a study import carries every trial.
MAX_IMPORT_BYTES = 256_000_000
#: Seconds between two passes of the background reaper.
REAP_INTERVAL = 5.0
#: Environment variable that tells :func:`app_from_env` whether to check tokens ("0": no).
AUTH_ENV = "ISOTUNE_AUTH"
#: Seconds a token's role is remembered (and a revoked token may still work).
TOKEN_TTL = 5.0


def create_app(database_url: str, *, auth: bool = True, migrate: bool = True) -> FastAPI:
    """The API over ``database_url``. ``auth=False`` (local development) accepts every request."""
    if migrate:
        upgrade(database_url)
    engine = make_engine(database_url)
    sqlite = is_sqlite(database_url)
    # advisory locks need no transaction around them: autocommit saves two round trips a lock
    lock_engine = (
        None
        if sqlite
        else make_engine(database_url, pool_size=8, max_overflow=56, isolation_level="AUTOCOMMIT")
    )
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

    app.add_middleware(
        BodyLimit, limit=MAX_BODY_BYTES, larger={"/api/v1/studies/import": MAX_IMPORT_BYTES}
    )
    app.add_middleware(Timing)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        # the offending input may be NaN or infinite, which JSON cannot carry: render it as text
        return JSONResponse({"detail": _finite_json(jsonable_encoder(e.errors()))}, status_code=422)

    @app.exception_handler(NotFound)
    async def not_found(_: Request, e: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(e), "field": e.field}, status_code=404)

    @app.exception_handler(Invalid)
    async def invalid_spec(_: Request, e: Invalid) -> JSONResponse:
        return JSONResponse({"detail": _finite_json(str(e)), "field": e.field}, status_code=422)

    @app.exception_handler(Conflict)
    async def conflict(_: Request, e: Conflict) -> JSONResponse:
        return JSONResponse({"detail": str(e), "field": e.field}, status_code=409)

    roles = TokenCache(service)

    def role(minimum: str) -> Callable[..., Any]:
        # async: a dependency that is a plain function costs a trip through the thread pool
        async def check(authorization: Annotated[str | None, Header()] = None) -> None:
            if not authorization or not authorization.startswith("Bearer "):
                raise HTTPException(
                    401, "authorization: a bearer token is required",
                    headers={"WWW-Authenticate": "Bearer"},
                )  # fmt: skip
            got = await roles.role(authorization.removeprefix("Bearer ").strip())
            if got is None:
                raise HTTPException(
                    401, "authorization: unknown or revoked token",
                    headers={"WWW-Authenticate": "Bearer"},
                )  # fmt: skip
            if ROLE_RANK[got] < ROLE_RANK[minimum]:
                raise HTTPException(403, f"authorization: role {got} may not do this ({minimum})")

        return check

    if auth:
        reader, worker, admin = (Depends(role(r)) for r in ("reader", "worker", "admin"))
    else:  # local development: no check
        reader = worker = admin = Depends(_anyone)
    v1 = "/api/v1"

    @app.get(v1 + "/health")
    def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get(v1 + "/ready", responses={503: {"description": "the database is unreachable"}})
    def ready() -> JSONResponse:
        """Readiness: the database answers (503 with the reason otherwise)."""
        try:
            ping(engine)
        except DatabaseError as e:
            return JSONResponse({"status": "unavailable", "detail": e.reason}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", dependencies=[reader], response_class=Response)
    def metrics() -> Response:
        """Prometheus metrics (see ``service.metrics``); a reader token when tokens are on."""
        body, content_type = render()
        return Response(body, media_type=content_type)

    @app.post(v1 + "/studies", status_code=201, dependencies=[admin])
    def create_study(spec: StudyCreate) -> dict[str, Any]:
        return service.create_study(spec)

    @app.get(v1 + "/studies", dependencies=[reader])
    def list_studies() -> list[dict[str, Any]]:
        return service.list_studies()

    @app.get(v1 + "/studies/{name}", dependencies=[reader])
    def get_study(name: StudyName) -> dict[str, Any]:
        return service.get_study(name)

    @app.post(v1 + "/studies/{name}/archive", dependencies=[admin])
    def archive_study(name: StudyName) -> dict[str, Any]:
        return service.archive_study(name)

    @app.delete(v1 + "/studies/{name}", status_code=204, dependencies=[admin])
    def delete_study(name: StudyName) -> None:
        service.delete_study(name)

    @app.get(v1 + "/studies/{name}/trials", dependencies=[reader])
    def list_trials(
        name: StudyName,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        return service.list_trials(name, offset, limit)

    @app.get(
        v1 + "/studies/{name}/prior.png",
        dependencies=[reader],
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}},
    )
    def prior_png(name: StudyName) -> Response:
        """The study's prior map: ξ_C over two initialization hyperparameters, the contour
        ξ_C = T/c and every trial coloured by its outcome."""
        return Response(service.prior_map(name).png, media_type="image/png")

    @app.get(v1 + "/studies/{name}/export", dependencies=[reader])
    def export_study(name: StudyName) -> dict[str, Any]:
        """The study's specification and every trial, as JSON (``isotune study export``)."""
        return service.export_study(name)

    @app.post(
        v1 + "/studies/import",
        status_code=201,
        dependencies=[admin],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _inline_schema(StudyExport)}},
            }
        },
    )
    async def import_study(
        request: Request, name: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None
    ) -> dict[str, Any]:
        """Create a study from an export, under ``name`` (default: the exported name). The body
        (up to 256 MB) is read only after the token is checked, and parsed off the event loop."""
        body = await request.body()

        def parse() -> StudyExport:
            try:
                return StudyExport.model_validate_json(body)
            except ValidationError as e:
                errors = []
                for err in e.errors():
                    err = {**err, "loc": ("body", *err["loc"])}
                    if isinstance(err.get("input"), bytes):  # a body that is not UTF-8 JSON
                        err["input"] = err["input"][:200].decode("utf-8", "replace")
                    errors.append(err)
                raise RequestValidationError(errors) from None

        data = await run_in_threadpool(parse)
        return await run_in_threadpool(service.import_study, data, name)

    @app.get(v1 + "/trials/{trial_id}", dependencies=[reader])
    def get_trial(trial_id: TrialId) -> dict[str, Any]:
        return service.get_trial(trial_id)

    @app.post(v1 + "/studies/{name}/claim", dependencies=[worker])
    def claim(name: StudyName, body: ClaimRequest) -> ClaimResponse:
        return service.claim(name, body.worker_id, body.capabilities)

    @app.post(v1 + "/trials/{trial_id}/heartbeat", dependencies=[worker])
    def heartbeat(trial_id: TrialId, body: HeartbeatRequest) -> dict[str, Any]:
        return service.heartbeat(trial_id, body.worker_id)

    @app.post(v1 + "/trials/{trial_id}/report", dependencies=[worker])
    def report(trial_id: TrialId, body: ReportRequest) -> ReportResponse:
        points = [(p.step, p.value) for p in body.values]
        return ReportResponse(**service.report(trial_id, body.worker_id, points))

    @app.post(v1 + "/trials/{trial_id}/complete", dependencies=[worker])
    def complete(trial_id: TrialId, body: CompleteRequest) -> TrialOutcome:
        state = TrialState.PRUNED if body.pruned else TrialState.COMPLETE
        return service.finish(trial_id, body.worker_id, state, body.value)

    @app.post(v1 + "/trials/{trial_id}/fail", dependencies=[worker])
    def fail(trial_id: TrialId, body: FailRequest) -> TrialOutcome:
        return service.finish(
            trial_id, body.worker_id, TrialState.FAIL, reason=body.reason, retry=body.retry
        )

    return app


def app_from_env() -> FastAPI:
    """The app as each process of ``isotune serve --workers N`` builds it: the database from
    ``ISOTUNE_DATABASE_URL``, tokens checked unless ``ISOTUNE_AUTH=0`` (the parent process has
    migrated the database and refused ``--no-auth`` off loopback)."""
    return create_app(os.environ[ENV_VAR], auth=os.environ.get(AUTH_ENV, "1") != "0", migrate=False)


async def _anyone() -> None:
    return None


class TokenCache:
    """Token → role lookups, each kept for :data:`TOKEN_TTL` seconds: a revoked token stops
    working within that time, and a busy worker does not cost a database read per request."""

    def __init__(self, service: Service, ttl: float = TOKEN_TTL) -> None:
        self.service, self.ttl = service, ttl
        self._seen: dict[str, tuple[str, float]] = {}

    async def role(self, token: str) -> str | None:
        hit = self._seen.get(token)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        got = await asyncio.to_thread(self._lookup, token)
        if got is not None:  # unknown tokens are never cached: a new token works at once
            if len(self._seen) > 10_000:
                self._seen.clear()
            self._seen[token] = (got, time.monotonic() + self.ttl)
        return got

    def _lookup(self, token: str) -> str | None:
        with self.service.sessions() as session:
            return lookup_role(session, token)


class BodyLimit:
    """413 for a request body over ``limit`` bytes: at once when its Content-Length says so,
    else as soon as the bytes received pass the limit (chunked uploads), before it is parsed."""

    def __init__(self, app: ASGIApp, limit: int, larger: dict[str, int] | None = None) -> None:
        self.app, self.limit, self.larger = app, limit, larger or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope["path"], self.limit)
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit() and int(value) > limit:
                await JSONResponse(self._detail(value.decode(), limit), status_code=413)(
                    scope, receive, send
                )
                return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:  # FastAPI answers an HTTPException raised here
                    raise HTTPException(413, self._detail(f"over {limit}", limit)["detail"])
            return message

        await self.app(scope, limited, send)

    def _detail(self, size: str, limit: int) -> dict[str, str]:
        return {"detail": f"body: {size} bytes exceeds the limit of {limit}"}


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema with its ``$defs`` inlined (for a request body declared by hand)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(x: Any) -> Any:
        if isinstance(x, dict):
            ref = x.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in x.items()}
        if isinstance(x, list):
            return [inline(v) for v in x]
        return x

    return inline(schema)


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
