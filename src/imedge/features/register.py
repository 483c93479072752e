"""XEP-0077: In-Band Registration.

Off unless `accounts.registration = true`: accounts are normally created by the
administrator. When on, the client stream advertises the registration stream feature
(§8) after TLS and hands pre-authentication `jabber:iq:register` IQs to `handle` (§3.1);
after authentication the feature answers, for the user's own account, the registration
query, password changes (§3.3) and cancellation (§3.2).

This module creates and deletes accounts through the callables the composition root
gives it (the account service), not through the store, so account rules live in one
place. Registrations are rate-limited per remote address: every attempt counts, so one
address can neither create accounts in bulk nor probe many usernames.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from imedge.domain.errors import (
    ErrorType,
    StanzaError,
    StanzaErrorCondition,
    StreamErrorCondition,
)
from imedge.domain.jid import Jid, JidMalformed
from imedge.domain.throttle import LoginThrottle
from imedge.protocol import ns
from imedge.protocol.element import Element
from imedge.protocol.stanza import IqType, error_reply, iq_result
from imedge.server.context import ServerContext
from imedge.server.iq import IqRequest, IqTarget
from imedge.store.ports import AlreadyExists

log = logging.getLogger(__name__)

FEATURE_NS = "http://jabber.org/features/iq-register"  # XEP-0077 §8
INSTRUCTIONS = "Choose a username and password for your new account on this server."

# (address "user@domain", password) -> creates the account. Raises AlreadyExists when the
# address is taken and ValueError (the account service's AccountError) when the address or
# password is not acceptable; the message is shown to the client.
CreateAccount = Callable[[str, str], Awaitable[object]]
# (address) -> deletes the account and everything it owns.
DeleteAccount = Callable[[str], Awaitable[object]]
# (address, password) -> replaces the account's credentials; ValueError as above.
SetPassword = Callable[[str, str], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class AccountActions:
    create: CreateAccount
    delete: DeleteAccount
    set_password: SetPassword


@dataclass(frozen=True, slots=True)
class RegistrationLimits:
    """At most `per_address` registration attempts from one address per `window` s."""

    per_address: int = 5
    window: float = 600.0


class InBandRegistration:
    def __init__(
        self,
        actions: AccountActions,
        limits: RegistrationLimits = RegistrationLimits(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.actions = actions
        self.clock = clock
        # The login throttle's per-address lockout is exactly this rule; attempts are
        # recorded as "failures" and no account is ever given.
        self._attempts = LoginThrottle(
            per_address=limits.per_address,
            per_account=1,
            window=limits.window,
            lockout=limits.window,
        )

    # --- before authentication (called by the client stream) ---------------------------
    def stream_feature(self) -> Element:
        return Element("register", FEATURE_NS)

    async def handle(self, iq: Element, address: str, domain: str) -> Element | None:
        """Answer a `jabber:iq:register` IQ sent before authentication (XEP-0077 §3.1)."""
        query = iq.find("query", ns.REGISTER)
        kind = iq.get("type")
        if query is None or kind not in (IqType.GET, IqType.SET):
            return None  # results and errors are not answered (RFC 6120 §8.3.1)
        try:
            if kind == IqType.GET:
                return iq_result(iq, registration_form())
            await self._register(query, address, domain)
            return iq_result(iq)
        except StanzaError as err:
            return error_reply(iq, err.condition, err.text, err.type)

    async def _register(self, query: Element, address: str, domain: str) -> None:
        if query.find("remove", ns.REGISTER) is not None:
            raise StanzaError(StanzaErrorCondition.NOT_AUTHORIZED, "log in to cancel an account")
        now = self.clock()
        wait = self._attempts.retry_after(address, None, now)
        if wait > 0:
            log.info("registration from %s refused: too many attempts", address)
            raise StanzaError(
                StanzaErrorCondition.RESOURCE_CONSTRAINT,
                f"too many registrations from your address; retry in {int(wait) + 1} s",
                ErrorType.WAIT,
            )
        self._attempts.record_failure(address, None, now)
        username, password = registration_fields(query)
        jid = f"{username}@{domain}"
        try:
            await self.actions.create(jid, password)
        except AlreadyExists:
            # XEP-0077 §3.1: a taken username is a conflict (registration cannot hide it).
            raise StanzaError(StanzaErrorCondition.CONFLICT, "that username is taken") from None
        except ValueError as exc:
            raise StanzaError(StanzaErrorCondition.NOT_ACCEPTABLE, str(exc)) from None
        log.info("registered %s from %s", jid, address)

    # --- after authentication ----------------------------------------------------------
    def install(self, ctx: ServerContext) -> None:
        async def query(req: IqRequest) -> Element | None:
            user = req.from_.bare
            if req.type == IqType.GET:
                # §3.1: a registered entity gets <registered/> and its current username.
                result = Element("query", ns.REGISTER)
                result.sub("registered")
                result.sub("username", text=user.local or "")
                return result
            if req.payload.find("remove", ns.REGISTER) is not None:
                await self._cancel(ctx, user)
                return None
            await self._change_password(req.payload, user)
            return None

        # Only for one's own account: to the server's domain or one's bare JID.
        ctx.iq.register(
            ns.REGISTER,
            query,
            types=(IqType.GET, IqType.SET),
            targets=IqTarget.HOST | IqTarget.SELF,
        )

    async def _cancel(self, ctx: ServerContext, user: Jid) -> None:
        await self.actions.delete(str(user))
        log.info("%s cancelled its account", user)

        # §3.2: the account is gone, so are its sessions. Close them on the next loop turn,
        # after the router has queued the result for this request.
        def close_sessions() -> None:
            for session in ctx.sessions.sessions_of(user):
                session.close(StreamErrorCondition.NOT_AUTHORIZED, "account removed")

        asyncio.get_running_loop().call_soon(close_sessions)

    async def _change_password(self, query: Element, user: Jid) -> None:
        username, password = registration_fields(query)
        # §3.3: the username is the user's own; anything else is a bad request.
        try:
            own = Jid.parse(f"{username}@{user.domain}") == user
        except JidMalformed:
            own = False
        if not own:
            raise StanzaError(StanzaErrorCondition.BAD_REQUEST, "that is not your username")
        try:
            await self.actions.set_password(str(user), password)
        except ValueError as exc:
            raise StanzaError(StanzaErrorCondition.NOT_ACCEPTABLE, str(exc)) from None
        log.info("%s changed its password in band", user)


def registration_form() -> Element:
    """XEP-0077 §3.1 example 2: the fields a new account needs."""
    query = Element("query", ns.REGISTER)
    query.sub("instructions", text=INSTRUCTIONS)
    query.sub("username")
    query.sub("password")
    return query


def registration_fields(query: Element) -> tuple[str, str]:
    """The username and password of a registration or password change.

    XEP-0077 §3.1: missing required fields are `not-acceptable`. A username is a bare
    localpart: '@' or '/' would turn it into another address.
    """
    username = (query.find_text("username", ns.REGISTER) or "").strip()
    password = query.find_text("password", ns.REGISTER) or ""
    if not username or not password:
        raise StanzaError(StanzaErrorCondition.NOT_ACCEPTABLE, "a username and a password")
    if not _is_local(username):
        raise StanzaError(StanzaErrorCondition.NOT_ACCEPTABLE, "a username cannot contain @ or /")
    return username, password


def _is_local(username: str) -> bool:
    return "@" not in username and "/" not in username
