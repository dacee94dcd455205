"""ASGI middleware of the API, and the rendering of error details as JSON."""

from __future__ import annotations

import math
from typing import Any

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodyLimit", "finite_json"]


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


def finite_json(x: Any) -> Any:
    """``x`` with every non-finite float as its text (JSON cannot carry NaN or infinity)."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: finite_json(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [finite_json(v) for v in x]
    return x
