"""Administrator authentication for the HTTP API: the admin token, or an administrator
account's JID and password (HTTP Basic, RFC 7617), and who is acting.

Every change made through the API is recorded with its actor (FEDERATION.md, issue 4):
`api:token` for the token, `cli:<unix user>` when the `imedge` CLI sends the token with
`X-IMEdge-Actor: cli:<user>`, and `admin:<jid>` for an administrator account listed in
`accounts.admins`. Passwords are checked against the account's stored SCRAM keys (the
password itself is never stored), with the c2s login throttle, so guessing a password
through the API counts against the same limits as through XMPP (RFC 6120 §13.9.4).
"""

import asyncio
import base64
import binascii
import hmac
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request, status
from fastapi.security import (
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
)
from fastapi.security.utils import get_authorization_scheme_param

from imedge.domain.jid import Jid, JidMalformed
from imedge.protocol.sasl import ScramKeys, make_scram_keys, verify_password
from imedge.server.c2s.auth import Authenticator

log = logging.getLogger(__name__)

# 422 Unprocessable Content (RFC 9110 §15.5.21), spelt as a number: Starlette renamed its constant.
UNPROCESSABLE = 422

HOW_TO_AUTHENTICATE = (
    "send 'Authorization: Bearer <token>' with the admin token the server keeps in "
    "<data_dir>/admin.token"
)
HOW_WITH_ACCOUNTS = (
    f"{HOW_TO_AUTHENTICATE}, or HTTP Basic with the JID and password of an administrator "
    "account (listed in accounts.admins)"
)
ACTOR_HEADER = "X-IMEdge-Actor"
TOKEN_ACTOR = "api:token"  # noqa: S105 - who acted, not a secret
# `cli:` and a Unix user name (POSIX allows more than letters; stay printable and short).
_CLI_ACTOR = re.compile(r"cli:[\w.@-]{1,64}", re.ASCII)
_MECHANISM = "SCRAM-SHA-256"


class _Basic(HTTPBasic):
    """HTTP Basic that reads UTF-8 credentials (RFC 7617 §2.1; FastAPI's own reads ASCII
    only) and leaves malformed ones to the guard, which answers with how to authenticate."""

    async def __call__(self, request: Request) -> HTTPBasicCredentials | None:  # type: ignore[override]
        scheme, param = get_authorization_scheme_param(request.headers.get("Authorization"))
        if scheme.lower() != "basic":
            return None
        try:
            text = base64.b64decode(param, validate=True).decode("utf-8")
        except (ValueError, binascii.Error):
            return HTTPBasicCredentials(username="", password="")
        username, _, password = text.partition(":")
        return HTTPBasicCredentials(username=username, password=password)


def _refuse(problem: str, how: str, challenges: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        detail=f"{problem}: {how}",
        headers={"WWW-Authenticate": challenges},
    )


class AdminAuth:
    """Who may administer this server through the API, and as whom each request acts."""

    def __init__(
        self,
        token: str,
        *,
        accounts: Authenticator | None = None,
        admins: Iterable[str] = (),
        domain: str = "localhost",
        iterations: int = 4096,
    ) -> None:
        self._token = token.encode()
        self._accounts = accounts
        self._admins = frozenset(admins) if accounts is not None else frozenset()
        self._domain = domain
        self._iterations = iterations
        self._decoy: ScramKeys | None = None

    @property
    def how(self) -> str:
        return HOW_WITH_ACCOUNTS if self._admins else HOW_TO_AUTHENTICATE

    @property
    def challenges(self) -> str:
        # Basic is offered only when an administrator account can use it.
        return 'Bearer, Basic realm="IM Edge", charset="UTF-8"' if self._admins else "Bearer"

    def dependency(self) -> Callable[..., Awaitable[str]]:
        """A FastAPI dependency that admits administrators and returns the actor."""
        bearer = HTTPBearer(
            auto_error=False,
            scheme_name="admin token",
            description="The admin token from <data_dir>/admin.token",
        )
        basic = _Basic(
            auto_error=False,
            scheme_name="administrator account",
            description="The bare JID and password of an account listed in accounts.admins",
            realm="IM Edge",
        )

        async def require_admin(
            request: Request,
            token: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
            account: Annotated[HTTPBasicCredentials | None, Depends(basic)],
            actor: Annotated[
                str | None,
                Header(
                    alias=ACTOR_HEADER,
                    description=(
                        "With the admin token: who is acting, recorded with every change "
                        "(`cli:<unix user>`, as the imedge CLI sends it)"
                    ),
                ),
            ] = None,
        ) -> str:
            if account is not None:
                address = request.client.host if request.client else "?"
                return await self.account_actor(account, address)
            if token is None:
                raise _refuse("admin credentials required", self.how, self.challenges)
            if not hmac.compare_digest(token.credentials.strip().encode(), self._token):
                raise _refuse("the admin token is not valid", self.how, self.challenges)
            return self.token_actor(actor)

        return require_admin

    @staticmethod
    def token_actor(header: str | None) -> str:
        if header is None:
            return TOKEN_ACTOR
        if not _CLI_ACTOR.fullmatch(header):
            raise HTTPException(
                UNPROCESSABLE,
                detail=[
                    {
                        "field": ACTOR_HEADER,
                        "message": "expected cli:<unix user name> (letters, digits, . _ - @)",
                        "loc": ["header", ACTOR_HEADER],
                        "msg": "expected cli:<unix user name>",
                        "type": "value_error",
                    }
                ],
            )
        return header

    async def account_actor(self, credentials: HTTPBasicCredentials, address: str) -> str:
        """`admin:<jid>` for an administrator's right password; 401 or 403 otherwise."""
        if self._accounts is None or not self._admins:
            raise _refuse(
                "no administrator accounts are configured (accounts.admins)",
                self.how,
                self.challenges,
            )
        jid = self._account_jid(credentials.username.strip())
        wait = self._accounts.retry_after(address, jid)
        if wait > 0:
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                detail=f"too many failed logins: try again in {wait:.0f} s",
                headers={"Retry-After": str(max(1, round(wait)))},
            )
        if not await self._password_ok(jid, credentials.password):
            self._accounts.failed(address, jid)
            log.warning("admin API: failed login as %r from %s", credentials.username, address)
            raise _refuse(
                "the administrator account or password is not valid", self.how, self.challenges
            )
        assert jid is not None
        self._accounts.succeeded(address, jid)
        if str(jid) not in self._admins:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"{jid} is not an administrator: list it in accounts.admins",
            )
        return f"admin:{jid}"

    def _account_jid(self, username: str) -> Jid | None:
        """A bare JID of any of our domains (administrators may live on an extra host), or a
        localpart of the main domain."""
        try:
            jid = Jid.parse(username) if "@" in username else Jid.of(username, self._domain)
        except JidMalformed:
            return None
        return jid if jid.is_bare and jid.local is not None else None

    async def _password_ok(self, jid: Jid | None, password: str) -> bool:
        assert self._accounts is not None
        keys = await self._accounts.keys(jid, _MECHANISM) if jid is not None else None
        if keys is None:
            # Checked against decoy keys of the usual cost, so that the answer takes as
            # long as for an account that exists and does not tell a guesser which do.
            if self._decoy is None:
                made = await asyncio.to_thread(
                    make_scram_keys, "decoy", iterations=self._iterations
                )
                self._decoy = made[-1]  # SCRAM-SHA-256
            await asyncio.to_thread(verify_password, password, self._decoy)
            return False
        # PBKDF2 takes milliseconds to a second: off the event loop.
        return await asyncio.to_thread(verify_password, password, keys)


def bearer_guard(token: str) -> Callable[..., Awaitable[str]]:
    """The admin-token-only guard (no administrator accounts)."""
    return AdminAuth(token).dependency()
