"""optuna-dashboard behind isotune's tokens.

optuna-dashboard has no authentication of its own. :class:`TokenGate` wraps its WSGI application
and lets a request through only with a valid, unrevoked isotune token, sent as the password of HTTP
Basic authentication (any user name: what a browser asks for) or as a ``Bearer`` header. Reading
(GET, HEAD) needs role ``reader``; anything that changes data (the dashboard can delete studies,
tell trials, upload artifacts) needs ``admin``, and is refused when the browser says it comes from
another origin (a page elsewhere cannot use the credentials the browser keeps). A token's role is
remembered for a few seconds, as the API does; unknown tokens are not remembered.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["TokenGate", "token_of"]

REALM = "isotune dashboard"
RANK = {"reader": 0, "worker": 1, "admin": 2}
SAFE = ("GET", "HEAD")
#: Longer than any token isotune issues; longer headers are refused without a lookup.
MAX_TOKEN = 256


def token_of(header: str) -> str | None:
    """The token in an ``Authorization`` header: Basic (the password) or Bearer."""
    scheme, _, rest = header.strip().partition(" ")
    rest = rest.strip()
    if scheme.lower() == "bearer":
        return rest or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(rest, validate=True).decode()
        except (binascii.Error, ValueError):  # not base64, not ASCII, not UTF-8
            return None
        _, sep, password = decoded.partition(":")
        return password if sep and password else None
    return None


class TokenGate:
    """WSGI middleware: 401 unless the request carries a token ``lookup`` gives a role."""

    def __init__(
        self, app: Callable[..., Iterable[bytes]], lookup: Callable[[str], str | None],
        ttl: float = 5.0,
    ) -> None:  # fmt: skip
        self.app, self.lookup, self.ttl = app, lookup, ttl
        self._seen: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def role(self, token: str) -> str | None:
        if len(token) > MAX_TOKEN:
            return None
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            hit = self._seen.get(key)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        role = self.lookup(token)
        if role is not None:  # only valid tokens are remembered: guesses cannot fill the cache
            with self._lock:
                self._seen[key] = (now, role)
        return role

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        token = token_of(environ.get("HTTP_AUTHORIZATION", ""))
        role = self.role(token) if token is not None else None
        why = None
        if role is None:
            why = "an isotune token is required: give it as the password, with any user name"
            return self._refuse(start_response, "401 Unauthorized", why)
        if environ.get("REQUEST_METHOD", "GET") not in SAFE:
            origin = environ.get("HTTP_ORIGIN")
            if RANK.get(role, -1) < RANK["admin"]:
                why = f"role {role} may only read; changes need an admin token"
            elif origin is not None and origin.split("://", 1)[-1] != environ.get("HTTP_HOST"):
                why = f"a change from another origin ({origin}) is refused"
            if why is not None:
                return self._refuse(start_response, "403 Forbidden", why)
        return self.app(environ, start_response)

    @staticmethod
    def _refuse(start_response: Callable, status: str, why: str) -> Iterable[bytes]:
        body = f"authorization: {why}\n".encode()
        headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
        ]
        if status.startswith("401"):
            headers.append(("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"'))
        start_response(status, headers)
        return [body]
