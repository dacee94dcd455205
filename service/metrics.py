"""Prometheus metrics of the service (``GET /metrics``).

- ``isotune_claims_total{study, status}``: claims answered (assigned, wait, done);
- ``isotune_trials_finished_total{study, state}``: trials completed, pruned or failed through
  the API;
- ``isotune_lease_expiries_total{study}``: leases the reaper expired;
- ``isotune_request_seconds{method, route, status}``: request latency (histogram).

With several server processes (``isotune serve --workers N``) each process writes its values to
``PROMETHEUS_MULTIPROC_DIR``, which ``serve`` sets to a fresh directory, and any process answers
with the sum (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CLAIMS", "EXPIRED", "FINISHED", "REQUESTS", "Timing", "render"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

CLAIMS = Counter("isotune_claims", "Claims answered, by study and answer", ["study", "status"])
FINISHED = Counter(
    "isotune_trials_finished", "Trials completed, pruned or failed through the API",
    ["study", "state"],
)  # fmt: skip
EXPIRED = Counter("isotune_lease_expiries", "Leases the reaper expired", ["study"])
REQUESTS = Histogram(
    "isotune_request_seconds", "Request latency", ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)  # fmt: skip


def render() -> tuple[bytes, str]:
    """The metrics in Prometheus' text format, summed over processes in multiprocess mode."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


class Timing:
    """ASGI middleware: the latency of every HTTP request, labelled by its route's template
    (``/api/v1/trials/{trial_id}/report``, not the concrete path: bounded label values)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            REQUESTS.labels(scope["method"], route, str(status)).observe(
                time.perf_counter() - start
            )
