"""A small Python client of the REST API, used by the CLI and the workers.

Every method returns the decoded JSON. Errors raise :class:`ApiError` with the HTTP status and the
server's ``detail`` (which names the field). Network errors are retried with exponential back-off
up to ``retry_seconds`` (a worker survives a server restart), then raise :class:`Unreachable`;
4xx answers are never retried. Both derive from :class:`contract.errors.IsotuneError`.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from contract.errors import IsotuneError

__all__ = ["ApiError", "Client", "Unreachable"]


class Unreachable(IsotuneError, ConnectionError):
    """No isotune server answers at the URL given (names it and the cause)."""

    def __init__(self, server: str, reason: str) -> None:
        super().__init__("server", server, reason)


class ApiError(IsotuneError, RuntimeError):
    """An error answer of the server: its HTTP ``status`` and ``detail`` (a text naming the field,
    or FastAPI's list of validation errors), and the ``field`` it names."""

    def __init__(self, status: int, detail: object, field: str | None = None) -> None:
        self.status, self.detail = status, detail
        first = detail[0] if isinstance(detail, list) and detail else None
        if isinstance(first, dict):
            field = field or _loc(first)
            value, reason = first.get("input"), str(first.get("msg", ""))
        else:
            value, reason = detail, f"HTTP {status}"
        super().__init__(field or f"HTTP {status}", value, reason)

    def message(self) -> str:
        return f"HTTP {self.status}: {self.detail}"

    def lines(self, show: Callable[[Any], str] = repr) -> list[str]:
        """One line per error: ``field=value: reason`` for each validation error, else the
        server's own detail (which already reads ``field=value: reason``)."""
        if isinstance(self.detail, list):
            return [
                f"{_loc(d)}={show(d.get('input'))}: {d.get('msg', '')}"
                if isinstance(d, dict)
                else str(d)
                for d in self.detail
            ]
        return [f"{self.detail} (HTTP {self.status})"]


def _loc(error: dict[str, Any]) -> str:
    """A validation error's location without FastAPI's leading ``body``/``query``/``path``."""
    loc = [str(x) for x in error.get("loc", ())]
    if loc and loc[0] in ("body", "query", "path", "header"):
        loc = loc[1:]
    return ".".join(loc) or "body"


#: Seconds a prior map (``GET /studies/{name}/prior.png``) may take to draw.
PLOT_TIMEOUT = 180.0


class Client:
    def __init__(
        self,
        server: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retry_seconds: float = 60.0,
        stop: threading.Event | None = None,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        #: The server as given, with or without the ``/api/v1`` that ``isotune serve`` prints.
        self.server = server.rstrip("/").removesuffix("/api/v1")
        self.base = self.server + "/api/v1"
        self.http = httpx.Client(headers=headers, timeout=timeout)
        self.retry_seconds = retry_seconds
        #: Set to stop waiting between retries at once (the worker's Ctrl-C).
        self.stop = stop
        #: Told, at most every 10 s, that the server is unreachable and how long retries go on.
        self.on_retry = on_retry
        #: Time spent in :meth:`request` (retries and back-off included) and the number of calls.
        self.seconds = 0.0
        self.calls = 0

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def first_contact(self) -> dict[str, Any]:
        """Ask the server's health once, without retries; :class:`Unreachable` naming the URL
        and the cause when nothing answers or what answers is not an isotune server. Retries
        are for a server that answered before: a wrong URL should fail in seconds, not wait."""
        url = self.base + "/health"
        try:
            r = self.http.get(url, timeout=min(10.0, self.http.timeout.read or 10.0))
        except httpx.TransportError as e:
            raise Unreachable(self.server, f"cannot connect ({type(e).__name__}: {e})") from None
        try:
            body = r.json()
        except ValueError:
            body = None
        if r.status_code != 200 or not isinstance(body, dict) or body.get("status") != "ok":
            raise Unreachable(
                self.server,
                f"GET {url} answered HTTP {r.status_code}, not isotune's health; pass the URL "
                "that isotune serve prints, e.g. http://127.0.0.1:8000",
            )
        return body

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self._request(method, path, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0
            self.calls += 1

    def _request(self, method: str, path: str, raw: bool = False, **kwargs: Any) -> Any:
        deadline = time.monotonic() + self.retry_seconds
        delay, told = 0.2, -math.inf
        while True:
            try:
                r = self.http.request(method, self.base + path, **kwargs)
            except httpx.TransportError as e:
                if time.monotonic() + delay > deadline or not self._pause(delay):
                    cause = f"no answer ({type(e).__name__}: {e})"
                    raise Unreachable(self.server, cause) from e
                told = self._tell(f"{type(e).__name__}: {e}", deadline, told)
                delay = min(delay * 2, 5.0)
                continue
            if r.status_code >= 500 and time.monotonic() + delay <= deadline:
                if self._pause(delay):
                    told = self._tell(f"HTTP {r.status_code}", deadline, told)
                    delay = min(delay * 2, 5.0)
                    continue
            if r.status_code >= 400:
                raise _error(r)
            if raw:
                return r
            return None if r.status_code == 204 else r.json()

    def _pause(self, seconds: float) -> bool:
        """Wait before a retry; False if told to stop meanwhile (then no retry)."""
        if self.stop is None:
            time.sleep(seconds)
            return True
        return not self.stop.wait(seconds)

    def _tell(self, cause: str, deadline: float, told: float) -> float:
        now = time.monotonic()
        if self.on_retry is not None and now - told >= 10.0:
            left = max(0.0, deadline - now)
            self.on_retry(f"server {self.server} unreachable ({cause}); retrying for {left:.0f} s")
            return now
        return told

    # studies
    def create_study(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", "/studies", json=spec)

    def studies(self) -> list[dict[str, Any]]:
        return self.request("GET", "/studies")

    def study(self, name: str) -> dict[str, Any]:
        return self.request("GET", f"/studies/{name}")

    def archive_study(self, name: str) -> dict[str, Any]:
        return self.request("POST", f"/studies/{name}/archive")

    def adopt_study(self, name: str, optuna_study: str | None = None) -> dict[str, Any]:
        """Re-attach an orphaned study to the Optuna study ``optuna_study`` (its new name)."""
        return self.request("POST", f"/studies/{name}/adopt", json={"optuna_study": optuna_study})

    def delete_study(self, name: str) -> None:
        self.request("DELETE", f"/studies/{name}")

    def export_study(self, name: str) -> dict[str, Any]:
        """The study's specification and every trial (the body :meth:`import_study` takes)."""
        return self.request("GET", f"/studies/{name}/export")

    def import_study(self, data: dict[str, Any], name: str | None = None) -> dict[str, Any]:
        params = {"name": name} if name else {}
        return self.request("POST", "/studies/import", json=data, params=params)

    def trials(self, name: str, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        return self.request(
            "GET", f"/studies/{name}/trials", params={"offset": offset, "limit": limit}
        )

    def prior_map(self, name: str) -> bytes:
        """The study's prior map as PNG bytes."""
        # drawn on demand (a grid of the theory and a plot): slower than other calls on a busy
        # server, retried like them
        timeout = max(PLOT_TIMEOUT, self.http.timeout.read or 0.0)
        return self.request("GET", f"/studies/{name}/prior.png", raw=True, timeout=timeout).content

    # workers
    def claim(self, study: str, worker_id: str, capabilities: dict | None = None) -> dict:
        body = {"worker_id": worker_id, "capabilities": capabilities or {}}
        return self.request("POST", f"/studies/{study}/claim", json=body)

    def heartbeat(self, trial_id: int, worker_id: str) -> dict:
        return self.request("POST", f"/trials/{trial_id}/heartbeat", json={"worker_id": worker_id})

    def report(self, trial_id: int, worker_id: str, values: list[tuple[int, float]]) -> dict:
        body = {"worker_id": worker_id, "values": [{"step": s, "value": v} for s, v in values]}
        return self.request("POST", f"/trials/{trial_id}/report", json=body)

    def complete(self, trial_id: int, worker_id: str, value: float | None, pruned: bool = False):
        body = {"worker_id": worker_id, "value": value, "pruned": pruned}
        return self.request("POST", f"/trials/{trial_id}/complete", json=body)

    def fail(self, trial_id: int, worker_id: str, reason: str, retry: bool = False) -> dict:
        body = {"worker_id": worker_id, "reason": reason, "retry": retry}
        return self.request("POST", f"/trials/{trial_id}/fail", json=body)


def _error(r: httpx.Response) -> ApiError:
    try:
        body = r.json()
    except ValueError:
        return ApiError(r.status_code, r.text)
    if not isinstance(body, dict):
        return ApiError(r.status_code, body)
    field = body.get("field")
    return ApiError(
        r.status_code, body.get("detail", r.text), field if isinstance(field, str) else None
    )
