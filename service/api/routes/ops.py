"""Liveness, readiness and metrics: what a load balancer and Prometheus ask."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from service.api.deps import Reader
from service.db import DatabaseError, ping
from service.metrics import render

__all__ = ["router", "v1"]

router = APIRouter()
v1 = APIRouter(prefix="/api/v1")


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    """``ready``, or ``unavailable`` with the reason (HTTP 503)."""

    status: str
    detail: str | None = None


@v1.get("/health")
def health() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok")


@v1.get(
    "/ready",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "the database is unreachable"}},
)
def ready(request: Request) -> JSONResponse:
    """Readiness: the database answers (503 with the reason otherwise)."""
    try:
        ping(request.app.state.engine)
    except DatabaseError as e:
        return JSONResponse({"status": "unavailable", "detail": e.reason}, status_code=503)
    return JSONResponse({"status": "ready"})


@router.get(
    "/metrics",
    dependencies=[Reader],
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
def metrics() -> Response:
    """Prometheus metrics (see ``service.metrics``); a reader token when tokens are on."""
    body, content_type = render()
    return Response(body, media_type=content_type)
