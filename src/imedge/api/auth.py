"""Administrator authentication for the HTTP API: a bearer token, compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from fastapi import Header, HTTPException, status


def bearer_guard(token: str) -> Callable[[str | None], None]:
    """A FastAPI dependency that admits requests carrying `Authorization: Bearer <token>`."""
    expected = token.encode()

    def require_admin(authorization: str | None = Header(default=None)) -> None:
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="admin credentials required: send 'Authorization: Bearer <token>' "
                "(the token is in <data_dir>/admin.token)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return require_admin
