"""Bearer tokens with roles. Only a token's SHA-256 is stored; the token itself is shown once.

Roles nest: ``admin`` ⊃ ``worker`` ⊃ ``reader``. Admins manage studies and tokens, workers claim,
report and finish trials, readers only read.
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.models import ROLES, Token

__all__ = ["ROLE_RANK", "create_token", "hash_token", "lookup_role"]

ROLE_RANK = {"reader": 0, "worker": 1, "admin": 2}


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, name: str, role: str) -> str:
    """Store a new token's hash and return the token (prefix ``isotune_``)."""
    if role not in ROLES:
        raise ValueError(f"role={role!r}: choose one of {list(ROLES)}")
    from service.store import now

    token = "isotune_" + secrets.token_urlsafe(32)
    session.add(Token(name=name, role=role, token_hash=hash_token(token), created_at=now()))
    return token


def lookup_role(session: Session, token: str) -> str | None:
    """The role of a valid, unrevoked token; None otherwise."""
    row = session.scalars(
        select(Token).where(Token.token_hash == hash_token(token), Token.revoked_at.is_(None))
    ).first()
    return None if row is None else row.role
