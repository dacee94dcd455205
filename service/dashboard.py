"""optuna-dashboard behind isotune's tokens.

optuna-dashboard has no authentication of its own. :class:`TokenGate` wraps its WSGI application
and lets a request through only with a valid, unrevoked isotune token of role ``reader`` or above,
sent as the password of HTTP Basic authentication (any user name: what a browser asks for) or as a
``Bearer`` header. A token's role is remembered for a few seconds, as the API does.
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["TokenGate", "token_of"]

REALM = "isotune dashboard"


def token_of(header: str) -> str | None:
    """The token in an ``Authorization`` header: Basic (the password) or Bearer."""
    scheme, _, rest = header.strip().partition(" ")
    rest = rest.strip()
    if scheme.lower() == "bearer":
        return rest or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(rest, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
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
        self._seen: dict[str, tuple[float, str | None]] = {}
        self._lock = threading.Lock()

    def role(self, token: str) -> str | None:
        now = time.monotonic()
        with self._lock:
            hit = self._seen.get(token)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        role = self.lookup(token)
        with self._lock:
            if len(self._seen) > 10_000:  # guessed tokens must not grow it without bound
                self._seen.clear()
            self._seen[token] = (now, role)
        return role

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        token = token_of(environ.get("HTTP_AUTHORIZATION", ""))
        if token is not None and self.role(token) is not None:
            return self.app(environ, start_response)
        body = (
            b"authorization: an isotune token is required (role reader or above): give it as "
            b"the password, with any user name\n"
        )
        start_response("401 Unauthorized", [
            ("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"'),
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
        ])  # fmt: skip
        return [body]
