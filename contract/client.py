"""A small Python client of the REST API, used by the CLI and the workers.

Every method returns the decoded JSON. Errors raise :class:`ApiError` with the HTTP status and the
server's ``detail`` (which names the field). Network errors are retried with exponential back-off
up to ``retry_seconds`` (a worker survives a server restart); 4xx answers are never retried.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

__all__ = ["ApiError", "Client"]


class ApiError(RuntimeError):
    def __init__(self, status: int, detail: object) -> None:
        self.status, self.detail = status, detail
        super().__init__(f"HTTP {status}: {detail}")


class Client:
    def __init__(
        self,
        server: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retry_seconds: float = 60.0,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base = server.rstrip("/") + "/api/v1"
        self.http = httpx.Client(headers=headers, timeout=timeout)
        self.retry_seconds = retry_seconds
        #: Time spent in :meth:`request` (retries and back-off included) and the number of calls.
        self.seconds = 0.0
        self.calls = 0

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self._request(method, path, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0
            self.calls += 1

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.2
        while True:
            try:
                r = self.http.request(method, self.base + path, **kwargs)
            except httpx.TransportError:
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if r.status_code >= 500 and time.monotonic() + delay <= deadline:
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if r.status_code >= 400:
                try:
                    detail = r.json().get("detail", r.text)
                except ValueError:
                    detail = r.text
                raise ApiError(r.status_code, detail)
            return None if r.status_code == 204 else r.json()

    # studies
    def create_study(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", "/studies", json=spec)

    def studies(self) -> list[dict[str, Any]]:
        return self.request("GET", "/studies")

    def study(self, name: str) -> dict[str, Any]:
        return self.request("GET", f"/studies/{name}")

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
        r = self.http.get(f"{self.base}/studies/{name}/prior.png")
        if r.status_code >= 400:
            raise ApiError(r.status_code, r.json().get("detail", r.text))
        return r.content

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
