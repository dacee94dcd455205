"""What routes depend on: the service, the caller's role, and the path parameters' types."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Path, Request

from service.auth import ROLE_RANK, lookup_role
from service.core import Service
from service.schemas import NAME_PATTERN

__all__ = ["Admin", "Reader", "ServiceDep", "StudyName", "TokenCache", "TrialId", "Worker"]

#: A trial id in a path (Optuna's ids are 32-bit integers on PostgreSQL).
TrialId = Annotated[int, Path(ge=0, le=2**31 - 1)]
#: A study name in a path: the names studies can have (a 422 naming it otherwise, never a lookup).
StudyName = Annotated[str, Path(pattern=NAME_PATTERN)]


class TokenCache:
    """Token → role lookups, each kept for ``ttl`` seconds: a revoked token stops working within
    that time, and a busy worker does not cost a database read per request."""

    def __init__(self, service: Service, ttl: float) -> None:
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


# async dependencies: a plain function would cost a trip through the thread pool
async def _service(request: Request) -> Service:
    return request.app.state.service


def _role(minimum: str) -> Callable[..., Any]:
    async def check(
        request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> None:
        tokens: TokenCache | None = request.app.state.tokens
        if tokens is None:  # tokens off (local development)
            return
        if not authorization or not authorization.startswith("Bearer "):
            raise HTTPException(
                401, "authorization: a bearer token is required",
                headers={"WWW-Authenticate": "Bearer"},
            )  # fmt: skip
        got = await tokens.role(authorization.removeprefix("Bearer ").strip())
        if got is None:
            raise HTTPException(
                401, "authorization: unknown or revoked token",
                headers={"WWW-Authenticate": "Bearer"},
            )  # fmt: skip
        if ROLE_RANK[got] < ROLE_RANK[minimum]:
            raise HTTPException(403, f"authorization: role {got} may not do this ({minimum})")

    return check


ServiceDep = Annotated[Service, Depends(_service)]
#: Route dependencies: the least role a request's token must have.
Reader, Worker, Admin = (Depends(_role(r)) for r in ("reader", "worker", "admin"))
