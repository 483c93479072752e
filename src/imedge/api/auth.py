"""Administrator authentication for the HTTP API: a bearer token, compared in constant time."""

import hmac
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

HOW_TO_AUTHENTICATE = (
    "send 'Authorization: Bearer <token>' with the admin token the server keeps in "
    "<data_dir>/admin.token"
)


def bearer_guard(token: str) -> Callable[[HTTPAuthorizationCredentials | None], None]:
    """A FastAPI dependency that admits requests carrying `Authorization: Bearer <token>`."""
    expected = token.encode()
    # auto_error=False: our 401 (not FastAPI's 403) with a body that says what to send.
    scheme = HTTPBearer(
        auto_error=False,
        scheme_name="admin token",
        description="The admin token from <data_dir>/admin.token",
    )

    def require_admin(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(scheme)],
    ) -> None:
        if credentials is None:
            problem = "admin credentials required"
        elif not hmac.compare_digest(credentials.credentials.strip().encode(), expected):
            problem = "the admin token is not valid"
        else:
            return
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail=f"{problem}: {HOW_TO_AUTHENTICATE}",
            headers={"WWW-Authenticate": "Bearer"},
        )

    return require_admin
