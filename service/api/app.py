"""The REST API (FastAPI), under ``/api/v1``; its schema at ``/openapi.json``.

:func:`build_app` builds a stateless app from :class:`~service.settings.Settings`: everything it
knows is in the database, so several server processes can serve one PostgreSQL. HTTP status
codes are assigned here and only here: 404 :class:`~service.errors.NotFound`, 409
:class:`~service.errors.Conflict`, 422 :class:`~service.errors.Invalid` and FastAPI's validation
errors, each a JSON ``detail`` naming the field; 401/403 a missing or insufficient token
(``service.api.deps``); 413 a body over the limit (``service.api.middleware``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from service.api.deps import TokenCache
from service.api.middleware import BodyLimit, finite_json
from service.api.routes import ops, studies, workers
from service.core import Service
from service.db import is_sqlite, make_engine, optuna_storage, session_factory
from service.errors import Conflict, Invalid, NotFound
from service.metrics import Timing
from service.migrate import upgrade
from service.settings import Settings
from service.store import Store

__all__ = ["build_app", "create_app"]

log = logging.getLogger("isotune.service")


def create_app(database_url: str, *, auth: bool = True, migrate: bool = True) -> FastAPI:
    """The API over ``database_url`` with the default settings; ``auth=False`` (local
    development) accepts every request."""
    return build_app(Settings(database_url=database_url, auth=auth, migrate=migrate))


#: Where /docs and /redoc load their scripts and styles from (this server, not a CDN).
DOCS_ASSETS = "/docs-assets"


def _docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` with their files served by this server, so they work
    on a machine without internet. Like ``/openapi.json`` they are public: they describe the
    API and hold no data; every ``/api/v1`` route but health and readiness needs a token."""
    from pathlib import Path

    import fastapi_offline
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles

    static = Path(fastapi_offline.__file__).parent / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=static), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title="isotune API",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title="isotune API",
            redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )


def build_app(settings: Settings) -> FastAPI:
    """The API as ``settings`` say (``isotune serve`` calls it once per server process)."""
    url = settings.database_url
    if settings.migrate:
        upgrade(url)
    engine = make_engine(url)
    sqlite = is_sqlite(url)
    # advisory locks need no transaction around them: autocommit saves two round trips a lock
    lock_engine = (
        None
        if sqlite
        else make_engine(url, pool_size=8, max_overflow=56, isolation_level="AUTOCOMMIT")
    )
    store = Store(
        session_factory(engine), optuna_storage(url), sqlite=sqlite, lock_engine=lock_engine
    )
    service = Service(store)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        passes: list[asyncio.Future[int]] = []  # the pass in flight, in its thread

        async def reaper() -> None:
            while True:
                await asyncio.sleep(settings.reap_interval)
                passes[:] = [asyncio.ensure_future(asyncio.to_thread(service.background_pass))]
                try:
                    await asyncio.shield(passes[0])
                except asyncio.CancelledError:
                    raise
                except Exception:  # keep reaping; the next claim reaps as well
                    log.exception("reaper pass failed")

        task = asyncio.create_task(reaper())
        service.leases.refiller.start()  # samples ahead for the studies that pool
        try:
            yield
        finally:
            await asyncio.to_thread(service.leases.refiller.stop)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            # a cancelled task leaves its thread running: let the pass end before the engines
            # are disposed under it (its connection would be collected open)
            for running in passes:
                with contextlib.suppress(Exception):
                    await running
            for e in (engine, lock_engine, getattr(service.store.rdb, "engine", None)):
                if e is not None:
                    e.dispose()

    app = FastAPI(
        title="isotune",
        version="1",
        description="Hyperparameter search for gated RNNs with a mean-field time-scale prior.",
        lifespan=lifespan,
        docs_url=None,  # served below from local files: FastAPI's pages load them from a CDN
        redoc_url=None,
    )
    _docs(app)
    app.state.settings = settings
    app.state.service = service
    app.state.engine = engine
    app.state.tokens = TokenCache(service, settings.token_ttl) if settings.auth else None

    app.add_middleware(
        BodyLimit,
        limit=settings.max_body_bytes,
        larger={"/api/v1/studies/import": settings.max_import_bytes},
    )
    app.add_middleware(Timing)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        # the offending input may be NaN or infinite, which JSON cannot carry: render it as text
        return JSONResponse({"detail": finite_json(jsonable_encoder(e.errors()))}, status_code=422)

    @app.exception_handler(NotFound)
    async def not_found(_: Request, e: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(e), "field": e.field}, status_code=404)

    @app.exception_handler(Invalid)
    async def invalid_spec(_: Request, e: Invalid) -> JSONResponse:
        return JSONResponse({"detail": finite_json(str(e)), "field": e.field}, status_code=422)

    @app.exception_handler(Conflict)
    async def conflict(_: Request, e: Conflict) -> JSONResponse:
        return JSONResponse({"detail": str(e), "field": e.field}, status_code=409)

    for router in (ops.v1, ops.router, studies.router, workers.router):
        app.include_router(router)
    return app
